"""The CLIPSeg backend: text and image prompts to per-prompt probability maps and instances.

transformers' ``CLIPSegForImageSegmentation`` forward pass takes one copy of
the image per prompt and runs the CLIP vision encoder on every copy. Here the
model is run in its three stages instead, each as often as its inputs change:

- the CLIP vision encoder once per frame (only up to the deepest layer the
  decoder reads), on one copy of the image, preprocessed on the target device;
- the prompt embeddings (CLIP text or image features) once when the prompts
  change, cached per prompt;
- the small CLIPSeg decoder once per frame for all prompts in one batch, with
  the per-layer projections of the image activations computed once and
  broadcast over the prompts.

The results equal the reference forward pass (see the parity tests).
"""

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torchvision.transforms.v2 import functional as tvF  # noqa: N812
from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor
from transformers.image_utils import pil_torch_interpolation_mapping

from zs_perception.segmentation.base import Instance, ModelLoadError, Prompt, PromptLike
from zs_perception.segmentation.caching import EmbeddingCache, LastFrameCache
from zs_perception.segmentation.device import StageTimer
from zs_perception.segmentation.instances import find_instances
from zs_perception.segmentation.loading import DEFAULT_CLIPSEG_MODEL, load_clipseg
from zs_perception.segmentation.prompting import normalize_prompts, prompt_key
from zs_perception.segmentation.torch_backend import token_limit_reason, TorchSegmenter


