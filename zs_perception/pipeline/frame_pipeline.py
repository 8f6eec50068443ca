"""One frame through the perception stages: goal and settings, segment, geometry, tracking.

:class:`FramePipeline` holds the segmenter and the tracker. Each call of :meth:`process`
first applies the settings in force (thresholds to the segmenter, tracking limits, depth
range: the one way live settings reach every stage) and a new goal if one arrived, then
decodes the frame through the callables the caller gives (the ROS node passes its message
conversions; tests pass arrays), segments it, estimates each object's geometry and assigns
track ids. Whatever prevents a pose is said per object (``ObjectGeometry.status``) and
recorded as a current fault in :class:`zs_perception.pipeline.health.Health`. No ROS here.

Units: metres, seconds; the image ``(H, W, 3)`` ``uint8`` RGB; depth ``(h, w)`` ``float32``
metres along the optical axis (REP-103 camera optical frame), registered to the image.
"""

from dataclasses import dataclass, field
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from zs_perception import config
from zs_perception.geometry import CameraIntrinsics, estimate_object_geometry, ObjectGeometry
from zs_perception.pipeline.frame_sync import FUTURE_STAMP_S, Miss
from zs_perception.pipeline.health import Health
from zs_perception.segmentation.base import (Instance, Prompt, PromptLike, SegmentationError,
                                             Segmenter)
from zs_perception.segmentation.prompting import parse_goal
from zs_perception.tracking import Tracker

# Smallest image side (px) segmented; smaller images are bad input (a 1x1 test pattern).
MIN_IMAGE_SIDE_PX = 8
# 32FC1 depth whose median valid reading exceeds this (m) and max_depth_m holds millimetres.
MM_AS_METRES_MEDIAN_M = 20.0
_DEPTH_FLOAT_ENCODINGS = ('32FC1',)
# A goal: a goal string (phrases) or a list of text / image prompts.
GoalLike = Union[str, Sequence[PromptLike]]


@dataclass
class FrameInput:
    """One synchronised frame, with lazy decoders (they raise ``ValueError`` on bad data).

    Attributes:
        stamp_s: the image's header stamp (s).
        arrival_s: when the image arrived, on the same clock as ``now`` (s).
        frame_id: the image's frame id (the camera optical frame).
        rgb: returns ``(H, W, 3)`` ``uint8`` RGB.
        depth: returns ``(h, w)`` ``float32`` metres, or ``None`` when no depth matched.
        depth_encoding: the depth message's encoding (``'16UC1'``, ``'32FC1'``...).
        intrinsics: ``(w, h) -> CameraIntrinsics`` of a ``w`` x ``h`` image, or ``None``
            when no camera info matched.
        depth_miss: why ``depth`` is ``None`` (from the synchroniser).
        info_miss: why ``intrinsics`` is ``None``.
        stamps_reset: the stamps jumped back (bag loop): tracks restart.

    """

    stamp_s: float
    arrival_s: float
    frame_id: str
    rgb: Callable[[], np.ndarray]
    depth: Optional[Callable[[], np.ndarray]] = None
    depth_encoding: str = ''
    intrinsics: Optional[Callable[[int, int], CameraIntrinsics]] = None
    depth_miss: Optional[Miss] = None
    info_miss: Optional[Miss] = None
    stamps_reset: bool = False


@dataclass
class FrameResult:
    """What one frame produced, in publishing order of the objects.

    Attributes:
        rgb: the decoded image, ``(H, W, 3)`` ``uint8``.
        instances: the kept instances (non-empty masks, at most ``max_objects``).
        geometries: one :class:`ObjectGeometry` per instance.
        ids: one track id per instance.
        prompts: the active goal phrases.
        timings: seconds per stage (``convert``, ``segment``, ``segment.*``, ``geometry``,
            ``tracking``; ``arrival`` when the stamp is plausible).
        stamp_ok: the stamp is neither zero nor in the future: latencies are meaningful.

    """

    rgb: np.ndarray
    instances: List[Instance]
    geometries: List[ObjectGeometry]
    ids: List[int]
    prompts: List[str]
    timings: Dict[str, float] = field(default_factory=dict)
    stamp_ok: bool = True


