"""A one-line progress display on stderr: images done, images per second, time left.

On a terminal the line is redrawn in place (carriage return); otherwise (a log file, CI) a
full line is printed at most every :data:`LOG_INTERVAL_S` seconds and at the end.
"""

import sys
import time
from typing import Optional, TextIO

LOG_INTERVAL_S = 10.0
_REDRAW_INTERVAL_S = 0.2


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` of a duration in seconds (``?`` when unknown)."""
    if seconds is None or not seconds >= 0 or seconds == float('inf'):
        return '?'
    seconds = int(round(seconds))
    return f'{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}'


class Progress:
    """Progress of a run over ``total`` images of which ``already`` were done before it started.

    Args:
        total: images in the input.
        already: images finished by an earlier (interrupted) run; not counted in the rate.
        stream: where to write (default ``sys.stderr``); ``None`` disables the display.
        clock: monotonic clock in seconds.

    """

    def __init__(self, total: int, already: int = 0, stream: Optional[TextIO] = sys.stderr,
                 clock=time.monotonic):
        self.total = total
        self.already = already
        self.done = 0
        self.skipped = 0
        self.stream = stream
        self.clock = clock
        self.start = clock()
        self._last_draw = -float('inf')
        self._tty = bool(stream is not None and getattr(stream, 'isatty', lambda: False)())

    @property
    def rate(self) -> float:
        """Images annotated per second since the start of this run (skips are not counted)."""
        elapsed = self.clock() - self.start
        return self.done / elapsed if elapsed > 0 and self.done else 0.0

    def line(self) -> str:
        """Return the progress text, e.g. ``annotate 12/100 (12%) 3.40 img/s, 0:00:26 left``."""
        finished = self.already + self.done + self.skipped
        share = 100.0 * finished / self.total if self.total else 100.0
        rate = self.rate
        if rate > 0:
            left = (self.total - finished) / rate
        else:
            left = 0.0 if finished >= self.total else None
        text = (f'annotate {finished}/{self.total} ({share:.0f}%) {rate:.2f} img/s, '
                f'{format_duration(left)} left')
        if self.skipped:
            text += f', {self.skipped} skipped'
        if self.already:
            text += f', {self.already} from the earlier run'
        return text

    def update(self, done: int = 0, skipped: int = 0) -> None:
        """Count finished images and redraw when due."""
        self.done += done
        self.skipped += skipped
        now = self.clock()
        interval = _REDRAW_INTERVAL_S if self._tty else LOG_INTERVAL_S
        if now - self._last_draw >= interval:
            self._draw()
            self._last_draw = now

    def close(self) -> None:
        """Draw the final line and end it."""
        self._draw()
        if self.stream is not None and self._tty:
            self.stream.write('\n')
            self.stream.flush()

    def _draw(self) -> None:
        if self.stream is None:
            return
        if self._tty:
            self.stream.write('\r\x1b[K' + self.line())
        else:
            self.stream.write(self.line() + '\n')
        self.stream.flush()
