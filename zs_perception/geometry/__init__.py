"""ROS-free 3D geometry: instance masks + depth + pinhole intrinsics -> object poses and points.

How a pose is computed: :mod:`zs_perception.geometry.pose`. Intrinsics:
:mod:`zs_perception.geometry.camera`. Depth units: :mod:`zs_perception.geometry.depth`.
Obstacle cloud: :mod:`zs_perception.geometry.cloud`.
"""

from zs_perception.geometry._kernel_cache import invalidate_stale_kernels

invalidate_stale_kernels()  # before any kernel module is imported

from zs_perception.geometry.camera import CameraIntrinsics  # noqa: E402,I100
from zs_perception.geometry.cloud import obstacle_cloud  # noqa: E402
from zs_perception.geometry.depth import depth_to_metres  # noqa: E402
from zs_perception.geometry.pose import estimate_object_geometry, ObjectGeometry  # noqa: E402
from zs_perception.geometry.pose import rotation_to_quaternion  # noqa: E402

__all__ = ['CameraIntrinsics', 'ObjectGeometry', 'depth_to_metres', 'estimate_object_geometry',
           'obstacle_cloud', 'rotation_to_quaternion']