def stamp_problem(stamp_s: float, now_s: float) -> Optional[str]:
    """Say what is wrong with an image stamp compared with the clock ``now_s``, or ``None``."""
    if stamp_s == 0.0:
        return ('the image stamp is 0: set header.stamp to the capture time in the camera '
                'driver; latencies of these frames are left out of the statistics')
    if now_s > 0.0 and stamp_s > now_s + FUTURE_STAMP_S:  # a clock at 0 has no time yet
        return (f"the image stamp is {stamp_s - now_s:.3f} s ahead of this node's clock: "
                'check the camera clock (or use_sim_time with bags); latencies of these '
                'frames are left out of the statistics')
    return None


def millimetres_as_metres(depth_m: np.ndarray, encoding: str, min_depth_m: float,
                          max_depth_m: float) -> bool:
    """Tell whether float depth (meant in metres) holds millimetres (median 800-2000, say).

    True when the median valid reading is beyond both :data:`MM_AS_METRES_MEDIAN_M` and
    ``max_depth_m`` while a thousandth of it is within ``[min_depth_m, max_depth_m]``.
    """
    if encoding not in _DEPTH_FLOAT_ENCODINGS:
        return False
    valid = depth_m[np.isfinite(depth_m) & (depth_m > 0)]
    if valid.size == 0:
        return False
    median = float(np.median(valid))
    return (median > max(MM_AS_METRES_MEDIAN_M, max_depth_m)
            and min_depth_m <= median / 1000.0 <= max_depth_m)


