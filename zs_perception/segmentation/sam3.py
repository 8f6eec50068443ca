"""SAM 3 ("Segment Anything with Concepts") as a backend: every instance of each text prompt.

Equal to the documented transformers usage (``Sam3Processor``, ``Sam3Model`` once per prompt,
``post_process_instance_segmentation``; see the parity tests) before the steps the
documented usage does not have (``min_area_px``, merging, ``max_objects``), at a fraction of
the cost for several prompts:

- the text side is encoded once per goal: the text features of each prompt are cached by
  its :func:`~zs_perception.segmentation.prompting.prompt_key` and only new prompts are
  encoded;
- the vision encoder (most of the model) runs once per frame, whatever the number of
  prompts; its feature pyramid is expanded (a view, no copy) to the prompts and the DETR
  encoder and decoder run as one batch of N on an accelerator, one prompt at a time on a
  CPU (faster there: :data:`CPU_PROMPT_BATCH`);
- the mask head (the prompt's cross-attention, pixel decoder and mask prediction) runs
  only for the prompts with at least one query scoring ``threshold`` or more: the masks of
  the other prompts' queries are never used, so a prompt whose concept is absent costs
  only its DETR part; within it, the prompt-independent work (the skip connections'
  convolutions) runs once per image and each query's mask is computed only when
  post-processing reaches it (:mod:`~zs_perception.segmentation.sam3_mask_head`).

Built on :class:`~zs_perception.segmentation.torch_backend.TorchSegmenter` (lock, device,
input checks, out-of-memory mapping, timing, loading); each stage is its own method
(:meth:`Sam3Segmenter.preprocess`, :meth:`~Sam3Segmenter.encode_text`,
:meth:`~Sam3Segmenter.encode_image`, :meth:`~Sam3Segmenter.decode`,
:meth:`~Sam3Segmenter.predict_masks`, :meth:`~Sam3Segmenter.postprocess`); they call the
model's own submodules in the order of ``Sam3Model.forward`` for text prompts.
``Sam3LiteTextModel`` checkpoints (MobileCLIP-sized text encoder, same processor) load
through the same setting.
"""

from dataclasses import dataclass
import os
from pathlib import Path
from typing import Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from transformers import Sam3LiteTextModel, Sam3Model, Sam3Processor
from transformers.models.sam3.modeling_sam3 import box_cxcywh_to_xyxy, inverse_sigmoid
from transformers.models.sam3.modeling_sam3 import Sam3VisionEncoderOutput

from zs_perception.segmentation.base import check_rgb_image, Instance, Prompt, Segmenter
from zs_perception.segmentation.device import StageTimer
from zs_perception.segmentation.instances import mask_box
from zs_perception.segmentation.loading import load_hf_model
from zs_perception.segmentation.prompting import prompt_key
from zs_perception.segmentation.sam3_mask_head import Sam3MaskHead
from zs_perception.segmentation.torch_backend import token_limit_reason, TorchSegmenter

DEFAULT_SAM3_MODEL = 'facebook/sam3'
# config.json model_type -> model class. facebook/sam3 holds the image detector and the video
# tracker in one checkpoint whose configuration is 'sam3_video'; Sam3Model reads its
# detector part and ignores the tracker weights.
SAM3_MODEL_TYPES = {
    'sam3': Sam3Model,
    'sam3_video': Sam3Model,
    'sam3_lite_text': Sam3LiteTextModel,
    'sam3_lite_text_video': Sam3LiteTextModel,
}
# Probability above which a mask pixel is on the object (post_process_instance_segmentation).
MASK_THRESHOLD = 0.5
# Default overlap (IoU) above which two masks of the same prompt are merged into one instance.
DEFAULT_MERGE_IOU = 0.5
# Prompts per DETR / mask-head batch on a CPU: one at a time ran a 10-prompt frame in less
# than half the time of one batch of 10 there (docs/sam3.md, "Batching on CPU"); on an
# accelerator all the prompts of a frame run as one batch.
CPU_PROMPT_BATCH = 1
# Candidate masks resized to the image per step (bounds memory when the threshold is low).
_RESIZE_CHUNK = 32


