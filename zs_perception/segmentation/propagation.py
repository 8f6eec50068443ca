"""Masks that follow objects between frames: any backend on keyframes, a video tracker between.

:class:`Propagator` wraps any :class:`~zs_perception.segmentation.base.Segmenter` and a
streaming video tracker from transformers (``Sam2VideoModel``, ``EdgeTamVideoModel``,
``Sam3TrackerVideoModel``; :class:`VideoTracker`) and is itself a ``Segmenter``:

- a **keyframe** runs the wrapped backend. Keyframes are the first frame, every
  ``detect_every_n_frames``-th frame after the last keyframe, any frame on which a tracked
  object fades (the tracker's object score says absent, or its mask falls under
  ``min_area_px``), the first frame after a goal change, and any frame of a new size;
- its detections are matched to the tracked objects (same label, mask IoU with the
  tracker's latest mask or with the object's last detected mask at least ``match_iou``,
  best pair first): a match keeps the object's track id, the rest get new ids. The
  backend is the authority on keyframes: tracked objects it does not find end there;
- the tracker is then conditioned on the detections' masks (a fresh inference session
  whose object ids are the track ids) and the frames up to the next keyframe get the
  tracker's masks, with the label and score of the object's last detection.

Memory stays flat on an endless stream: each keyframe starts a new inference session, and
after each frame the session is pruned to what the tracker reads again: the conditioning
frame, the outputs of the last ``max(num_maskmem, max_object_pointers_in_encoder)``
frames and the current frame's pixels. Outputs are the same as the unpruned documented
streaming usage (see the tests).
"""

from dataclasses import dataclass, replace
import logging
import threading
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from zs_perception.segmentation.base import check_rgb_image, Instance, PromptLike
from zs_perception.segmentation.base import PromptReport, SegmentationResult, Segmenter
from zs_perception.segmentation.device import out_of_memory_as_error, StageTimer
from zs_perception.segmentation.factory import TRACKERS
from zs_perception.segmentation.instances import mask_box

DEFAULT_TRACKER_MODELS = {
    'sam2': 'facebook/sam2.1-hiera-tiny',
    'edgetam': 'yonigozlan/EdgeTAM-hf',
    'sam3_tracker': 'facebook/sam3',
}
DEFAULT_DETECT_EVERY_N_FRAMES = 5
# Smallest mask IoU for a detection to continue a tracked object.
DEFAULT_MATCH_IOU = 0.3

logger = logging.getLogger(__name__)


def _tracker_classes(tracker: str):
    """(model class, processor class, accepted config model types) of a tracker."""
    if tracker == 'sam2':
        from transformers import Sam2VideoModel, Sam2VideoProcessor
        return Sam2VideoModel, Sam2VideoProcessor, ('sam2_video', 'sam2')
    if tracker == 'sam3_tracker':
        from transformers import Sam3TrackerVideoModel, Sam3TrackerVideoProcessor
        # facebook/sam3 holds detector and tracker in one 'sam3_video' checkpoint.
        return (Sam3TrackerVideoModel, Sam3TrackerVideoProcessor,
                ('sam3_tracker_video', 'sam3_video', 'sam3_tracker'))
    from transformers import EdgeTamVideoModel, Sam2VideoProcessor
    return EdgeTamVideoModel, Sam2VideoProcessor, ('edgetam_video', 'edgetam')


