"""Run one node as its own process: one-line fatal errors and a stop that never fails.

Used by the ``main()`` of the perception node and of the replay publisher. The order that
keeps a stop clean:

1. rclpy is initialised without its signal handlers, so a signal cannot shut the context
   down under a thread that is still publishing; SIGINT and SIGTERM only set a flag here.
2. The main thread spins until the flag is set (or the node says it is done).
3. The executor is shut down, then ``destroy_node()``: a node with a worker thread stops
   and joins it there and stops publishing, before its publishers go.
4. The context is shut down last.

Once stopping, SIGINT and SIGTERM are ignored (a second one gives no ``KeyboardInterrupt``
traceback, and none arriving while Python exits kills the process); a signal while the
node is still being built (a model loading) aborts the build. Errors the node raises for
a bad configuration are logged as one FATAL line and the process exits 1; a stop by
signal exits 0.
"""

import ctypes
import logging
import os
import signal
import sys
from typing import Any, Callable, List, Optional, Tuple, Type

# Only the standard library at import time: the executables import this module first, so
# that a signal during their slow imports (numba, torch) already exits quietly.

SPIN_PERIOD_S = 0.1


def exit_quietly_on_signals() -> None:
    """Until :func:`run_node` takes over: SIGINT or SIGTERM exits 0, with no traceback."""
    def _exit(signum, frame):
        sys.exit(0)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _exit)


class _Stop:
    """The signal handler: sets a flag; raises once while the node is being built."""

    def __init__(self):
        self.requested = False
        self.building = True

    def __call__(self, signum, frame) -> None:
        self.requested = True
        if self.building:
            self.building = False  # a second signal must not interrupt the clean-up
            raise KeyboardInterrupt


def exit_process(status: int) -> None:
    """End the process now with ``status``, after :func:`run_node` has stopped everything.

    Flushes Python's streams and logging, then skips the interpreter's teardown: tearing
    down torch and transformers takes seconds (2.5 s alone, up to 7 s with the node's modules
    on a loaded 2-core machine), long enough for ``ros2 launch`` to escalate a clean SIGINT
    stop to SIGTERM with an ERROR line. rclpy has flushed its logs when the context shut down.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # closed or a broken pipe: nothing more to say
            pass
    try:  # C stdio buffers too (rcutils logs through them), which os._exit does not flush
        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass
    os._exit(status)


def one_line(err: BaseException) -> str:
    """Return an exception's message on one line (newlines and runs of spaces collapsed)."""
    return ' '.join(str(err).split()) or type(err).__name__


def params_file_problem(args: List[str]) -> Optional[str]:
    """Check the ``--params-file`` arguments (rcl would log its own ERROR line first).

    Returns:
        ``None`` when every params file given exists and is YAML, else what is wrong.

    """
    import yaml
    ros_args = args[args.index('--ros-args'):] if '--ros-args' in args else []
    for flag, path in zip(ros_args, ros_args[1:]):
        if flag != '--params-file':
            continue
        try:
            with open(path, encoding='utf-8') as stream:
                data = yaml.safe_load(stream)
        except OSError as err:
            return (f'cannot read the params file {path!r} ({err.strerror}); give the path '
                    'of a YAML file such as config/zs_perception.yaml')
        except yaml.YAMLError as err:
            return f'the params file {path!r} is not valid YAML: {one_line(err)}'
        nodes = data if isinstance(data, dict) else {}
        wrong = [key for key, value in nodes.items()
                 if not (isinstance(value, dict) and 'ros__parameters' in value)]
        if not nodes or wrong:
            return (f'the params file {path!r} must map node names to ros__parameters '
                    "(e.g. '/**/zs_perception: {ros__parameters: {threshold: 0.5}}'); "
                    f'{"it is empty" if not nodes else f"{wrong[0]!r} has no ros__parameters"}')
    return None


def run_node(make_node: Callable[[], Any], name: str,
             fatal: Tuple[Type[BaseException], ...] = (ValueError,),
             done: Optional[Callable[[Any], bool]] = None,
             args: Optional[List[str]] = None) -> int:
    """Build a node, spin it until a signal (or ``done(node)``), stop it cleanly.

    Args:
        make_node: builds the ``rclpy.node.Node`` (after ``rclpy.init``).
        name: logger name of the FATAL line.
        fatal: exception types meaning a bad configuration: one FATAL line, exit 1.
        done: optional; spinning ends when it returns True.
        args: command-line arguments for ``rclpy.init`` (default ``sys.argv``).

    Returns:
        The exit status: 0 after a signal or ``done``, 1 after a fatal error.

    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stop = _Stop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    node = executor = None
    problem = params_file_problem(sys.argv if args is None else args)
    if problem is not None:
        print(f'[FATAL] [{name}]: Cannot start: {problem}', file=sys.stderr)
        return 1
    try:
        try:
            rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
        except Exception as err:  # rcl's argument or params-file parser
            print(f'[FATAL] [{name}]: Cannot start: {one_line(err)}', file=sys.stderr)
            return 1
        node = make_node()
        stop.building = False
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.requested and rclpy.ok() and not (done is not None and done(node)):
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
        return 0
    except (KeyboardInterrupt, ExternalShutdownException):
        return 0
    except fatal as err:
        rclpy.logging.get_logger(name).fatal(one_line(err))
        return 1
    finally:
        # From here on signals are ignored: a second one must not interrupt the clean-up,
        # and Python resets handlers of its own (not SIG_IGN) to the default at exit, where
        # a late SIGINT would then kill the process with status -2.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
