"""A child process for the tests that run the installed executables or a launch file."""

import os
import signal
import subprocess
import threading
import time


class ChildProcess:
    """Runs ``args`` with merged stdout/stderr collected line by line by a thread.

    Args:
        args: the command line.
        domain_id: ``ROS_DOMAIN_ID`` of the child.
        env: more environment variables.
        new_session: start it as a process group leader, so :meth:`ctrl_c` reaches the
            processes it starts too (as Ctrl-C in a terminal does).

    """

    def __init__(self, args, domain_id, env=None, new_session=False):
        full_env = dict(os.environ, ROS_DOMAIN_ID=str(domain_id), PYTHONUNBUFFERED='1',
                        RCUTILS_COLORIZED_OUTPUT='0', **(env or {}))
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True, env=full_env, start_new_session=new_session)
        self.lines = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line.rstrip('\n'))

    def wait_for_line(self, text, timeout):
        """Wait until a line contains ``text``; raise with the output if none does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(text in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f'no line with {text!r} within {timeout} s: {self.output()}')

    def ctrl_c(self):
        """Send SIGINT to the process group (see ``new_session``)."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def finish(self, timeout):
        """Wait for the exit and return the status; kill it and raise after ``timeout``."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f'the process did not exit within {timeout} s: '
                                 f'{self.output()}')
        finally:
            self._reader.join(timeout=5.0)

    def output(self):
        """Return everything printed so far."""
        return '\n'.join(self.lines)
