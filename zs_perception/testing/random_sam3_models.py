"""Write random-weight SAM 3 models and streaming video trackers that the loaders accept.

The companion of :mod:`zs_perception.testing.random_models` (CLIPSeg, SAM) and
:mod:`zs_perception.testing.random_backend_models` (OWLv2, Grounding DINO, CLIP) for the
``sam3`` backend and for mask propagation between frames. Every directory holds a real
``transformers`` model and processor (``save_pretrained``), finds nothing real, and carries
the :data:`~zs_perception.segmentation.loading.RANDOM_MARKER` file, so loading it needs
``allow_random_weights=True``.

Usage::

    python -m zs_perception.testing.random_sam3_models OUT_DIR [--size tiny|full] [--seed 0]
        [--only sam3,sam3_lite_text,sam2,sam3_tracker,edgetam]

writes ``OUT_DIR/sam3`` (``Sam3Model`` + ``Sam3Processor``), ``OUT_DIR/sam3_lite_text``
(``Sam3LiteTextModel`` + ``Sam3Processor``), ``OUT_DIR/sam2`` (``Sam2VideoModel`` +
``Sam2VideoProcessor``) and ``OUT_DIR/sam3_tracker`` (``Sam3TrackerVideoModel`` +
``Sam3TrackerVideoProcessor``) and ``OUT_DIR/edgetam`` (``EdgeTamVideoModel`` +
``Sam2VideoProcessor``; needs ``timm``: its backbone is a timm RepViT).

``tiny`` builds in about a second: 112 px input, widths of 32, one or two layers. Its
weights are drawn with a small standard deviation (:data:`TINY_INIT_STD`) so that scores
and mask logits spread over their range instead of saturating at 0 or 1 (see
:func:`output_spread`). ``full`` has the published architectures (``facebook/sam3``:
ViT-L/14 at 1008 px, 840 M parameters, 4.75 GB in fp32; ``facebook/sam2.1-hiera-tiny``
for ``sam2``) for benchmarks.
"""

import argparse
import json
from pathlib import Path
import sys
from typing import Dict, Sequence

import torch
from transformers import Sam2ImageProcessor, Sam2VideoConfig, Sam2VideoModel
from transformers import Sam2VideoProcessor, Sam2VideoVideoProcessor, Sam3Config
from transformers import Sam3ImageProcessor, Sam3LiteTextConfig, Sam3LiteTextModel, Sam3Model
from transformers import Sam3Processor, Sam3TrackerVideoConfig, Sam3TrackerVideoModel
from transformers import Sam3TrackerVideoProcessor

from zs_perception.segmentation.loading import RANDOM_MARKER
from zs_perception.testing.random_models import make_clip_tokenizer, SIZES

MODELS = ('sam3', 'sam3_lite_text', 'sam2', 'sam3_tracker', 'edgetam')
DEFAULT_MODELS = MODELS
# Standard deviation of the tiny models' weights: large enough that the outputs depend on
# the prompt and the image, small enough that scores and mask probabilities stay between
# about 0.2 and 0.8 (torch's default initialisation saturates them at 0 or 1).
TINY_INIT_STD = 0.1
TINY_IMAGE_SIZE = 112
REDUCED_IMAGE_SIZE = 336
TRACKER_TINY_WIDTH = 128
TRACKER_MEMORY_WIDTH = 64
# Bias of the tiny trackers' object-score head: with zero bias a random tracker calls about
# half of the objects absent on the first tracked frame; +2 (sigmoid 0.88) keeps them
# present so that propagation is exercised, and a test can still lower it to make them fade.
TRACKER_OBJECT_SCORE_BIAS = 2.0
# SAM 3 pads every prompt to 32 tokens (Sam3Processor).
SAM3_TEXT_TOKENS = 32
# ImageNet statistics used by the SAM 2 processors.
_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]


def _sam3_vit(size: str) -> dict:
    """Sam3 ViT settings: the published ViT-L/14 at 1008 px, or a tiny one at 112 px."""
    if size == 'full':
        return {}
    return {'hidden_size': 32, 'intermediate_size': 64, 'num_hidden_layers': 2,
            'num_attention_heads': 2, 'image_size': TINY_IMAGE_SIZE, 'patch_size': 14,
            'window_size': 4, 'global_attn_indexes': [1], 'pretrain_image_size': 56}


