"""Pinhole camera intrinsics: from a CameraInfo ``K`` matrix; rescaled to another resolution."""

from dataclasses import dataclass
import math
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of one image, in pixels (no distortion model).

    A pixel ``(u, v)`` (column, row; pixel centres at integer coordinates) with depth ``z``
    metres back-projects to the camera optical frame (REP-103: x right, y down, z forward) as
    ``x = (u - cx) * z / fx``, ``y = (v - cy) * z / fy``.

    Attributes:
        fx, fy: focal lengths in pixels, finite and >= 1 (under a pixel is no real camera,
            and back-projection would overflow).
        cx, cy: principal point in pixels.
        width, height: size of the image these intrinsics belong to, in pixels, > 0.

    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self):
        for name in ('fx', 'fy'):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 1.0):
                raise ValueError(
                    f'CameraIntrinsics: {name} must be a finite focal length of at least 1 '
                    f'pixel, got {value!r}. An all-zero CameraInfo.k means the camera driver '
                    'has no calibration: calibrate the camera or publish the factory '
                    'intrinsics; K is in pixels, not metres or normalised units')
        for name in ('cx', 'cy'):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(
                    f'CameraIntrinsics: {name} must be finite, got {getattr(self, name)!r}')
        for name in ('width', 'height'):
            value = getattr(self, name)
            if int(value) != value or value <= 0:
                raise ValueError(
                    f'CameraIntrinsics: {name} must be a positive integer number of pixels, '
                    f'got {value!r}. CameraInfo.width/height of 0 mean an uncalibrated '
                    'camera: pass the image size instead')

    @classmethod
    def from_k(cls, k: Sequence[float], width: int, height: int) -> 'CameraIntrinsics':
        """Build intrinsics from a row-major 3x3 ``K`` (``sensor_msgs/CameraInfo.k``).

        Args:
            k: 9 numbers ``[fx, 0, cx, 0, fy, cy, 0, 0, 1]`` (or a ``(3, 3)`` array).
            width, height: size in pixels of the image ``K`` belongs to.

        Raises:
            ValueError: ``K`` is not 9 finite numbers, has a focal length under 1
                pixel (zero, negative, NaN), or is not a pinhole matrix (bottom row
                other than ``0, 0, 1``).

        """
        arr = np.asarray(k, dtype=np.float64)
        if arr.size != 9:
            raise ValueError(
                f'CameraIntrinsics.from_k: K must have 9 elements (row-major 3x3, '
                f'CameraInfo.k), got shape {arr.shape}')
        m = arr.reshape(3, 3)
        if not np.any(m):
            raise ValueError(
                'CameraIntrinsics.from_k: K is all zeros, which means the camera driver has no '
                'calibration: calibrate the camera or publish the factory intrinsics')
        if not np.allclose(m[2], [0.0, 0.0, 1.0]):
            raise ValueError(
                f'CameraIntrinsics.from_k: the last row of K must be [0, 0, 1], got '
                f'{m[2].tolist()}. Pass CameraInfo.k (row-major), not P or a transposed K')
        return cls(fx=float(m[0, 0]), fy=float(m[1, 1]), cx=float(m[0, 2]), cy=float(m[1, 2]),
                   width=int(width), height=int(height))

    def scaled_to(self, width: int, height: int) -> 'CameraIntrinsics':
        """Return the intrinsics of the same camera at another image resolution.

        For an image resized (not cropped) from ``(self.width, self.height)`` to
        ``(width, height)``: focal lengths scale by ``width / self.width`` and
        ``height / self.height``; the principal point maps pixel centres to pixel centres,
        ``c' = (c + 0.5) * s - 0.5``.
        """
        sx = width / self.width
        sy = height / self.height
        return CameraIntrinsics(fx=self.fx * sx, fy=self.fy * sy,
                                cx=(self.cx + 0.5) * sx - 0.5, cy=(self.cy + 0.5) * sy - 0.5,
                                width=int(width), height=int(height))

    @property
    def k(self) -> np.ndarray:
        """``(3, 3)`` ``float64`` camera matrix."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])
