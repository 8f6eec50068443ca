"""The zs_perception node: camera images and a text goal in; masks, poses, markers, points out.

A thin ROS shell around the ROS-free frame logic in :mod:`zs_perception.pipeline`.
Callbacks only hand messages to a :class:`FrameSynchronizer` (newest ready frame wins; a
bounded wait per image for its depth and camera info; honest reasons when they are late,
misstamped or absent). One worker thread takes each frame, runs it through a
:class:`FramePipeline` (goal and live settings, segment -> geometry -> tracking) and
publishes the result with the source image's header. Faults and timings go to
``/diagnostics`` through :class:`Health`. Topics, parameters and fields: README.md; the
frame rules, shutdown and faults: docs/node.md.
"""

import difflib
import threading
import time
from typing import Any, Dict, List, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseArray, Vector3
import numpy as np
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, RegionOfInterest
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from zs_perception import config
from zs_perception.geometry import ObjectGeometry, obstacle_cloud
from zs_perception.geometry.transform import transform_geometry
from zs_perception.msg import PromptArray, SegmentedObject, SegmentedObjectArray
from zs_perception.pipeline.frame_pipeline import FrameInput, FramePipeline
from zs_perception.pipeline.frame_sync import FrameSynchronizer, SyncedFrame
from zs_perception.pipeline.health import ERROR, Health, OK
from zs_perception.ros import conversions
from zs_perception.ros.find_objects import FindObjectsServer
from zs_perception.ros.process import run_node
from zs_perception.ros.qos import camera_qos, GOAL_QOS, GOAL_READER_QOS
from zs_perception.ros.target_frame import TargetFrame
from zs_perception.segmentation.base import SegmentationError, Segmenter
from zs_perception.segmentation.prompting import text_key
from zs_perception.visualization import draw_overlay, label_image