def load_tracker(tracker: str, model: str, device: torch.device, dtype: torch.dtype,
                 allow_random_weights: bool = False) -> 'VideoTracker':
    """Load a streaming video tracker.

    Args:
        tracker: ``'sam2'``, ``'edgetam'`` or ``'sam3_tracker'``.
        model: Hugging Face id or local directory; empty: the tracker's
            :data:`DEFAULT_TRACKER_MODELS` entry.
        device: where it runs.
        dtype: its dtype.
        allow_random_weights: accept a directory marked as random weights.

    Raises:
        ValueError: unknown tracker, or ``edgetam`` without the ``timm`` package.
        ModelLoadError: as :func:`~zs_perception.segmentation.loading.load_hf_model`.

    """
    from zs_perception.segmentation.loading import load_hf_model
    from zs_perception.segmentation.sam3 import peek_model_type

    if tracker not in TRACKERS or tracker == 'none':
        raise ValueError(f'Unknown tracker {tracker!r}; expected one of '
                         f'{", ".join(t for t in TRACKERS if t != "none")}.')
    if tracker == 'edgetam':
        try:
            import timm  # noqa: F401  (EdgeTAM's RepViT backbone is a timm model)
        except ImportError as exc:
            raise ValueError(
                "tracker 'edgetam' needs the timm package (pip install timm), which is not "
                "installed; use tracker 'sam2' or 'sam3_tracker', or install timm.") from exc
    model_cls, processor_cls, types = _tracker_classes(tracker)
    name = str(model).strip() or DEFAULT_TRACKER_MODELS[tracker]
    found = peek_model_type(name)
    net, processor = load_hf_model(
        model_cls, processor_cls, name, setting='tracker_model',
        default_id=DEFAULT_TRACKER_MODELS[tracker],
        model_type=found if found in types else types[0], device=device, dtype=dtype,
        allow_random_weights=allow_random_weights)
    logger.info('Propagation tracker %s on %s in %s (%s %s).', tracker, device, dtype,
                model_cls.__name__, name)
    return VideoTracker(net, processor, device, dtype)


@dataclass
class TrackedFrame:
    """What the tracker says about one frame.

    Attributes:
        object_ids: ``K`` tracker object ids (the track ids), in session order.
        masks: ``(K, H, W)`` ``bool`` at the input image's resolution.
        present: ``(K,)`` ``bool``: the tracker's object score says the object is visible.

    """

    object_ids: List[int]
    masks: np.ndarray
    present: np.ndarray


