"""The perception node's parameters: defaults, types, ranges, descriptions and validation.

This table is the one place where a parameter is defined. The ROS node declares
its parameters from it (description, range, read-only for those that cannot change
while running), ``config/zs_perception.yaml`` lists the same keys, and the README
tables are written from it. Nothing here imports ROS.
"""

from dataclasses import dataclass
import math
import re
from typing import Any, Dict, Mapping, Optional, Tuple

from zs_perception.segmentation.factory import BACKENDS, TRACKERS

# Settings handed to ``zs_perception.segmentation.factory.create_segmenter``.
ENGINE_SETTINGS = (
    'clipseg_model', 'sam_checkpoint', 'sam_model_type', 'device', 'precision',
    'threshold', 'min_area_px', 'max_objects', 'allow_random_weights',
    'detector', 'detector_model', 'clip_model', 'vocabulary',
    'sam3_model', 'tracker', 'tracker_model', 'detect_every_n_frames',
)
# Engine settings that the segmenter accepts at run time through ``set_thresholds``.
LIVE_ENGINE_SETTINGS = ('threshold', 'min_area_px', 'max_objects')


@dataclass(frozen=True)
class ParameterSpec:
    """One parameter of the perception node.

    Attributes:
        name: parameter name (also the settings key).
        default: default value; its Python type is the parameter type.
        kind: ``bool``, ``int``, ``float`` or ``str``.
        description: one sentence with units and meaning, shown by
            ``ros2 param describe``.
        value_range: inclusive ``(low, high)`` for numbers, else ``None``.
        choices: allowed values for a string, else ``None``.
        pattern: regular expression a string must match in full, else ``None``.
        live: True if the value may change while the node runs; False makes
            the ROS parameter read-only.

    """

    name: str
    default: Any
    kind: type
    description: str
    value_range: Optional[Tuple[float, float]] = None
    choices: Optional[Tuple[str, ...]] = None
    pattern: Optional[str] = None
    live: bool = False

    def allowed(self) -> str:
        """Say in words which values are allowed, for error messages."""
        if self.choices is not None:
            return 'one of ' + ', '.join(repr(c) for c in self.choices)
        kind = {bool: 'a boolean', int: 'an integer', float: 'a number', str: 'a string'}[
            self.kind]
        if self.value_range is not None:
            return f'{kind} in [{self.value_range[0]}, {self.value_range[1]}]'
        if self.pattern is not None:
            return f'{kind} matching {self.pattern!r}'
        return kind


