"""Replay a directory of colour, depth and intrinsics files as camera topics.

Publishes ``image`` (``rgb8``), ``depth`` (``16UC1`` millimetres or ``32FC1`` metres, when
the directory has depth) and ``camera_info``, all three with the same stamp (the time of
publishing) and ``frame_id``, with sensor-data QoS (best effort, keep last 5), so the
perception node sees what a camera driver would send. The directory format is described
in :mod:`zs_perception.replay_directory` and docs/replay.md.

Run it with ``ros2 run zs_perception zs_perception_replay --ros-args -p directory:=DIR``.
"""

from typing import Dict, Optional, Tuple

from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from zs_perception.geometry import CameraIntrinsics
from zs_perception.geometry.depth import DEPTH_ENCODINGS as _DEPTH_ENCODINGS
from zs_perception.replay_directory import depth_to_millimetres, ReplayDirectory
from zs_perception.ros.conversions import array_to_image
from zs_perception.ros.process import run_node

DEFAULT_FRAME_ID = 'camera_color_optical_frame'
# The depth encodings published (mono16 is only an alias of 16UC1 some drivers use).
DEPTH_ENCODINGS = tuple(e for e in _DEPTH_ENCODINGS if e != 'mono16')


class ReplayPublisher(Node):
    """A node that plays a replay directory as ``image``, ``depth`` and ``camera_info``.

    Parameters (read-only): ``directory`` (str, required), ``rate_hz`` (float, frames per
    second, default 5.0), ``loop`` (bool, start again after the last frame, default
    true), ``frame_id`` (str, default ``camera_color_optical_frame``), ``depth_encoding``
    (``16UC1``: uint16 mm, the default; ``32FC1``: float32 m), ``cache_frames`` (bool,
    keep decoded frames in memory, default true; set false for long recordings).

    With ``autostart=False`` no timer runs; call :meth:`publish_next` to publish frames
    one at a time (the demo does this to wait for each result).
    """

    def __init__(self, *, autostart: bool = True, **kwargs):
        """Create the node; ``kwargs`` go to ``rclpy.node.Node`` (context, namespace, ...).

        Raises:
            ValueError: ``directory`` is empty, or a parameter is out of range.
            FileNotFoundError: the directory or its files are missing (see
                :class:`zs_perception.replay_directory.ReplayDirectory`).

        """
        super().__init__('zs_replay', **kwargs)
        read_only = {'read_only': True}
        directory = self.declare_parameter(
            'directory', '', ParameterDescriptor(
                description='Replay directory: colour images, optional depth images and '
                            'camera_info.json (see docs/replay.md).', **read_only)).value
        self._rate_hz = self.declare_parameter(
            'rate_hz', 5.0, ParameterDescriptor(
                description='Frames published per second.',
                floating_point_range=[FloatingPointRange(from_value=0.01, to_value=1000.0)],
                **read_only)).value
        self._loop = self.declare_parameter(
            'loop', True, ParameterDescriptor(
                description='Start again from the first frame after the last one.',
                **read_only)).value
        self._frame_id = self.declare_parameter(
            'frame_id', DEFAULT_FRAME_ID, ParameterDescriptor(
                description='frame_id of every published header (the camera optical frame).',
                **read_only)).value
        self._depth_encoding = self.declare_parameter(
            'depth_encoding', DEPTH_ENCODINGS[0], ParameterDescriptor(
                description='Depth image encoding: 16UC1 (uint16 mm) or 32FC1 (float32 m).',
                **read_only)).value
        self._cache_frames = self.declare_parameter(
            'cache_frames', True, ParameterDescriptor(
                description='Keep decoded frames in memory (false for long recordings).',
                **read_only)).value
        if not directory:
            raise ValueError(
                'zs_replay: parameter directory is empty; pass the replay directory with '
                '--ros-args -p directory:=DIR (make one with python -m '
                'zs_perception.tools.make_demo_scene DIR).')
        if self._depth_encoding not in DEPTH_ENCODINGS:
            raise ValueError(
                f'zs_replay: depth_encoding must be one of {", ".join(DEPTH_ENCODINGS)}, got '
                f'{self._depth_encoding!r}.')
        self.replay = ReplayDirectory(directory)
        self._info = _camera_info(self.replay.intrinsics)
        self._cache: Dict[int, Tuple[Image, Optional[Image]]] = {}
        self._image_pub = self.create_publisher(Image, 'image', qos_profile_sensor_data)
        self._depth_pub = (self.create_publisher(Image, 'depth', qos_profile_sensor_data)
                           if self.replay.has_depth else None)
        self._info_pub = self.create_publisher(CameraInfo, 'camera_info',
                                               qos_profile_sensor_data)
        self._next_index = 0
        self.frames_published = 0
        self._timer = None
        self.get_logger().info(
            f'Replaying {len(self.replay)} frames from {str(self.replay.directory)!r} '
            f'({"with" if self.replay.has_depth else "without"} depth) at {self._rate_hz} Hz'
            f'{", looping" if self._loop else ""}.')
        if autostart:
            self.start()

    @property
    def finished(self) -> bool:
        """True after the last frame was published when ``loop`` is false."""
        return not self._loop and self._next_index >= len(self.replay)

    def subscription_counts(self) -> Dict[str, int]:
        """Return ``{topic: number of matched subscriptions}`` of each published topic."""
        publishers = [self._image_pub, self._info_pub] + (
            [self._depth_pub] if self._depth_pub is not None else [])
        return {p.topic_name: p.get_subscription_count() for p in publishers}

    def start(self) -> None:
        """Start publishing at ``rate_hz`` (no-op when already started)."""
        if self._timer is None:
            self._timer = self.create_timer(1.0 / self._rate_hz, self._on_timer)

    def publish_next(self) -> Optional[Header]:
        """Publish the next frame now, stamped with the current time.

        Returns:
            The header the frame was published with, or ``None`` when the replay is
            finished (``loop`` false and every frame played).

        """
        if self.finished:
            return None
        index = self._next_index % len(self.replay)
        self._next_index = index + 1
        image, depth = self._messages(index)
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self._frame_id)
        image.header = header
        self._info.header = header
        self._image_pub.publish(image)
        if depth is not None:
            depth.header = header
            self._depth_pub.publish(depth)
        self._info_pub.publish(self._info)
        self.frames_published += 1
        return header

    def _on_timer(self) -> None:
        if self.publish_next() is None:
            self._timer.cancel()
            self.get_logger().info(f'Replay finished after {self.frames_published} frames.')

    def _messages(self, index: int) -> Tuple[Image, Optional[Image]]:
        if index in self._cache:
            return self._cache[index]
        frame = self.replay.load(index)
        header = Header(frame_id=self._frame_id)
        image = array_to_image(frame.rgb, 'rgb8', header)
        depth = None
        if frame.depth_m is not None:
            if self._depth_encoding == '16UC1':
                depth = array_to_image(depth_to_millimetres(frame.depth_m), '16UC1', header)
            else:
                depth = array_to_image(frame.depth_m, '32FC1', header)
        if self._cache_frames:
            self._cache[index] = (image, depth)
        return image, depth


def _camera_info(intrinsics: CameraIntrinsics) -> CameraInfo:
    """Build a CameraInfo for an undistorted pinhole camera (rectified = raw)."""
    fx, fy, cx, cy = intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy
    info = CameraInfo()
    info.width, info.height = intrinsics.width, intrinsics.height
    info.distortion_model = 'plumb_bob'
    info.d = [0.0] * 5
    info.k = [fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def main(args=None) -> int:
    """Run the replay publisher until it finishes or a signal stops it; return the exit status."""
    return run_node(ReplayPublisher, 'zs_replay', fatal=(FileNotFoundError, ValueError),
                    done=lambda node: node.finished, args=args)
