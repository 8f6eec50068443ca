"""Open-vocabulary box detectors from transformers (OWLv2, Grounding DINO) for Grounded-SAM.

Both give, for one RGB image and a list of phrases, boxes in input pixels,
scores and the index of the phrase each box matched, equal to the documented
transformers usage (processor, model, ``post_process_grounded_object_detection``)
before its threshold (see the parity tests). The difference is that the text
side is encoded once per goal, not once per frame:

- OWLv2 scores image patches against text embeddings; the embeddings of each
  phrase are cached, and a frame runs only the vision tower and the heads.
- Grounding DINO fuses text and image inside its encoder and decoder, so only
  its BERT text backbone can be skipped: the tokenised caption is kept, and
  the backbone's output is reused while the caption is unchanged.

Images are preprocessed by the model's own image processor on the model's
device.
"""

from dataclasses import dataclass
from typing import Dict, Hashable, Optional, Sequence, Tuple

import numpy as np
import torch
from transformers import GroundingDinoForObjectDetection, GroundingDinoProcessor
from transformers import Owlv2ForObjectDetection, Owlv2Processor
from transformers.image_transforms import center_to_corners_format

from zs_perception.segmentation.caching import EmbeddingCache
from zs_perception.segmentation.loading import load_hf_model

DETECTORS = ('owlv2', 'grounding_dino')
DEFAULT_DETECTOR_MODELS = {
    'owlv2': 'google/owlv2-base-patch16-ensemble',
    'grounding_dino': 'IDEA-Research/grounding-dino-tiny',
}


@dataclass
class Detections:
    """Boxes found in one image.

    Attributes:
        boxes: ``(K, 4)`` ``float32`` ``[x0, y0, x1, y1]`` in input-image
            pixels (not clipped to the image, as transformers returns them).
        scores: ``(K,)`` ``float32`` confidence in ``[0, 1]``.
        prompt_indices: ``(K,)`` ``int64`` index of the phrase each box
            matched.

    All on the detector's device.
    """

    boxes: torch.Tensor
    scores: torch.Tensor
    prompt_indices: torch.Tensor

    def select(self, keep: torch.Tensor) -> 'Detections':
        """Return the detections at ``keep`` (a bool mask or index tensor)."""
        return Detections(self.boxes[keep], self.scores[keep], self.prompt_indices[keep])


class Owlv2Detector:
    """OWLv2 with cached per-phrase text embeddings.

    Args:
        model: the loaded ``Owlv2ForObjectDetection`` on ``device`` in ``dtype``.
        processor: its ``Owlv2Processor``.
        device: where it runs.
        dtype: the model's dtype.

    """

    name = 'owlv2'

    def __init__(self, model: Owlv2ForObjectDetection, processor: Owlv2Processor,
                 device: torch.device, dtype: torch.dtype):
        self.model = model
        self.image_processor = processor.image_processor
        self.tokenizer = processor.tokenizer
        self.device = device
        self.dtype = dtype
        self.max_tokens = min(int(self.tokenizer.model_max_length),
                              int(model.config.text_config.max_position_embeddings))
        self._cache = EmbeddingCache()
        self._queries: Optional[torch.Tensor] = None

    def token_count(self, text: str) -> int:
        """Count the tokens of ``text`` including the start and end tokens."""
        return len(self.tokenizer(text, truncation=False)['input_ids'])

    def set_texts(self, keys: Sequence[Hashable], texts: Sequence[str]) -> None:
        """Make ``texts`` the phrases to detect; only phrases not seen before are encoded.

        Args:
            keys: one cache key per phrase (equal keys mean equal phrases).
            texts: the phrases; over :attr:`max_tokens` tokens are truncated.

        """
        by_key = dict(zip(keys, texts))

        def encode(missing):
            # As Owlv2Processor: every query padded to max_length.
            tokens = self.tokenizer([by_key[k] for k in missing], padding='max_length',
                                    truncation=True, max_length=self.max_tokens,
                                    return_tensors='pt')
            embeds = self.model.owlv2.get_text_features(
                input_ids=tokens['input_ids'].to(self.device),
                attention_mask=tokens['attention_mask'].to(self.device)).pooler_output
            # As Owlv2Model.forward: the text embeddings are L2-normalised.
            return dict(zip(missing, embeds / torch.linalg.norm(embeds, ord=2, dim=-1,
                                                                keepdim=True)))

        self._queries = self._cache.embed(list(keys), encode)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """Return ``(1, 3, S, S)`` pixels: padded square, resized, normalised on the device."""
        x = torch.from_numpy(image).to(self.device).permute(2, 0, 1)
        pixels = self.image_processor(images=x, return_tensors='pt')['pixel_values']
        return pixels.to(self.device, self.dtype)

    def detect(self, image: np.ndarray) -> Detections:
        """All patch boxes with their best phrase and its score (no threshold).

        Args:
            image: ``(H, W, 3)`` ``uint8`` RGB.

        """
        height, width = image.shape[:2]
        if self._queries is None:
            return _empty(self.device)
        pixels = self.preprocess(image)
        feature_map, _ = self.model.image_embedder(pixel_values=pixels)
        feats = feature_map.reshape(1, -1, feature_map.shape[-1])
        queries = self._queries[None]
        query_mask = torch.ones(queries.shape[:2], dtype=torch.bool, device=self.device)
        logits, _ = self.model.class_predictor(feats, queries, query_mask)
        boxes = self.model.box_predictor(feats, feature_map)
        best = logits[0].max(dim=-1)
        # OWLv2 pads the image to a square at the bottom right: boxes scale by the long side.
        boxes = center_to_corners_format(boxes[0].float()) * float(max(height, width))
        return Detections(boxes, best.values.float().sigmoid(), best.indices)