PARAMETERS = (
    ParameterSpec(
        'backend', 'clipseg', str,
        'Segmentation backend: ' + '; '.join(f"'{name}': {what}"
                                             for name, what in BACKENDS.items()) + '.',
        choices=tuple(BACKENDS)),
    ParameterSpec(
        'clipseg_model', 'CIDAS/clipseg-rd64-refined', str,
        'CLIPSeg weights: a local directory saved with save_pretrained, or a Hugging Face '
        'model id already in the local cache.'),
    ParameterSpec(
        'sam_checkpoint', '', str,
        'Path of a Segment Anything checkpoint (.pth); empty: backends that need SAM '
        'report how to get one.'),
    ParameterSpec(
        'sam_model_type', 'vit_b', str,
        "Segment Anything architecture matching sam_checkpoint ('tiny': random-weight test "
        'models only).',
        choices=('vit_b', 'vit_l', 'vit_h', 'tiny')),
    ParameterSpec(
        'detector', 'owlv2', str,
        "Open-vocabulary detector of the grounded_sam backend: 'owlv2' or 'grounding_dino'.",
        choices=('owlv2', 'grounding_dino')),
    ParameterSpec(
        'detector_model', '', str,
        'Detector weights (grounded_sam): a local directory or a cached Hugging Face id; '
        "empty: 'google/owlv2-base-patch16-ensemble' or 'IDEA-Research/grounding-dino-tiny'."),
    ParameterSpec(
        'clip_model', '', str,
        'CLIP weights (zero_guidance, clip_dense): a local directory or a cached Hugging Face '
        "id; empty: 'openai/clip-vit-base-patch32'."),
    ParameterSpec(
        'vocabulary', '', str,
        'Labels the zero_guidance backend names segments with, separated by commas; empty: '
        'a default list of household objects and obstacles. Goal phrases are added to it.'),
    ParameterSpec(
        'device', 'auto', str,
        "Torch device: 'auto' (CUDA if available, else CPU), 'cpu', 'cuda' or 'cuda:N'.",
        pattern=r'auto|cpu|cuda(:\d+)?'),
    ParameterSpec(
        'precision', 'auto', str,
        "Inference precision: 'auto' (fp16 on CUDA, fp32 on CPU), 'fp32', 'fp16' or 'bf16'.",
        choices=('auto', 'fp32', 'fp16', 'bf16')),
    ParameterSpec(
        'allow_random_weights', False, bool,
        'Build models with random weights when none are found (tests and demos only; '
        'the masks are meaningless).'),
    ParameterSpec(
        'prompts', '', str,
        'Initial goal: phrases separated by commas or semicolons (e.g. "red mug, '
        'screwdriver"); the goal topic and live updates replace it; empty: no goal.',
        live=True),
    ParameterSpec(
        'threshold', 0.4, float,
        'Mask score threshold in [0, 1]: pixels and objects scoring below it are dropped.',
        value_range=(0.0, 1.0), live=True),
    ParameterSpec(
        'min_area_px', 100, int,
        'Smallest object mask kept, in pixels of the source image.',
        value_range=(1, 100_000_000), live=True),
    ParameterSpec(
        'max_objects', 20, int,
        'Most objects published per frame (highest scores first); at most 255 so that '
        'the mono8 label image can index them.',
        value_range=(1, 255), live=True),
    ParameterSpec(
        'max_prompts', 32, int,
        'Most goal phrases used; further phrases are dropped with a warning.',
        value_range=(1, 256), live=True),
    ParameterSpec(
        'max_prompt_chars', 200, int,
        'Longest goal phrase kept, in characters; longer phrases are cut with a warning.',
        value_range=(1, 10_000), live=True),
    ParameterSpec(
        'min_depth_m', 0.1, float,
        'Nearest depth used for poses and points (m); closer readings are ignored.',
        value_range=(0.001, 1000.0), live=True),
    ParameterSpec(
        'max_depth_m', 10.0, float,
        'Farthest depth used for poses and points (m); farther readings are ignored.',
        value_range=(0.001, 1000.0), live=True),
    ParameterSpec(
        'sync_tolerance_s', 0.02, float,
        'Largest stamp difference (s) between the image and the depth image or camera '
        'info matched with it.',
        value_range=(0.0, 1.0), live=True),
    ParameterSpec(
        'sync_wait_s', 0.1, float,
        'Longest wait (s), counted from the arrival of each image, for its depth image and '
        'camera info; after it the image is processed and its objects are published without '
        'poses (no wait at all when the match cannot come: stamps ahead or far behind, or '
        'the stream silent).',
        value_range=(0.0, 1.0), live=True),
    ParameterSpec(
        'reliability', 'best_effort', str,
        'QoS reliability of the camera subscriptions (sensor-data QoS, keep last 5 '
        'otherwise); use reliable for bags or publishers that only offer reliable.',
        choices=('best_effort', 'reliable')),
    ParameterSpec(
        'use_compressed', False, bool,
        'Subscribe to image/compressed (sensor_msgs/CompressedImage) instead of image.'),
    ParameterSpec(
        'target_frame', '', str,
        'Frame of the published objects, poses, markers and points (e.g. base_link); empty: '
        "the source image's frame (the camera optical frame). Found with tf2 at each image "
        'stamp, or from target_transform (docs/frames.md).',
        pattern=r'([A-Za-z0-9_][A-Za-z0-9_./-]*)?'),
    ParameterSpec(
        'target_transform', '', str,
        'Fixed pose of the camera optical frame in target_frame, "x y z qx qy qz qw" (m, '
        'unit quaternion), used instead of tf2 (needed where tf2_ros is not installed); '
        'empty: look it up with tf2.',
        pattern=r'[-+0-9.eE,\s]*'),
    ParameterSpec(
        'tf_timeout_s', 0.05, float,
        'Longest wait (s) for the tf2 transform to target_frame at an image stamp; after it '
        'the objects are published without poses, saying why.',
        value_range=(0.0, 1.0)),
    ParameterSpec(
        'stream', True, bool,
        'Process every camera frame and publish the streaming outputs; false: frames are '
        'processed only while a FindObjects goal runs (the GPU idles between queries).',
        live=True),
    ParameterSpec(
        'find_timeout_s', 5.0, float,
        'Timeout (s) of a FindObjects goal that gives timeout_s 0.',
        value_range=(0.01, 3600.0), live=True),
    ParameterSpec(
        'track_iou_threshold', 0.3, float,
        'Smallest mask overlap (intersection over union) for an object to keep its track id '
        'from the previous frame.',
        value_range=(0.0, 1.0), live=True),
    ParameterSpec(
        'track_max_distance_m', 0.3, float,
        'Largest 3D distance (m) between positions for an object with a pose to keep its '
        'track id when the masks do not overlap enough; 0 disables distance matching.',
        value_range=(0.0, 100.0), live=True),
    ParameterSpec(
        'track_max_missed_frames', 5, int,
        'Frames an unmatched track is remembered before its id is retired (ids are never '
        'reused).',
        value_range=(0, 10_000), live=True),
    # SAM 3 backend and mask propagation between frames.
    ParameterSpec(
        'sam3_model', 'facebook/sam3', str,
        'SAM 3 weights (backend sam3): a local directory or a Hugging Face id (local cache '
        'first); facebook/sam3 is gated (accept the SAM License on the hub, then log in to '
        'download); SAM 3 LiteText checkpoints load through the same setting.'),
    ParameterSpec(
        'tracker', 'none', str,
        'Video tracker that propagates masks between keyframes (any backend): '
        + '; '.join(f"'{name}': {what}" for name, what in TRACKERS.items()) + '.',
        choices=tuple(TRACKERS)),
    ParameterSpec(
        'tracker_model', '', str,
        'Tracker weights: a local directory or a Hugging Face id; empty: '
        "'facebook/sam2.1-hiera-tiny' (sam2), 'yonigozlan/EdgeTAM-hf' (edgetam) or "
        "'facebook/sam3' (sam3_tracker)."),
    ParameterSpec(
        'detect_every_n_frames', 5, int,
        'With a tracker: run the backend on at least every n-th frame (also when a tracked '
        'object fades or the goal changes), the tracker in between; 1: every frame.',
        value_range=(1, 10_000)),
)

