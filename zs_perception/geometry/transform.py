"""Rigid transforms between frames: apply to points, positions, rotations and object geometry.

A :class:`RigidTransform` maps coordinates given in a source frame into a target frame:
``p_target = R @ p_source + t``. It is what ``tf2`` returns for
``lookup_transform(target, source, stamp)``, i.e. the pose of the source frame in the
target frame, and what ``ros2 run tf2_ros static_transform_publisher --x X ... --frame-id
TARGET --child-frame-id SOURCE`` publishes. Translation in metres, quaternions ``x, y, z, w``
(ROS order), rotation matrices ``(3, 3)`` with the rotated axes as columns. No ROS here.
"""

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from zs_perception.geometry.pose import ObjectGeometry, rotation_to_quaternion

# A quaternion whose norm is farther than this from 1 is rejected rather than normalised
# silently when parsed from text (a typo, not rounding).
_QUATERNION_NORM_TOLERANCE = 1e-3


def quaternion_to_rotation(quaternion: Sequence[float]) -> np.ndarray:
    """Return the ``(3, 3)`` ``float64`` rotation matrix of a quaternion ``x, y, z, w``.

    The quaternion is normalised first.

    Raises:
        ValueError: not 4 finite numbers, or a zero quaternion.

    """
    q = np.asarray(quaternion, dtype=np.float64).reshape(-1)
    if q.shape != (4,) or not np.isfinite(q).all():
        raise ValueError(f'A quaternion is 4 finite numbers x, y, z, w; got {quaternion!r}.')
    norm = float(np.linalg.norm(q))
    if norm < 1e-12:
        raise ValueError('A quaternion of norm 0 is no rotation; expected x, y, z, w with '
                         'norm 1 (the identity is 0 0 0 1).')
    x, y, z, w = q / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


@dataclass(frozen=True)
class RigidTransform:
    """A rotation then a translation: ``p_target = rotation @ p_source + translation``.

    Attributes:
        translation: ``(3,)`` ``float64`` metres, the source origin in the target frame.
        quaternion: ``(4,)`` ``float64`` ``x, y, z, w``, unit norm, ``w >= 0``.

    """

    translation: np.ndarray
    quaternion: np.ndarray

    @classmethod
    def from_parts(cls, translation: Sequence[float],
                   quaternion: Sequence[float]) -> 'RigidTransform':
        """Build from a translation (m) and a quaternion ``x, y, z, w`` (normalised here).

        Raises:
            ValueError: not 3 finite numbers and 4 finite numbers, or a zero quaternion.

        """
        t = np.asarray(translation, dtype=np.float64).reshape(-1)
        if t.shape != (3,) or not np.isfinite(t).all():
            raise ValueError(f'A translation is 3 finite numbers x, y, z in metres; got '
                             f'{translation!r}.')
        q = rotation_to_quaternion(quaternion_to_rotation(quaternion))
        return cls(translation=t, quaternion=q)

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> 'RigidTransform':
        """Build from a ``(4, 4)`` homogeneous matrix (rotation block, translation column)."""
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (4, 4):
            raise ValueError(f'Expected a (4, 4) homogeneous matrix, got shape {m.shape}.')
        return cls(translation=m[:3, 3].copy(), quaternion=rotation_to_quaternion(m[:3, :3]))

    @classmethod
    def identity(cls) -> 'RigidTransform':
        """Return the transform that changes nothing."""
        return cls(translation=np.zeros(3), quaternion=np.array([0.0, 0.0, 0.0, 1.0]))

    @classmethod
    def parse(cls, text: str) -> 'RigidTransform':
        """Parse ``'x y z qx qy qz qw'`` (metres, then a unit quaternion; spaces or commas).

        Raises:
            ValueError: not 7 finite numbers, or a quaternion whose norm is not 1.

        """
        parts = text.replace(',', ' ').split()
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 7 or not np.isfinite(values).all():
            raise ValueError(f'expected 7 numbers "x y z qx qy qz qw" (metres, then a unit '
                             f'quaternion), got {text!r}')
        norm = float(np.linalg.norm(values[3:]))
        if abs(norm - 1.0) > _QUATERNION_NORM_TOLERANCE:
            raise ValueError(f'the quaternion {values[3:]} has norm {norm:.4f}, expected 1 '
                             '(order qx qy qz qw; the identity is 0 0 0 1)')
        return cls.from_parts(values[:3], values[3:])

    @property
    def rotation(self) -> np.ndarray:
        """``(3, 3)`` ``float64`` rotation matrix."""
        return quaternion_to_rotation(self.quaternion)

    @property
    def matrix(self) -> np.ndarray:
        """``(4, 4)`` ``float64`` homogeneous matrix."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.translation
        return m

    @property
    def is_identity(self) -> bool:
        """True when applying it changes nothing (within 1e-12)."""
        return (np.allclose(self.translation, 0.0, atol=1e-12)
                and np.allclose(self.quaternion, [0.0, 0.0, 0.0, 1.0], atol=1e-12))

    def apply_points(self, points: np.ndarray) -> np.ndarray:
        """Map ``(N, 3)`` points (m); the result has the input's float dtype (float32 stays)."""
        pts = np.asarray(points)
        if pts.ndim != 2 or pts.shape[1] != 3:
            raise ValueError(f'Expected (N, 3) points, got shape {pts.shape}.')
        dtype = pts.dtype if pts.dtype.kind == 'f' else np.float64
        out = pts.astype(np.float64) @ self.rotation.T + self.translation
        return out.astype(dtype, copy=False)

    def apply_position(self, position: Sequence[float]) -> np.ndarray:
        """Map one ``(3,)`` position (m); returns ``(3,)`` ``float64``."""
        return self.rotation @ np.asarray(position, dtype=np.float64) + self.translation

    def apply_rotation(self, rotation: np.ndarray) -> np.ndarray:
        """Map a ``(3, 3)`` orientation (axes as columns) into the target frame."""
        return self.rotation @ np.asarray(rotation, dtype=np.float64)

    def apply_quaternion(self, quaternion: Sequence[float]) -> np.ndarray:
        """Map an orientation quaternion ``x, y, z, w``; returns one with ``w >= 0``."""
        return rotation_to_quaternion(self.apply_rotation(quaternion_to_rotation(quaternion)))

    def compose(self, other: 'RigidTransform') -> 'RigidTransform':
        """Return ``self * other``: apply ``other`` first, then ``self``.

        With ``self`` = target<-middle and ``other`` = middle<-source, the result is
        target<-source.
        """
        return RigidTransform(
            translation=self.apply_position(other.translation),
            quaternion=rotation_to_quaternion(self.rotation @ other.rotation))

    def inverse(self) -> 'RigidTransform':
        """Return the transform from the target frame back to the source frame."""
        rot_t = self.rotation.T
        return RigidTransform(translation=-(rot_t @ self.translation),
                              quaternion=rotation_to_quaternion(rot_t))


def transform_geometry(geometry: ObjectGeometry, transform: RigidTransform) -> ObjectGeometry:
    """Return ``geometry`` expressed in the transform's target frame.

    Position, rotation, quaternion and the kept points are mapped; extents (lengths along
    the object's own axes), counts and status are unchanged. An object without a pose keeps
    its zero position and identity orientation (they mean nothing) but its points move.
    """
    points = transform.apply_points(geometry.points) if len(geometry.points) else geometry.points
    if not geometry.has_pose:
        return replace(geometry, points=points)
    rotation = transform.apply_rotation(geometry.rotation)
    return replace(geometry, position=transform.apply_position(geometry.position),
                   rotation=rotation, quaternion=rotation_to_quaternion(rotation),
                   points=points)
