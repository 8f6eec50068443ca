"""The clipseg_sam backend: CLIPSeg finds the objects, Segment Anything draws their masks.

Per frame: CLIPSeg (:mod:`~zs_perception.segmentation.clipseg`) gives per-prompt probability
maps and their connected components; each component's box (and, with ``sam_point_prompt``,
its most probable pixel as a positive point) prompts SAM
(:class:`~zs_perception.segmentation.sam.SamRefiner`: one image encoding per frame, every
prompt of the frame in one batched decoder call on a GPU, cache-sized calls on a CPU).
"""

from typing import List, Tuple

import numpy as np

from zs_perception.segmentation.base import Instance
from zs_perception.segmentation.clipseg import ClipSegRunner, ClipSegSegmenter
from zs_perception.segmentation.clipseg import load_clipseg_runner
from zs_perception.segmentation.device import StageTimer
from zs_perception.segmentation.instances import mask_box
from zs_perception.segmentation.loading import DEFAULT_CLIPSEG_MODEL, load_sam
from zs_perception.segmentation.sam import SamRefiner


class ClipSegSamSegmenter(ClipSegSegmenter):
    """CLIPSeg finds the objects; SAM draws their masks.

    The instance keeps its CLIPSeg label and score (SAM only sharpens the mask); its mask
    and box become SAM's. Instances whose SAM mask is smaller than ``min_area_px`` are
    dropped.

    Args:
        runner: CLIPSeg, split into stages.
        refiner: SAM.
        sam_point_prompt: also give SAM the component's peak as a point.
        **thresholds: ``threshold``, ``min_area_px``, ``max_objects`` as for
            :class:`~zs_perception.segmentation.clipseg.ClipSegSegmenter`.

    """

    name = 'clipseg_sam'

    def __init__(self, runner: ClipSegRunner, refiner: SamRefiner,
                 sam_point_prompt: bool = True, **thresholds):
        super().__init__(runner, **thresholds)
        self.refiner = refiner
        self.sam_point_prompt = sam_point_prompt

    @classmethod
    def _load(cls, device, dtype, allow_random_weights, *, clipseg_model: str = '',
              sam_checkpoint: str = '', sam_model_type: str = 'vit_b',
              sam_point_prompt: bool = True, **thresholds) -> Tuple['ClipSegSamSegmenter', str]:
        # SAM first: its checkpoint is the setting most often missing; fail before the slow part.
        sam = load_sam(sam_checkpoint, sam_model_type, device, allow_random_weights)
        runner = load_clipseg_runner(clipseg_model, device, dtype, allow_random_weights)
        segmenter = cls(runner, SamRefiner(sam, device, dtype),
                        sam_point_prompt=sam_point_prompt, **thresholds)
        return segmenter, (f'CLIPSeg {clipseg_model or DEFAULT_CLIPSEG_MODEL}, '
                           f'SAM {sam_model_type} {sam_checkpoint}')

    def _refine(self, image: np.ndarray, instances: List[Instance], peaks: np.ndarray,
                timer: StageTimer) -> List[Instance]:
        if not instances:
            return instances
        with timer.stage('sam_encode'):
            self.refiner.embed(image)
        with timer.stage('sam_decode'):
            boxes = np.stack([inst.box for inst in instances])
            masks, _ = self.refiner.predict(image, boxes,
                                            peaks if self.sam_point_prompt else None)
            masks = masks.cpu().numpy()
        return [Instance(label=inst.label, prompt_index=inst.prompt_index, score=inst.score,
                         box=mask_box(mask), mask=mask)
                for inst, mask in zip(instances, masks) if mask.sum() >= max(self.min_area_px, 1)]