class ClipSegRunner:
    """CLIPSeg split into its stages, each callable on its own.

    Reusable by other backends (e.g. to get CLIPSeg heat maps for any set of
    prompt embeddings). All methods expect to run under ``torch.inference_mode()``.

    Args:
        model: the loaded model, already on ``device`` in ``dtype``.
        processor: its processor; its image settings (size, resampling, mean,
            std, rescale factor) and tokenizer are used so results match it.
        device: where the model runs.
        dtype: the model's dtype.

    """

    def __init__(self, model: CLIPSegForImageSegmentation, processor: CLIPSegProcessor,
                 device: torch.device, dtype: torch.dtype):
        self.model = model
        self.device = device
        self.dtype = dtype
        self.tokenizer = processor.tokenizer
        self.max_tokens = min(int(self.tokenizer.model_max_length),
                              int(model.config.text_config.max_position_embeddings))
        ip = processor.image_processor
        if getattr(ip, 'do_center_crop', False) or getattr(ip, 'do_pad', False):
            raise ModelLoadError(
                f'The CLIPSeg image processor asks for center cropping or padding '
                f'({type(ip).__name__}: do_center_crop={ip.do_center_crop}, do_pad={ip.do_pad}); '
                'this backend reproduces only resize + rescale + normalize, as CLIPSeg uses.')
        self._size = [ip.size['height'], ip.size['width']] if ip.do_resize else None
        self._interpolation = pil_torch_interpolation_mapping[ip.resample]
        # Same fused constants as transformers' torchvision image processors.
        scale = 1.0 / ip.rescale_factor if ip.do_rescale else 1.0
        self._mean = (torch.tensor(ip.image_mean, device=device) * scale
                      if ip.do_normalize else None)
        self._std = torch.tensor(ip.image_std, device=device) * scale if ip.do_normalize else None
        self._rescale = ip.rescale_factor if ip.do_rescale and not ip.do_normalize else None
        self.extract_layers = list(model.config.extract_layers)

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """Resize and normalise one image on the device, as CLIPSegProcessor does.

        Args:
            image: ``(H, W, 3)`` ``uint8`` RGB.

        Returns:
            ``(1, 3, h, w)`` pixel values in the model dtype (``h, w`` from the
            processor, 352x352 for CLIPSeg).

        """
        x = torch.from_numpy(image).to(self.device, non_blocking=True)
        x = x.permute(2, 0, 1).contiguous()[None]
        if self._size is not None:
            x = tvF.resize(x, self._size, interpolation=self._interpolation, antialias=True)
        x = x.to(torch.float32)
        if self._mean is not None:
            x = tvF.normalize(x, self._mean, self._std)
        elif self._rescale is not None:
            x = x * self._rescale
        x = x.to(self.dtype)
        if self.device.type == 'cuda':
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def image_activations(self, pixel_values: torch.Tensor) -> List[torch.Tensor]:
        """Run the CLIP vision encoder up to the deepest layer the decoder reads.

        Args:
            pixel_values: ``(B, 3, h, w)`` from :meth:`preprocess`.

        Returns:
            The hidden states after each of ``config.extract_layers``, each
            ``(B, 1 + tokens, width)``.

        """
        vision = self.model.clip.vision_model
        hidden = vision.embeddings(pixel_values, interpolate_pos_encoding=True)
        hidden = vision.pre_layrnorm(hidden)
        wanted = set(self.extract_layers)
        found = {}
        for i, layer in enumerate(vision.encoder.layers[:max(wanted) + 1]):
            hidden = layer(hidden, None)
            if i in wanted:
                found[i] = hidden
        return [found[i] for i in self.extract_layers]

    def token_count(self, text: str) -> int:
        """Count the tokens of ``text``, including the start and end tokens."""
        return len(self.tokenizer(text, truncation=False, verbose=False)['input_ids'])

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Compute CLIP text embeddings ``(n, projection_dim)``; overlong text is truncated."""
        tokens = self.tokenizer(list(texts), padding=True, truncation=True,
                                max_length=self.max_tokens, return_tensors='pt')
        return self.model.clip.get_text_features(
            input_ids=tokens['input_ids'].to(self.device),
            attention_mask=tokens['attention_mask'].to(self.device)).pooler_output

    def encode_images(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Compute CLIP image embeddings ``(n, projection_dim)`` of example (prompt) images."""
        pixels = torch.cat([self.preprocess(image) for image in images])
        return self.model.clip.get_image_features(
            pixel_values=pixels, interpolate_pos_encoding=True).pooler_output

    def decode(self, activations: List[torch.Tensor], embeddings: torch.Tensor) -> torch.Tensor:
        """Run the CLIPSeg decoder for all prompts against one image's activations.

        Same arithmetic as ``CLIPSegDecoder.forward``, except that the
        projections of the image activations, which do not depend on the
        prompt, are computed once and broadcast over the prompts.

        Args:
            activations: from :meth:`image_activations` with batch size 1.
            embeddings: ``(N, projection_dim)`` prompt embeddings.

        Returns:
            ``(N, h, w)`` logits at the model's input resolution.

        """
        decoder = self.model.decoder
        output = None
        for i, (activation, layer, reduce) in enumerate(
                zip(activations[::-1], decoder.layers, decoder.reduces)):
            reduced = reduce(activation)
            output = reduced if output is None else reduced + output
            if i == decoder.conditional_layer:
                output = (decoder.film_mul(embeddings)[:, None, :] * output
                          + decoder.film_add(embeddings)[:, None, :])
            output = layer(output, attention_mask=None)
        output = output[:, 1:, :].transpose(1, 2)
        size = int(round(output.shape[2] ** 0.5))
        output = output.reshape(output.shape[0], output.shape[1], size, size)
        return decoder.transposed_convolution(output).squeeze(1)

    @staticmethod
    def probabilities(logits: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """Logits ``(N, h, w)`` to ``(N, H, W)`` ``float32`` probabilities at ``size`` (H, W).

        The logits are resized bilinearly, then passed through a sigmoid.
        """
        resized = F.interpolate(logits[:, None].float(), size=size, mode='bilinear',
                                align_corners=False)
        return resized[:, 0].sigmoid_()


def load_clipseg_runner(model: str, device: torch.device, dtype: torch.dtype,
                        allow_random_weights: bool = False) -> ClipSegRunner:
    """Load CLIPSeg (Hugging Face id or directory; empty: the default) as a :class:`ClipSegRunner`.

    Raises:
        ModelLoadError: as :func:`~zs_perception.segmentation.loading.load_clipseg`.

    """
    net, processor = load_clipseg(model or DEFAULT_CLIPSEG_MODEL, device, dtype,
                                  allow_random_weights)
    return ClipSegRunner(net, processor, device, dtype)


class ClipSegSegmenter(TorchSegmenter):
    """CLIPSeg with text and image prompts; instances are connected components.

    Args:
        runner: the model, split into stages.
        threshold: pixel probability threshold in ``[0, 1]``.
        min_area_px: smallest instance kept, in pixels.
        max_objects: at most this many instances per image, highest score first.

    Instance scores are the mean probability over the component's pixels. The result's
    ``probabilities`` are the ``(N, H, W)`` per-prompt maps.
    """

    name = 'clipseg'
    dense_maps = True

    def __init__(self, runner: ClipSegRunner, threshold: float = 0.4, min_area_px: int = 100,
                 max_objects: int = 20):
        super().__init__(runner.device, threshold=threshold, min_area_px=min_area_px,
                         max_objects=max_objects)
        self.runner = runner
        self._embedding_cache = EmbeddingCache()
        self._embeddings = None
        self._frames = LastFrameCache()

    @classmethod
    def _load(cls, device, dtype, allow_random_weights, *, clipseg_model: str = '',
              **thresholds) -> Tuple['ClipSegSegmenter', str]:
        runner = load_clipseg_runner(clipseg_model, device, dtype, allow_random_weights)
        return cls(runner, **thresholds), f'CLIPSeg {clipseg_model or DEFAULT_CLIPSEG_MODEL}'

    def _normalize_prompts(self, prompts: Sequence[PromptLike]
                           ) -> Tuple[List[Prompt], List[tuple]]:
        return normalize_prompts(prompts)

    def _truncation(self, text: str) -> Optional[str]:
        limit = self.runner.max_tokens
        return token_limit_reason(self.runner.token_count(text), limit, 'text encoder',
                                  f'only the first {limit - 2} are used')

    def _encode_prompts(self, active: List[Prompt]) -> None:
        by_key = {prompt_key(p): p for p in active}

        def encode(missing):
            texts = [k for k in missing if by_key[k].text is not None]
            images = [k for k in missing if by_key[k].text is None]
            out = {}
            if texts:
                out.update(zip(texts, self.runner.encode_texts([by_key[k].text for k in texts])))
            if images:
                out.update(zip(images, self.runner.encode_images(
                    [by_key[k].image for k in images])))
            return out

        self._embeddings = self._embedding_cache.embed(list(by_key), encode)

    def _segment(self, image: np.ndarray, timer: StageTimer
                 ) -> Tuple[List[Instance], np.ndarray]:
        activations = self._frames.get(image)
        if activations is None:
            with timer.stage('preprocess'):
                pixels = self.runner.preprocess(image)
            with timer.stage('encode'):
                activations = self.runner.image_activations(pixels)
            self._frames.put(image, activations)
        with timer.stage('decode'):
            logits = self.runner.decode(activations, self._embeddings)
        with timer.stage('postprocess'):
            probs = self.runner.probabilities(logits, image.shape[:2]).cpu().numpy()
            instances, peaks = find_instances(
                probs, self.prompts, self.threshold, self.min_area_px, self.max_objects)
        return self._refine(image, instances, peaks, timer), probs

    def _refine(self, image: np.ndarray, instances: List[Instance], peaks: np.ndarray,
                timer: StageTimer) -> List[Instance]:
        """Sharpen the CLIPSeg instances in subclasses; CLIPSeg alone keeps them as they are."""
        return instances