class VideoTracker:
    """One streaming inference session of a transformers video tracker, kept pruned.

    The documented streaming usage, with the session reset per keyframe and pruned per
    frame::

        session = processor.init_video_session(inference_device=device, dtype=dtype)
        inputs = processor(images=frame, device=device, return_tensors='pt')
        processor.add_inputs_to_inference_session(session, frame_idx=0, obj_ids=ids,
                                                  input_masks=masks)
        output = model(inference_session=session, frame=inputs.pixel_values[0])
        masks = processor.post_process_masks([output.pred_masks], inputs.original_sizes)[0]

    Args:
        model: the loaded video model on ``device`` in ``dtype``.
        processor: its video processor.
        device: where it runs.
        dtype: the model's dtype (also the session's).

    """

    def __init__(self, model, processor, device: torch.device, dtype: torch.dtype):
        self.model = model
        self.processor = processor
        self.device = device
        self.dtype = dtype
        config = model.config
        # Frames whose outputs the model reads again: the memory bank and object pointers.
        self.window = max(int(config.num_maskmem), int(config.max_object_pointers_in_encoder))
        self.session = None
        self.frame_idx = -1

    def preprocess(self, image: np.ndarray) -> Tuple[torch.Tensor, List[int]]:
        """``(3, S, S)`` pixels of one ``(H, W, 3)`` ``uint8`` RGB image and ``[H, W]``."""
        x = torch.from_numpy(image).to(self.device).permute(2, 0, 1)
        inputs = self.processor(images=x, device=self.device, return_tensors='pt')
        return inputs['pixel_values'][0], [int(image.shape[0]), int(image.shape[1])]

    def start(self, image: np.ndarray, masks: Sequence[np.ndarray],
              object_ids: Sequence[int]) -> TrackedFrame:
        """Start a new session conditioned on ``masks`` (``(H, W)`` bool each) in ``image``.

        Args:
            image: ``(H, W, 3)`` ``uint8`` RGB.
            masks: one mask per object.
            object_ids: the objects' ids (kept by the tracker and returned with its masks).

        """
        pixels, size = self.preprocess(image)
        self.session = self.processor.init_video_session(inference_device=self.device,
                                                         dtype=self.dtype)
        self.frame_idx = 0
        self.processor.add_inputs_to_inference_session(
            self.session, frame_idx=0, obj_ids=[int(i) for i in object_ids],
            input_masks=[torch.from_numpy(np.asarray(m, dtype=bool)) for m in masks])
        return self._run(pixels, size)

    def track(self, image: np.ndarray) -> TrackedFrame:
        """Track the objects into the next frame of the stream; their masks there."""
        if self.session is None:
            raise RuntimeError('VideoTracker.track called before start.')
        pixels, size = self.preprocess(image)
        self.frame_idx += 1
        return self._run(pixels, size)

    def stop(self) -> None:
        """Drop the session (and all its tensors)."""
        self.session = None
        self.frame_idx = -1

    def _run(self, pixels: torch.Tensor, size: List[int]) -> TrackedFrame:
        output = self.model(inference_session=self.session, frame=pixels,
                            frame_idx=self.frame_idx)
        self.prune()
        masks = self.processor.post_process_masks([output.pred_masks], original_sizes=[size])[0]
        present = output.object_score_logits.float().reshape(-1) > 0
        return TrackedFrame(object_ids=[int(i) for i in output.object_ids],
                            masks=masks[:, 0].cpu().numpy().astype(bool),
                            present=present.cpu().numpy())

    def prune(self) -> None:
        """Forget what the model will not read again (frames older than :attr:`window`).

        Kept: the conditioning outputs (one per object: the session starts at a keyframe),
        the non-conditioning outputs of the last :attr:`window` frames, the current frame's
        pixels and cached vision features.
        """
        session = self.session
        oldest = self.frame_idx - self.window
        if session.processed_frames is not None:
            for t in [t for t in session.processed_frames if t != self.frame_idx]:
                del session.processed_frames[t]
        for per_obj in session.output_dict_per_obj.values():
            outputs = per_obj['non_cond_frame_outputs']
            for t in [t for t in outputs if t <= oldest]:
                del outputs[t]
        for tracked in session.frames_tracked_per_obj.values():
            for t in [t for t in tracked if t <= oldest]:
                del tracked[t]

    def session_tensors(self) -> Tuple[int, int]:
        """``(count, bytes)`` of the tensors the session holds (frames, outputs, inputs, cache)."""
        if self.session is None:
            return 0, 0
        session = self.session
        roots = [session.processed_frames, session.output_dict_per_obj,
                 session.mask_inputs_per_obj, session.point_inputs_per_obj,
                 session.cache._vision_features]
        seen, count, size = set(), 0, 0
        stack = list(roots)
        while stack:
            item = stack.pop()
            if isinstance(item, torch.Tensor):
                if id(item) not in seen:
                    seen.add(id(item))
                    count += 1
                    size += item.numel() * item.element_size()
            elif isinstance(item, dict):
                stack.extend(item.values())
            elif isinstance(item, (list, tuple)):
                stack.extend(item)
        return count, size


@dataclass
class _Track:
    track_id: int
    label: str
    prompt_index: int
    score: float
    detected: np.ndarray  # (H, W) bool, the last detection's mask
    tracked: Optional[np.ndarray] = None  # (H, W) bool, the tracker's latest mask


