"""Where the node's outputs are expressed: the camera frame, or ``target_frame``.

* ``target_frame`` empty: the outputs keep the source image's frame (the camera optical
  frame), as before.
* ``target_frame`` and ``target_transform`` ("x y z qx qy qz qw", the camera optical frame's
  pose in the target frame): that fixed transform, for any image frame; no tf needed.
* ``target_frame`` alone: tf2 (``tf2_ros``, an apt ROS install) looks the transform up at
  each image's stamp, waiting at most ``tf_timeout_s``. Without ``tf2_ros`` the node does
  not start and says to set ``target_transform``.

When no transform can be found the objects are published in the target frame without
poses, ``pose_status`` saying why (docs/frames.md). The math is in
:mod:`zs_perception.geometry.transform`.
"""

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from zs_perception.geometry.transform import RigidTransform


def tf2_available() -> bool:
    """Tell whether ``tf2_ros`` imports (apt ROS 2; there is no PyPI wheel of it)."""
    try:
        import tf2_ros  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Resolution:
    """The frame one image's outputs are published in.

    Attributes:
        frame_id: ``header.frame_id`` of objects, poses, markers and points.
        transform: source frame -> ``frame_id``; ``None`` when none was found.
        reason: why there is no transform (``pose_status`` of the objects), else ``''``.

    """

    frame_id: str
    transform: Optional[RigidTransform]
    reason: str = ''


class TargetFrame:
    """Find the transform from an image's frame into ``target_frame``.

    Args:
        node: the node (tf2 listens with it).
        settings: the node's validated settings (``target_frame``, ``target_transform``,
            ``tf_timeout_s``).

    Raises:
        ValueError: ``target_frame`` is set, ``target_transform`` is empty and tf2_ros does
            not import.

    """

    def __init__(self, node, settings: Mapping[str, Any]):
        self.frame = settings['target_frame']
        self._timeout_s = settings['tf_timeout_s']
        self._static: Optional[RigidTransform] = None
        self._buffer = self._listener = None
        if not self.frame:
            self.mode = 'camera frame'
        elif settings['target_transform']:
            self._static = RigidTransform.parse(settings['target_transform'])
            self.mode = f'{self.frame} (static target_transform)'
        elif tf2_available():
            import tf2_ros
            self._buffer = tf2_ros.Buffer(node=node)
            self._listener = tf2_ros.TransformListener(self._buffer, node)
            self.mode = f'{self.frame} (tf2)'
        else:
            raise ValueError(
                f'target_frame is {self.frame!r} but tf2_ros is not installed (it comes with '
                'an apt ROS 2 install: ros-jazzy-tf2-ros) and target_transform is empty; '
                "install tf2_ros, or set target_transform to the camera's pose in "
                f'{self.frame}: "x y z qx qy qz qw" (m, quaternion), or clear target_frame.')

    def resolve(self, source_frame: str, stamp) -> Resolution:
        """Return the frame and transform for an image of ``source_frame`` at ``stamp``.

        Args:
            source_frame: the image's ``header.frame_id``.
            stamp: the image's ``builtin_interfaces/Time`` stamp.

        """
        if not self.frame:
            return Resolution(source_frame, None)
        if self._static is not None:
            return Resolution(self.frame, self._static)
        if not source_frame:
            return Resolution(self.frame, None, f'no transform to {self.frame}: the image has '
                              'no frame_id')
        import rclpy.duration
        import rclpy.time
        import tf2_ros
        try:
            found = self._buffer.lookup_transform(
                self.frame, source_frame, rclpy.time.Time.from_msg(stamp),
                timeout=rclpy.duration.Duration(seconds=self._timeout_s))
        except tf2_ros.TransformException as err:
            return Resolution(self.frame, None, f'no transform {source_frame} -> '
                              f'{self.frame} at the image stamp: {type(err).__name__}: {err}')
        t, q = found.transform.translation, found.transform.rotation
        return Resolution(self.frame, RigidTransform.from_parts((t.x, t.y, t.z),
                                                                (q.x, q.y, q.z, q.w)))