class FramePipeline:
    """Segment -> geometry -> tracking for one frame at a time (one thread calls it).

    Args:
        segmenter: the segmentation engine.
        health: where faults and counters go.
        log_warning: called with a warning's text when it should be logged now.
        log_info: called with an information line (a new goal).
        engine_settings: the engine thresholds the segmenter was built with (so they are
            not sent again); empty: send the settings' values before the first frame.

    """

    def __init__(self, segmenter: Segmenter, health: Health, *,
                 log_warning: Callable[[str], None] = lambda text: None,
                 log_info: Callable[[str], None] = lambda text: None,
                 engine_settings: Optional[Mapping[str, Any]] = None):
        self.segmenter = segmenter
        self.health = health
        self.tracker = Tracker()
        self._log_warning = log_warning
        self._log_info = log_info
        self._engine_settings: Dict[str, Any] = dict(engine_settings or {})
        self.prompts: List[str] = []
        # The streaming goal (goal topic, prompts parameter, goal_prompts) and the prompts
        # of a FindObjects query, given to the segmenter together.
        self.stream_prompts: List[PromptLike] = []
        self.extra_prompts: List[PromptLike] = []

    # ------------------------------------------------------------------ settings
    def apply_settings(self, settings: Mapping[str, Any]) -> None:
        """Bring every stage in line with ``settings`` (changed engine thresholds only)."""
        wanted = {name: settings[name] for name in config.LIVE_ENGINE_SETTINGS}
        changed = {k: v for k, v in wanted.items() if self._engine_settings.get(k) != v}
        if changed:
            try:
                self.segmenter.set_thresholds(**changed)
            except ValueError as err:
                self.warn('thresholds', f'The segmenter did not accept {changed}: {err}')
            self._engine_settings = wanted
        self.tracker.iou_threshold = settings['track_iou_threshold']
        self.tracker.max_distance_m = settings['track_max_distance_m']
        self.tracker.max_missed_frames = settings['track_max_missed_frames']

    def apply_goal(self, goal: Optional[GoalLike], settings: Mapping[str, Any],
                   extra: Optional[Sequence[PromptLike]] = None) -> List[str]:
        """Give the segmenter the streaming goal plus the extra (query) prompts; return them.

        Args:
            goal: the new streaming goal: a goal string (parsed with the settings' limits),
                a sequence of text / image prompts (a ``PromptArray``), or ``None`` to keep
                the current one.
            settings: the node's settings in force.
            extra: prompts looked for on top of the streaming goal (a FindObjects query);
                ``None`` keeps the current ones, ``[]`` clears them.

        """
        if isinstance(goal, str):
            parsed = parse_goal(goal, settings['max_prompts'], settings['max_prompt_chars'])
            if parsed.warning():
                self.warn('goal', parsed.warning() + '.')
            self.stream_prompts = list(parsed.phrases)
        elif goal is not None:
            goal = list(goal)
            if len(goal) > settings['max_prompts']:
                self.warn('goal', f'goal: kept the first {settings["max_prompts"]} of '
                          f'{len(goal)} prompts (max_prompts).')
            self.stream_prompts = goal[:settings['max_prompts']]
        if extra is not None:
            self.extra_prompts = list(extra)
        report = self.segmenter.set_prompts(self.stream_prompts + self.extra_prompts)
        for phrase, reason in list(report.dropped) + list(report.truncated):
            name = phrase.label if isinstance(phrase, Prompt) else str(phrase)
            self.warn('goal_engine', f'goal: the segmenter changed {name[:40]!r}: '
                      f'{reason}.')
        self.prompts = list(self.segmenter.prompts)
        self._log_info(f'Goal is now {self.prompts}.')
        return self.prompts

    # ------------------------------------------------------------------ one frame
    def process(self, frame: FrameInput, settings: Mapping[str, Any], now_s: float,
                goal: Optional[GoalLike] = None,
                extra: Optional[Sequence[PromptLike]] = None) -> Optional[FrameResult]:
        """Run one frame; ``None`` when it was bad input or the segmenter failed (counted).

        Args:
            frame: the frame and its decoders.
            settings: the node's settings in force (all parameters).
            now_s: the current time on the clock of ``frame.arrival_s`` (s).
            goal: a new goal to apply first, or ``None`` (see :meth:`apply_goal`).
            extra: new query prompts to apply first, or ``None``.

        """
        self.apply_settings(settings)
        if goal is not None or extra is not None:
            self.apply_goal(goal, settings, extra)
        timings: Dict[str, float] = {}
        problem = stamp_problem(frame.stamp_s, now_s)
        if problem is not None:
            self.warn('bad_stamp', problem[0].upper() + problem[1:] + '.', 'bad_stamp')
        else:
            timings['arrival'] = frame.arrival_s - frame.stamp_s
        t = time.perf_counter()
        try:
            rgb = frame.rgb()
            if min(rgb.shape[:2]) < MIN_IMAGE_SIDE_PX:
                raise ValueError(f'the image is {rgb.shape[1]}x{rgb.shape[0]} px; at least '
                                 f'{MIN_IMAGE_SIDE_PX}x{MIN_IMAGE_SIDE_PX} px are needed')
        except ValueError as err:
            self.warn('bad_image', f'Dropped an image: {sentence(err)}', 'bad_image')
            return None
        timings['convert'] = time.perf_counter() - t
        if not frame.frame_id:
            self.warn('no_frame_id', 'The image has an empty header.frame_id; the outputs '
                      'copy it, so rviz and tf cannot place them. Set the frame_id of the '
                      'camera driver (its optical frame, e.g. camera_color_optical_frame).')
        if frame.stamps_reset:
            self.tracker.reset()

        if not self.prompts and self.segmenter.needs_prompts:
            self.warn('no_goal', 'No goal yet: publish phrases such as "red mug, screwdriver" '
                      'on the goal topic (std_msgs/String) or set the prompts parameter; '
                      'publishing empty results until then.')
            instances: List[Instance] = []
        else:
            t = time.perf_counter()
            try:
                result = self.segmenter.segment(rgb)
            except (SegmentationError, ValueError) as err:
                self.warn('segmenter_errors', 'Segmentation failed on this frame: '
                          f'{type(err).__name__}: {err}', 'segmenter_errors')
                return None
            timings['segment'] = time.perf_counter() - t
            for stage, seconds in result.timings.items():
                timings[f'segment.{stage}'] = seconds
            instances = [i for i in result.instances if i.mask.any()][:settings['max_objects']]

        t = time.perf_counter()
        masks = [i.mask for i in instances]
        geometries = self.geometry(masks, rgb.shape[:2], frame, settings)
        timings['geometry'] = time.perf_counter() - t

        t = time.perf_counter()
        ids = self.tracker.update(masks, [i.label for i in instances],
                                  [g.position if g.has_pose else None for g in geometries])
        # With propagation on, the video tracker's object id (>= 1) is the track id: it
        # follows the object through the tracker's memory, which the mask matcher has not.
        ids = [i.track_id if i.track_id >= 1 else track for i, track in zip(instances, ids)]
        timings['tracking'] = time.perf_counter() - t
        self.health.count('frames_processed')
        return FrameResult(rgb, instances, geometries, list(ids), list(self.prompts), timings,
                           problem is None)

    def geometry(self, masks: List[np.ndarray], image_shape, frame: FrameInput,
                 settings: Mapping[str, Any]) -> List[ObjectGeometry]:
        """Estimate each mask's geometry; objects get ``has_pose`` False with the reason."""
        reason = self._sync_reason(frame, settings)
        depth_m = intrinsics = None
        if reason is None:
            try:
                depth_m = np.asarray(frame.depth(), np.float32)
            except ValueError as err:
                reason = 'bad depth image'
                self.warn('bad_depth', f'Ignored a depth image: {sentence(err)}', 'bad_depth')
        if reason is None and millimetres_as_metres(depth_m, frame.depth_encoding,
                                                    settings['min_depth_m'],
                                                    settings['max_depth_m']):
            self.warn('depth_units', f'The {frame.depth_encoding} depth image holds values '
                      f'like {np.nanmedian(depth_m):.0f}, which look like millimetres, but '
                      f'{frame.depth_encoding} means metres (REP 118); they are used as '
                      'millimetres. Publish metres in 32FC1, or millimetres in 16UC1.')
            depth_m = depth_m * np.float32(0.001)
        if reason is None and abs(depth_m.shape[1] * image_shape[0]
                                  - depth_m.shape[0] * image_shape[1]) > 0.01 * depth_m.size:
            reason = 'depth size mismatch'
            self.warn('bad_depth', f'Ignored a depth image of {depth_m.shape[1]}x'
                      f'{depth_m.shape[0]} for a {image_shape[1]}x{image_shape[0]} image: '
                      'expected depth registered to the colour image (same size, or the same '
                      'aspect ratio).', 'bad_depth')
        if reason is None:
            try:
                intrinsics = frame.intrinsics(depth_m.shape[1], depth_m.shape[0])
            except ValueError as err:
                reason = 'bad camera_info'
                self.warn('bad_camera_info', f'Ignored a camera_info: {sentence(err)}',
                          'bad_camera_info')
        if reason is None and not np.isfinite(depth_m).any():
            self.warn('depth_empty', 'The depth image has no valid reading (all zero or NaN); '
                      'objects are published without poses.')
        if reason is None:
            return estimate_object_geometry(masks, depth_m, intrinsics,
                                            min_depth_m=settings['min_depth_m'],
                                            max_depth_m=settings['max_depth_m'])
        return [ObjectGeometry.without_pose(reason) for _ in masks]

    def _sync_reason(self, frame: FrameInput, settings: Mapping[str, Any]) -> Optional[str]:
        """Report the synchroniser's misses; return the pose status they imply, or ``None``."""
        reason = None
        # Neither depth nor camera info is published: an RGB-only camera, nothing to fix.
        rgb_only = all(m is not None and m.kind == 'none'
                       for m in (frame.depth_miss, frame.info_miss))
        for miss, key, what in ((frame.depth_miss, 'no_depth_match', 'depth image'),
                                (frame.info_miss, 'no_camera_info_match', 'camera_info')):
            if miss is None:
                continue
            reason = reason or miss.reason
            if rgb_only:
                continue
            hint = {'late': ' Check that it is published with every image; if it comes '
                            'later than the image, raise sync_wait_s.',
                    'mismatch': f' Check that the {what} is stamped like the image (same '
                                'capture time) or raise sync_tolerance_s.',
                    'absent': ' Check the camera driver and the topic remapping.',
                    'none': ' Check the camera driver and the topic remapping.'}[miss.kind]
            self.warn(key, f'Publishing without poses: {miss.detail}.{hint}', key)
        if reason is None and (frame.depth is None or frame.intrinsics is None):
            reason = 'no depth image' if frame.depth is None else 'no camera_info'
        return reason

    def warn(self, key: str, text: str, counter: str = '') -> None:
        """Record the fault ``key`` (counting ``counter``) and log ``text`` when due."""
        if self.health.report(key, text, counter):
            self._log_warning(text)


def sentence(err: Exception) -> str:
    """Return an exception's message as the end of a log sentence: one final period."""
    return str(err).rstrip('.') + '.'