class Propagator(Segmenter):
    """A segmenter whose masks follow objects between keyframes (see the module docstring).

    Args:
        segmenter: the backend run on keyframes.
        tracker: the video tracker run between them.
        detect_every_n_frames: a keyframe at least every this many frames (1: every frame
            is a keyframe and the tracker is never used).
        match_iou: smallest mask IoU in ``[0, 1]`` for a detection to continue a tracked
            object.

    Instances carry the track id (``Instance.track_id``, ids from 1, never reused while the
    propagator lives). :attr:`last_was_keyframe` says whether the last frame ran the
    backend.
    """

    def __init__(self, segmenter: Segmenter, tracker: VideoTracker,
                 detect_every_n_frames: int = DEFAULT_DETECT_EVERY_N_FRAMES,
                 match_iou: float = DEFAULT_MATCH_IOU):
        if isinstance(detect_every_n_frames, bool) or \
                not isinstance(detect_every_n_frames, (int, np.integer)) \
                or detect_every_n_frames < 1:
            raise ValueError(f'detect_every_n_frames must be an integer >= 1, got '
                             f'{detect_every_n_frames!r}.')
        if not 0.0 <= float(match_iou) <= 1.0:
            raise ValueError(f'match_iou must be a number in [0, 1], got {match_iou!r}.')
        self.segmenter = segmenter
        self.tracker = tracker
        self.detect_every_n_frames = int(detect_every_n_frames)
        self.match_iou = float(match_iou)
        self.last_was_keyframe = False
        self.keyframes = 0
        self.frames = 0
        self._lock = threading.Lock()
        self._tracks: Dict[int, _Track] = {}
        self._next_id = 1
        self._since_keyframe = 0
        self._shape: Optional[Tuple[int, int]] = None

    @property
    def THRESHOLDS(self):  # noqa: N802  (the Segmenter attribute, delegated)
        """The wrapped backend's run-time thresholds."""
        return self.segmenter.THRESHOLDS

    @property
    def needs_prompts(self):
        """As the wrapped backend."""
        return self.segmenter.needs_prompts

    @property
    def prompts(self) -> List[str]:
        """Labels of the active prompts, in order."""
        return self.segmenter.prompts

    def set_thresholds(self, **kwargs) -> None:
        """Set the wrapped backend's thresholds; ``min_area_px`` also applies to tracked masks."""
        self.segmenter.set_thresholds(**kwargs)

    def set_prompts(self, prompts: Sequence[PromptLike]) -> PromptReport:
        """Set the backend's prompts; the tracked objects end and the next frame is a keyframe."""
        with self._lock:  # not while a frame is being segmented with the old prompts
            report = self.segmenter.set_prompts(prompts)
            self._end_tracks()
        return report

    def reset(self) -> None:
        """End every tracked object (ids given out are still never reused)."""
        with self._lock:
            self._end_tracks()

    def _end_tracks(self) -> None:
        self._tracks = {}
        self.tracker.stop()

    def segment(self, image: np.ndarray) -> SegmentationResult:
        """Segment one ``(H, W, 3)`` ``uint8`` RGB image: the backend or the tracker.

        Raises:
            ValueError: the image is not ``(H, W, 3)`` ``uint8``.
            DeviceOutOfMemoryError: out of accelerator memory; the next frame is a keyframe.

        """
        image = check_rgb_image(image)
        shape = image.shape[:2]
        with self._lock:
            self.frames += 1
            timer = StageTimer(self.tracker.device)
            if self._tracks and shape == self._shape \
                    and self._since_keyframe + 1 < self.detect_every_n_frames:
                instances = self._track(image, timer)
                if instances is not None:
                    self._since_keyframe += 1
                    self.last_was_keyframe = False
                    return SegmentationResult(instances, timer.timings)
            result = self.segmenter.segment(image)
            instances = self._keyframe(image, result.instances, timer)
            timings = dict(result.timings)
            for stage, seconds in timer.timings.items():
                timings[stage] = timings.get(stage, 0.0) + seconds
            return SegmentationResult(instances, timings, result.probabilities)

    def _track(self, image: np.ndarray, timer: StageTimer) -> Optional[List[Instance]]:
        """Tracker masks for this frame, or None when an object faded (run a keyframe)."""
        what = f'tracking {len(self._tracks)} objects in a {image.shape[1]}x{image.shape[0]} image'
        try:
            with timer.stage('track'), torch.inference_mode(), \
                    out_of_memory_as_error(self.tracker.device, what):
                frame = self.tracker.track(image)
        except Exception:
            self._end_tracks()  # the session may be half updated: start over next frame
            raise
        min_area = max(int(getattr(self.segmenter, 'min_area_px', 1)), 1)
        instances = []
        for object_id, mask, present in zip(frame.object_ids, frame.masks, frame.present):
            track = self._tracks.get(object_id)
            if track is None:
                continue
            if not present or int(mask.sum()) < min_area:
                logger.debug('Track %d (%s) faded; running the backend on this frame.',
                             object_id, track.label)
                return None
            track.tracked = mask
            instances.append(Instance(label=track.label, prompt_index=track.prompt_index,
                                      score=track.score, box=mask_box(mask), mask=mask,
                                      track_id=object_id))
        instances.sort(key=lambda inst: -inst.score)
        return instances

    def _keyframe(self, image: np.ndarray, detections: List[Instance],
                  timer: StageTimer) -> List[Instance]:
        """Give the detections track ids and condition the tracker on them."""
        self.keyframes += 1
        self.last_was_keyframe = True
        self._since_keyframe = 0
        if image.shape[:2] != self._shape:
            self._tracks = {}  # masks of another size cannot be compared
        self._shape = image.shape[:2]
        ids = self._match(detections)
        self._tracks = {
            track_id: _Track(track_id, d.label, d.prompt_index, float(d.score), d.mask)
            for track_id, d in zip(ids, detections)}
        if not detections:
            self.tracker.stop()
            return []
        what = f'starting to track {len(detections)} objects'
        try:
            with timer.stage('track'), torch.inference_mode(), \
                    out_of_memory_as_error(self.tracker.device, what):
                self.tracker.start(image, [d.mask for d in detections], ids)
        except Exception:
            self._end_tracks()
            raise
        return [replace(d, track_id=track_id) for d, track_id in zip(detections, ids)]

    def _match(self, detections: List[Instance]) -> List[int]:
        """Track ids for the detections: continue tracks by mask overlap, else new ids."""
        pairs = []
        for i, detection in enumerate(detections):
            mask = detection.mask
            for track in self._tracks.values():
                if track.label != detection.label:
                    continue
                overlap = max(_iou(mask, track.detected),
                              _iou(mask, track.tracked) if track.tracked is not None else 0.0)
                if overlap > 0 and overlap >= self.match_iou:
                    pairs.append((overlap, i, track.track_id))
        pairs.sort(key=lambda pair: -pair[0])
        ids = [0] * len(detections)
        used = set()
        for _, i, track_id in pairs:
            if ids[i] or track_id in used:
                continue
            ids[i] = track_id
            used.add(track_id)
        for i in range(len(ids)):
            if not ids[i]:
                ids[i] = self._next_id
                self._next_id += 1
        return ids


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b)) / union if union else 0.0


def create_propagator(segmenter: Segmenter, *, tracker: str, tracker_model: str = '',
                      detect_every_n_frames: int = DEFAULT_DETECT_EVERY_N_FRAMES,
                      device: str = 'auto', precision: str = 'auto',
                      allow_random_weights: bool = False) -> Propagator:
    """Load ``tracker`` and wrap ``segmenter`` in a :class:`Propagator`.

    Raises:
        ValueError: unknown tracker, bad ``detect_every_n_frames``, device or precision.
        ModelLoadError: as :func:`load_tracker`.

    """
    from zs_perception.segmentation.device import resolve_device, resolve_dtype

    torch_device = resolve_device(device)
    dtype = resolve_dtype(precision, torch_device)
    video = load_tracker(tracker, tracker_model, torch_device, dtype, allow_random_weights)
    return Propagator(segmenter, video, detect_every_n_frames=detect_every_n_frames)
