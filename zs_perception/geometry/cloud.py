"""One obstacle point cloud for all objects, with the object index of every point."""

from typing import Sequence, Tuple

import numpy as np

from zs_perception.geometry.pose import ObjectGeometry


def obstacle_cloud(geometries: Sequence[ObjectGeometry]) -> Tuple[np.ndarray, np.ndarray]:
    """Concatenate the objects' points into one cloud.

    Every object contributes its kept points, with or without a pose (a few points are
    still an obstacle).

    Returns:
        ``(points, object_index)``: ``(M, 3)`` ``float32`` metres in the camera optical frame
        and ``(M,)`` ``uint32`` where ``object_index[i] == k`` means point ``i`` belongs to
        ``geometries[k]``.

    """
    if not geometries:
        return np.zeros((0, 3), np.float32), np.zeros(0, np.uint32)
    points = np.concatenate([g.points for g in geometries], axis=0)
    points = points.astype(np.float32, copy=False)
    index = np.repeat(np.arange(len(geometries), dtype=np.uint32),
                      [len(g.points) for g in geometries])
    return points, index
