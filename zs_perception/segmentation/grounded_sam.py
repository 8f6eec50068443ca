"""The Grounded-SAM backend: an open-vocabulary detector's boxes, drawn as masks by SAM.

Per frame: the detector (OWLv2 or Grounding DINO, :mod:`detectors`) gives
boxes, scores and the phrase each box matched, with the text side encoded
once per goal; boxes over ``threshold`` go through per-phrase non-maximum
suppression and the ``max_objects`` best are kept; then SAM
(:class:`~zs_perception.segmentation.sam.SamRefiner`) encodes the image once
and draws every box's mask in one batched decoder call (on a CPU in cache-sized
calls, which is faster there: see :meth:`~zs_perception.segmentation.sam.SamRefiner.decode`).
On a GPU the SAM image encoder runs on a second CUDA stream, overlapping the detector.

Compared with the documented usage (the transformers processor, model and
post-processing on every frame, then ``SamPredictor.predict`` once per box),
the boxes, scores and masks are the same (parity tests); only the repeated
text encoding and (on a GPU, and for small models on a CPU) the per-box decoder
calls are gone.
"""

import logging
from typing import Hashable, List, Sequence

import numpy as np
import torch
from torchvision.ops import batched_nms

from zs_perception.segmentation.base import check_rgb_image, Instance, Prompt, PromptLike
from zs_perception.segmentation.base import PromptReport, SegmentationResult, Segmenter
from zs_perception.segmentation.detectors import DEFAULT_DETECTOR_MODELS, Detections
from zs_perception.segmentation.detectors import load_detector
from zs_perception.segmentation.device import out_of_memory_as_error, resolve_device
from zs_perception.segmentation.device import resolve_dtype, StageTimer
from zs_perception.segmentation.instances import mask_box
from zs_perception.segmentation.loading import load_sam
from zs_perception.segmentation.prompting import normalize_text_prompts, prompt_key
from zs_perception.segmentation.sam import SamRefiner

logger = logging.getLogger(__name__)