class GroundingDinoDetector:
    """Grounding DINO over one caption ``'phrase one. phrase two.'`` made of all phrases.

    The caption is tokenised once per goal and the BERT text backbone's output
    is reused while it is unchanged (see :class:`_RememberingTextBackbone`).
    Each box's phrase is the one whose tokens have the highest logit.

    Args:
        model: the loaded ``GroundingDinoForObjectDetection`` on ``device``.
        processor: its ``GroundingDinoProcessor``.
        device: where it runs.
        dtype: the model's dtype.

    """

    name = 'grounding_dino'

    def __init__(self, model: GroundingDinoForObjectDetection,
                 processor: GroundingDinoProcessor, device: torch.device, dtype: torch.dtype):
        self.model = model
        self.image_processor = processor.image_processor
        self.tokenizer = processor.tokenizer
        self.device = device
        self.dtype = dtype
        self.max_tokens = int(model.config.max_text_len)
        if not isinstance(model.model.text_backbone, _RememberingTextBackbone):
            model.model.text_backbone = _RememberingTextBackbone(model.model.text_backbone)
        self._tokens: Optional[Dict[str, torch.Tensor]] = None
        self._token_phrase: Optional[torch.Tensor] = None
        self._count = 0

    def token_count(self, text: str) -> int:
        """Count the tokens ``text`` adds to the caption (without its period)."""
        return len(self.tokenizer(text.lower(), add_special_tokens=False)['input_ids'])

    @staticmethod
    def caption(texts: Sequence[str]) -> str:
        """Return the caption Grounding DINO reads: lower-case phrases each ended by a period.

        The same text ``GroundingDinoProcessor`` builds from a list of labels.
        """
        return '. '.join(t.strip().lower() for t in texts) + '.'

    def set_texts(self, keys: Sequence[Hashable], texts: Sequence[str]) -> None:
        """Make ``texts`` the phrases to detect (``keys`` are unused; the caption is the key).

        Raises:
            ValueError: the caption is over the model's ``max_text_len`` tokens.

        """
        self._count = len(texts)
        if not texts:
            self._tokens = self._token_phrase = None
            return
        caption = self.caption(texts)
        tokens = self.tokenizer(caption, return_offsets_mapping=True, return_tensors='pt')
        length = tokens['input_ids'].shape[1]
        if length > self.max_tokens:
            raise ValueError(
                f'The Grounding DINO caption of {len(texts)} phrases is {length} tokens, over '
                f'the model limit of {self.max_tokens}; use fewer or shorter phrases.')
        # Character span of each phrase in the caption, then each token's phrase (-1: none).
        spans, start = [], 0
        for text in texts:
            end = start + len(text.strip())
            spans.append((start, end))
            start = end + 2
        token_phrase = torch.full((self.max_tokens,), -1, dtype=torch.long)
        for position, (a, b) in enumerate(tokens.pop('offset_mapping')[0].tolist()):
            if b > a:
                for index, (s, e) in enumerate(spans):
                    if s <= a and b <= e:
                        token_phrase[position] = index
        self._tokens = {k: v.to(self.device) for k, v in tokens.items()}
        self._token_phrase = token_phrase.to(self.device)

    def preprocess(self, image: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(1, 3, h, w)`` pixel values (resized, normalised) and ``(1, h, w)`` pixel mask."""
        x = torch.from_numpy(image).to(self.device).permute(2, 0, 1)
        out = self.image_processor(images=x, return_tensors='pt')
        return out['pixel_values'].to(self.device, self.dtype), out['pixel_mask'].to(self.device)

    def detect(self, image: np.ndarray) -> Detections:
        """All query boxes with their best phrase and score (no threshold).

        The score is the highest token probability, as transformers'
        post-processing computes it.
        """
        height, width = image.shape[:2]
        if self._tokens is None:
            return _empty(self.device)
        pixels, pixel_mask = self.preprocess(image)
        out = self.model(pixel_values=pixels, pixel_mask=pixel_mask, **self._tokens)
        logits = out.logits[0].float()
        scores = logits.sigmoid().max(dim=-1).values
        in_phrase = self._token_phrase[:logits.shape[-1]]
        per_phrase = torch.stack([
            logits[:, in_phrase == i].max(dim=-1).values if bool((in_phrase == i).any())
            else torch.full_like(scores, -torch.inf) for i in range(self._count)], dim=1)
        scale = torch.tensor([width, height, width, height], device=self.device,
                             dtype=torch.float32)
        boxes = center_to_corners_format(out.pred_boxes[0].float()) * scale
        return Detections(boxes, scores, per_phrase.argmax(dim=1))


class _RememberingTextBackbone(torch.nn.Module):
    """Wraps Grounding DINO's text backbone: reruns it only when its inputs change.

    The goal (and so the caption) stays fixed over many frames; BERT's output
    for it is the same each time.
    """

    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone = backbone
        self._inputs: Optional[Tuple[torch.Tensor, ...]] = None
        self._output = None

    def forward(self, input_ids, attention_mask, token_type_ids, position_ids, return_dict=True):
        """Return the wrapped ``BertModel``'s output for these arguments (reused if unchanged)."""
        inputs = (input_ids, attention_mask, token_type_ids, position_ids)
        if self._inputs is not None and return_dict and all(
                a.shape == b.shape and torch.equal(a, b) for a, b in zip(inputs, self._inputs)):
            return self._output
        output = self.backbone(input_ids, attention_mask, token_type_ids, position_ids,
                               return_dict=return_dict)
        if return_dict:
            self._inputs = tuple(t.clone() for t in inputs)
            self._output = output
        return output


def _empty(device: torch.device) -> Detections:
    return Detections(torch.zeros((0, 4), device=device), torch.zeros(0, device=device),
                      torch.zeros(0, dtype=torch.long, device=device))


def load_detector(detector: str, model: str, device: torch.device, dtype: torch.dtype,
                  allow_random_weights: bool = False):
    """Load an OWLv2 or Grounding DINO detector.

    Args:
        detector: ``'owlv2'`` or ``'grounding_dino'``.
        model: Hugging Face id or local directory; empty means the default
            of :data:`DEFAULT_DETECTOR_MODELS`.
        device: where it runs.
        dtype: its dtype.
        allow_random_weights: accept a directory marked as random weights.

    Raises:
        ValueError: unknown detector.
        ModelLoadError: as :func:`~zs_perception.segmentation.loading.load_hf_model`.

    """
    if detector not in DETECTORS:
        raise ValueError(f'Unknown detector {detector!r}; expected one of {DETECTORS}.')
    model = str(model).strip() or DEFAULT_DETECTOR_MODELS[detector]
    if detector == 'owlv2':
        net, processor = load_hf_model(
            Owlv2ForObjectDetection, Owlv2Processor, model, setting='detector_model',
            default_id=DEFAULT_DETECTOR_MODELS[detector], model_type='owlv2', device=device,
            dtype=dtype, allow_random_weights=allow_random_weights)
        return Owlv2Detector(net, processor, device, dtype)
    net, processor = load_hf_model(
        GroundingDinoForObjectDetection, GroundingDinoProcessor, model, setting='detector_model',
        default_id=DEFAULT_DETECTOR_MODELS[detector], model_type='grounding-dino', device=device,
        dtype=dtype, allow_random_weights=allow_random_weights)
    return GroundingDinoDetector(net, processor, device, dtype)
