"""The dense-CLIP backend: CLIP patch features against text embeddings (the MaskCLIP trick).

CLIP's image embedding is its class token; its patch tokens are not trained to
live in the text space. MaskCLIP (Zhou et al., ECCV 2022) observed that the
last attention layer is what mixes them away: replacing that layer's
attention by "each token attends only to itself" (its value projection, then
the output projection) and then applying the usual residual, MLP, final layer
norm and visual projection gives per-patch embeddings that can be compared
with text embeddings. Here each pixel's probability of each prompt is the
softmax, over the prompts plus a few background phrases, of the scaled
cosine similarities, bilinearly upsampled to the image; instances are the
thresholded connected components (the engine's :func:`find_instances`).

The cheapest backend (one CLIP image pass, no decoder) and the lowest quality:
the maps are as coarse as CLIP's patch grid (32 px patches for ViT-B/32) and
noisy. :class:`ClipRunner` is shared with the zero-guidance backend.
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torchvision.transforms.v2 import functional as tvF  # noqa: N812
from transformers import CLIPModel, CLIPProcessor

from zs_perception.segmentation.base import Instance, Prompt
from zs_perception.segmentation.caching import EmbeddingCache, LastFrameCache
from zs_perception.segmentation.device import StageTimer
from zs_perception.segmentation.instances import find_instances
from zs_perception.segmentation.loading import load_hf_model
from zs_perception.segmentation.prompting import prompt_key
from zs_perception.segmentation.torch_backend import token_limit_reason, TorchSegmenter

DEFAULT_CLIP_MODEL = 'openai/clip-vit-base-patch32'
# Phrases every pixel is also compared with, so that one prompt alone still has a background.
DEFAULT_BACKGROUND = ('background', 'floor', 'wall', 'ceiling', 'table top')


def load_clip(model: str, device: torch.device, dtype: torch.dtype,
              allow_random_weights: bool = False) -> 'ClipRunner':
    """Load a transformers ``CLIPModel`` (Hugging Face id or directory) as a :class:`ClipRunner`.

    Raises:
        ModelLoadError: as :func:`~zs_perception.segmentation.loading.load_hf_model`.

    """
    net, processor = load_hf_model(
        CLIPModel, CLIPProcessor, str(model).strip() or DEFAULT_CLIP_MODEL, setting='clip_model',
        default_id=DEFAULT_CLIP_MODEL, model_type='clip', device=device, dtype=dtype,
        allow_random_weights=allow_random_weights)
    return ClipRunner(net, processor, device, dtype)


class ClipRunner:
    """CLIP text embeddings, crop embeddings and dense patch embeddings, on one device.

    All embeddings are L2-normalised ``float32``. Methods expect to run under
    ``torch.inference_mode()``.

    Args:
        model: the loaded ``CLIPModel`` on ``device`` in ``dtype``.
        processor: its ``CLIPProcessor`` (tokenizer, mean, std, input size).
        device: where it runs.
        dtype: the model's dtype.

    """

    def __init__(self, model: CLIPModel, processor: CLIPProcessor, device: torch.device,
                 dtype: torch.dtype):
        self.model = model
        self.device = device
        self.dtype = dtype
        self.tokenizer = processor.tokenizer
        self.max_tokens = min(int(self.tokenizer.model_max_length),
                              int(model.config.text_config.max_position_embeddings))
        ip = processor.image_processor
        self.input_size = int(model.config.vision_config.image_size)
        self.patch_size = int(model.config.vision_config.patch_size)
        scale = 1.0 / ip.rescale_factor
        # The normalisation mean in pixel units: pixels of this colour normalise to 0.
        self.mean_rgb = np.asarray(ip.image_mean, dtype=np.float32) * scale
        self._mean = torch.tensor(ip.image_mean, device=device).view(1, 3, 1, 1) * scale
        self._std = torch.tensor(ip.image_std, device=device).view(1, 3, 1, 1) * scale
        self.logit_scale = float(model.logit_scale.detach().exp())

    def token_count(self, text: str) -> int:
        """Count the tokens of ``text`` including the start and end tokens."""
        return len(self.tokenizer(text, truncation=False)['input_ids'])

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """``(n, d)`` normalised text embeddings; text over the token limit is truncated."""
        tokens = self.tokenizer(list(texts), padding=True, truncation=True,
                                max_length=self.max_tokens, return_tensors='pt')
        out = self.model.get_text_features(
            input_ids=tokens['input_ids'].to(self.device),
            attention_mask=tokens['attention_mask'].to(self.device)).pooler_output
        return F.normalize(out.float(), dim=-1)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalise ``(B, 3, h, w)`` RGB in ``[0, 255]`` into model inputs in the model dtype."""
        return ((pixels.float() - self._mean) / self._std).to(self.dtype)

    def encode_crops(self, pixels: torch.Tensor) -> torch.Tensor:
        """Embed ``(B, 3, S, S)`` inputs from :meth:`normalize`: ``(B, d)``, normalised."""
        out = self.model.get_image_features(pixel_values=pixels).pooler_output
        return F.normalize(out.float(), dim=-1)

    def dense_features(self, image: np.ndarray, short_side: int) -> torch.Tensor:
        """Compute the MaskCLIP patch embeddings of one image.

        The image is resized (bilinear, antialiased) so its short side is
        about ``short_side`` pixels, both sides rounded to whole patches, and
        CLIP's position embeddings are interpolated to that grid.

        Args:
            image: ``(H, W, 3)`` ``uint8`` RGB.
            short_side: input short side in pixels.

        Returns:
            ``(gh, gw, d)`` ``float32`` normalised embeddings, one per patch.

        """
        height, width = image.shape[:2]
        scale = short_side / min(height, width)
        size = [max(1, round(height * scale / self.patch_size)) * self.patch_size,
                max(1, round(width * scale / self.patch_size)) * self.patch_size]
        x = torch.from_numpy(image).to(self.device).permute(2, 0, 1)[None]
        x = tvF.resize(x, size, interpolation=tvF.InterpolationMode.BILINEAR, antialias=True)
        vision = self.model.vision_model
        hidden = vision.embeddings(self.normalize(x), interpolate_pos_encoding=True)
        hidden = vision.pre_layrnorm(hidden)
        *layers, last = vision.encoder.layers
        for layer in layers:
            hidden = layer(hidden, None)
        # The last layer with its attention replaced by self-attention to the token itself.
        attention = last.self_attn
        hidden = hidden + attention.out_proj(attention.v_proj(last.layer_norm1(hidden)))
        hidden = hidden + last.mlp(last.layer_norm2(hidden))
        patches = self.model.visual_projection(vision.post_layernorm(hidden[0, 1:]))
        grid = (size[0] // self.patch_size, size[1] // self.patch_size)
        return F.normalize(patches.float(), dim=-1).reshape(*grid, -1)


class ClipDenseSegmenter(TorchSegmenter):
    """Per-pixel CLIP similarity maps, thresholded into instances.

    Args:
        runner: CLIP.
        threshold: pixel probability threshold in ``[0, 1]``.
        min_area_px: smallest instance kept, in pixels.
        max_objects: at most this many instances, highest score first.
        short_side: CLIP input short side in pixels (448: a 14 x 19 patch
            grid with ViT-B/32 on a 640x480 image).
        background: phrases compared with every pixel besides the prompts
            (a phrase equal to a prompt is left out).

    The result's ``probabilities`` are the ``(N, H, W)`` per-prompt maps.
    """

    name = 'clip_dense'
    dense_maps = True

    def __init__(self, runner: ClipRunner, threshold: float = 0.4, min_area_px: int = 100,
                 max_objects: int = 20, short_side: int = 448,
                 background: Sequence[str] = DEFAULT_BACKGROUND):
        if int(short_side) < runner.patch_size:
            raise ValueError(f'short_side must be at least the CLIP patch size '
                             f'{runner.patch_size}, got {short_side!r}.')
        super().__init__(runner.device, threshold=threshold, min_area_px=min_area_px,
                         max_objects=max_objects)
        self.runner = runner
        self.short_side = int(short_side)
        self.background = [b.strip() for b in background if b.strip()]
        self._cache = EmbeddingCache()
        self._texts = None
        self._frames = LastFrameCache()

    @classmethod
    def _load(cls, device, dtype, allow_random_weights, *, clip_model: str = '',
              **thresholds) -> Tuple['ClipDenseSegmenter', str]:
        """Load CLIP (``clip_model`` empty: the default)."""
        runner = load_clip(clip_model, device, dtype, allow_random_weights)
        return cls(runner, **thresholds), f'CLIP {clip_model or DEFAULT_CLIP_MODEL}'

    def _truncation(self, text: str) -> Optional[str]:
        return token_limit_reason(self.runner.token_count(text), self.runner.max_tokens,
                                  'CLIP text', 'the rest is cut off')

    def _encode_prompts(self, active: List[Prompt]) -> None:
        """Encode the prompts and background phrases not seen before."""
        keys = [prompt_key(p) for p in active]
        texts = [p.text for p in active]
        for phrase in self.background:
            key = prompt_key(Prompt(label=phrase, text=phrase))
            if key not in keys:
                keys.append(key)
                texts.append(phrase)
        by_key = dict(zip(keys, texts))
        embeddings = self._cache.embed(keys, lambda missing: dict(zip(
            missing, self.runner.encode_texts([by_key[k] for k in missing]))))
        self._texts = embeddings if active else None

    def probabilities(self, image: np.ndarray) -> torch.Tensor:
        """``(N, H, W)`` ``float32`` per-prompt probability maps of one image (on the device)."""
        height, width = image.shape[:2]
        features = self._frames.get(image)
        if features is None:
            features = self.runner.dense_features(image, self.short_side)
            self._frames.put(image, features)
        logits = self.runner.logit_scale * torch.einsum('hwd,nd->nhw', features, self._texts)
        probs = logits.softmax(dim=0)[:len(self._active)]
        return F.interpolate(probs[None], size=(height, width), mode='bilinear',
                             align_corners=False)[0]

    def _segment(self, image: np.ndarray, timer: StageTimer
                 ) -> Tuple[List[Instance], np.ndarray]:
        with timer.stage('encode'):
            probs = self.probabilities(image).cpu().numpy()
        with timer.stage('postprocess'):
            instances, _ = find_instances(probs, self.prompts, self.threshold,
                                          self.min_area_px, self.max_objects)
        return instances, probs
