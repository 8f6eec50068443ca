"""The zero-guidance backend: segment everything, then name each segment with CLIP.

No goal is needed (obstacle avoidance, exploration). Per frame:

1. SAM encodes the image once (:class:`~zs_perception.segmentation.sam.SamRefiner`
   caches the embedding) and a regular grid of point prompts goes through the
   prompt encoder and mask decoder in batches of ``points_per_batch``, three
   candidate masks per point, as ``SamAutomaticMaskGenerator`` does (on a CPU
   the decoder splits a batch into cache-sized calls, see
   :meth:`~zs_perception.segmentation.sam.SamRefiner.decode`);
2. low-quality candidates (predicted IoU under ``mask_quality_iou``, stability
   under ``stability_iou``) are dropped and duplicates removed by box
   non-maximum suppression (``nms_iou``), all at SAM's 256x256 mask
   resolution; the survivors are upsampled to the image;
3. each segment is embedded with CLIP as a mix of two views, as the
   zero-guidance paper (Rewatbowornwong et al., ICCV 2023) balances local and
   global context: the segment alone (its box with everything outside the
   mask grey) and the segment in its surroundings (its box enlarged 1.5x);
   ``context_weight`` is the weight of the second;
4. each segment gets the label of the vocabulary phrase (``'a photo of a
   <label>.'``) its embedding is most similar to, scored by the softmax over
   the vocabulary; neighbouring segments (touching within 3 px) with the
   same label are merged.

With a goal, the goal phrases join the vocabulary and only segments labelled
with one of them are kept (``prompt_index`` is the goal phrase's index);
without one every segment is returned with ``prompt_index`` -1.
"""

from typing import List, Sequence, Tuple

import cv2
import numpy as np
import torch
from torchvision.ops import batched_nms

from zs_perception.segmentation.base import Instance, Prompt
from zs_perception.segmentation.clip_dense import ClipRunner, DEFAULT_CLIP_MODEL, load_clip
from zs_perception.segmentation.device import StageTimer
from zs_perception.segmentation.instances import mask_box
from zs_perception.segmentation.loading import load_sam
from zs_perception.segmentation.prompting import normalize_prompts, prompt_key
from zs_perception.segmentation.sam import SamRefiner
from zs_perception.segmentation.torch_backend import TorchSegmenter

DEFAULT_VOCABULARY = (
    'mug', 'cup', 'bottle', 'bowl', 'plate', 'box', 'can', 'bag', 'book', 'laptop', 'keyboard',
    'computer mouse', 'monitor', 'phone', 'remote control', 'lamp', 'plant', 'toy', 'ball',
    'shoe', 'cable', 'tool', 'fruit', 'chair', 'table', 'desk', 'sofa', 'bed', 'shelf',
    'cabinet', 'door', 'window', 'wall', 'floor', 'ceiling', 'stairs', 'rug', 'trash can',
    'person', 'dog', 'cat',
)
TEMPLATE = 'a photo of a {}.'
# SAM's stability score compares the mask at logit thresholds +-1 (as SamAutomaticMaskGenerator).
_STABILITY_OFFSET = 1.0
_MERGE_DISTANCE_PX = 3
_CONTEXT_SCALE = 1.5


