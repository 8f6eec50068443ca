"""Track ids: give an object the same id in consecutive frames while it stays in view.

Each frame's objects are matched to the live tracks with the same label, by mask
overlap (intersection over union on a downsampled grid) or, for objects with a
3D position, by distance. Matching is greedy, best pair first: any pair above
the IoU threshold ranks above any pair matched only by distance. Unmatched
objects start new tracks; tracks unmatched for more than ``max_missed_frames``
frames are retired. Ids start at 1 and are never reused.
"""

from dataclasses import dataclass
import math
from typing import List, Optional, Sequence

import numpy as np

# Masks are compared on a grid of at most about this many cells.
_IOU_GRID_CELLS = 20_000


@dataclass
class _Track:
    track_id: int
    label: str
    mask: Optional[np.ndarray]  # (h, w) bool on the downsampled grid; None after a resize
    position: Optional[np.ndarray]  # (3,) float64 metres, camera frame, or None
    missed: int = 0


class Tracker:
    """Assigns track ids to the objects found in successive frames of one camera.

    Args:
        iou_threshold: smallest mask IoU in ``[0, 1]`` for a match by overlap.
        max_distance_m: largest distance (m) between 3D positions for a match
            by distance; ``0`` disables matching by distance.
        max_missed_frames: frames a track survives without a match.

    """

    def __init__(self, iou_threshold: float = 0.3, max_distance_m: float = 0.3,
                 max_missed_frames: int = 5):
        self.iou_threshold = iou_threshold
        self.max_distance_m = max_distance_m
        self.max_missed_frames = max_missed_frames
        self._tracks: List[_Track] = []
        self._next_id = 1
        self._shape = None

    @property
    def num_tracks(self) -> int:
        """Number of live tracks (matched recently enough to be kept)."""
        return len(self._tracks)

    def update(self, masks: Sequence[np.ndarray], labels: Sequence[str],
               positions: Optional[Sequence[Optional[np.ndarray]]] = None) -> List[int]:
        """Match one frame's objects to the tracks and return their ids.

        Args:
            masks: ``N`` masks, each ``(H, W)`` ``bool``, all the same size.
            labels: ``N`` labels; only objects with the same label match.
            positions: ``N`` entries, each a ``(3,)`` position in metres in the
                camera frame or ``None`` (no pose); ``None`` for all unknown.

        Returns:
            ``N`` track ids (``int`` >= 1), in the order of ``masks``.

        Raises:
            ValueError: if the lengths differ or the masks differ in size.

        """
        n = len(masks)
        if positions is None:
            positions = [None] * n
        if len(labels) != n or len(positions) != n:
            raise ValueError(
                f'Tracker.update needs one label and one position per mask, got {n} masks, '
                f'{len(labels)} labels and {len(positions)} positions.')
        shapes = {np.shape(m) for m in masks}
        if len(shapes) > 1:
            raise ValueError(
                f'Tracker.update needs masks of one size, got sizes {sorted(shapes)}.')
        if shapes and shapes != {self._shape}:
            # A new image size: old masks cannot be compared; positions still can.
            for track in self._tracks:
                track.mask = None
            self._shape = shapes.pop()
        small = [self._downsample(m) for m in masks]
        pos = [_finite_position(p) for p in positions]

        pairs = []
        if self._tracks and n:
            iou = self._iou_matrix(small)
            for i in range(n):
                for j, track in enumerate(self._tracks):
                    if track.label != labels[i]:
                        continue
                    score = self._pair_score(iou[i, j], pos[i], track.position)
                    if score is not None:
                        pairs.append((score, i, j))
        pairs.sort(key=lambda pair: -pair[0])

        ids = [0] * n
        used_tracks = set()
        for _, i, j in pairs:
            if ids[i] or j in used_tracks:
                continue
            track = self._tracks[j]
            ids[i] = track.track_id
            used_tracks.add(j)
            track.mask, track.position, track.missed = small[i], pos[i], 0

        survivors = []
        for j, track in enumerate(self._tracks):
            if j not in used_tracks:
                track.missed += 1
            if track.missed <= self.max_missed_frames:
                survivors.append(track)
        self._tracks = survivors
        for i in range(n):
            if not ids[i]:
                ids[i] = self._next_id
                self._tracks.append(_Track(self._next_id, labels[i], small[i], pos[i]))
                self._next_id += 1
        return ids

    def reset(self) -> None:
        """Forget all tracks; ids already given out are still never reused."""
        self._tracks = []

    def _downsample(self, mask: np.ndarray) -> np.ndarray:
        h, w = mask.shape
        step = max(1, math.ceil(math.sqrt(h * w / _IOU_GRID_CELLS)))
        return np.asarray(mask[::step, ::step], dtype=bool)

    def _iou_matrix(self, small: List[np.ndarray]) -> np.ndarray:
        """Return ``(N, T)`` IoU between the new masks and the tracks' masks (0 if unknown)."""
        iou = np.zeros((len(small), len(self._tracks)))
        known = [j for j, t in enumerate(self._tracks) if t.mask is not None]
        if not known or not small:
            return iou
        a = np.stack([m.ravel() for m in small]).astype(np.float32)
        b = np.stack([self._tracks[j].mask.ravel() for j in known]).astype(np.float32)
        inter = a @ b.T
        union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
        iou[:, known] = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        return iou

    def _pair_score(self, iou: float, pos_new, pos_track) -> Optional[float]:
        """Rank a candidate pair: ``1 + IoU`` by overlap, ``1 - d / max_d`` by distance."""
        if iou > 0 and iou >= self.iou_threshold:
            return 1.0 + iou
        if self.max_distance_m > 0 and pos_new is not None and pos_track is not None:
            distance = float(np.linalg.norm(pos_new - pos_track))
            if distance <= self.max_distance_m:
                return 1.0 - distance / self.max_distance_m
        return None


def _finite_position(position) -> Optional[np.ndarray]:
    if position is None:
        return None
    p = np.asarray(position, dtype=np.float64).reshape(-1)
    if p.shape != (3,) or not np.all(np.isfinite(p)):
        return None
    return p
