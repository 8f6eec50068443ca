"""The zs_perception node: camera images and a text goal in; masks, poses, markers, points out.

Callbacks only store messages. One worker thread takes the newest synchronized frame (the
newest image whose depth and camera info, matched by stamp, have arrived) and runs segment ->
geometry -> tracking -> publish. Images older than the one it takes are dropped and counted,
so the node never queues and never falls behind the camera. Every output carries the source
image's header. Topics, parameters and fields: README.md.
"""

import collections
import threading
import time
from typing import Any, Deque, Dict, List, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseArray, Vector3
import numpy as np
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, qos_profile_sensor_data, QoSProfile,
                       ReliabilityPolicy)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from zs_perception import config
from zs_perception.geometry import estimate_object_geometry, ObjectGeometry, obstacle_cloud
from zs_perception.msg import SegmentedObject, SegmentedObjectArray
from zs_perception.ros import conversions
from zs_perception.segmentation.base import SegmentationError, Segmenter
from zs_perception.segmentation.prompting import parse_goal
from zs_perception.tracking import Tracker
from zs_perception.visualization import draw_overlay, label_image

# Recent depth / camera-info messages kept for stamp matching (about 0.3 s at 30 Hz).
_SYNC_BUFFER = 10
# Recent images waiting for their depth and camera info (about 0.13 s at 30 Hz).
_IMAGE_BUFFER = 4
# Longest wait for the depth or camera info of an image while that stream is active (s).
_SYNC_WAIT_S = 0.1
# A stream counts as active if it delivered a message within this many seconds.
_STREAM_ACTIVE_S = 2.0
# Same warning at most once per this many seconds.
_WARN_PERIOD_S = 5.0
_DIAGNOSTICS_PERIOD_S = 1.0
# Samples per timing statistic in the diagnostics.
_TIMING_WINDOW = 100
_COUNTERS = ('frames_received', 'frames_processed', 'frames_dropped', 'frames_failed',
             'bad_image', 'bad_depth', 'bad_camera_info', 'no_depth_match',
             'no_camera_info_match', 'segmenter_errors', 'goals_received')


