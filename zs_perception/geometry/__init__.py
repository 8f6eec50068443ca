"""ROS-free 3D geometry: instance masks + depth + pinhole intrinsics -> object poses and points.

How a pose is computed: :mod:`zs_perception.geometry.pose`. Intrinsics:
:mod:`zs_perception.geometry.camera`. Depth units: :mod:`zs_perception.geometry.depth`.
Obstacle cloud: :mod:`zs_perception.geometry.cloud`.
"""

from zs_perception.geometry.camera import CameraIntrinsics
from zs_perception.geometry.cloud import obstacle_cloud
from zs_perception.geometry.depth import depth_to_metres
from zs_perception.geometry.pose import estimate_object_geometry, ObjectGeometry
from zs_perception.geometry.pose import rotation_to_quaternion

__all__ = ['CameraIntrinsics', 'ObjectGeometry', 'depth_to_metres', 'estimate_object_geometry',
           'obstacle_cloud', 'rotation_to_quaternion']
