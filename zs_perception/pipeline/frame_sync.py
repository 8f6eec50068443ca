"""Matching colour images with their depth image and camera info by stamp (no ROS here).

:class:`FrameSynchronizer` is fed the three streams as they arrive (any message type; the
caller passes each message's header stamp in seconds) and hands out frames: an image plus
the depth and camera info stamped within ``tolerance_s`` of it, or an honest reason why
either is missing. The rules, in the order they apply:

* **Newest ready frame wins.** An image is *ready* when, for depth and for camera info,
  the match has arrived or can no longer be expected. When several images are ready the
  newest is taken and the older ones are dropped and counted; images that are not ready
  yet stay buffered for the next call, so a fast consumer keeps the camera rate.
* **A bounded wait, per image.** An image waits for a missing match at most ``wait_s``
  after *its own* arrival; newer images never push that deadline back.
* **No wait when the match cannot come:** the stream has already delivered a message
  stamped after the image (its stamps are ahead, or it runs slower than the images), its
  newest message is stamped far behind the image (a stamp of 0, a frozen clock), or the
  stream is silent (nothing for ``stream_timeout_s``; with publishers present the stream
  gets that long from the first image before it is given up).
* **Stamps that jump back** (a bag played in a loop, a clock reset) by more than
  :data:`JUMP_BACK_S` on the image stream clear the buffered messages of the previous run
  from every stream, and the next frame says so (``stamps_reset``) so tracks can restart.

Times: stamps are the messages' header stamps (s, source clock); arrivals and deadlines are
on the injectable monotonic ``clock`` (s), which tests replace to run without sleeping.
"""

import collections
from dataclasses import dataclass
import time
from typing import Any, Callable, Deque, List, Optional, Tuple

# A stream whose stamps fall back by more than this (s) started again (bag loop, clock reset).
JUMP_BACK_S = 0.5
# A stream whose newest message is stamped this much (s) before the image is misstamped
# (e.g. stamped 0): waiting for it cannot produce a match.
FAR_BEHIND_S = 1.0
# A message stamped this much (s) after the stamp clock when it arrives is misstamped (a
# capture cannot be in the future): it is never matched.
FUTURE_STAMP_S = 0.2

DEPTH = 'depth'
CAMERA_INFO = 'camera_info'


@dataclass(frozen=True)
class Miss:
    """Why an image has no depth (or camera info) match.

    Attributes:
        reason: short, for ``SegmentedObject.pose_status``: ``'no depth image'``,
            ``'depth late'``, ``'depth stamp mismatch'`` (or the same with ``camera_info``).
        detail: one sentence for the log and the diagnostics, with the figures.
        kind: ``'none'`` (no publisher and nothing received: an RGB-only camera),
            ``'absent'`` (the stream is silent: stalled, stopped or never published),
            ``'late'`` (the wait ran out) or ``'mismatch'`` (the stream runs, its stamps do
            not match).

    """

    reason: str
    detail: str
    kind: str


@dataclass(frozen=True)
class SyncedFrame:
    """One image with what matched it.

    Attributes:
        image: the image message, as passed to :meth:`FrameSynchronizer.add_image`.
        stamp_s: its header stamp (s).
        arrival_s: when it was added (s, the synchroniser's clock).
        depth: the matched depth message, or ``None`` (then ``depth_miss`` says why).
        info: the matched camera-info message, or ``None`` (then ``info_miss`` says why).
        depth_miss: see :class:`Miss`; ``None`` when ``depth`` is set.
        info_miss: see :class:`Miss`; ``None`` when ``info`` is set.
        dropped: older images dropped in favour of this one.
        stamps_reset: the image stamps jumped back since the previous frame.

    """

    image: Any
    stamp_s: float
    arrival_s: float
    depth: Any
    info: Any
    depth_miss: Optional[Miss]
    info_miss: Optional[Miss]
    dropped: int
    stamps_reset: bool


@dataclass
class _Entry:
    msg: Any
    stamp_s: float
    arrival_s: float
    ahead_s: float = 0.0  # stamp minus the stamp clock on arrival, when over FUTURE_STAMP_S