def peek_model_type(model: str) -> Optional[str]:
    """Return the ``model_type`` in the ``config.json`` of a directory or a hub id.

    A hub id is looked up in the local cache first, then (unless the hub is offline) on
    the hub. ``None`` when it cannot be read; the loader then reports the problem with its
    usual message.
    """
    from huggingface_hub import constants
    from transformers import PretrainedConfig

    name = os.path.expanduser(str(model).strip())
    if not name:
        return None
    attempts = (True,) if Path(name).is_dir() or constants.HF_HUB_OFFLINE else (True, False)
    for local_files_only in attempts:
        try:
            config, _ = PretrainedConfig.get_config_dict(name,
                                                         local_files_only=local_files_only)
            return config.get('model_type')
        except (OSError, ValueError):
            continue
    return None


def load_sam3(model: str, device: torch.device, dtype: torch.dtype,
              allow_random_weights: bool = False):
    """Load a SAM 3 (or SAM 3 LiteText) model and its ``Sam3Processor``.

    Args:
        model: a Hugging Face id (cache first, then the hub; default
            :data:`DEFAULT_SAM3_MODEL`, gated: accept the licence on the hub first) or a
            local directory.
        device: where it runs.
        dtype: its parameter dtype.
        allow_random_weights: accept a directory marked as random weights.

    Returns:
        ``(model, processor)``, the model in eval mode on ``device``.

    Raises:
        ModelLoadError: as :func:`~zs_perception.segmentation.loading.load_hf_model`
            (not found, not a SAM 3 checkpoint, random weights not allowed).

    """
    model_type = peek_model_type(model)
    if model_type not in SAM3_MODEL_TYPES:
        model_type = 'sam3'  # what the loader expects; it names what it found instead
    return load_hf_model(SAM3_MODEL_TYPES[model_type], Sam3Processor, model,
                         setting='sam3_model', default_id=DEFAULT_SAM3_MODEL,
                         model_type=model_type, device=device, dtype=dtype,
                         allow_random_weights=allow_random_weights)


@dataclass
class Sam3Decoded:
    """The batched outputs of one frame for N prompts (prompt i in row i).

    Attributes:
        scores: ``(N, Q)`` ``float32`` instance score x presence score of each query.
        pred_boxes: ``(N, Q, 4)`` boxes, normalised ``xyxy``, model dtype.
        queries: ``(N, Q, C)`` the DETR decoder's last query states (the mask head's input).
        encoder_states: ``(N, T, C)`` the DETR encoder's prompt-fused image tokens.
        pixel_embeddings: ``(M, C, h, w)`` the mask head's pixel embeddings of the ``M``
            prompts in ``mask_prompts`` (``None`` before :meth:`Sam3Segmenter.predict_masks`
            or when ``M = 0``); a query's mask logits are
            :meth:`~zs_perception.segmentation.sam3_mask_head.Sam3MaskHead.mask_logits`.
        mask_prompts: ``(M,)`` ``int64`` prompt index of each row of ``pixel_embeddings``.

    """

    scores: torch.Tensor
    pred_boxes: torch.Tensor
    queries: torch.Tensor
    encoder_states: torch.Tensor
    pixel_embeddings: Optional[torch.Tensor] = None
    mask_prompts: Optional[torch.Tensor] = None


