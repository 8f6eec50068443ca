"""The Grounded-SAM backend: an open-vocabulary detector's boxes, drawn as masks by SAM.

Per frame: the detector (OWLv2 or Grounding DINO, :mod:`detectors`) gives
boxes, scores and the phrase each box matched, with the text side encoded
once per goal; boxes over ``threshold`` go through per-phrase non-maximum
suppression, the ``max_objects`` best are kept and clipped to the image; then SAM
(:class:`~zs_perception.segmentation.sam.SamRefiner`) encodes the image once
and draws every box's mask in one batched decoder call (on a CPU in cache-sized
calls, which is faster there: see :meth:`~zs_perception.segmentation.sam.SamRefiner.decode`).
On a GPU the SAM image encoder runs on a second CUDA stream, overlapping the detector.

Compared with the documented usage (the transformers processor, model and
post-processing on every frame, then ``SamPredictor.predict`` once per box),
the boxes, scores and masks are the same, masks up to float rounding at the mask
threshold (parity tests); only the repeated
text encoding and (on a GPU, and for small models on a CPU) the per-box decoder
calls are gone.
"""

from typing import List, Optional, Tuple

import numpy as np
import torch
from torchvision.ops import batched_nms

from zs_perception.segmentation.base import Instance, Prompt
from zs_perception.segmentation.detectors import DEFAULT_DETECTOR_MODELS, Detections
from zs_perception.segmentation.detectors import load_detector
from zs_perception.segmentation.device import StageTimer
from zs_perception.segmentation.instances import mask_box
from zs_perception.segmentation.loading import load_sam
from zs_perception.segmentation.prompting import prompt_key
from zs_perception.segmentation.sam import SamRefiner
from zs_perception.segmentation.torch_backend import token_limit_reason, TorchSegmenter


class GroundedSamSegmenter(TorchSegmenter):
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

    name = 'grounded_sam'
    THRESHOLDS = ('threshold', 'min_area_px', 'max_objects', 'nms_iou')

    def __init__(self, detector, refiner: SamRefiner, threshold: float = 0.3,
                 min_area_px: int = 100, max_objects: int = 20, nms_iou: float = 0.5):
        super().__init__(refiner.device, threshold=threshold, min_area_px=min_area_px,
                         max_objects=max_objects, nms_iou=nms_iou)
        self.detector = detector
        self.refiner = refiner

    @classmethod
    def _load(cls, device, dtype, allow_random_weights, *, detector: str = 'owlv2',
              detector_model: str = '', sam_checkpoint: str = '', sam_model_type: str = 'vit_b',
              **thresholds) -> Tuple['GroundedSamSegmenter', str]:
        """Load the detector (``detector_model`` empty: its default id) and SAM."""
        # SAM first: its checkpoint is the setting most often missing.
        sam = load_sam(sam_checkpoint, sam_model_type, device, allow_random_weights)
        det = load_detector(detector, detector_model, device, dtype, allow_random_weights)
        segmenter = cls(det, SamRefiner(sam, device, dtype), **thresholds)
        return segmenter, (f'{detector} {detector_model or DEFAULT_DETECTOR_MODELS[detector]}, '
                           f'SAM {sam_model_type} {sam_checkpoint}')

    def _truncation(self, text: str) -> Optional[str]:
        return token_limit_reason(self.detector.token_count(text), self.detector.max_tokens,
                                  f'{self.detector.name} text', 'the rest is cut off')

    def _encode_prompts(self, active: List[Prompt]) -> None:
        """Hand the phrases to the detector, which encodes only phrases not seen before.

        Raises:
            ValueError: (Grounding DINO) the phrases together are over its token limit.

        """
        self.detector.set_texts([prompt_key(p) for p in active], [p.text for p in active])

    def _segment(self, image: np.ndarray, timer: StageTimer) -> Tuple[List[Instance], None]:
        height, width = image.shape[:2]
        detections = self._detect_and_embed(image, timer)
        with timer.stage('postprocess'):
            detections = self.select(detections, width, height)
        if detections.boxes.shape[0] == 0:
            return [], None
        with timer.stage('sam_encode'):
            self.refiner.embed(image)
        with timer.stage('sam_decode'):
            masks, _ = self.refiner.predict(image, detections.boxes.cpu().numpy())
            masks = masks.cpu().numpy()
        scores = detections.scores.cpu().numpy()
        indices = detections.prompt_indices.cpu().numpy()
        instances = [Instance(label=self._active[index].label, prompt_index=int(index),
                              score=float(min(max(score, 0.0), 1.0)), box=mask_box(mask),
                              mask=mask)
                     for mask, score, index in zip(masks, scores, indices)
                     if mask.sum() >= max(self.min_area_px, 1)]
        return instances, None

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