class GroundedSamSegmenter(Segmenter):
    """Open-vocabulary detector boxes to SAM masks.

    Args:
        detector: an :class:`~zs_perception.segmentation.detectors.Owlv2Detector`
            or :class:`~zs_perception.segmentation.detectors.GroundingDinoDetector`.
        refiner: SAM.
        threshold: box score threshold in ``[0, 1]`` (boxes scoring above it
            are kept; OWLv2 scores are lower than Grounding DINO's, typical
            thresholds are 0.1-0.3 and 0.3-0.4).
        min_area_px: smallest SAM mask kept, in pixels.
        max_objects: at most this many instances, highest score first.
        nms_iou: boxes of the same phrase overlapping a better one by more
            than this IoU are dropped (1 keeps all).

    Instance scores are the detector's box scores; masks and boxes are SAM's.
    Image prompts are not supported (reported as dropped).
    """

    THRESHOLDS = ('threshold', 'min_area_px', 'max_objects', 'nms_iou')

    def __init__(self, detector, refiner: SamRefiner, threshold: float = 0.3,
                 min_area_px: int = 100, max_objects: int = 20, nms_iou: float = 0.5):
        self.detector = detector
        self.refiner = refiner
        self.threshold = threshold
        self.min_area_px = min_area_px
        self.max_objects = max_objects
        self.nms_iou = nms_iou
        self.set_thresholds(threshold=threshold, min_area_px=min_area_px,
                            max_objects=max_objects, nms_iou=nms_iou)
        self._active: List[Prompt] = []

    @classmethod
    def from_settings(cls, *, detector: str = 'owlv2', detector_model: str = '',
                      sam_checkpoint: str = '', sam_model_type: str = 'vit_b',
                      device: str = 'auto', precision: str = 'auto', threshold: float = 0.3,
                      min_area_px: int = 100, max_objects: int = 20,
                      allow_random_weights: bool = False,
                      nms_iou: float = 0.5) -> 'GroundedSamSegmenter':
        """Load the detector and SAM named by the settings (see the class and the factory).

        ``detector_model`` empty means the detector's default Hugging Face id
        (:data:`~zs_perception.segmentation.detectors.DEFAULT_DETECTOR_MODELS`).

        Raises:
            ValueError: unknown detector, device, precision or SAM type, or a
                bad threshold.
            ModelLoadError: weights missing, wrong or random (not allowed).

        """
        torch_device = resolve_device(device)
        dtype = resolve_dtype(precision, torch_device)
        # SAM first: its checkpoint is the setting most often missing.
        sam = load_sam(sam_checkpoint, sam_model_type, torch_device, allow_random_weights)
        det = load_detector(detector, detector_model, torch_device, dtype, allow_random_weights)
        logger.info('Segmentation backend grounded_sam on %s in %s (%s %s, SAM %s %s).',
                    torch_device, dtype, detector,
                    detector_model or DEFAULT_DETECTOR_MODELS.get(detector), sam_model_type,
                    sam_checkpoint)
        return cls(det, SamRefiner(sam, torch_device, dtype), threshold=threshold,
                   min_area_px=min_area_px, max_objects=max_objects, nms_iou=nms_iou)

    @property
    def device(self) -> torch.device:
        """The device the models run on."""
        return self.refiner.device

    @property
    def prompts(self) -> List[str]:
        """Labels of the active prompts, in order."""
        return [p.label for p in self._active]

    def set_prompts(self, prompts: Sequence[PromptLike]) -> PromptReport:
        """Replace the active phrases; the detector encodes only phrases not seen before.

        Raises:
            ValueError: a prompt is neither ``str`` nor ``Prompt``, or (Grounding
                DINO) the phrases together are over its token limit.

        """
        active, dropped = normalize_text_prompts(prompts, 'grounded_sam')
        truncated = []
        for prompt in active:
            count = self.detector.token_count(prompt.text)
            if count > self.detector.max_tokens:
                truncated.append((prompt.label, (
                    f'{count} tokens, over the {self.detector.name} text limit of '
                    f'{self.detector.max_tokens}; the rest is cut off')))
        keys: List[Hashable] = [prompt_key(p) for p in active]
        with out_of_memory_as_error(self.device, f'encoding {len(active)} prompts'), \
                torch.inference_mode():
            self.detector.set_texts(keys, [p.text for p in active])
        self._active = active
        return PromptReport(active=self.prompts, dropped=dropped, truncated=truncated)

    def segment(self, image: np.ndarray) -> SegmentationResult:
        """Detect the active phrases in one ``(H, W, 3)`` ``uint8`` RGB image and mask them."""
        image = check_rgb_image(image)
        height, width = image.shape[:2]
        if not self._active:
            return SegmentationResult(instances=[])
        timer = StageTimer(self.device)
        with out_of_memory_as_error(
                self.device, f'segmenting a {width}x{height} image with {len(self._active)} '
                'prompts'), torch.inference_mode():
            detections = self._detect_and_embed(image, timer)
            with timer.stage('postprocess'):
                detections = self.select(detections, width, height)
            if detections.boxes.shape[0] == 0:
                return SegmentationResult(instances=[], timings=timer.timings)
            with timer.stage('sam_encode'):
                self.refiner.embed(image)
            with timer.stage('sam_decode'):
                masks, _ = self.refiner.predict(image, detections.boxes.cpu().numpy())
                masks = masks.cpu().numpy()
        scores = detections.scores.cpu().numpy()
        indices = detections.prompt_indices.cpu().numpy()
        instances = []
        for mask, score, index in zip(masks, scores, indices):
            if mask.sum() >= max(self.min_area_px, 1):
                instances.append(Instance(
                    label=self._active[index].label, prompt_index=int(index),
                    score=float(min(max(score, 0.0), 1.0)), box=mask_box(mask), mask=mask))
        return SegmentationResult(instances=instances, timings=timer.timings)

    def select(self, detections: Detections, width: int, height: int) -> Detections:
        """Keep boxes over ``threshold``, per-phrase NMS, the ``max_objects`` best; clip to image.

        Returns:
            The kept detections, highest score first.

        """
        detections = detections.select(detections.scores > self.threshold)
        if self.nms_iou < 1.0 and detections.scores.numel():
            keep = batched_nms(detections.boxes, detections.scores,
                               detections.prompt_indices, float(self.nms_iou))
        else:
            keep = torch.argsort(detections.scores, descending=True)
        detections = detections.select(keep[:int(self.max_objects)])
        limit = torch.tensor([width, height, width, height], device=detections.boxes.device,
                             dtype=detections.boxes.dtype)
        detections.boxes = torch.minimum(detections.boxes.clamp(min=0), limit)
        return detections

    def _detect_and_embed(self, image: np.ndarray, timer: StageTimer) -> Detections:
        """Run the detector; on CUDA, start the SAM image encoder on a side stream first."""
        if self.device.type != 'cuda':
            with timer.stage('detect'):
                return self.detector.detect(image)
        main = torch.cuda.current_stream(self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(main)
        with timer.stage('detect_and_sam_encode'):
            with torch.cuda.stream(side):
                features, _ = self.refiner.embed(image)
            detections = self.detector.detect(image)
            main.wait_stream(side)
            # The embedding was allocated on the side stream and is used on the main one.
            features.record_stream(main)
        return detections