# A depth or camera-info stream with no message for this long (s) is given up (no wait).
_STREAM_TIMEOUT_S = 1.0
# Images buffered waiting for their depth and camera info (0.27 s at 60 Hz).
_IMAGE_BUFFER = 16
# Recent depth / camera-info messages kept for stamp matching (1 s at 30 Hz).
_STREAM_BUFFER = 30
_DIAGNOSTICS_PERIOD_S = 1.0
_GRAPH_PERIOD_S = 0.25
# A fault is current (and named by the diagnostics) until this long after its last report.
_FAULT_WINDOW_S = 5.0
# The image stream counts as stopped after this long without an image (s).
_NO_IMAGE_S = 5.0
# How long after start-up a goal latched before the node started is looked for (s), and
# the longest life of the transient-local reader that fetches it (s).
_LATCHED_GOAL_WINDOW_S = 2.0
_LATCHED_READER_S = 1.0
# The longest wait for the worker thread when stopping (s); then publishing is closed anyway.
_STOP_JOIN_S = 3.0
# Start-up values rclpy reads on its own without declaring them.
_RCLPY_PREFIXES = ('qos_overrides.',)
_DIAGNOSTIC_LEVELS = {OK: DiagnosticStatus.OK, ERROR: DiagnosticStatus.ERROR}


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
        ValueError: an invalid or unknown parameter, naming it, the value and what is
            allowed (unknown ones with the closest valid name).
        zs_perception.segmentation.base.ModelLoadError: the model could not be loaded.

    """

    def __init__(self, *, segmenter: Optional[Segmenter] = None,
                 node_name: str = 'zs_perception', **kwargs):
        super().__init__(node_name, **kwargs)
        self._init_parameters()
        self._init_pipeline(segmenter)
        self._init_streams()

    # The phases of start-up, one method each: the lifecycle node (lifecycle_node.py) runs
    # them in its configure and activate transitions.
    def _init_parameters(self) -> None:
        """Declare and check the parameters; install the update callbacks."""
        self._lock = threading.Condition()
        self.health = Health(window_s=_FAULT_WINDOW_S)
        self._settings = self._declare_parameters()
        self._target = TargetFrame(self, self._settings)
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._find = None
        self._worker = None
        self._pipeline: Optional[FramePipeline] = None
        self._sync = self._new_synchronizer()

    def _new_synchronizer(self) -> FrameSynchronizer:
        return FrameSynchronizer(
            tolerance_s=self._settings['sync_tolerance_s'],
            wait_s=self._settings['sync_wait_s'], stream_timeout_s=_STREAM_TIMEOUT_S,
            image_buffer=_IMAGE_BUFFER, stream_buffer=_STREAM_BUFFER, stamp_clock=self._now_s)

    def _init_pipeline(self, segmenter: Optional[Segmenter]) -> None:
        """Load the model (unless ``segmenter`` is given) and build the frame pipeline."""
        engine_settings: Dict[str, Any] = {}
        if segmenter is None:
            # The hub check first: it is fast, the imports of the engine (torch) are not.
            from zs_perception.segmentation.hub import check_hub_models
            check_hub_models(self._settings)
            from zs_perception.segmentation.factory import create_segmenter
            segmenter = create_segmenter(self._settings['backend'],
                                         **config.engine_settings(self._settings))
            engine_settings = {name: self._settings[name]
                               for name in config.LIVE_ENGINE_SETTINGS}
        self._pipeline = FramePipeline(segmenter, self.health,
                                       log_warning=self.get_logger().warning,
                                       log_info=self.get_logger().info,
                                       engine_settings=engine_settings)
        self._pending_goal: Optional[Any] = self._settings['prompts']

    def _init_streams(self) -> None:
        """Subscribe, advertise, start the timers, the worker and the FindObjects action."""
        # A fresh synchroniser: a re-activated lifecycle node keeps no stale frame.
        self._sync = self._new_synchronizer()
        self._marker_ids: List[int] = []
        # A new streaming goal (str from the goal topic or parameter, a prompt list from
        # goal_prompts; set by _init_pipeline) and new FindObjects query prompts, for the
        # worker to apply.
        self._pending_extra: Optional[list] = None
        self._prompts_echo: Optional[str] = None
        self._goal_keys: List[tuple] = []
        self._last_image_at: Optional[float] = None
        self._started_at = time.monotonic()

        qos = camera_qos(self._settings['reliability'])
        if self._settings['use_compressed']:
            self._image_sub = self.create_subscription(CompressedImage, 'image/compressed',
                                                       self._on_image, qos)
        else:
            self._image_sub = self.create_subscription(Image, 'image', self._on_image, qos)
        self._depth_sub = self.create_subscription(Image, 'depth', self._on_depth, qos)
        self._info_sub = self.create_subscription(CameraInfo, 'camera_info', self._on_info,
                                                  qos)
        self._goal_sub = self.create_subscription(String, 'goal', self._on_goal,
                                                  GOAL_READER_QOS)
        self._goal_prompts_sub = self.create_subscription(
            PromptArray, 'goal_prompts', self._on_goal_prompts, GOAL_READER_QOS)
        self._latched_goal_sub = None
        self._latched_goal_since = 0.0
        self._latched_goal_done = False

        self._objects_pub = self.create_publisher(SegmentedObjectArray, '~/objects', 10)
        self._masks_pub = self.create_publisher(Image, '~/masks', 10)
        self._poses_pub = self.create_publisher(PoseArray, '~/poses', 10)
        self._markers_pub = self.create_publisher(MarkerArray, '~/markers', 10)
        self._points_pub = self.create_publisher(conversions.PointCloud2, '~/points', 10)
        self._debug_pub = self.create_publisher(Image, '~/debug_image', 10)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self._timers_made = [self.create_timer(_DIAGNOSTICS_PERIOD_S, self._publish_diagnostics),
                             self.create_timer(_GRAPH_PERIOD_S, self._watch_graph)]
        # Runs in the executor: the worker asks for the prompts parameter to be updated.
        self._prompts_guard = self.create_guard_condition(self._show_active_goal)

        # Publishing is open until stop(); the gate keeps stop() from closing it mid-publish.
        self._publish_gate = threading.Lock()
        self._publishing = True
        self._running = True
        self._find = FindObjectsServer(self, self._settings_now, self._set_query_prompts)
        self._worker = threading.Thread(target=self._work, name='zs_perception_worker',
                                        daemon=True)
        topics = ', '.join(s.topic_name for s in (self._image_sub, self._depth_sub,
                                                  self._info_sub, self._goal_sub))
        self.get_logger().info(
            f'zs_perception ready: backend {self._settings["backend"]}, goal '
            f'{self._settings["prompts"]!r}, subscribing to {topics}; publishing on '
            f'{self._objects_pub.topic_name} and the other outputs under '
            f'{self.get_fully_qualified_name()}/, in the {self._target.mode}; action '
            f'{self._find.action_name}'
            + ('.' if self._settings['stream'] else
               ' (stream false: frames are processed only while a FindObjects goal runs).'))
        self._worker.start()

    @property
    def counters(self) -> Dict[str, int]:
        """Return the counts of frames received, processed, dropped and of faults by kind."""
        return self.health.counters

    @property
    def recent_warnings(self):
        """Return the texts of the last 20 faults reported, oldest first."""
        return self.health.recent

    @property
    def _segmenter(self) -> Segmenter:
        return self._pipeline.segmenter

    # ---------------------------------------------------------------- parameters
    def _declare_parameters(self) -> Dict[str, Any]:
        """Declare every parameter of :data:`config.PARAMETERS`; return the checked values.

        Values given at start-up (params file, ``-p``, ``parameter_overrides``) are checked
        by :func:`config.validate` before rclpy sees them, so a bad one is one ValueError
        naming it; an integer for a float parameter is accepted as that float.
        """
        # rclpy keeps the start-up values for this node here (it has no public accessor).
        overrides = getattr(self, '_parameter_overrides', {})
        for spec in config.PARAMETERS:
            given = overrides.get(spec.name)
            if given is None:
                continue
            reason = config.validate(spec.name, given.value)
            if reason is not None:
                raise ValueError(f'Invalid parameter: {reason}. Fix it in the params file or '
                                 f'pass --ros-args -p {spec.name}:=<value>.')
            if spec.kind is float and not isinstance(given.value, float):
                overrides[spec.name] = Parameter(spec.name, value=float(given.value))
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
            try:
                self.declare_parameter(spec.name, spec.default, descriptor)
            except ParameterException as err:
                raise ValueError(f'Invalid parameter {spec.name}: {err}; expected '
                                 f'{spec.allowed()}.') from None
        # Declared ones include rclpy's own (use_sim_time...); qos_overrides.* rclpy reads.
        unknown = sorted(name for name in overrides if not self.has_parameter(name)
                         and not name.startswith(_RCLPY_PREFIXES))
        if unknown:
            hints = []
            for name in unknown:
                close = difflib.get_close_matches(name, list(config.SPECS), n=1)
                hints.append(f'{name!r}' + (f' (did you mean {close[0]!r}?)' if close else ''))
            raise ValueError(
                f'Unknown parameter{"s" if len(unknown) > 1 else ""} {", ".join(hints)} given '
                f'to {self.get_fully_qualified_name()}; fix the params file or the -p '
                'arguments (the parameters are listed in config/zs_perception.yaml).')
        settings = {spec.name: self.get_parameter(spec.name).value for spec in config.PARAMETERS}
        return config.validate_settings(settings)

    def _check_parameters(self, parameters: List[Parameter]) -> SetParametersResult:
        changes = {p.name: p.value for p in parameters if p.name in config.SPECS}
        with self._lock:
            reason = config.check_update(self._settings, changes)
        if reason is not None and self._pipeline is None:  # an unconfigured lifecycle node
            self.get_logger().warning(f'Rejected parameter update: {reason}.')
        elif reason is not None:
            self._pipeline.warn('parameter', f'Rejected parameter update: {reason}.')
        return SetParametersResult(successful=reason is None, reason=reason or '')

    def _apply_parameters(self, parameters: List[Parameter]) -> None:
        with self._lock:
            for p in parameters:
                if p.name not in config.SPECS:
                    continue
                self._settings[p.name] = p.value
                if p.name == 'prompts' and p.value != self._prompts_echo:
                    self._pending_goal = p.value
            self._sync.tolerance_s = self._settings['sync_tolerance_s']
            self._sync.wait_s = self._settings['sync_wait_s']
            self._lock.notify_all()

    def _show_active_goal(self) -> None:
        """Make the prompts parameter show the streaming goal in force (after a goal)."""
        query = {text_key(str(getattr(p, 'label', p))) for p in self._pipeline.extra_prompts}
        text = ', '.join(p for p in self._pipeline.prompts if text_key(p) not in query)
        if self.get_parameter('prompts').value != text:
            self._prompts_echo = text
            self.set_parameters([Parameter('prompts', value=text)])

    # ---------------------------------------------------------------- callbacks
    def _on_image(self, msg) -> None:
        entry = (msg, self._now_s())
        # The publisher counts as of this image (the graph timer's may predate a camera
        # driver that just started: its first image would be given up for no depth publisher).
        publishers = self._depth_sub.get_publisher_count(), self._info_sub.get_publisher_count()
        with self._lock:
            self._sync.set_publishers(*publishers)
            self._last_image_at = time.monotonic()
            self.health.count('frames_received')
            dropped = self._sync.add_image(entry, _stamp_s(msg.header))
            if dropped:
                self.health.count('frames_dropped', dropped)
            self._lock.notify_all()

    def _on_depth(self, msg: Image) -> None:
        with self._lock:
            self._sync.add_depth(msg, _stamp_s(msg.header))
            self._lock.notify_all()

    def _on_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self._sync.add_info(msg, _stamp_s(msg.header))
            self._lock.notify_all()

    def _on_goal(self, msg: String, info: Dict[str, Any]) -> None:
        # The latched-goal reader and the main reader may both deliver one sample.
        key = (info.get('source_timestamp'), info.get('publication_sequence_number'))
        with self._lock:
            if key in self._goal_keys:
                return
            self._goal_keys = self._goal_keys[-15:] + [key]
            self.health.count('goals_received')
            self._pending_goal = msg.data
            self._lock.notify_all()

    def _on_goal_prompts(self, msg: PromptArray) -> None:
        """Take a goal of labelled text / example-image prompts (replaces the goal)."""
        try:
            prompts = conversions.prompts_from_msgs(msg.prompts)
        except ValueError as err:
            self._pipeline.warn('goal_prompts', f'Ignored a goal on '
                                f'{self._goal_prompts_sub.topic_name}: {err}.', 'goals_bad')
            return
        with self._lock:
            self.health.count('goals_received')
            self._pending_goal = prompts
            self._lock.notify_all()

    def _settings_now(self) -> Dict[str, Any]:
        with self._lock:
            return dict(self._settings)

    def _set_query_prompts(self, prompts) -> None:
        """Have the worker look for a FindObjects goal's prompts (``[]``: none) from now on."""
        with self._lock:
            self._pending_extra = list(prompts)
            self._lock.notify_all()

    def _watch_graph(self) -> None:
        """Track the camera publishers; fetch a goal latched before the node started."""
        with self._lock:
            self._sync.set_publishers(self._depth_sub.get_publisher_count(),
                                      self._info_sub.get_publisher_count())
            self._lock.notify_all()
        now = time.monotonic()
        if self._latched_goal_sub is not None:
            if (self.counters['goals_received']
                    or now - self._latched_goal_since > _LATCHED_READER_S):
                self.destroy_subscription(self._latched_goal_sub)
                self._latched_goal_sub = None
            return
        if (self._latched_goal_done or self.counters['goals_received']
                or now - self._started_at > _LATCHED_GOAL_WINDOW_S):
            self._latched_goal_done = True
            return
        # A transient-local reader gets the latched sample but is incompatible with every
        # volatile publisher, so it is made once, only while every goal publisher offers
        # transient local, for at most _LATCHED_READER_S; its own incompatible-QoS handler
        # (no warning) ends it at once if a volatile publisher shows up meanwhile.
        publishers = self.get_publishers_info_by_topic(self._goal_sub.topic_name)
        if publishers and all(p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                              for p in publishers):
            self._latched_goal_since = now
            self._latched_goal_done = True
            self._latched_goal_sub = self.create_subscription(
                String, self._goal_sub.topic_name, self._on_goal, GOAL_QOS,
                event_callbacks=SubscriptionEventCallbacks(
                    incompatible_qos=self._on_latched_goal_incompatible))

    def _on_latched_goal_incompatible(self, _status) -> None:
        # A volatile goal publisher appeared: the main (volatile) reader takes its goals.
        self._latched_goal_since = -1e9  # destroyed at the next graph check

    # ---------------------------------------------------------------- worker
    def _work(self) -> None:
        while True:
            with self._lock:
                frame = None
                while (self._running and self._pending_goal is None
                       and self._pending_extra is None):
                    frame, wait_s = self._sync.poll()
                    if frame is not None:
                        break
                    self._lock.wait(timeout=wait_s)
                if not self._running:
                    return
                if frame is not None and frame.dropped:
                    self.health.count('frames_dropped', frame.dropped)
                goal, self._pending_goal = self._pending_goal, None
                extra, self._pending_extra = self._pending_extra, None
                settings = dict(self._settings)
                if frame is not None and not settings['stream'] and not self._find.active:
                    # stream false: the GPU idles between FindObjects goals.
                    self.health.count('frames_idle')
                    frame = None
                    if goal is None and extra is None:
                        continue
            try:
                if frame is None:  # a new goal and no frame: apply it now
                    self._pipeline.apply_goal(goal, settings, extra)
                    if goal is not None:
                        self._prompts_guard.trigger()
                    if extra:
                        self._find.on_prompts_applied(self._pipeline.prompts)
                else:
                    self._process(frame, settings, goal, extra)
            except Exception as err:  # the worker must survive anything a frame brings
                if not self._publishing:
                    return  # stopping: the node is going away under the frame
                self._pipeline.warn('frames_failed', f'Frame failed and was skipped: '
                                    f'{type(err).__name__}: {err}', 'frames_failed')

    def _now_s(self) -> float:
        """Return the node clock's time in seconds (the clock image stamps are compared with)."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _process(self, frame: SyncedFrame, settings: Dict[str, Any],
                 goal: Optional[Any], extra: Optional[list] = None) -> None:
        msg, arrived = frame.image
        depth_msg, info_msg = frame.depth, frame.info
        header = msg.header
        decode = (conversions.compressed_to_rgb if isinstance(msg, CompressedImage)
                  else conversions.image_to_rgb)
        inputs = FrameInput(
            stamp_s=frame.stamp_s, arrival_s=arrived, frame_id=header.frame_id,
            rgb=lambda: decode(msg),
            depth=(None if depth_msg is None
                   else lambda: conversions.depth_image_to_metres(depth_msg)),
            depth_encoding=depth_msg.encoding if depth_msg is not None else '',
            intrinsics=(None if info_msg is None else
                        lambda w, h: conversions.camera_info_to_intrinsics(info_msg, w, h)),
            depth_miss=frame.depth_miss, info_miss=frame.info_miss,
            stamps_reset=frame.stamps_reset)
        if frame.stamps_reset:
            self.health.count('time_jumps')
            self._pipeline.warn('time_jump', 'The image stamps jumped back (a bag loop or a '
                                'clock reset): cleared the sync buffers and restarted tracks.')
        started = self._now_s()
        result = self._pipeline.process(inputs, settings, started, goal, extra)
        if extra:  # a FindObjects goal's prompts, applied before this frame was segmented
            self._find.on_prompts_applied(self._pipeline.prompts)
        if goal is not None:
            self._prompts_guard.trigger()
        if result is None:
            return
        times = dict(result.timings)
        times['wait'] = started - arrived
        t = time.perf_counter()
        out_header = self._to_target_frame(header, result)
        objects = self._publish(header, result, settings, out_header)
        times['publish'] = time.perf_counter() - t
        if objects is not None:
            self._find.on_frame(objects, depth_msg is not None and info_msg is not None)
        if result.stamp_ok:
            times['latency'] = self._now_s() - frame.stamp_s
        else:
            times.pop('arrival', None)
        for stage, seconds in times.items():
            self.health.timing(stage, seconds)

    # ---------------------------------------------------------------- publishing
    def _to_target_frame(self, header, result) -> Header:
        """Move ``result.geometries`` into the target frame; return the outputs' header.

        Without a transform the objects lose their poses and points, saying why.
        """
        found = self._target.resolve(header.frame_id, header.stamp)
        if found.transform is not None:
            result.geometries = [transform_geometry(g, found.transform)
                                 for g in result.geometries]
        elif found.reason:
            self._pipeline.warn('no_transform', f'Objects published without poses: '
                                f'{found.reason}.', 'no_transform')
            result.geometries = [ObjectGeometry.without_pose(found.reason, g.num_points,
                                                             g.valid_fraction)
                                 for g in result.geometries]
        return Header(stamp=header.stamp, frame_id=found.frame_id)

    def _publish(self, header, result, settings,
                 out_header) -> Optional[SegmentedObjectArray]:
        with self._publish_gate:
            if self._publishing and self.context.ok():
                return self._publish_outputs(header, result, settings, out_header)
        return None

    def _publish_outputs(self, header, result, settings,
                         out_header) -> SegmentedObjectArray:
        """Publish one frame: images in the camera ``header``, 3D outputs in ``out_header``."""
        rgb, instances, geometries, ids = (result.rgb, result.instances, result.geometries,
                                           result.ids)
        out = SegmentedObjectArray(header=out_header, prompts=list(result.prompts),
                                   backend=settings['backend'])
        poses = PoseArray(header=out_header)
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
        self._markers_pub.publish(conversions.object_markers(out_header, boxes_for_markers,
                                                             self._marker_ids))
        self._marker_ids = [b[0] for b in boxes_for_markers]
        self._points_pub.publish(conversions.point_cloud(points, index, out_header))
        if self._debug_pub.get_subscription_count() > 0:
            overlay = draw_overlay(rgb, labels, [i.box for i in instances],
                                   [f'{i.label} #{t} {i.score:.2f}'
                                    for i, t in zip(instances, ids)], ids)
            self._debug_pub.publish(conversions.array_to_image(overlay, 'rgb8', header))
        return out

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        since = self._last_image_at if self._last_image_at is not None else self._started_at
        if now - since > _NO_IMAGE_S:
            what = 'no image yet' if self._last_image_at is None else 'no image'
            self._pipeline.warn('no_image', f'{what.capitalize()} on '
                                f'{self._image_sub.topic_name} for {now - since:.0f} s: check '
                                'the camera driver and the image topic remapping.')
        counters, timings = self.health.snapshot()
        level, message = self.health.level()
        values = [KeyValue(key=k, value=str(v)) for k, v in counters.items()]
        for stage in sorted(timings):
            ms = np.asarray(timings[stage]) * 1e3
            values.append(KeyValue(key=f'{stage}_ms_median', value=f'{np.median(ms):.2f}'))
            values.append(KeyValue(key=f'{stage}_ms_max', value=f'{ms.max():.2f}'))
        values.append(KeyValue(key='faults',
                               value=', '.join(f.key for f in self.health.current())))
        values.append(KeyValue(key='prompts', value=', '.join(self._pipeline.prompts)))
        values.append(KeyValue(key='backend', value=self._settings['backend']))
        name = self.get_fully_qualified_name()
        status = DiagnosticStatus(level=_DIAGNOSTIC_LEVELS.get(level, DiagnosticStatus.WARN),
                                  name=f'zs_perception: {name}', message=message,
                                  hardware_id=name, values=values)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        with self._publish_gate:
            if self._publishing and self.context.ok():
                self._diagnostics_pub.publish(array)

    # ---------------------------------------------------------------- stopping
    def stop(self) -> None:
        """Stop the worker thread and close publishing (idempotent; before destroying)."""
        if getattr(self, '_find', None) is not None:
            self._find.close()  # a running FindObjects goal ends as aborted
        if getattr(self, '_worker', None) is None:
            return  # never started (or a lifecycle node not active)
        with self._lock:
            self._running = False
            self._lock.notify_all()
        if self._worker.is_alive() and self._worker is not threading.current_thread():
            self._worker.join(timeout=_STOP_JOIN_S)
        with self._publish_gate:  # waits for a publish in progress, then none can start
            self._publishing = False

    def destroy_node(self) -> None:
        """Stop the worker and publishing (see :meth:`stop`), then destroy the node."""
        self.stop()
        super().destroy_node()


def main(args: Optional[List[str]] = None) -> int:
    """Run the node until SIGINT or SIGTERM; return the process exit status."""
    return run_node(PerceptionNode, 'zs_perception', fatal=(ValueError, SegmentationError),
                    args=args)