class _Stream:
    """Recent messages of the depth or camera-info stream and when they arrived."""

    def __init__(self, name: str, size: int):
        self.name = name
        self.buffer: Deque[_Entry] = collections.deque(maxlen=size)
        self.last_arrival_s: Optional[float] = None
        self.publishers = 0

    def add(self, entry: _Entry) -> None:
        if self.buffer and entry.stamp_s < self.buffer[-1].stamp_s - JUMP_BACK_S:
            self.forget_after(entry.stamp_s)
        self.buffer.append(entry)
        self.last_arrival_s = entry.arrival_s

    def forget_after(self, stamp_s: float) -> None:
        """Drop the messages stamped more than ``JUMP_BACK_S`` after ``stamp_s``."""
        kept = [e for e in self.buffer if e.stamp_s <= stamp_s + JUMP_BACK_S]
        self.buffer.clear()
        self.buffer.extend(kept)

    def match(self, stamp_s: float, tolerance_s: float) -> Optional[_Entry]:
        best, best_dt = None, tolerance_s
        for entry in self.buffer:
            if entry.ahead_s:
                continue
            dt = abs(entry.stamp_s - stamp_s)
            if dt <= best_dt:
                best, best_dt = entry, dt
        return best

    def silent_for(self, now: float, since: float) -> float:
        """Seconds without a message, counted from ``since`` if none ever came."""
        return now - (self.last_arrival_s if self.last_arrival_s is not None else since)

    def miss(self, image: _Entry, now: float, started_s: float, tolerance_s: float,
             wait_s: float, timeout_s: float) -> Tuple[Optional[Miss], bool]:
        """Return ``(why there is no match, whether to keep waiting)``; the match is absent."""
        label = 'depth' if self.name == DEPTH else 'camera_info'
        absent = 'no depth image' if self.name == DEPTH else 'no camera_info'
        silent = self.silent_for(now, started_s)
        if self.last_arrival_s is None and self.publishers == 0:
            return Miss(absent, f'no {label} received and no publisher of it', 'none'), False
        if silent >= timeout_s:
            what = ('never published' if self.last_arrival_s is None
                    else f'silent for {silent:.1f} s')
            return Miss(absent, f'the {label} stream is {what} '
                        f'({self.publishers} publisher(s))', 'absent'), False
        newest = max(self.buffer, key=lambda e: e.stamp_s, default=None)
        if newest is not None and self.buffer[-1].ahead_s:
            return Miss(f'{label} stamp mismatch',
                        f'the {label} is stamped {self.buffer[-1].ahead_s:.3f} s ahead of '
                        "this node's clock when it arrives", 'mismatch'), False
        if newest is not None:
            nearest = min(self.buffer, key=lambda e: abs(e.stamp_s - image.stamp_s))
            offset = nearest.stamp_s - image.stamp_s
            if (newest.stamp_s > image.stamp_s + tolerance_s
                    or newest.stamp_s < image.stamp_s - FAR_BEHIND_S):
                return Miss(f'{label} stamp mismatch',
                            f'the nearest {label} is stamped {offset:+.3f} s from the image '
                            f'(sync_tolerance_s={tolerance_s:g})', 'mismatch'), False
        if now < image.arrival_s + wait_s:
            return None, True
        behind = (f'; the newest is stamped {newest.stamp_s - image.stamp_s:+.3f} s from the '
                  'image' if newest is not None else '')
        return Miss(f'{label} late', f'no {label} within sync_tolerance_s={tolerance_s:g} s '
                    f'of the image stamp arrived within sync_wait_s={wait_s:g} s{behind}',
                    'late'), False


