"""One FindObjects query: consecutive-frame agreement, a minimum score, a timeout. No ROS.

A :class:`FindQuery` is fed the outcome of every processed frame (:meth:`FindQuery.frame`)
and asked for a verdict on the clock (:meth:`FindQuery.check`). A prompt (label) is
confirmed once it has been seen in ``consecutive_frames`` processed frames in a row with a
score of at least ``min_score`` (and a 3D pose when ``pose_required``). The query ends:

- ``found``: every prompt confirmed (as soon as the last one is);
- at the timeout: ``partial`` (some confirmed), ``no_camera`` (no frame was processed),
  ``no_depth`` (a pose was required and no frame had depth and camera info), else
  ``not_found``;
- ``cancelled`` through :meth:`FindQuery.cancel`.

Candidates carry an opaque ``payload`` (the ROS node puts its ``SegmentedObject`` there)
that the verdict hands back; times are seconds on the caller's clock.
"""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

FOUND = 'found'
PARTIAL = 'partial'
NOT_FOUND = 'not_found'
NO_CAMERA = 'no_camera'
NO_DEPTH = 'no_depth'
CANCELLED = 'cancelled'
INVALID = 'invalid'
ABORTED = 'aborted'
STATUSES = (FOUND, PARTIAL, NOT_FOUND, NO_CAMERA, NO_DEPTH, CANCELLED, INVALID, ABORTED)


@dataclass
class Candidate:
    """One object of one processed frame, as the query sees it.

    Attributes:
        label: the prompt label it matched.
        score: its score in ``[0, 1]``.
        has_pose: it has a 3D pose.
        payload: anything the caller wants back in the verdict (a message).

    """

    label: str
    score: float
    has_pose: bool
    payload: Any = None


@dataclass
class Verdict:
    """How a query ended.

    Attributes:
        status: one of :data:`STATUSES`.
        reason: one sentence saying what happened.
        confirmed: the newest qualifying candidate of each confirmed label, in prompt order.
        stamp_s: the newest stamp (s) among the frames of ``confirmed`` (else the last
            frame's stamp, else ``None``).
        frames: processed frames looked at.

    """

    status: str
    reason: str
    confirmed: List[Candidate] = field(default_factory=list)
    stamp_s: Optional[float] = None
    frames: int = 0