SPECS: Dict[str, ParameterSpec] = {spec.name: spec for spec in PARAMETERS}


def defaults() -> Dict[str, Any]:
    """Return ``{name: default}`` for every parameter."""
    return {spec.name: spec.default for spec in PARAMETERS}


def validate(name: str, value: Any) -> Optional[str]:
    """Check one parameter value on its own.

    Args:
        name: parameter name.
        value: proposed value.

    Returns:
        ``None`` if the value is valid, else a reason saying what was wrong,
        what is allowed and what was received.

    """
    spec = SPECS.get(name)
    if spec is None:
        return f'unknown parameter {name!r}; known parameters: {", ".join(sorted(SPECS))}'
    if not _has_type(spec.kind, value):
        return f'{name} must be {spec.allowed()}, got {value!r} of type {type(value).__name__}'
    if spec.kind is float and not math.isfinite(value):
        return f'{name} must be finite, got {value!r}'
    if spec.value_range is not None:
        low, high = spec.value_range
        if not low <= value <= high:
            return f'{name} must be {spec.allowed()}, got {value!r}'
    if spec.choices is not None and value not in spec.choices:
        return f'{name} must be {spec.allowed()}, got {value!r}'
    if spec.pattern is not None and re.fullmatch(spec.pattern, value) is None:
        return f'{name} must be {spec.allowed()}, got {value!r}'
    return None


def check_update(current: Mapping[str, Any], changes: Mapping[str, Any]) -> Optional[str]:
    """Check a live update of some parameters against the running settings.

    Args:
        current: the settings in force (all parameters).
        changes: ``{name: new value}``.

    Returns:
        ``None`` if the update may be applied, else the reason it is rejected
        (a read-only parameter, an invalid value, or an inconsistent pair such
        as ``min_depth_m >= max_depth_m``).

    """
    for name, value in changes.items():
        reason = validate(name, value)
        if reason is not None:
            return reason
        if not SPECS[name].live and value != current.get(name):
            return (f'{name} cannot change while the node runs (it is read-only); set it in '
                    'the parameter file or on the command line and restart the node')
    merged = dict(current)
    merged.update(changes)
    return _cross_check(merged)


def validate_settings(settings: Mapping[str, Any]) -> Dict[str, Any]:
    """Check a whole settings dict at start-up and fill in defaults.

    Args:
        settings: ``{name: value}`` for any subset of the parameters.

    Returns:
        A new dict with every parameter, defaults for those not given.

    Raises:
        ValueError: naming the parameter, the bad value, what is allowed and
            how to fix it.

    """
    merged = defaults()
    for name, value in settings.items():
        reason = validate(name, value)
        if reason is not None:
            raise ValueError(
                f'Invalid parameter: {reason}. Fix it in config/zs_perception.yaml or pass '
                f'--ros-args -p {name}:=<value>.')
        merged[name] = value
    reason = _cross_check(merged)
    if reason is not None:
        raise ValueError(f'Invalid parameters: {reason}.')
    return merged


def engine_settings(settings: Mapping[str, Any]) -> Dict[str, Any]:
    """Return the keyword arguments for ``create_segmenter`` taken from ``settings``."""
    return {name: settings[name] for name in ENGINE_SETTINGS}


def _has_type(kind: type, value: Any) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, kind)


def _cross_check(settings: Mapping[str, Any]) -> Optional[str]:
    if settings['min_depth_m'] >= settings['max_depth_m']:
        return (f'min_depth_m ({settings["min_depth_m"]}) must be less than max_depth_m '
                f'({settings["max_depth_m"]}); lower min_depth_m or raise max_depth_m')
    if settings['target_transform']:
        if not settings['target_frame']:
            return ('target_transform is set but target_frame is empty; name the frame it '
                    'maps into (target_frame:=base_link) or clear target_transform')
        from zs_perception.geometry.transform import RigidTransform  # lazy: geometry is heavy
        try:
            RigidTransform.parse(settings['target_transform'])
        except ValueError as err:
            return f'target_transform: {err}'
    return None