class FrameSynchronizer:
    """Matches images with depth and camera info by stamp; see the module docstring.

    Not thread-safe: the caller serialises the calls (the node holds one lock).

    Args:
        tolerance_s: largest stamp difference (s) of a match.
        wait_s: longest wait (s) for a missing match, from the image's arrival.
        stream_timeout_s: a stream with no message for this long (s) is given up.
        image_buffer: most images kept waiting; the oldest is dropped beyond.
        stream_buffer: recent messages kept per stream for matching.
        clock: monotonic time in seconds.
        stamp_clock: the time stamps are compared with (s; the node's ROS clock), to
            reject depth and camera info stamped in the future; ``None``: no such check.

    """

    def __init__(self, *, tolerance_s: float = 0.02, wait_s: float = 0.1,
                 stream_timeout_s: float = 1.0, image_buffer: int = 16, stream_buffer: int = 30,
                 clock: Callable[[], float] = time.monotonic,
                 stamp_clock: Optional[Callable[[], float]] = None):
        if image_buffer < 1 or stream_buffer < 1:
            raise ValueError(f'image_buffer and stream_buffer must be at least 1, got '
                             f'{image_buffer} and {stream_buffer}')
        self.tolerance_s = tolerance_s
        self.wait_s = wait_s
        self.stream_timeout_s = stream_timeout_s
        self.clock = clock
        self.stamp_clock = stamp_clock
        self._images: Deque[_Entry] = collections.deque()
        self._image_buffer = image_buffer
        self._depth = _Stream(DEPTH, stream_buffer)
        self._info = _Stream(CAMERA_INFO, stream_buffer)
        self._started_s: Optional[float] = None
        self._newest_image_stamp: Optional[float] = None
        self._reset_pending = False
        self.time_jumps = 0

    # ------------------------------------------------------------------ input
    def add_image(self, msg: Any, stamp_s: float) -> int:
        """Buffer an image; return how many older images were dropped to make room."""
        now = self.clock()
        if self._started_s is None:
            self._started_s = now
        dropped = 0
        if (self._newest_image_stamp is not None
                and stamp_s < self._newest_image_stamp - JUMP_BACK_S):
            # A new run of the stamps: what is buffered belongs to the previous one.
            self.time_jumps += 1
            self._reset_pending = True
            kept = [e for e in self._images if e.stamp_s <= stamp_s + JUMP_BACK_S]
            dropped += len(self._images) - len(kept)
            self._images = collections.deque(kept)
            self._depth.forget_after(stamp_s)
            self._info.forget_after(stamp_s)
            self._newest_image_stamp = stamp_s
        self._newest_image_stamp = max(stamp_s, self._newest_image_stamp
                                       if self._newest_image_stamp is not None else stamp_s)
        self._images.append(_Entry(msg, stamp_s, now))
        while len(self._images) > self._image_buffer:
            self._images.popleft()
            dropped += 1
        return dropped

    def add_depth(self, msg: Any, stamp_s: float) -> None:
        """Buffer a depth image for matching."""
        self._depth.add(self._entry(msg, stamp_s))

    def add_info(self, msg: Any, stamp_s: float) -> None:
        """Buffer a camera info for matching."""
        self._info.add(self._entry(msg, stamp_s))

    def _entry(self, msg: Any, stamp_s: float) -> _Entry:
        now = self.stamp_clock() if self.stamp_clock is not None else 0.0
        # A clock at 0 has no time yet (use_sim_time before the first /clock): no check.
        ahead = stamp_s - now if now > 0.0 else 0.0
        return _Entry(msg, stamp_s, self.clock(), ahead if ahead > FUTURE_STAMP_S else 0.0)

    def set_publishers(self, depth: int, info: int) -> None:
        """Tell how many publishers the depth and camera-info topics have (graph state)."""
        self._depth.publishers = depth
        self._info.publishers = info

    @property
    def pending(self) -> int:
        """Images buffered and not handed out yet."""
        return len(self._images)

    def clear(self) -> List[Any]:
        """Forget the buffered images (on shutdown); return them."""
        images = [e.msg for e in self._images]
        self._images.clear()
        return images

    # ------------------------------------------------------------------ output
    def poll(self) -> Tuple[Optional[SyncedFrame], Optional[float]]:
        """Take the newest ready frame.

        Returns:
            ``(frame, None)`` when one is ready; else ``(None, seconds)``: call again after
            at most that long (sooner when a message arrives), or ``(None, None)`` when no
            image is buffered.

        """
        if not self._images:
            return None, None
        now = self.clock()
        started = self._started_s if self._started_s is not None else now
        next_deadline = None
        for index in range(len(self._images) - 1, -1, -1):
            image = self._images[index]
            found, waiting = {}, False
            for stream in (self._depth, self._info):
                entry = stream.match(image.stamp_s, self.tolerance_s)
                if entry is not None:
                    found[stream.name] = (entry.msg, None)
                    continue
                miss, wait = stream.miss(image, now, started, self.tolerance_s, self.wait_s,
                                         self.stream_timeout_s)
                waiting = waiting or wait
                found[stream.name] = (None, miss)
            if waiting:
                deadline = image.arrival_s + self.wait_s
                if next_deadline is None or deadline < next_deadline:
                    next_deadline = deadline
                continue
            for _ in range(index + 1):  # this image and the older ones
                self._images.popleft()
            reset, self._reset_pending = self._reset_pending, False
            (depth, depth_miss), (info, info_miss) = found[DEPTH], found[CAMERA_INFO]
            return SyncedFrame(image.msg, image.stamp_s, image.arrival_s, depth, info,
                               depth_miss, info_miss, index, reset), None
        # A stream given up after a timeout changes the answer too: poll at least that often.
        return None, max(0.0, min(next_deadline - now, self.stream_timeout_s))