def _stamp_s(header) -> float:
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class PerceptionNode(Node):
    """Open-vocabulary segmentation of camera images into objects with 3D poses.

    Args:
        segmenter: a ready :class:`Segmenter`; ``None`` builds one with
            ``create_segmenter(backend, **engine settings)`` from the parameters. Tests
            pass a double here.
        node_name: ROS node name.
        **kwargs: passed to :class:`rclpy.node.Node` (``context``, ``namespace``,
            ``parameter_overrides``, ``cli_args``, ...).

    Raises:
        ValueError: an invalid parameter, naming it, the value and what is allowed.
        zs_perception.segmentation.base.ModelLoadError: the model could not be loaded.

    """

    def __init__(self, *, segmenter: Optional[Segmenter] = None,
                 node_name: str = 'zs_perception', **kwargs):
        super().__init__(node_name, **kwargs)
        self._lock = threading.Condition()
        self._settings = self._declare_parameters()
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

        # Run-time engine settings in force in the segmenter; an injected segmenter gets the
        # parameters' values before its first frame.
        self._engine_thresholds: Dict[str, Any] = {}
        if segmenter is None:
            from zs_perception.segmentation.factory import create_segmenter
            segmenter = create_segmenter(self._settings['backend'],
                                         **config.engine_settings(self._settings))
            self._engine_thresholds = {name: self._settings[name]
                                       for name in config.LIVE_ENGINE_SETTINGS}
        self._segmenter = segmenter
        self._tracker = Tracker()
        self._marker_ids: List[int] = []

        self.counters = dict.fromkeys(_COUNTERS, 0)
        self.recent_warnings: Deque[str] = collections.deque(maxlen=20)
        self._warned_at: Dict[str, float] = {}
        self._timings: Dict[str, Deque[float]] = collections.defaultdict(
            lambda: collections.deque(maxlen=_TIMING_WINDOW))

        # Images not processed yet, oldest first: (msg, arrival monotonic s, arrival clock s).
        self._images: Deque[tuple] = collections.deque()
        self._pending_goal: Optional[str] = self._settings['prompts']
        self._goal_keys: Deque[tuple] = collections.deque(maxlen=16)
        self._depth_buffer: Deque[Image] = collections.deque(maxlen=_SYNC_BUFFER)
        self._info_buffer: Deque[CameraInfo] = collections.deque(maxlen=_SYNC_BUFFER)
        self._last_depth_at = -1e9
        self._last_info_at = -1e9
        self._prompts: List[str] = []

        camera_qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST, depth=qos_profile_sensor_data.depth,
            durability=DurabilityPolicy.VOLATILE,
            reliability=(ReliabilityPolicy.RELIABLE if self._settings['reliability'] == 'reliable'
                         else ReliabilityPolicy.BEST_EFFORT))
        if self._settings['use_compressed']:
            self.create_subscription(CompressedImage, 'image/compressed', self._on_image,
                                     camera_qos)
        else:
            self.create_subscription(Image, 'image', self._on_image, camera_qos)
        self._depth_sub = self.create_subscription(Image, 'depth', self._on_depth, camera_qos)
        self._info_sub = self.create_subscription(CameraInfo, 'camera_info', self._on_info,
                                                  camera_qos)
        # Two goal subscriptions: transient-local receives the last goal of a latched
        # publisher on joining; volatile matches publishers that do not offer durability.
        # A sample received by both is applied once (same source time and sequence number).
        for durability in (DurabilityPolicy.TRANSIENT_LOCAL, DurabilityPolicy.VOLATILE):
            self.create_subscription(
                String, 'goal', self._on_goal,
                QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                           reliability=ReliabilityPolicy.RELIABLE, durability=durability))

        self._objects_pub = self.create_publisher(SegmentedObjectArray, '~/objects', 10)
        self._masks_pub = self.create_publisher(Image, '~/masks', 10)
        self._poses_pub = self.create_publisher(PoseArray, '~/poses', 10)
        self._markers_pub = self.create_publisher(MarkerArray, '~/markers', 10)
        self._points_pub = self.create_publisher(conversions.PointCloud2, '~/points', 10)
        self._debug_pub = self.create_publisher(Image, '~/debug_image', 10)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_timer(_DIAGNOSTICS_PERIOD_S, self._publish_diagnostics)

        self._running = True
        self._worker = threading.Thread(target=self._work, name='zs_perception_worker',
                                        daemon=True)
        self._worker.start()
        self.get_logger().info(
            f'zs_perception ready: backend {self._settings["backend"]}, goal '
            f'{self._settings["prompts"]!r}, subscribing to '
            f'{"image/compressed" if self._settings["use_compressed"] else "image"}, depth, '
            'camera_info, goal.')

    # ---------------------------------------------------------------- parameters
    def _declare_parameters(self) -> Dict[str, Any]:
        for spec in config.PARAMETERS:
            descriptor = ParameterDescriptor(
                description=spec.description, read_only=not spec.live,
                additional_constraints=(f'{spec.allowed()}' if spec.choices or spec.pattern
                                        else ''))
            if spec.value_range is not None and spec.kind is float:
                descriptor.floating_point_range = [FloatingPointRange(
                    from_value=float(spec.value_range[0]), to_value=float(spec.value_range[1]))]
            elif spec.value_range is not None:
                descriptor.integer_range = [IntegerRange(
                    from_value=int(spec.value_range[0]), to_value=int(spec.value_range[1]))]
            self.declare_parameter(spec.name, spec.default, descriptor)
        settings = {spec.name: self.get_parameter(spec.name).value for spec in config.PARAMETERS}
        return config.validate_settings(settings)

    def _check_parameters(self, parameters: List[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters if p.name in config.SPECS}
        with self._lock:
            reason = config.check_update(self._settings, changes)
        if reason is not None:
            self._warn('parameter', f'Rejected parameter update: {reason}.')
        return SetParametersResult(successful=reason is None, reason=reason or '')

    def _apply_parameters(self, parameters: List[Parameter]) -> None:
        with self._lock:
            for p in parameters:
                if p.name in config.SPECS:
                    self._settings[p.name] = p.value
                    if p.name == 'prompts':
                        self._pending_goal = p.value

    # ---------------------------------------------------------------- callbacks
    def _on_image(self, msg) -> None:
        entry = (msg, time.monotonic(), self._now_s())
        with self._lock:
            self.counters['frames_received'] += 1
            if len(self._images) == _IMAGE_BUFFER:
                self._images.popleft()
                self.counters['frames_dropped'] += 1
            self._images.append(entry)
            self._lock.notify_all()

    def _on_depth(self, msg: Image) -> None:
        with self._lock:
            self._depth_buffer.append(msg)
            self._last_depth_at = time.monotonic()
            self._lock.notify_all()

    def _on_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self._info_buffer.append(msg)
            self._last_info_at = time.monotonic()
            self._lock.notify_all()

    def _on_goal(self, msg: String, info: Dict[str, Any]) -> None:
        key = (info.get('source_timestamp'), info.get('publication_sequence_number'))
        with self._lock:
            if key in self._goal_keys:
                return
            self._goal_keys.append(key)
            self.counters['goals_received'] += 1
            self._pending_goal = msg.data

    # ---------------------------------------------------------------- worker
    def _work(self) -> None:
        while True:
            frame = self._next_frame()
            if frame is None:
                return
            try:
                self._process(*frame)
            except Exception as err:  # the worker must survive anything a frame brings
                with self._lock:
                    self.counters['frames_failed'] += 1
                self.get_logger().error(
                    f'Frame failed and was skipped: {type(err).__name__}: {err}',
                    throttle_duration_sec=_WARN_PERIOD_S)

    def _next_frame(self):
        """Wait for the newest synchronized frame: an image with its depth and camera info.

        The newest buffered image whose depth and camera info (within
        ``sync_tolerance_s`` of its stamp) have arrived wins; older images are dropped
        and counted. While the depth (or info) stream is active and no image is complete,
        the worker waits up to ``_SYNC_WAIT_S`` after the newest image's arrival, then
        takes that image with what it has (objects then come without poses). Returns
        ``(image, its arrival time on the node's clock in s, depth or None, info or None,
        settings, goal or None)``, or ``None`` on shutdown.
        """
        with self._lock:
            while True:
                while self._running and not self._images:
                    self._lock.wait()
                if not self._running:
                    return None
                tolerance = self._settings['sync_tolerance_s']
                now = time.monotonic()
                need_depth = self._stream_active(self._last_depth_at, self._depth_sub, now)
                need_info = self._stream_active(self._last_info_at, self._info_sub, now)
                chosen = None
                for index in range(len(self._images) - 1, -1, -1):
                    stamp = _stamp_s(self._images[index][0].header)
                    depth = _match(self._depth_buffer, stamp, tolerance)
                    info = _match(self._info_buffer, stamp, tolerance)
                    if (depth or not need_depth) and (info or not need_info):
                        chosen = index
                        break
                if chosen is None:
                    newest_arrived = self._images[-1][1]
                    if now - newest_arrived < _SYNC_WAIT_S:
                        self._lock.wait(timeout=newest_arrived + _SYNC_WAIT_S - now)
                        continue
                    chosen = len(self._images) - 1
                    stamp = _stamp_s(self._images[chosen][0].header)
                    depth = _match(self._depth_buffer, stamp, tolerance)
                    info = _match(self._info_buffer, stamp, tolerance)
                msg, _, arrived = self._images[chosen]
                for _ in range(chosen + 1):  # the chosen image and the older ones
                    self._images.popleft()
                self.counters['frames_dropped'] += chosen
                goal, self._pending_goal = self._pending_goal, None
                return msg, arrived, depth, info, dict(self._settings), goal

    def _now_s(self) -> float:
        """Return the node clock's time in seconds (the clock image stamps are compared with)."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _stream_active(self, last_at: float, subscription, now: float) -> bool:
        return now - last_at < _STREAM_ACTIVE_S or subscription.get_publisher_count() > 0

    def _process(self, msg, arrived, depth_msg, info_msg, settings, goal) -> None:
        header = msg.header
        # Where latency goes before the work: the image's age on arrival (camera driver and
        # transport), then the wait for its depth and camera_info and for this thread.
        times = {'arrival': arrived - _stamp_s(header),
                 'wait': self._now_s() - arrived}
        t = time.perf_counter()
        if goal is not None:
            self._apply_goal(goal, settings)
        self._apply_engine_thresholds(settings)
        try:
            rgb = (conversions.compressed_to_rgb(msg) if isinstance(msg, CompressedImage)
                   else conversions.image_to_rgb(msg))
        except ValueError as err:
            self._count_and_warn('bad_image', f'Dropped an image: {_sentence(err)}')
            return
        times['convert'] = time.perf_counter() - t
        if not header.frame_id:
            self._warn('no_frame_id', 'The image has an empty header.frame_id; the outputs copy '
                       'it, so rviz and tf cannot place them. Set the frame_id of the camera '
                       'driver (its optical frame, e.g. camera_color_optical_frame).')

        if not self._prompts and self._segmenter.needs_prompts:
            self._warn('no_goal', 'No goal yet: publish phrases such as "red mug, screwdriver" '
                       'on the goal topic (std_msgs/String) or set the prompts parameter; '
                       'publishing empty results until then.')
            instances = []
        else:
            t = time.perf_counter()
            try:
                result = self._segmenter.segment(rgb)
            except (SegmentationError, ValueError) as err:
                self._count_and_warn('segmenter_errors',
                                     f'Segmentation failed on this frame: '
                                     f'{type(err).__name__}: {err}')
                return
            times['segment'] = time.perf_counter() - t
            for stage, seconds in result.timings.items():
                times[f'segment.{stage}'] = seconds
            instances = [i for i in result.instances if i.mask.any()][:settings['max_objects']]

        t = time.perf_counter()
        masks = [i.mask for i in instances]
        geometries = self._geometry(masks, rgb.shape[:2], depth_msg, info_msg, settings)
        times['geometry'] = time.perf_counter() - t

        t = time.perf_counter()
        self._tracker.iou_threshold = settings['track_iou_threshold']
        self._tracker.max_distance_m = settings['track_max_distance_m']
        self._tracker.max_missed_frames = settings['track_max_missed_frames']
        ids = self._tracker.update(
            masks, [i.label for i in instances],
            [g.position if g.has_pose else None for g in geometries])
        times['tracking'] = time.perf_counter() - t

        t = time.perf_counter()
        self._publish(header, rgb, instances, geometries, ids, settings)
        times['publish'] = time.perf_counter() - t
        times['latency'] = self._now_s() - _stamp_s(header)
        with self._lock:
            self.counters['frames_processed'] += 1
            for stage, seconds in times.items():
                self._timings[stage].append(seconds)

    def _apply_goal(self, goal: str, settings: Dict[str, Any]) -> None:
        parsed = parse_goal(goal, settings['max_prompts'], settings['max_prompt_chars'])
        if parsed.warning():
            self._warn('goal', parsed.warning() + '.')
        report = self._segmenter.set_prompts(parsed.phrases)
        for phrase, reason in list(report.dropped) + list(report.truncated):
            self._warn('goal_engine', f'goal: the segmenter changed {str(phrase)[:40]!r}: '
                       f'{reason}.')
        self._prompts = list(self._segmenter.prompts)
        self.get_logger().info(f'Goal is now {self._prompts}.')

    def _apply_engine_thresholds(self, settings: Dict[str, Any]) -> None:
        wanted = {name: settings[name] for name in config.LIVE_ENGINE_SETTINGS}
        changed = {k: v for k, v in wanted.items() if self._engine_thresholds.get(k) != v}
        if not changed:
            return
        try:
            self._segmenter.set_thresholds(**changed)
        except ValueError as err:
            self._warn('thresholds', f'The segmenter did not accept {changed}: {err}')
        self._engine_thresholds = wanted

    def _geometry(self, masks, image_shape, depth_msg, info_msg, settings):
        """Estimate each mask's 3D geometry; objects get ``has_pose`` False with a reason."""
        reason = None
        if depth_msg is None:
            reason = 'no depth image'
            if self._stream_active(self._last_depth_at, self._depth_sub, time.monotonic()):
                self._count_and_warn(
                    'no_depth_match', 'No depth image within sync_tolerance_s='
                    f'{settings["sync_tolerance_s"]} s of the image stamp; publishing without '
                    'poses. Check that depth is registered to and stamped like the image.')
        elif info_msg is None:
            reason = 'no camera_info'
            self._count_and_warn(
                'no_camera_info_match', 'No camera_info within sync_tolerance_s='
                f'{settings["sync_tolerance_s"]} s of the image stamp; publishing without poses.')
        if reason is None:
            try:
                depth_m = conversions.depth_image_to_metres(depth_msg)
            except ValueError as err:
                reason = 'bad depth image'
                self._count_and_warn('bad_depth', f'Ignored a depth image: {_sentence(err)}')
        if reason is None and abs(depth_m.shape[1] * image_shape[0]
                                  - depth_m.shape[0] * image_shape[1]) > 0.01 * depth_m.size:
            reason = 'depth size mismatch'
            self._count_and_warn(
                'bad_depth', f'Ignored a depth image of {depth_m.shape[1]}x{depth_m.shape[0]} '
                f'for a {image_shape[1]}x{image_shape[0]} image: expected depth registered to '
                'the colour image (same size, or the same aspect ratio).')
        if reason is None:
            try:
                intrinsics = conversions.camera_info_to_intrinsics(
                    info_msg, depth_m.shape[1], depth_m.shape[0])
            except ValueError as err:
                reason = 'bad camera_info'
                self._count_and_warn('bad_camera_info', f'Ignored a camera_info: {_sentence(err)}')
        if reason is None and not np.isfinite(depth_m).any():
            self._warn('depth_empty', 'The depth image has no valid reading (all zero or NaN); '
                       'objects are published without poses.')
        if reason is None:
            return estimate_object_geometry(masks, depth_m, intrinsics,
                                            min_depth_m=settings['min_depth_m'],
                                            max_depth_m=settings['max_depth_m'])
        return [ObjectGeometry.without_pose(reason) for _ in masks]

    # ---------------------------------------------------------------- publishing
    def _publish(self, header, rgb, instances, geometries, ids, settings) -> None:
        out = SegmentedObjectArray(header=header, prompts=list(self._prompts),
                                   backend=settings['backend'])
        poses = PoseArray(header=header)
        boxes_for_markers = []
        for instance, geometry, track_id in zip(instances, geometries, ids):
            x, y, w, h = conversions.mask_roi(instance.mask)
            obj = SegmentedObject(
                id=int(track_id), label=instance.label, score=float(instance.score),
                roi=RegionOfInterest(x_offset=x, y_offset=y, width=w, height=h),
                mask=conversions.mask_to_image(instance.mask, (x, y, w, h), header),
                has_pose=bool(geometry.has_pose), pose_status=geometry.status,
                num_points=int(geometry.num_points),
                depth_valid_fraction=float(geometry.valid_fraction),
                truncated=bool(geometry.truncated), occluded=bool(geometry.occluded),
                shape=geometry.shape, pose_confidence=float(geometry.pose_confidence))
            if geometry.has_pose:
                obj.pose = conversions.make_pose(geometry.position, geometry.quaternion)
                ex, ey, ez = (float(v) for v in geometry.extents)
                obj.size = Vector3(x=ex, y=ey, z=ez)
                poses.poses.append(obj.pose)
                boxes_for_markers.append((track_id, f'{instance.label} #{track_id}', obj.pose,
                                          obj.size))
            else:
                obj.pose.orientation.w = 1.0
            out.objects.append(obj)
        # The objects first: they are what planners wait for; the rest is derived from them.
        self._objects_pub.publish(out)
        labels = label_image([i.mask for i in instances], rgb.shape[:2])
        points, index = obstacle_cloud(geometries)
        self._masks_pub.publish(conversions.array_to_image(labels, 'mono8', header))
        self._poses_pub.publish(poses)
        self._markers_pub.publish(conversions.object_markers(header, boxes_for_markers,
                                                             self._marker_ids))
        self._marker_ids = [b[0] for b in boxes_for_markers]
        self._points_pub.publish(conversions.point_cloud(points, index, header))
        if self._debug_pub.get_subscription_count() > 0:
            overlay = draw_overlay(rgb, labels, [i.box for i in instances],
                                   [f'{i.label} #{t} {i.score:.2f}'
                                    for i, t in zip(instances, ids)], ids)
            self._debug_pub.publish(conversions.array_to_image(overlay, 'rgb8', header))

    def _publish_diagnostics(self) -> None:
        with self._lock:
            counters = dict(self.counters)
            timings = {stage: list(v) for stage, v in self._timings.items()}
            warnings = list(self.recent_warnings)
        level = DiagnosticStatus.OK
        message = 'ok'
        if counters['frames_processed'] == 0:
            level, message = DiagnosticStatus.WARN, 'no frame processed yet'
        if warnings:
            level, message = DiagnosticStatus.WARN, warnings[-1][:200]
        values = [KeyValue(key=k, value=str(v)) for k, v in counters.items()]
        for stage in sorted(timings):
            ms = np.asarray(timings[stage]) * 1e3
            values.append(KeyValue(key=f'{stage}_ms_median', value=f'{np.median(ms):.2f}'))
            values.append(KeyValue(key=f'{stage}_ms_max', value=f'{ms.max():.2f}'))
        values.append(KeyValue(key='prompts', value=', '.join(self._prompts)))
        values.append(KeyValue(key='backend', value=self._settings['backend']))
        name = self.get_fully_qualified_name()
        status = DiagnosticStatus(level=level, name=f'zs_perception: {name}', message=message,
                                  hardware_id=name, values=values)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)

    # ---------------------------------------------------------------- helpers
    def _count_and_warn(self, counter: str, text: str) -> None:
        with self._lock:
            self.counters[counter] += 1
        self._warn(counter, text)

    def _warn(self, key: str, text: str) -> None:
        """Log ``text`` as a warning, at most once per ``_WARN_PERIOD_S`` per ``key``."""
        now = time.monotonic()
        with self._lock:
            self.recent_warnings.append(text)
            if now - self._warned_at.get(key, -1e9) < _WARN_PERIOD_S:
                return
            self._warned_at[key] = now
        self.get_logger().warning(text)

    def destroy_node(self) -> None:
        """Stop the worker thread, then destroy the node."""
        with self._lock:
            self._running = False
            self._lock.notify_all()
        if self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join(timeout=10.0)
        super().destroy_node()


def _sentence(err: Exception) -> str:
    """Return an exception's message as the end of a log sentence: one final period."""
    return str(err).rstrip('.') + '.'


def _match(buffer, stamp: float, tolerance: float):
    """Return the message in ``buffer`` stamped nearest ``stamp``, within ``tolerance`` s."""
    best, best_dt = None, tolerance
    for msg in buffer:
        dt = abs(_stamp_s(msg.header) - stamp)
        if dt <= best_dt:
            best, best_dt = msg, dt
    return best


def main(args: Optional[List[str]] = None) -> int:
    """Run the node until Ctrl-C; return the process exit status."""
    rclpy.init(args=args)
    node = None
    try:
        node = PerceptionNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, SegmentationError) as err:
        rclpy.logging.get_logger('zs_perception').fatal(f'{type(err).__name__}: {err}')
        return 1
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