def _sam3_vision(size: str, fpn_width: int = 32) -> dict:
    if size == 'full':
        return {}
    grid = TINY_IMAGE_SIZE // 14
    return {'backbone_config': {'model_type': 'sam3_vit_model', **_sam3_vit(size)},
            'fpn_hidden_size': fpn_width,
            'backbone_feature_sizes': [[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]]}


def sam3_config(size: str, tokenizer, lite_text: bool = False):
    """Return the ``Sam3Config`` (or ``Sam3LiteTextConfig``) of a size.

    Args:
        size: ``'tiny'``, ``'full'`` or ``'reduced'`` (for CPU
            benchmarks: the full DETR encoder, decoder and mask head, a ViT-B-sized vision
            encoder and a 6-layer text encoder at 336 px, so that a frame takes seconds,
            not a minute, and the vision encoder still dominates as in the full model).
        tokenizer: the processor's tokenizer (vocabulary size and special token ids).
        lite_text: build the MobileCLIP-text variant (``Sam3LiteTextConfig``).

    """
    ids = {'vocab_size': len(tokenizer), 'bos_token_id': tokenizer.bos_token_id,
           'eos_token_id': tokenizer.eos_token_id, 'pad_token_id': tokenizer.pad_token_id}
    if size == 'reduced':
        grid = REDUCED_IMAGE_SIZE // 14
        vision = {'backbone_config': {'model_type': 'sam3_vit_model', 'hidden_size': 768,
                                      'intermediate_size': 3072, 'num_hidden_layers': 12,
                                      'num_attention_heads': 12, 'window_size': 12,
                                      'image_size': REDUCED_IMAGE_SIZE,
                                      'global_attn_indexes': [2, 5, 8, 11]},
                  'backbone_feature_sizes': [[4 * grid, 4 * grid], [2 * grid, 2 * grid],
                                             [grid, grid]]}
        text = {'model_type': 'clip_text_model', **ids, 'hidden_size': 512,
                'intermediate_size': 2048, 'projection_dim': 512, 'num_hidden_layers': 6,
                'num_attention_heads': 8, 'max_position_embeddings': SAM3_TEXT_TOKENS}
        return Sam3Config(vision_config=vision, text_config=text)
    if size == 'full':
        text = dict(ids)
        if lite_text:
            return Sam3LiteTextConfig(text_config=text)
        return Sam3Config(text_config={'model_type': 'clip_text_model', **ids,
                                       'hidden_size': 1024, 'intermediate_size': 4096,
                                       'projection_dim': 512, 'num_hidden_layers': 24,
                                       'num_attention_heads': 16,
                                       'max_position_embeddings': SAM3_TEXT_TOKENS,
                                       'hidden_act': 'gelu'})
    width = 32
    heads = {'hidden_size': width, 'num_attention_heads': 2, 'intermediate_size': 64}
    parts = {
        'vision_config': _sam3_vision(size),
        'geometry_encoder_config': {**heads, 'num_layers': 1},
        'detr_encoder_config': {**heads, 'num_layers': 1},
        'detr_decoder_config': {**heads, 'num_layers': 2, 'num_queries': 20},
        'mask_decoder_config': {'hidden_size': width, 'num_attention_heads': 2},
        'initializer_range': TINY_INIT_STD,
    }
    if lite_text:
        text = {**ids, 'hidden_size': width, 'intermediate_size': 64,
                'projection_dim': width, 'num_hidden_layers': 2, 'num_attention_heads': 2,
                'max_position_embeddings': SAM3_TEXT_TOKENS, 'repmixer_kernel_size': 3}
        return Sam3LiteTextConfig(text_config=text, **parts)
    text = {'model_type': 'clip_text_model', **ids, 'hidden_size': width,
            'intermediate_size': 64, 'projection_dim': width, 'num_hidden_layers': 2,
            'num_attention_heads': 2, 'max_position_embeddings': SAM3_TEXT_TOKENS,
            'hidden_act': 'gelu'}
    return Sam3Config(text_config=text, **parts)


def small_init_(model: torch.nn.Module, std: float = TINY_INIT_STD, seed: int = 0) -> None:
    """Redraw every weight of ``model`` as ``N(0, std)``; biases 0, norm scales 1.

    Norm layers keep unit scale so activations neither vanish nor blow up; the small
    spread keeps the tiny models' sigmoid outputs away from 0 and 1.
    """
    generator = torch.Generator().manual_seed(seed)
    norms = (torch.nn.LayerNorm, torch.nn.GroupNorm, torch.nn.BatchNorm2d)
    with torch.no_grad():
        for module in model.modules():
            for leaf, param in module.named_parameters(recurse=False):
                if not param.dtype.is_floating_point:
                    continue
                if isinstance(module, norms) or 'norm' in type(module).__name__.lower():
                    param.fill_(1.0 if leaf == 'weight' else 0.0)
                elif leaf == 'bias':
                    param.zero_()
                else:
                    param.copy_(torch.randn(param.shape, generator=generator) * std)


