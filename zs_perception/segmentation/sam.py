"""Segment Anything as a component: boxes (and points) to sharp full-resolution masks.

:class:`SamRefiner` computes the SAM image embedding once per frame and sends
all prompts of the frame through the prompt encoder in one call and through the
mask decoder in one batched call on a GPU (on a CPU in cache-sized calls, see
:meth:`SamRefiner.decode`); it reproduces ``segment_anything.SamPredictor``
(same resize, normalisation, coordinate transforms and upsampling; masks equal up to
float rounding at the threshold), which the parity tests check. The ``clipseg_sam``,
``grounded_sam`` and ``zero_guidance`` backends use it.
"""

from typing import Optional, Tuple

import numpy as np
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
import torch

from zs_perception.segmentation.caching import LastFrameCache

# On a CPU the mask decoder is compute-bound, and each prompt in a call works on its own
# copy of the image embedding (256x64x64 float32 = 4 MiB for the released models). Calls
# hold at most this many bytes of such copies, so they stay in cache, which is faster there
# than one call for all prompts (docs/benchmarks.md). On a GPU one call takes every prompt.
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