class Sam3Segmenter(TorchSegmenter):
    """SAM 3 instances for text prompts: mask, box, score, label.

    An instance's score is the model's instance score times its presence score (the
    probability that the concept is in the image at all), as
    ``post_process_instance_segmentation`` computes it; its mask is the query's mask
    probability resized bilinearly to the input image and cut at :data:`MASK_THRESHOLD`.
    Masks of the same prompt overlapping by more than ``merge_iou`` are merged (union,
    highest score), since SAM 3's image path has no non-maximum suppression.

    Args:
        model: a loaded ``Sam3Model`` or ``Sam3LiteTextModel`` on ``device`` in ``dtype``.
        processor: its ``Sam3Processor``.
        device: where it runs.
        dtype: the model's dtype.
        threshold: smallest instance score kept, in ``[0, 1]``.
        min_area_px: smallest mask kept, in pixels.
        max_objects: most instances returned, highest score first.
        merge_iou: masks of one prompt overlapping by more than this IoU are merged;
            ``1.0`` merges nothing.
        skip_absent_masks: run the mask head only for prompts with a query scoring at
            least ``threshold`` (the instances are the same either way; ``False`` runs it
            for every prompt, as the documented usage does).
        prompt_batch: prompts per batch of the DETR encoder, decoder and mask head; ``0``
            runs all the prompts of a frame as one batch; ``None``:
            :data:`CPU_PROMPT_BATCH` on a CPU, one batch elsewhere.

    """

    name = 'sam3'
    THRESHOLDS = Segmenter.THRESHOLDS + ('merge_iou',)

    def __init__(self, model: torch.nn.Module, processor: Sam3Processor, device: torch.device,
                 dtype: torch.dtype, threshold: float = 0.4, min_area_px: int = 100,
                 max_objects: int = 20, merge_iou: float = DEFAULT_MERGE_IOU,
                 skip_absent_masks: bool = True, prompt_batch: Optional[int] = None):
        super().__init__(device, threshold=threshold, min_area_px=min_area_px,
                         max_objects=max_objects, merge_iou=merge_iou)
        self.model = model
        self.mask_head = Sam3MaskHead(model.mask_decoder)
        self.skip_absent_masks = bool(skip_absent_masks)
        if prompt_batch is None:
            prompt_batch = CPU_PROMPT_BATCH if torch.device(device).type == 'cpu' else 0
        if int(prompt_batch) < 0:
            raise ValueError(f'prompt_batch must be >= 0 (0: all prompts in one batch), '
                             f'got {prompt_batch}')
        self.prompt_batch = int(prompt_batch)
        self.image_processor = processor.image_processor
        self.tokenizer = processor.tokenizer
        self.dtype = dtype
        self.max_tokens = int(model.config.text_config.max_position_embeddings)
        self._cache: Dict[Hashable, Tuple[torch.Tensor, torch.Tensor]] = {}
        self._text: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    @classmethod
    def _load(cls, device, dtype, allow_random_weights, *, sam3_model: str = '',
              **thresholds) -> Tuple['Sam3Segmenter', str]:
        """Load SAM 3 or SAM 3 LiteText (``sam3_model`` empty: :data:`DEFAULT_SAM3_MODEL`)."""
        name = str(sam3_model).strip() or DEFAULT_SAM3_MODEL
        model, processor = load_sam3(name, device, dtype, allow_random_weights)
        return cls(model, processor, device, dtype, **thresholds), \
            f'{type(model).__name__} {name}'

    def _truncation(self, text: str) -> Optional[str]:
        """Phrases over the text encoder's 32 tokens are cut to fit."""
        count = len(self.tokenizer(text, truncation=False)['input_ids'])
        return token_limit_reason(count, self.max_tokens, 'SAM 3 text encoder', 'cut to fit')

    def _encode_prompts(self, active: List[Prompt]) -> None:
        """Encode the text prompts not cached (image prompts were dropped: SAM 3 takes text)."""
        self._text = self.encode_text([prompt_key(p) for p in active], [p.text for p in active])

    def encode_text(self, keys: Sequence[Hashable], texts: Sequence[str]
                    ) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """Text features of ``texts``, reusing the cached ones; forgets prompts not in ``keys``.

        Args:
            keys: one cache key per text (equal keys mean equal texts).
            texts: the phrases.

        Returns:
            ``(features, mask)``: ``(N, 32, D)`` projected text features in the model dtype
            and the ``(N, 32)`` ``int64`` attention mask, as ``Sam3Model.get_text_features``
            and ``Sam3Processor`` (padding to 32 tokens) give them; ``None`` for no texts.

        """
        cache = {k: self._cache[k] for k in keys if k in self._cache}
        new = {k: t for k, t in zip(keys, texts) if k not in cache}
        if new:
            tokens = self.tokenizer(list(new.values()), padding='max_length', truncation=True,
                                    max_length=self.max_tokens, return_tensors='pt')
            ids = tokens['input_ids'].to(self.device)
            mask = tokens['attention_mask'].to(self.device)
            features = self.model.get_text_features(input_ids=ids, attention_mask=mask)
            cache.update(zip(new, zip(features.pooler_output, mask)))
        self._cache = cache
        if not keys:
            return None
        return (torch.stack([cache[k][0] for k in keys]),
                torch.stack([cache[k][1] for k in keys]))

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """Return ``(1, 3, S, S)`` pixels (resized, normalised) on the device in the model dtype.

        Args:
            image: ``(H, W, 3)`` ``uint8`` RGB.

        """
        x = torch.from_numpy(image).to(self.device).permute(2, 0, 1)
        pixels = self.image_processor(images=x, return_tensors='pt')['pixel_values']
        return pixels.to(self.device, self.dtype)

    def encode_image(self, pixels: torch.Tensor) -> Sam3VisionEncoderOutput:
        """Run the vision encoder once: the feature pyramid and its position encodings."""
        return self.model.get_vision_features(pixel_values=pixels)

    def decode(self, vision: Sam3VisionEncoderOutput, features: torch.Tensor,
               mask: torch.Tensor) -> Sam3Decoded:
        """Run the DETR encoder and decoder for the prompts, and score their queries.

        ``Sam3Model.forward`` for text prompts up to its mask head: the feature pyramid of
        one image expanded (a view) to the prompts, the DETR encoder fusing each prompt
        into the image tokens, the DETR decoder, the last layer's boxes, instance logits and
        presence logit. The prompts run as batches of :attr:`prompt_batch` (all at once
        when 0); each prompt's outputs depend only on its own row.

        Args:
            vision: :meth:`encode_image` of one image (batch 1).
            features: ``(N, 32, D)`` text features (:meth:`encode_text`).
            mask: ``(N, 32)`` their attention mask.

        Returns:
            The scores, boxes and the mask head's inputs; no masks yet.

        """
        parts = [self._decode_batch(vision, features[rows], mask[rows].bool())
                 for rows in self._batches(features.shape[0])]
        if len(parts) == 1:
            return parts[0]
        return Sam3Decoded(*(torch.cat(fields) for fields in
                             zip(*((d.scores, d.pred_boxes, d.queries, d.encoder_states)
                                   for d in parts))))

    def _batches(self, count: int) -> List[slice]:
        """Row slices of ``count`` prompts, :attr:`prompt_batch` at a time (0: one slice)."""
        size = int(self.prompt_batch) or max(count, 1)
        return [slice(start, min(start + size, count)) for start in range(0, count, size)]

    def _decode_batch(self, vision: Sam3VisionEncoderOutput, features: torch.Tensor,
                      text_mask: torch.Tensor) -> Sam3Decoded:
        """:meth:`decode` of one batch of prompts (``text_mask`` ``bool``)."""
        model = self.model
        count = features.shape[0]
        encoder = model.detr_encoder(
            vision_features=[vision.fpn_hidden_states[-2].expand(count, -1, -1, -1)],
            text_features=features,
            vision_pos_embeds=[vision.fpn_position_encoding[-2].expand(count, -1, -1, -1)],
            text_mask=text_mask)
        decoder = model.detr_decoder(
            vision_features=encoder.last_hidden_state, text_features=encoder.text_features,
            vision_pos_encoding=encoder.pos_embeds_flattened, text_mask=text_mask,
            spatial_shapes=encoder.spatial_shapes)
        queries = decoder.intermediate_hidden_states[-1:]  # (1, N, Q, C): the last layer
        offsets = model.detr_decoder.box_head(queries)[0]
        boxes = box_cxcywh_to_xyxy(
            (inverse_sigmoid(decoder.reference_boxes[-1]) + offsets).sigmoid())
        logits = model.dot_product_scoring(decoder_hidden_states=queries,
                                           text_features=encoder.text_features,
                                           text_mask=text_mask)[0].squeeze(-1)
        scores = logits.float().sigmoid() * decoder.presence_logits[-1].float().sigmoid()
        return Sam3Decoded(scores=scores, pred_boxes=boxes, queries=queries[0],
                           encoder_states=encoder.last_hidden_state)

    def predict_masks(self, vision: Sam3VisionEncoderOutput, decoded: Sam3Decoded,
                      features: torch.Tensor, mask: torch.Tensor) -> Sam3Decoded:
        """Run the mask head for the prompts whose masks can be used; fill ``decoded``'s.

        With :attr:`skip_absent_masks`, only the prompts with at least one query scoring
        ``threshold`` or more (the queries :meth:`postprocess` keeps) run, in batches of
        :attr:`prompt_batch`; each prompt's pixel embeddings depend only on its own row.
        The pixel decoder's prompt-independent part runs once per image when two or more
        prompts run (:class:`~zs_perception.segmentation.sam3_mask_head.Sam3MaskHead`);
        the queries' masks are computed later, only for the queries :meth:`postprocess`
        looks at.

        Args:
            vision: :meth:`encode_image` of the image.
            decoded: :meth:`decode`'s output for the prompts.
            features: ``(N, 32, D)`` text features.
            mask: ``(N, 32)`` their attention mask.

        Returns:
            ``decoded``, with ``pixel_embeddings`` ``(M, C, h, w)`` (``None`` when ``M = 0``)
            and ``mask_prompts``.

        """
        if self.skip_absent_masks:
            rows = torch.nonzero((decoded.scores >= self.threshold).any(dim=1))[:, 0]
        else:
            rows = torch.arange(decoded.scores.shape[0], device=decoded.scores.device)
        decoded.mask_prompts = rows
        decoded.pixel_embeddings = None
        if not rows.numel():
            return decoded
        terms = self.mask_head.image_terms(vision.fpn_hidden_states, shared=rows.numel() > 1)
        parts = []
        for batch in self._batches(rows.numel()):
            picked = rows[batch]
            parts.append(self.mask_head.pixel_embeddings(
                terms, decoded.encoder_states[picked], features[picked], mask[picked].bool()))
        decoded.pixel_embeddings = parts[0] if len(parts) == 1 else torch.cat(parts)
        return decoded

    def mask_logits(self, outputs: Sam3Decoded, rows: torch.Tensor, prompt_index: torch.Tensor,
                    query: torch.Tensor) -> torch.Tensor:
        """Return the ``(K, h, w)`` mask logits of ``K`` queries.

        Query ``k`` is query ``query[k]`` of prompt ``prompt_index[k]``, whose pixel
        embeddings are row ``rows[k]`` of ``outputs.pixel_embeddings``.
        """
        pixels = outputs.pixel_embeddings
        logits = pixels.new_empty((rows.numel(), *pixels.shape[-2:]))
        for row in torch.unique(rows).tolist():
            picked = torch.nonzero(rows == row)[:, 0]
            queries = outputs.queries[prompt_index[picked], query[picked]]
            logits[picked] = self.mask_head.mask_logits(pixels[row], queries)
        return logits

    def forward(self, vision: Sam3VisionEncoderOutput, features: torch.Tensor,
                mask: torch.Tensor) -> Sam3Decoded:
        """:meth:`decode` then :meth:`predict_masks`: one frame's outputs for N prompts."""
        decoded = self.decode(vision, features, mask)
        return self.predict_masks(vision, decoded, features, mask)

    def postprocess(self, outputs, height: int, width: int) -> List[Instance]:
        """Turn the batched outputs into instances at the image's resolution.

        Queries scoring (instance x presence) below ``threshold`` are dropped first; the
        rest are taken best first, :data:`_RESIZE_CHUNK` at a time, so only the masks needed
        are resized: a mask under ``min_area_px`` is dropped, one overlapping a kept mask of
        its prompt by more than ``merge_iou`` is merged into it (union; the kept score), and
        the rest become instances until there are ``max_objects``. Kept instances that the
        unions made overlap by more than ``merge_iou`` are merged in turn, so no two
        instances of a prompt overlap by more than that.

        Args:
            outputs: :meth:`forward`'s output for the active prompts.
            height: input image height, pixels.
            width: input image width, pixels.

        Returns:
            The instances, highest score first.

        """
        scores = outputs.scores
        prompt_index, query = torch.nonzero(scores >= self.threshold, as_tuple=True)
        if prompt_index.numel():  # row of each candidate's prompt in pixel_embeddings
            row_of = torch.full((scores.shape[0],), -1, dtype=torch.long, device=scores.device)
            row_of[outputs.mask_prompts] = torch.arange(outputs.mask_prompts.numel(),
                                                        device=scores.device)
            mask_row = row_of[prompt_index]
        candidate_scores = scores[prompt_index, query]
        order = torch.argsort(candidate_scores, descending=True)
        limit = max(int(self.max_objects), 0)
        min_area = max(int(self.min_area_px), 1)
        kept: List[List] = []  # [score, prompt index, (H, W) bool mask on the device]
        for start in range(0, order.numel(), _RESIZE_CHUNK):
            if len(kept) >= limit:
                break
            chunk = order[start:start + _RESIZE_CHUNK]
            probabilities = self.mask_logits(outputs, mask_row[chunk], prompt_index[chunk],
                                             query[chunk]).float()
            probabilities = torch.nn.functional.interpolate(
                probabilities.sigmoid()[None], size=(height, width), mode='bilinear',
                align_corners=False)[0]
            masks = probabilities > MASK_THRESHOLD
            areas = masks.flatten(1).sum(dim=1).tolist()
            for k, area in enumerate(areas):
                if len(kept) >= limit:
                    break
                if area < min_area:
                    continue
                index = int(prompt_index[chunk[k]])
                target = self._merge_target(kept, index, masks[k], area)
                if target is None:
                    kept.append([float(candidate_scores[chunk[k]]), index, masks[k]])
                else:
                    target[2] = target[2] | masks[k]
        kept = self._settle_merges(kept)
        labels = self.prompts
        instances = []
        for score, index, mask in kept:
            mask = mask.cpu().numpy()
            instances.append(Instance(label=labels[index], prompt_index=index,
                                      score=min(max(score, 0.0), 1.0), box=mask_box(mask),
                                      mask=mask))
        return instances

    def _settle_merges(self, kept: List[List]) -> List[List]:
        """Merge kept instances that a union made overlap by over ``merge_iou`` (best first)."""
        merged = True
        while merged and self.merge_iou < 1.0:
            merged = False
            for i, first in enumerate(kept):
                target = self._merge_target(kept[:i], first[1], first[2], int(first[2].sum()))
                if target is not None:
                    target[2] = target[2] | first[2]
                    del kept[i]
                    merged = True
                    break
        return kept

    def _merge_target(self, kept: List[List], index: int, mask: torch.Tensor,
                      area: int) -> Optional[List]:
        """Find the kept instance of prompt ``index`` that ``mask`` overlaps over ``merge_iou``."""
        if self.merge_iou >= 1.0:
            return None
        for entry in kept:
            if entry[1] != index:
                continue
            inter = int((entry[2] & mask).sum())
            union = area + int(entry[2].sum()) - inter
            if union > 0 and inter / union > self.merge_iou:
                return entry
        return None

    def query_scores(self, image: np.ndarray) -> torch.Tensor:
        """Return every query's score on ``image`` for the active prompts, before thresholds.

        Args:
            image: ``(H, W, 3)`` ``uint8`` RGB.

        Returns:
            ``(N, Q)`` ``float32`` instance score x presence score (:meth:`decode`, no
            mask head), on the device; ``(0, Q)`` without prompts.

        """
        image = check_rgb_image(image)
        with self._lock, torch.inference_mode():
            if self._text is None:
                queries = self.model.config.detr_decoder_config.num_queries
                return torch.zeros((0, queries), device=self.device)
            features, mask = self._text
            vision = self.encode_image(self.preprocess(image))
            return self.decode(vision, features, mask).scores

    def _segment(self, image: np.ndarray, timer: StageTimer) -> Tuple[List[Instance], None]:
        features, mask = self._text
        height, width = image.shape[:2]
        with timer.stage('preprocess'):
            pixels = self.preprocess(image)
        with timer.stage('encode'):
            vision = self.encode_image(pixels)
        with timer.stage('decode'):
            decoded = self.decode(vision, features, mask)
        with timer.stage('masks'):
            outputs = self.predict_masks(vision, decoded, features, mask)
        with timer.stage('postprocess'):
            instances = self.postprocess(outputs, height, width)
        return instances, None