def _save(out_dir: Path, model, processor, what: str, size: str, seed: int) -> Path:
    """Save ``model`` and ``processor`` into ``out_dir`` and mark the directory as random."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / RANDOM_MARKER).write_text(
        f'RANDOM WEIGHTS: {what} written by zs_perception.testing.random_sam3_models '
        f'(size={size}, seed={seed}). For tests, demos of the plumbing and benchmarks only; '
        'it finds nothing real.\n')
    return out_dir


def sam3_processor(size: str) -> Sam3Processor:
    """Return a ``Sam3Processor`` (real CLIP BPE tokenizer over a small vocabulary)."""
    tokenizer = make_clip_tokenizer()
    tokenizer.model_max_length = SAM3_TEXT_TOKENS
    side = {'full': 1008, 'reduced': REDUCED_IMAGE_SIZE}.get(size, TINY_IMAGE_SIZE)
    image_processor = Sam3ImageProcessor(size={'height': side, 'width': side},
                                         mask_size={'height': side // 14 * 4,
                                                    'width': side // 14 * 4})
    return Sam3Processor(image_processor=image_processor, tokenizer=tokenizer)


def write_sam3(out_dir: Path, size: str = 'tiny', seed: int = 0,
               lite_text: bool = False) -> Path:
    """Write a random ``Sam3Model`` (or ``Sam3LiteTextModel``) and its processor."""
    torch.manual_seed(seed)
    processor = sam3_processor(size)
    config = sam3_config(size, processor.tokenizer, lite_text)
    model = (Sam3LiteTextModel if lite_text else Sam3Model)(config).eval()
    if size == 'tiny':
        small_init_(model, seed=seed)
    what = 'this SAM 3 LiteText model' if lite_text else 'this SAM 3 model'
    return _save(out_dir, model, processor, what, size, seed)


def _tracker_common(size: str, patch: int) -> dict:
    """Memory and decoder widths shared by the tiny SAM 2 and SAM 3 trackers.

    The memory is 64 wide and the rest 128, the smallest that works: transformers fixes
    the memory attention's image cross-attention input at 64 channels and only handles
    object pointers wider than the memory (it splits them into memory-wide chunks).
    """
    if size == 'full':
        return {}
    grid = TINY_IMAGE_SIZE // patch
    width = TRACKER_TINY_WIDTH
    return {
        'image_size': TINY_IMAGE_SIZE,
        'prompt_encoder_config': {'hidden_size': width, 'image_size': TINY_IMAGE_SIZE,
                                  'patch_size': patch, 'mask_input_channels': 4},
        'mask_decoder_config': {'hidden_size': width, 'mlp_dim': 64, 'num_attention_heads': 2,
                                'iou_head_hidden_dim': 32},
        'memory_attention_hidden_size': width, 'memory_attention_num_layers': 1,
        'memory_attention_feed_forward_hidden_size': 64,
        'memory_attention_rope_feat_sizes': [grid, grid],
        'memory_encoder_hidden_size': width,
        'memory_encoder_output_channels': TRACKER_MEMORY_WIDTH,
        'mask_downsampler_embed_dim': width, 'memory_fuser_embed_dim': width,
        'memory_fuser_intermediate_dim': 64, 'memory_fuser_num_layers': 1,
        'initializer_range': TINY_INIT_STD,
    }


def _tiny_tracker_init_(model: torch.nn.Module, seed: int) -> None:
    small_init_(model, seed=seed)
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(TRACKER_OBJECT_SCORE_BIAS)


def write_sam3_tracker(out_dir: Path, size: str = 'tiny', seed: int = 0) -> Path:
    """Write a random ``Sam3TrackerVideoModel`` and its ``Sam3TrackerVideoProcessor``."""
    torch.manual_seed(seed)
    side = 1008 if size == 'full' else TINY_IMAGE_SIZE
    if size == 'full':
        config = Sam3TrackerVideoConfig()
    else:
        common = _tracker_common(size, 14)
        image_size = common.pop('image_size')
        config = Sam3TrackerVideoConfig(vision_config=_sam3_vision(size, TRACKER_TINY_WIDTH),
                                        **common)
        config.image_size = image_size
    model = Sam3TrackerVideoModel(config).eval()
    if size == 'tiny':
        _tiny_tracker_init_(model, seed)
    processor = Sam3TrackerVideoProcessor(
        image_processor=Sam3ImageProcessor(size={'height': side, 'width': side},
                                           mask_size={'height': side // 14 * 4,
                                                      'width': side // 14 * 4}),
        video_processor=Sam2VideoVideoProcessor(size={'height': side, 'width': side},
                                                image_mean=[0.5] * 3, image_std=[0.5] * 3))
    return _save(out_dir, model, processor, 'this SAM 3 tracker', size, seed)


def write_sam2(out_dir: Path, size: str = 'tiny', seed: int = 0) -> Path:
    """Write a random ``Sam2VideoModel`` and its ``Sam2VideoProcessor``."""
    torch.manual_seed(seed)
    if size == 'full':
        # facebook/sam2.1-hiera-tiny: Hiera-T at 1024 px.
        side = 1024
        config = Sam2VideoConfig(vision_config={
            'model_type': 'sam2_vision_model',
            'backbone_config': {'model_type': 'sam2_hiera_det_model', 'hidden_size': 96,
                                'blocks_per_stage': [1, 2, 7, 2],
                                'global_attention_blocks': [5, 7, 9],
                                'window_positional_embedding_background_size': [7, 7]}})
    else:
        side = 128
        dims = [16, 32, 64, 128]
        grid = side // 4
        config = Sam2VideoConfig(
            vision_config={
                'model_type': 'sam2_vision_model',
                'backbone_config': {'model_type': 'sam2_hiera_det_model', 'hidden_size': 16,
                                    'image_size': [side, side], 'blocks_per_stage': [1, 1, 2, 1],
                                    'embed_dim_per_stage': dims,
                                    'num_attention_heads_per_stage': [1, 1, 2, 2],
                                    'window_size_per_stage': [4, 4, 4, 2],
                                    'global_attention_blocks': [3],
                                    'window_positional_embedding_background_size': [2, 2]},
                'backbone_channel_list': dims[::-1], 'fpn_hidden_size': TRACKER_TINY_WIDTH,
                'backbone_feature_sizes': [[grid, grid], [grid // 2, grid // 2],
                                           [grid // 4, grid // 4]]},
            **{**_tracker_common(size, 16), 'image_size': side,
               'prompt_encoder_config': {'hidden_size': TRACKER_TINY_WIDTH, 'image_size': side,
                                         'patch_size': 16, 'mask_input_channels': 4},
               'memory_attention_rope_feat_sizes': [side // 16, side // 16]})
    model = Sam2VideoModel(config).eval()
    if size == 'tiny':
        _tiny_tracker_init_(model, seed)
    processor = Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size={'height': side, 'width': side},
                                           mask_size={'height': side // 4, 'width': side // 4}),
        video_processor=Sam2VideoVideoProcessor(size={'height': side, 'width': side},
                                                image_mean=_IMAGENET_MEAN,
                                                image_std=_IMAGENET_STD))
    return _save(out_dir, model, processor, 'this SAM 2 video tracker', size, seed)


def _edgetam_backbone():
    """Return the config of EdgeTAM's RepViT-M1 backbone (timm), four stages as features.

    Spelt out because the config's default sets a misspelt key ('archirecture') and so
    would build timm's default architecture instead.
    """
    from transformers import TimmWrapperConfig

    return TimmWrapperConfig(architecture='repvit_m1', do_pooling=False,
                             model_args={'in_chans': 3, 'features_only': True,
                                         'out_indices': [0, 1, 2, 3]})


def write_edgetam(out_dir: Path, size: str = 'tiny', seed: int = 0) -> Path:
    """Write a random ``EdgeTamVideoModel`` and its ``Sam2VideoProcessor``.

    Needs ``timm`` (EdgeTAM's vision backbone is a timm RepViT); the tiny model keeps the
    real RepViT-M1 backbone (5 M parameters) at 128 px and shrinks the rest.

    Raises:
        ImportError: ``timm`` is not installed.

    """
    import timm  # noqa: F401  (EdgeTAM's vision backbone is a timm model)
    from transformers import EdgeTamVideoConfig, EdgeTamVideoModel

    torch.manual_seed(seed)
    if size == 'full':
        # yonigozlan/EdgeTAM-hf: RepViT-M1 at 1024 px.
        side = 1024
        config = EdgeTamVideoConfig(vision_config={'model_type': 'edgetam_vision_model',
                                                   'backbone_config': _edgetam_backbone()})
    else:
        side, width = 128, TRACKER_TINY_WIDTH
        grid = side // 4
        config = EdgeTamVideoConfig(
            vision_config={'model_type': 'edgetam_vision_model',
                           'backbone_config': _edgetam_backbone(), 'fpn_hidden_size': width,
                           'backbone_feature_sizes': [[grid, grid], [grid // 2, grid // 2],
                                                      [grid // 4, grid // 4]]},
            prompt_encoder_config={'hidden_size': width, 'image_size': side,
                                   'patch_size': 16, 'mask_input_channels': 4},
            mask_decoder_config={'hidden_size': width, 'mlp_dim': 64,
                                 'num_attention_heads': 2, 'iou_head_hidden_dim': 32},
            image_size=side, memory_attention_hidden_size=width,
            memory_attention_num_layers=1, memory_attention_mlp_hidden_size=64,
            memory_attention_rope_feat_sizes=[side // 16, side // 16],
            memory_attention_rope_k_sizes=[4, 4], perceiver_resampler_num_latents=16,
            perceiver_resampler_num_latents_2d=16, perceiver_resampler_num_layers=1,
            memory_encoder_hidden_size=width, mask_downsampler_embed_dim=width,
            memory_fuser_embed_dim=width, memory_fuser_intermediate_dim=64,
            memory_fuser_num_layers=1, initializer_range=TINY_INIT_STD)
    model = EdgeTamVideoModel(config).eval()
    if size == 'tiny':
        _tiny_tracker_init_(model, seed)
    processor = Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size={'height': side, 'width': side},
                                           mask_size={'height': side // 4, 'width': side // 4}),
        video_processor=Sam2VideoVideoProcessor(size={'height': side, 'width': side},
                                                image_mean=_IMAGENET_MEAN,
                                                image_std=_IMAGENET_STD))
    return _save(out_dir, model, processor, 'this EdgeTAM video tracker', size, seed)


_WRITERS = {
    'sam3': lambda out, size, seed: write_sam3(out, size, seed),
    'sam3_lite_text': lambda out, size, seed: write_sam3(out, size, seed, lite_text=True),
    'sam2': write_sam2,
    'sam3_tracker': write_sam3_tracker,
    'edgetam': write_edgetam,
}


def write_sam3_models(out_dir: Path, size: str = 'tiny', seed: int = 0,
                      only: Sequence[str] = DEFAULT_MODELS) -> Dict[str, str]:
    """Write the random models named in ``only`` under ``out_dir``, one directory each.

    Returns:
        ``{name: directory}`` for each name in ``only``.

    Raises:
        ValueError: unknown size or model name.

    """
    if size not in SIZES:
        raise ValueError(f'Unknown size {size!r}; expected one of {SIZES}.')
    unknown = [name for name in only if name not in _WRITERS]
    if unknown:
        raise ValueError(f'Unknown model(s) {unknown}; expected names from {MODELS}.')
    out_dir = Path(out_dir)
    return {name: str(_WRITERS[name](out_dir / name, size, seed)) for name in only}


def output_spread(values: torch.Tensor) -> Dict[str, float]:
    """Spread of sigmoid outputs: fraction saturated (below 0.01 or above 0.99) and std.

    Args:
        values: logits of any shape.

    """
    p = values.detach().float().sigmoid().ravel()
    return {'saturated': float(((p < 0.01) | (p > 0.99)).float().mean()),
            'std': float(p.std()) if p.numel() > 1 else 0.0,
            'min': float(p.min()), 'max': float(p.max())}


def main(argv=None) -> int:
    """Command-line entry point; prints the written paths as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', type=Path, help='directory to write into (created)')
    parser.add_argument('--size', choices=SIZES, default='tiny',
                        help='tiny test models or full-size architectures (default tiny)')
    parser.add_argument('--seed', type=int, default=0, help='torch seed (default 0)')
    parser.add_argument('--only', default=','.join(DEFAULT_MODELS),
                        help=f'comma-separated subset of {",".join(MODELS)} '
                             f'(default {",".join(DEFAULT_MODELS)})')
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(',') if name.strip()]
    print(json.dumps(write_sam3_models(args.out_dir, args.size, args.seed, only), indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
