"""Replay a directory of colour, depth and intrinsics files, or a rosbag2, as camera topics.

Publishes ``image``, ``depth`` (when the source has depth) and ``camera_info`` with
sensor-data QoS (best effort, keep last 5), so the perception node sees what a camera
driver would send.

* A replay directory (``directory``): ``rgb8`` images, ``16UC1`` millimetres or ``32FC1``
  metres, all three with the same stamp (the time of publishing) and ``frame_id``, at
  ``rate_hz``. Format: :mod:`zs_perception.replay_directory`.
* A bag (``bag``, sqlite3 or MCAP, read with ``rosbags``): the recorded messages as they
  are (recorded stamps, frame ids and encodings), each colour image with the depth image
  and camera info of its stamp, at the recorded rate times ``rate_scale``. Topics:
  ``bag_image_topic`` / ``bag_depth_topic`` / ``bag_camera_info_topic``, or found by type
  (:func:`zs_perception.bags.choose_topics`).

Run it with ``ros2 run zs_perception zs_perception_replay --ros-args -p directory:=DIR``
or ``-p bag:=BAG``; docs/replay.md.
"""

import time
from typing import Dict, Optional, Tuple

from rcl_interfaces.msg import FloatingPointRange, ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from zs_perception.bags import BagError, BagFrames, COMPRESSED_IMAGE
from zs_perception.geometry import CameraIntrinsics
from zs_perception.geometry.depth import DEPTH_ENCODINGS as _DEPTH_ENCODINGS
from zs_perception.replay_directory import depth_to_millimetres, ReplayDirectory
from zs_perception.ros.conversions import array_to_image
from zs_perception.ros.process import run_node

DEFAULT_FRAME_ID = 'camera_color_optical_frame'
# The depth encodings published (mono16 is only an alias of 16UC1 some drivers use).
DEPTH_ENCODINGS = tuple(e for e in _DEPTH_ENCODINGS if e != 'mono16')
# How often a bag replay checks whether its next frame is due (s).
_BAG_TICK_S = 0.002