class FindQuery:
    """The state of one query (one thread at a time; the caller locks).

    Args:
        labels: the prompt labels looked for (at least one), in order.
        started_s: when the query started (s, the caller's clock).
        timeout_s: how long it may run (s, > 0).
        min_score: lowest score that counts, in ``[0, 1]``.
        pose_required: only candidates with a pose count.
        consecutive_frames: frames in a row a label must qualify in (>= 1).

    Raises:
        ValueError: no label, or a value out of range (the message names it).

    """

    def __init__(self, labels: Sequence[str], started_s: float, timeout_s: float,
                 min_score: float = 0.0, pose_required: bool = False,
                 consecutive_frames: int = 1):
        labels = list(dict.fromkeys(str(label) for label in labels))
        if not labels:
            raise ValueError('the goal has no prompt: give phrases (e.g. "red mug") and/or '
                             'example-image prompts')
        if not timeout_s > 0.0:
            raise ValueError(f'timeout_s must be > 0 s, got {timeout_s}')
        if not 0.0 <= min_score <= 1.0:
            raise ValueError(f'min_score must be in [0, 1], got {min_score}')
        if consecutive_frames < 1:
            raise ValueError(f'consecutive_frames must be >= 1, got {consecutive_frames}')
        self.labels = labels
        self.started_s = started_s
        self.deadline_s = started_s + timeout_s
        self.timeout_s = timeout_s
        self.min_score = min_score
        self.pose_required = pose_required
        self.consecutive_frames = consecutive_frames
        self.frames = 0
        self.frames_with_depth = 0
        self.streak: Dict[str, int] = dict.fromkeys(labels, 0)
        self.best: Dict[str, Candidate] = {}
        self._latest: Dict[str, tuple] = {}  # label -> (candidate, stamp) when confirmed
        self._last_stamp: Optional[float] = None
        self.verdict: Optional[Verdict] = None

    @property
    def confirmed_labels(self) -> List[str]:
        """Return the labels confirmed so far, in prompt order."""
        return [label for label in self.labels if label in self._latest]

    def qualifies(self, candidate: Candidate) -> bool:
        """Tell whether a candidate counts towards its label's streak."""
        return (candidate.score >= self.min_score
                and (candidate.has_pose or not self.pose_required))

    def frame(self, candidates: Sequence[Candidate], stamp_s: float, has_depth: bool,
              now_s: float) -> Optional[Verdict]:
        """Take one processed frame's objects; return the verdict if the query ends now.

        Args:
            candidates: every object of the frame (any label).
            stamp_s: the frame's stamp (s).
            has_depth: the frame had a matching depth image and camera info.
            now_s: the current time (s).

        """
        if self.verdict is not None:
            return self.verdict
        self.frames += 1
        self.frames_with_depth += bool(has_depth)
        self._last_stamp = stamp_s
        seen: Dict[str, Candidate] = {}
        for candidate in candidates:
            if candidate.label not in self.streak:
                continue
            best = self.best.get(candidate.label)
            if best is None or candidate.score > best.score:
                self.best[candidate.label] = candidate
            if self.qualifies(candidate) and (candidate.label not in seen
                                              or candidate.score > seen[candidate.label].score):
                seen[candidate.label] = candidate
        for label in self.labels:
            self.streak[label] = self.streak[label] + 1 if label in seen else 0
            if label in seen and (label in self._latest
                                  or self.streak[label] >= self.consecutive_frames):
                self._latest[label] = (seen[label], stamp_s)
        if len(self._latest) == len(self.labels):
            return self.end(FOUND, f'found {self._names(self.labels)} in '
                            f'{self.consecutive_frames} consecutive frame'
                            f'{"s" if self.consecutive_frames > 1 else ""} after '
                            f'{now_s - self.started_s:.2f} s ({self.frames} frames looked at)')
        return self.check(now_s)

    def check(self, now_s: float) -> Optional[Verdict]:
        """Return the verdict if the timeout has passed at ``now_s`` (else ``None``)."""
        if self.verdict is not None or now_s < self.deadline_s:
            return self.verdict
        within = f'within {self.timeout_s:g} s'
        if self.frames == 0:
            return self.end(NO_CAMERA, f'no camera frame was processed {within}: check that '
                            'the image topic is published and remapped, and that the node '
                            'is active')
        if self.pose_required and self.frames_with_depth == 0:
            return self.end(NO_DEPTH, f'a pose was required but none of the {self.frames} '
                            f'frames {within} had a matching depth image and camera_info: '
                            'check the depth and camera_info topics')
        missing = [label for label in self.labels if label not in self._latest]
        if self._latest:
            return self.end(PARTIAL, f'found {self._names(self.confirmed_labels)}; '
                            f'{self._names(missing)} not confirmed {within} '
                            f'({self.frames} frames)' + self._why(missing))
        return self.end(NOT_FOUND, f'{self._names(missing)} not confirmed {within} '
                        f'({self.frames} frames)' + self._why(missing))

    def cancel(self) -> Verdict:
        """End the query as cancelled (keeps what was confirmed so far)."""
        return self.end(CANCELLED, f'cancelled after {self.frames} frames')

    def abort(self, reason: str) -> Verdict:
        """End the query because the node cannot go on (stopping, deactivated)."""
        return self.end(ABORTED, reason)

    def _why(self, missing: Sequence[str]) -> str:
        """Say, for unconfirmed labels, what the best candidate lacked."""
        notes = []
        for label in missing:
            best = self.best.get(label)
            if best is None:
                notes.append(f'{label!r} never seen')
            elif best.score < self.min_score:
                notes.append(f'{label!r} best score {best.score:.2f} < min_score '
                             f'{self.min_score:.2f}')
            elif self.pose_required and not best.has_pose:
                notes.append(f'{label!r} seen without a pose')
            else:
                notes.append(f'{label!r} seen in fewer than {self.consecutive_frames} '
                             'consecutive frames')
        return ': ' + '; '.join(notes)

    @staticmethod
    def _names(labels: Sequence[str]) -> str:
        return ', '.join(repr(label) for label in labels)

    def end(self, status: str, reason: str) -> Verdict:
        """End the query with ``status`` and ``reason`` (the first end wins)."""
        if self.verdict is None:
            confirmed = [self._latest[label] for label in self.confirmed_labels]
            stamps = [stamp for _, stamp in confirmed]
            self.verdict = Verdict(status, reason[0].upper() + reason[1:] + '.',
                                   [c for c, _ in confirmed],
                                   max(stamps) if stamps else self._last_stamp, self.frames)
        return self.verdict
