"""Segment Anything refinement: coarse boxes (and points) to sharp full-resolution masks.

:class:`SamRefiner` computes the SAM image embedding once per frame and sends
all prompts of the frame through the prompt encoder in one call and through the
mask decoder in one batched call on a GPU (on a CPU in cache-sized calls, see
:meth:`SamRefiner.decode`); it reproduces ``segment_anything.SamPredictor``
exactly (same resize, normalisation, coordinate transforms and upsampling),
which the parity tests check. :class:`ClipSegSamSegmenter` uses it to sharpen CLIPSeg
instances.
"""

from typing import List, Optional, Tuple

import numpy as np
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
import torch

from zs_perception.segmentation.base import Instance
from zs_perception.segmentation.caching import LastFrameCache
from zs_perception.segmentation.clipseg import ClipSegRunner, ClipSegSegmenter
from zs_perception.segmentation.device import StageTimer
from zs_perception.segmentation.instances import mask_box

# On a CPU the mask decoder is compute-bound, and each prompt in a call works on its own
# copy of the image embedding (256x64x64 float32 = 4 MiB for the released models). Calls
# hold at most this many bytes of such copies, so they stay in cache: measured with
# full-size ViT-B on 2 cores, 10 boxes took 1040 ms one per call and 1413 ms in one call,
# 32 points 3488 ms and 5691 ms. On a GPU one call takes every prompt.
_CPU_DECODER_CALL_BYTES = 4 * 2 ** 20


class SamRefiner:
    """Batched SAM mask prediction with a per-frame image-embedding cache.

    Args:
        sam: the loaded model on ``device`` (fp32).
        device: where it runs.
        dtype: dtype of the image encoder (the heavy part); the prompt encoder
            and mask decoder stay in fp32 (cheap, and segment_anything's
            prompt encoder computes in fp32).

    """

    def __init__(self, sam: Sam, device: torch.device, dtype: torch.dtype):
        self.sam = sam
        self.device = device
        self.dtype = dtype
        sam.image_encoder.to(dtype)
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)
        self._dense_pe = None
        self._frames = LastFrameCache()

    def embed(self, image: np.ndarray) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """SAM image embedding of ``image``, computed once per distinct frame.

        Args:
            image: ``(H, W, 3)`` ``uint8`` RGB.

        Returns:
            ``(features, input_size)``: ``(1, C, h, w)`` ``float32`` embedding
            and the ``(h, w)`` of the resized image inside the padded input.

        """
        cached = self._frames.get(image)
        if cached is not None:
            return cached
        resized = self.transform.apply_image(image)
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        x = self.sam.preprocess(x).to(self.dtype)
        if self.device.type == 'cuda':
            x = x.contiguous(memory_format=torch.channels_last)
        features = self.sam.image_encoder(x).float()
        result = (features, tuple(resized.shape[:2]))
        self._frames.put(image, result)
        return result

    def predict(self, image: np.ndarray, boxes: np.ndarray,
                points: Optional[np.ndarray] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """Masks for all boxes (and optional positive points) in one batched decoder call.

        Of SAM's three candidate masks per prompt, the one with the highest
        predicted IoU is kept.

        Args:
            image: ``(H, W, 3)`` ``uint8`` RGB.
            boxes: ``(K, 4)`` ``[x0, y0, x1, y1]`` in input-image pixels.
            points: ``(K, 2)`` pixel ``(x, y)`` of one positive point per box,
                or None.

        Returns:
            ``(masks, scores)``: ``(K, H, W)`` bool and ``(K,)`` predicted IoU,
            on the device.

        """
        features, input_size = self.embed(image)
        original_size = image.shape[:2]
        boxes = self.transform.apply_boxes(np.asarray(boxes, dtype=np.float64), original_size)
        box_t = torch.as_tensor(boxes, dtype=torch.float, device=self.device)
        point_t = None
        if points is not None:
            coords = self.transform.apply_coords(
                np.asarray(points, dtype=np.float64).reshape(-1, 1, 2), original_size)
            point_t = (torch.as_tensor(coords, dtype=torch.float, device=self.device),
                       torch.ones(coords.shape[:2], dtype=torch.int, device=self.device))
        sparse, dense = self.sam.prompt_encoder(points=point_t, boxes=box_t, masks=None)
        low_res, iou = self.decode(features, sparse, dense)
        rows = torch.arange(low_res.shape[0], device=self.device)
        best = iou.argmax(dim=1)
        masks = self.sam.postprocess_masks(low_res[rows, best][:, None], input_size,
                                           original_size)[:, 0]
        return masks > self.sam.mask_threshold, iou[rows, best]

    def decode(self, features: torch.Tensor, sparse: torch.Tensor,
               dense: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run SAM's mask decoder (three candidates per prompt) on every prompt of a frame.

        One call on a GPU; on a CPU calls of as many prompts as fit
        ``_CPU_DECODER_CALL_BYTES`` (one per call for the released models, many for
        tiny ones). Prompts are independent, so the outputs are the same either way.

        Args:
            features: ``(1, C, h, w)`` image embedding from :meth:`embed`.
            sparse, dense: ``(P, T, C)`` and ``(P, C, h, w)`` prompt embeddings from
                ``sam.prompt_encoder``.

        Returns:
            ``(low_res, iou)``: ``(P, 3, 4h, 4w)`` mask logits and ``(P, 3)`` predicted IoU.

        """
        if self._dense_pe is None:
            self._dense_pe = self.sam.prompt_encoder.get_dense_pe()
        count = sparse.shape[0]
        per_call = max(count, 1)
        if self.device.type == 'cpu':
            per_call = max(1, _CPU_DECODER_CALL_BYTES // (features[0].numel() * 4))
        outputs = [self.sam.mask_decoder(
            image_embeddings=features, image_pe=self._dense_pe,
            sparse_prompt_embeddings=sparse[start:start + per_call],
            dense_prompt_embeddings=dense[start:start + per_call], multimask_output=True)
            for start in range(0, max(count, 1), per_call)]
        if len(outputs) == 1:
            return outputs[0]
        return torch.cat([o[0] for o in outputs]), torch.cat([o[1] for o in outputs])


class ClipSegSamSegmenter(ClipSegSegmenter):
    """CLIPSeg finds the objects; SAM draws their masks.

    Each CLIPSeg instance's box (and, with ``sam_point_prompt``, its most
    probable pixel as a positive point) prompts SAM. The instance keeps its
    CLIPSeg label and score (SAM only sharpens the mask); its mask and box
    become SAM's. Instances whose SAM mask is smaller than ``min_area_px`` are
    dropped.

    Args:
        runner: CLIPSeg, split into stages.
        refiner: SAM.
        sam_point_prompt: also give SAM the component's peak as a point.
        **thresholds: ``threshold``, ``min_area_px``, ``max_objects`` as for
            :class:`ClipSegSegmenter`.

    """

    def __init__(self, runner: ClipSegRunner, refiner: SamRefiner,
                 sam_point_prompt: bool = True, **thresholds):
        super().__init__(runner, **thresholds)
        self.refiner = refiner
        self.sam_point_prompt = sam_point_prompt

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
        refined = []
        for inst, mask in zip(instances, masks):
            if mask.sum() >= max(self.min_area_px, 1):
                refined.append(Instance(label=inst.label, prompt_index=inst.prompt_index,
                                        score=inst.score, box=mask_box(mask), mask=mask))
        return refined