class ReplayPublisher(Node):
    """A node that plays a replay directory or a bag as ``image``, ``depth``, ``camera_info``.

    Parameters (read-only): ``directory`` (str) or ``bag`` (str), exactly one; ``rate_hz``
    (float, frames per second of a directory, default 5.0), ``rate_scale`` (float, a bag's
    recorded rate times this, default 1.0), ``loop`` (bool, start again after the last
    frame, default true), ``frame_id`` (str, default ``camera_color_optical_frame``;
    directories only), ``depth_encoding`` (``16UC1``: uint16 mm, the default; ``32FC1``:
    float32 m; directories only), ``cache_frames`` (bool, keep decoded frames in memory,
    default true; set false for long recordings), ``bag_image_topic``,
    ``bag_depth_topic``, ``bag_camera_info_topic`` (str, the bag's topics; empty: found by
    type).

    With ``autostart=False`` no timer runs; call :meth:`publish_next` to publish frames
    one at a time (the demo does this to wait for each result).
    """

    def __init__(self, *, autostart: bool = True, **kwargs):
        """Create the node; ``kwargs`` go to ``rclpy.node.Node`` (context, namespace, ...).

        Raises:
            ValueError: neither or both of ``directory`` and ``bag`` given, a parameter is
                out of range, or the bag cannot be read
                (:class:`zs_perception.bags.BagError`).
            FileNotFoundError: the directory, the bag or their files are missing (see
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
        bag = self.declare_parameter(
            'bag', '', ParameterDescriptor(
                description='rosbag2 to play instead of a directory: its directory (with '
                            'metadata.yaml) or an .mcap / .db3 file (see docs/replay.md).',
                **read_only)).value
        self._rate_scale = self.declare_parameter(
            'rate_scale', 1.0, ParameterDescriptor(
                description="A bag's recorded rate is multiplied by this (2.0: twice as fast).",
                floating_point_range=[FloatingPointRange(from_value=0.01, to_value=1000.0)],
                **read_only)).value
        topics = {role: self.declare_parameter(
            f'bag_{role}_topic', '', ParameterDescriptor(
                description=f'The bag topic played as {role}; empty: found by type.',
                **read_only)).value for role in ('image', 'depth', 'camera_info')}
        if bool(directory) == bool(bag):
            raise ValueError(
                'zs_replay: give exactly one of the parameters directory and bag (got '
                f'directory={directory!r}, bag={bag!r}): --ros-args -p directory:=DIR (make '
                'one with python -m zs_perception.tools.make_demo_scene DIR) or -p bag:=BAG.')
        if self._depth_encoding not in DEPTH_ENCODINGS:
            raise ValueError(
                f'zs_replay: depth_encoding must be one of {", ".join(DEPTH_ENCODINGS)}, got '
                f'{self._depth_encoding!r}.')
        self.replay: Optional[ReplayDirectory] = None
        self.bag: Optional[BagFrames] = None
        if directory:
            self.replay = ReplayDirectory(directory)
            self._info = _camera_info(self.replay.intrinsics)
            has_depth, source = self.replay.has_depth, str(self.replay.directory)
            color_type = Image
        else:
            try:
                self.bag = BagFrames(bag, image_topic=topics['image'],
                                     depth_topic=topics['depth'],
                                     camera_info_topic=topics['camera_info'])
            except BagError as err:
                raise ValueError(f'zs_replay: {err}') from None
            if not len(self.bag):
                raise ValueError(f'zs_replay: the bag {bag!r} has no message on '
                                 f'{self.bag.topics["image"]}.')
            has_depth, source = self.bag.has_depth, str(self.bag.path)
            color_type = (CompressedImage if self.bag.frames[0].image_type == COMPRESSED_IMAGE
                          else Image)
        self._cache: Dict[int, Tuple[Image, Optional[Image], Optional[CameraInfo]]] = {}
        image_topic = 'image/compressed' if color_type is CompressedImage else 'image'
        self._image_pub = self.create_publisher(color_type, image_topic,
                                                qos_profile_sensor_data)
        self._depth_pub = (self.create_publisher(Image, 'depth', qos_profile_sensor_data)
                           if has_depth else None)
        self._info_pub = self.create_publisher(CameraInfo, 'camera_info',
                                               qos_profile_sensor_data)
        self._next_index = 0
        self.frames_published = 0
        self._timer = None
        self._bag_clock: Optional[Tuple[float, int]] = None  # (monotonic s, log time ns)
        if self.bag is None:
            rate = f'{self._rate_hz} Hz'
        else:
            rate = f'{self._rate_scale}x the recorded rate, recorded stamps'
            source += ' (' + ', '.join(f'{role} {topic}' for role, topic
                                       in self.bag.topics.items() if topic) + ')'
        self.get_logger().info(
            f'Replaying {len(self)} frames from {source!r} '
            f'({"with" if has_depth else "without"} depth) at {rate}'
            f'{", looping" if self._loop else ""}.')
        if autostart:
            self.start()

    def __len__(self) -> int:
        """Return the number of frames of the directory or bag."""
        return len(self.replay) if self.replay is not None else len(self.bag)

    def frame_name(self, index: int) -> str:
        """Name frame ``index``: the colour file's name, or ``topic@stamp_ns`` of a bag."""
        if self.replay is not None:
            return self.replay.color_paths[index].name
        return f'{self.bag.topics["image"]}@{self.bag.frames[index].stamp_ns}'

    @property
    def finished(self) -> bool:
        """True after the last frame was published when ``loop`` is false."""
        return not self._loop and self._next_index >= len(self)

    def subscription_counts(self) -> Dict[str, int]:
        """Return ``{topic: number of matched subscriptions}`` of each published topic."""
        publishers = [self._image_pub, self._info_pub] + (
            [self._depth_pub] if self._depth_pub is not None else [])
        return {p.topic_name: p.get_subscription_count() for p in publishers}

    def start(self) -> None:
        """Start publishing at ``rate_hz`` (no-op when already started)."""
        if self._timer is None:
            period = 1.0 / self._rate_hz if self.bag is None else _BAG_TICK_S
            self._timer = self.create_timer(period, self._on_timer)

    def publish_next(self) -> Optional[Header]:
        """Publish the next frame now (directory: stamped now; bag: its recorded stamp).

        Returns:
            The header the frame was published with, or ``None`` when the replay is
            finished (``loop`` false and every frame played).

        """
        if self.finished:
            return None
        index = self._next_index % len(self)
        self._next_index = index + 1
        image, depth, info = self._messages(index)
        if self.replay is not None:
            header = Header(stamp=self.get_clock().now().to_msg(), frame_id=self._frame_id)
            image.header = header
            info.header = header
            if depth is not None:
                depth.header = header
        self._image_pub.publish(image)
        if depth is not None:
            self._depth_pub.publish(depth)
        if info is not None:
            self._info_pub.publish(info)
        self.frames_published += 1
        return image.header

    def _on_timer(self) -> None:
        if self.bag is not None and not self._bag_frame_due():
            return
        if self.publish_next() is None:
            self._timer.cancel()
            self.get_logger().info(f'Replay finished after {self.frames_published} frames.')

    def _bag_frame_due(self) -> bool:
        """Tell whether the next bag frame's recorded time (scaled) has come."""
        if self.finished:
            return True
        now = time.monotonic()
        log_ns = self.bag.frames[self._next_index % len(self)].log_time_ns
        if self._bag_clock is None or self._next_index % len(self) == 0:
            self._bag_clock = (now, log_ns)  # the first frame (of each loop) is due now
            return True
        started, first_ns = self._bag_clock
        return now - started >= (log_ns - first_ns) * 1e-9 / self._rate_scale

    def _messages(self, index: int) -> Tuple[Image, Optional[Image], Optional[CameraInfo]]:
        if index in self._cache:
            return self._cache[index]
        if self.bag is not None:
            return self._bag_messages(index)
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
            self._cache[index] = (image, depth, self._info)
        return image, depth, self._info

    def _bag_messages(self, index: int) -> Tuple[Image, Optional[Image], Optional[CameraInfo]]:
        frame = self.bag.frames[index]
        image = deserialize_message(frame.image, self._image_pub.msg_type)
        depth = None if frame.depth is None else deserialize_message(frame.depth, Image)
        info = None if frame.info is None else deserialize_message(frame.info, CameraInfo)
        if self._cache_frames:
            self._cache[index] = (image, depth, info)
        return image, depth, info


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
