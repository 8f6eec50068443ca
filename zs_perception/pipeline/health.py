"""Counters, timings and current faults of the node, for its log and ``/diagnostics`` (no ROS).

A fault is *current* while it keeps being reported: it ends ``window_s`` after its last
report, so the diagnostics return to OK once the cause is gone, and name the fault while it
lasts. Each fault is logged at most once per ``log_period_s``.
"""

import collections
from dataclasses import dataclass
import threading
import time
from typing import Callable, Deque, Dict, List, Sequence, Tuple

COUNTERS = ('frames_received', 'frames_processed', 'frames_dropped', 'frames_failed',
            'bad_image', 'bad_depth', 'bad_camera_info', 'no_depth_match',
            'no_camera_info_match', 'segmenter_errors', 'goals_received', 'bad_stamp',
            'time_jumps')
# Samples per timing statistic.
TIMING_WINDOW = 100
# Faults that make the status ERROR rather than WARN.
ERRORS = ('frames_failed',)

OK, WARN, ERROR = 'ok', 'warn', 'error'


@dataclass(frozen=True)
class Fault:
    """A current fault: its key (e.g. ``'no_depth_match'``), the last text and count."""

    key: str
    text: str
    last_s: float
    count: int


class Health:
    """Thread-safe counters, timing windows and current faults.

    Args:
        window_s: a fault is current until this long (s) after its last report.
        log_period_s: a fault's text is logged at most once per this long (s).
        clock: monotonic time in seconds.

    """

    def __init__(self, window_s: float = 5.0, log_period_s: float = 5.0,
                 clock: Callable[[], float] = time.monotonic,
                 counters: Sequence[str] = COUNTERS):
        self.window_s = window_s
        self.log_period_s = log_period_s
        self.clock = clock
        self._lock = threading.Lock()
        self.counters: Dict[str, int] = dict.fromkeys(counters, 0)
        self.recent: Deque[str] = collections.deque(maxlen=20)
        self._faults: Dict[str, Fault] = {}
        self._logged_at: Dict[str, float] = {}
        self._timings: Dict[str, Deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=TIMING_WINDOW))

    def count(self, counter: str, n: int = 1) -> None:
        """Add ``n`` to ``counter``."""
        with self._lock:
            self.counters[counter] = self.counters.get(counter, 0) + n

    def report(self, key: str, text: str, counter: str = '') -> bool:
        """Record fault ``key`` as current with ``text``; count ``counter`` if given.

        Returns:
            True when the text should be logged now (first report in ``log_period_s``).

        """
        now = self.clock()
        with self._lock:
            if counter:
                self.counters[counter] = self.counters.get(counter, 0) + 1
            previous = self._faults.get(key)
            self._faults[key] = Fault(key, text, now, (previous.count if previous else 0) + 1)
            self.recent.append(text)
            if now - self._logged_at.get(key, -1e18) < self.log_period_s:
                return False
            self._logged_at[key] = now
            return True

    def current(self) -> List[Fault]:
        """Return the current faults, most recent first."""
        now = self.clock()
        with self._lock:
            faults = [f for f in self._faults.values() if now - f.last_s < self.window_s]
        return sorted(faults, key=lambda f: -f.last_s)

    def timing(self, stage: str, seconds: float) -> None:
        """Add one sample (s) to the window of ``stage``."""
        with self._lock:
            self._timings[stage].append(seconds)

    def snapshot(self) -> Tuple[Dict[str, int], Dict[str, List[float]]]:
        """Return copies of the counters and the timing windows (s)."""
        with self._lock:
            return dict(self.counters), {k: list(v) for k, v in self._timings.items()}

    def level(self) -> Tuple[str, str]:
        """Return ``(OK | WARN | ERROR, message)`` from the current faults and the counters."""
        faults = sorted(self.current(), key=lambda f: f.key not in ERRORS)  # errors first
        if faults:
            level = ERROR if any(f.key in ERRORS for f in faults) else WARN
            more = (f' (also: {", ".join(f.key for f in faults[1:])})'
                    if len(faults) > 1 else '')
            return level, f'{faults[0].key}: {faults[0].text}'[:200] + more
        if self.counters.get('frames_processed', 0) == 0:
            return WARN, 'no frame processed yet'
        return OK, 'ok'