class ZeroGuidanceSegmenter(TorchSegmenter):
    """Everything SAM finds, labelled by CLIP from a vocabulary; a goal filters the labels.

    Args:
        refiner: SAM.
        clip: CLIP.
        vocabulary: label phrases (default :data:`DEFAULT_VOCABULARY`).
        threshold: smallest label probability kept, in ``[0, 1]``.
        min_area_px: smallest segment kept, in pixels.
        max_objects: at most this many instances, highest score first.
        points_per_side: the point grid is this many points on each side.
        points_per_batch: points per batch (decoded, then filtered, so memory stays
            bounded).
        mask_quality_iou: smallest SAM predicted IoU kept.
        stability_iou: smallest SAM stability score kept.
        nms_iou: a candidate whose box overlaps a better one by more than
            this IoU is a duplicate.
        context_weight: weight in ``[0, 1]`` of the in-context view in each
            segment's CLIP embedding (0: the masked segment alone).

    """

    name = 'zero_guidance'
    needs_prompts = False  # segments and labels everything; a goal only filters
    THRESHOLDS = ('threshold', 'min_area_px', 'max_objects', 'mask_quality_iou',
                  'stability_iou', 'nms_iou', 'context_weight')

    def __init__(self, refiner: SamRefiner, clip: ClipRunner,
                 vocabulary: Sequence[str] = DEFAULT_VOCABULARY, threshold: float = 0.2,
                 min_area_px: int = 100, max_objects: int = 20, points_per_side: int = 16,
                 points_per_batch: int = 64, mask_quality_iou: float = 0.8,
                 stability_iou: float = 0.9, nms_iou: float = 0.7, context_weight: float = 0.3):
        if int(points_per_side) < 1 or int(points_per_batch) < 1:
            raise ValueError(f'points_per_side and points_per_batch must be >= 1, got '
                             f'{points_per_side!r} and {points_per_batch!r}.')
        if isinstance(vocabulary, str):
            raise ValueError(f'vocabulary must be a list of phrases, got the string '
                             f'{vocabulary!r}; write [{vocabulary!r}] for one phrase.')
        super().__init__(refiner.device, threshold=threshold, min_area_px=min_area_px,
                         max_objects=max_objects, mask_quality_iou=mask_quality_iou,
                         stability_iou=stability_iou, nms_iou=nms_iou,
                         context_weight=context_weight)
        self.refiner = refiner
        self.clip = clip
        self.points_per_side = int(points_per_side)
        self.points_per_batch = int(points_per_batch)
        vocab, _ = normalize_prompts([str(v) for v in vocabulary])
        if not vocab:
            raise ValueError(f'vocabulary is empty (got {list(vocabulary)!r}); give at least one '
                             'label phrase or leave the default.')
        self._vocabulary = vocab
        self._labels: List[Prompt] = []
        self._texts = None
        self.set_prompts([])

    @classmethod
    def _load(cls, device, dtype, allow_random_weights, *, sam_checkpoint: str = '',
              sam_model_type: str = 'vit_b', clip_model: str = '',
              vocabulary: Sequence[str] = DEFAULT_VOCABULARY,
              **thresholds) -> Tuple['ZeroGuidanceSegmenter', str]:
        """Load SAM and CLIP (``clip_model`` empty: the default); empty vocabulary: the default."""
        sam = load_sam(sam_checkpoint, sam_model_type, device, allow_random_weights)
        clip = load_clip(clip_model, device, dtype, allow_random_weights)
        segmenter = cls(SamRefiner(sam, device, dtype), clip,
                        vocabulary=list(vocabulary) or DEFAULT_VOCABULARY, **thresholds)
        return segmenter, (f'SAM {sam_model_type} {sam_checkpoint}, '
                           f'CLIP {clip_model or DEFAULT_CLIP_MODEL}')

    @property
    def vocabulary(self) -> List[str]:
        """The label phrases segments are named with (goal phrases come first when set)."""
        return [p.label for p in self._labels]

    def _encode_prompts(self, active: List[Prompt]) -> None:
        """Make the goal phrases (empty: no goal) the first labels, then the vocabulary."""
        keys = {prompt_key(p) for p in active}
        labels = active + [p for p in self._vocabulary if prompt_key(p) not in keys]
        self._texts = self.clip.encode_texts([TEMPLATE.format(p.text) for p in labels])
        self._labels = labels

    def point_grid(self, height: int, width: int) -> np.ndarray:
        """``(P, 2)`` ``float64`` pixel ``(x, y)`` of the point prompts: cell centres of a grid."""
        n = self.points_per_side
        offsets = (np.arange(n) + 0.5) / n
        xs, ys = np.meshgrid(offsets * width, offsets * height)
        return np.stack([xs.ravel(), ys.ravel()], axis=1)

    def _segment(self, image: np.ndarray, timer: StageTimer) -> Tuple[List[Instance], None]:
        with timer.stage('sam_encode'):
            self.refiner.embed(image)
        with timer.stage('sam_decode'):
            masks, _ = self.masks(image)
        if masks.shape[0] == 0:
            return [], None
        with timer.stage('clip'):
            labels, scores = self.label(image, masks)
        with timer.stage('postprocess'):
            instances = self._instances(masks, labels, scores)
        return instances, None

    @torch.inference_mode()
    def masks(self, image: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Return SAM's masks for the point grid, low-quality ones and duplicates removed.

        Returns:
            ``(masks, quality)``: ``(K, H, W)`` bool, at least ``min_area_px``
            pixels each, and their ``(K,)`` predicted IoU, best first.

        """
        sam = self.refiner.sam
        features, input_size = self.refiner.embed(image)
        original_size = image.shape[:2]
        points = self.point_grid(*original_size)
        kept_logits, kept_iou = [], []
        for start in range(0, len(points), self.points_per_batch):
            chunk = points[start:start + self.points_per_batch]
            coords = self.refiner.transform.apply_coords(chunk[:, None, :], original_size)
            coords = torch.as_tensor(coords, dtype=torch.float, device=self.device)
            labels = torch.ones(coords.shape[:2], dtype=torch.int, device=self.device)
            sparse, dense = sam.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
            low_res, iou = self.refiner.decode(features, sparse, dense)
            low_res, iou = low_res.flatten(0, 1), iou.flatten()
            threshold = sam.mask_threshold
            inner = (low_res > threshold + _STABILITY_OFFSET).sum(dim=(1, 2))
            outer = (low_res > threshold - _STABILITY_OFFSET).sum(dim=(1, 2))
            stability = inner.float() / outer.clamp(min=1).float()
            good = (iou >= self.mask_quality_iou) & (stability >= self.stability_iou) \
                & (outer > 0)
            kept_logits.append(low_res[good])
            kept_iou.append(iou[good])
        logits, iou = torch.cat(kept_logits), torch.cat(kept_iou)
        binary = logits > sam.mask_threshold
        nonempty = binary.flatten(1).any(dim=1)
        logits, iou, binary = logits[nonempty], iou[nonempty], binary[nonempty]
        if logits.shape[0] == 0:
            return np.zeros((0, *original_size), bool), np.zeros(0, np.float32)
        keep = batched_nms(_boxes(binary), iou, torch.zeros_like(iou, dtype=torch.long),
                           float(self.nms_iou))
        logits, iou = logits[keep], iou[keep]
        masks = sam.postprocess_masks(logits[:, None], input_size, original_size)[:, 0]
        masks = (masks > sam.mask_threshold).cpu().numpy()
        big = masks.reshape(masks.shape[0], -1).sum(axis=1) >= max(self.min_area_px, 1)
        return masks[big], iou.cpu().numpy()[big]

    @torch.inference_mode()
    def label(self, image: np.ndarray, masks: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Name each mask: index into :attr:`vocabulary` and its softmax probability.

        Args:
            image: ``(H, W, 3)`` ``uint8`` RGB.
            masks: ``(K, H, W)`` bool.

        Returns:
            ``(labels, scores)``: ``(K,)`` ``int64`` and ``(K,)`` ``float32``.

        """
        size = self.clip.input_size
        grey = self.clip.mean_rgb
        local, context = [], []
        height, width = image.shape[:2]
        for mask in masks:
            x0, y0, x1, y1 = (int(v) for v in mask_box(mask))
            crop = np.where(mask[y0:y1, x0:x1, None], image[y0:y1, x0:x1], grey)
            local.append(cv2.resize(crop.astype(np.float32), (size, size),
                                    interpolation=cv2.INTER_AREA))
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            half_w, half_h = (x1 - x0) * _CONTEXT_SCALE / 2, (y1 - y0) * _CONTEXT_SCALE / 2
            bx0, by0 = max(int(cx - half_w), 0), max(int(cy - half_h), 0)
            bx1, by1 = min(int(np.ceil(cx + half_w)), width), min(int(np.ceil(cy + half_h)),
                                                                  height)
            context.append(cv2.resize(image[by0:by1, bx0:bx1].astype(np.float32), (size, size),
                                      interpolation=cv2.INTER_AREA))
        crops = torch.from_numpy(np.stack(local + context)).to(self.device).permute(0, 3, 1, 2)
        embeds = self.clip.encode_crops(self.clip.normalize(crops))
        count = masks.shape[0]
        w = float(self.context_weight)
        mixed = torch.nn.functional.normalize(
            (1.0 - w) * embeds[:count] + w * embeds[count:], dim=-1)
        probs = (self.clip.logit_scale * mixed @ self._texts.T).softmax(dim=-1)
        best = probs.max(dim=-1)
        return best.indices.cpu().numpy(), best.values.cpu().numpy()

    def _instances(self, masks: np.ndarray, labels: np.ndarray,
                   scores: np.ndarray) -> List[Instance]:
        goal_count = len(self._active)
        keep = scores >= self.threshold
        if goal_count:
            keep &= labels < goal_count
        masks, labels, scores = masks[keep], labels[keep], scores[keep]
        instances = []
        for group in _touching_groups(masks, labels):
            mask = np.logical_or.reduce(masks[group], axis=0)
            areas = masks[group].reshape(len(group), -1).sum(axis=1)
            score = float(np.average(scores[group], weights=areas))
            label = int(labels[group[0]])
            instances.append(Instance(
                label=self._labels[label].label, prompt_index=label if goal_count else -1,
                score=min(max(score, 0.0), 1.0), box=mask_box(mask), mask=mask))
        instances.sort(key=lambda inst: -inst.score)
        return instances[:int(self.max_objects)]


def _boxes(binary: torch.Tensor) -> torch.Tensor:
    """``(K, 4)`` float ``[x0, y0, x1, y1]`` (exclusive) of ``(K, h, w)`` non-empty bool masks."""
    rows, cols = binary.any(dim=2), binary.any(dim=1)
    height, width = binary.shape[1:]
    y = torch.arange(height, device=binary.device)
    x = torch.arange(width, device=binary.device)
    y0 = torch.where(rows, y, height).min(dim=1).values
    y1 = torch.where(rows, y, -1).max(dim=1).values + 1
    x0 = torch.where(cols, x, width).min(dim=1).values
    x1 = torch.where(cols, x, -1).max(dim=1).values + 1
    return torch.stack([x0, y0, x1, y1], dim=1).float()


def _touching_groups(masks: np.ndarray, labels: np.ndarray) -> List[List[int]]:
    """Group mask indices by equal label and touching within a few pixels (transitively)."""
    count = masks.shape[0]
    parent = list(range(count))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    kernel = np.ones((2 * _MERGE_DISTANCE_PX + 1,) * 2, np.uint8)
    grown = [cv2.dilate(m.view(np.uint8), kernel).view(bool) for m in masks]
    for i in range(count):
        for j in range(i + 1, count):
            if labels[i] == labels[j] and root(i) != root(j) and (grown[i] & masks[j]).any():
                parent[root(j)] = root(i)
    groups = {}
    for i in range(count):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())
