"""Write random-weight models of every backend that the segmentation loaders accept.

For tests, demos of the plumbing and benchmarks on machines without the real weights. Every
model is a real ``transformers`` model with its processor (``save_pretrained``), or a SAM
state dict in Meta's file layout; each finds nothing real and carries a
:data:`~zs_perception.segmentation.loading.RANDOM_MARKER` file, so loading it needs
``allow_random_weights=True`` and logs a loud warning.

Usage::

    python -m zs_perception.testing.random_models OUT_DIR [--size tiny|full]
        [--only clipseg,sam,owlv2,grounding_dino,clip,sam3,sam3_lite_text,sam2_video,
                sam3_tracker,edgetam]
        [--sam-type tiny|vit_b|vit_l|vit_h|none] [--seed 0]

writes (all by default, or those named by ``--only``)::

    OUT_DIR/clipseg/                 CLIPSegForImageSegmentation + CLIPSegProcessor
    OUT_DIR/sam_<type>.pth           SAM state dict (+ sam_<type>.pth.RANDOM_WEIGHTS.txt)
    OUT_DIR/owlv2/                   Owlv2ForObjectDetection + Owlv2Processor
    OUT_DIR/grounding_dino/          GroundingDinoForObjectDetection + its processor
    OUT_DIR/clip/                    CLIPModel + CLIPProcessor
    OUT_DIR/sam3/                    Sam3Model + Sam3Processor
    OUT_DIR/sam3_lite_text/          Sam3LiteTextModel + Sam3Processor
    OUT_DIR/sam2_video/              Sam2VideoModel + Sam2VideoProcessor (tracker sam2)
    OUT_DIR/sam3_tracker/            Sam3TrackerVideoModel + Sam3TrackerVideoProcessor
    OUT_DIR/edgetam/                 EdgeTamVideoModel + Sam2VideoProcessor (needs timm)

and prints the written paths as JSON. ``tiny`` builds in seconds (small widths; CLIPSeg at
352 px as the real processor, SAM at 256 px, OWLv2 at 128 px, Grounding DINO at 128..192 px,
CLIP at 64 px, SAM 3 and the video trackers at 112..128 px). Its weights are drawn with a
small standard deviation per model (biases 0) so that outputs are not saturated: CLIPSeg
probabilities lie mostly strictly inside (0.05, 0.95), OWLv2 boxes vary in size and place,
and SAM's three candidate masks differ, with its predicted IoU choosing different candidates
for different prompts (the tests in ``test/test_random_models.py`` check this); SAM 3 and
the trackers draw every weight from N(0, :data:`TINY_INIT_STD`) (:func:`small_init_`; see
:func:`output_spread`). ``full`` has the real architectures (CLIPSeg rd64-refined, SAM ViT-B
by default, ``google/owlv2-base-patch16-ensemble``, ``IDEA-Research/grounding-dino-tiny``,
``openai/clip-vit-base-patch32``, ``facebook/sam3``, ``facebook/sam2.1-hiera-tiny``,
``yonigozlan/EdgeTAM-hf``) with the libraries' own initialisation, for benchmarks. The
tokenizers are real (CLIP byte-level BPE, BERT
WordPiece) over small generated vocabularies of common object words.
"""

import argparse
import json
from pathlib import Path
import sys
from typing import Dict, Optional, Sequence

from tokenizers import pre_tokenizers
import torch
from transformers import BertTokenizerFast, CLIPConfig, CLIPImageProcessor, CLIPModel
from transformers import CLIPProcessor, CLIPSegConfig, CLIPSegForImageSegmentation
from transformers import CLIPSegProcessor, CLIPTokenizer, GroundingDinoConfig
from transformers import GroundingDinoForObjectDetection, GroundingDinoImageProcessor
from transformers import GroundingDinoProcessor, Owlv2Config, Owlv2ForObjectDetection
from transformers import Owlv2ImageProcessor, Owlv2Processor, Sam2ImageProcessor
from transformers import Sam2VideoConfig, Sam2VideoModel, Sam2VideoProcessor
from transformers import Sam2VideoVideoProcessor, Sam3Config, Sam3ImageProcessor
from transformers import Sam3LiteTextConfig, Sam3LiteTextModel, Sam3Model, Sam3Processor
from transformers import Sam3TrackerVideoConfig, Sam3TrackerVideoModel
from transformers import Sam3TrackerVideoProcessor, ViTImageProcessor

from zs_perception.segmentation.loading import build_sam, RANDOM_MARKER, SAM_MODEL_TYPES
from zs_perception.segmentation.loading import sam_random_marker, SAM_TINY_TYPE

SIZES = ('tiny', 'full')
#: What :func:`write_models` can write, in the order it writes them.
MODELS = ('clipseg', 'sam', 'owlv2', 'grounding_dino', 'clip', 'sam3', 'sam3_lite_text',
          'sam2_video', 'sam3_tracker', 'edgetam')
#: Video tracker name (``tracker`` parameter) -> the :data:`MODELS` entry holding its weights.
TRACKER_MODELS = {'sam2': 'sam2_video', 'sam3_tracker': 'sam3_tracker', 'edgetam': 'edgetam'}
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# OWL-ViT / OWLv2 pad every query to 16 tokens.
OWL_MAX_TOKENS = 16
# Standard deviation of the tiny models' weights (biases are 0). The libraries' own
# initialisation saturates these small networks (CLIPSeg logits in the hundreds, OWLv2 box
# sides of 0 or the whole image, SAM's IoU head always choosing candidate 0); these values
# keep outputs in the range where thresholds and candidate choices matter.
_TINY_STD = {
    'clipseg': 0.25,
    'sam': 0.3,
    'sam_prompt_encoder': 1.0,   # prompts then move the masks and the IoU choice
    'sam_iou_head': 0.05,
    'owlv2': 0.05,
    'owlv2_box_head': 0.2,       # boxes vary around the patch grid instead of sitting on it
}

BOS, EOS = '<|startoftext|>', '<|endoftext|>'
_WORDS = (
    'a an the of on in with and photo picture object thing left right top bottom small large '
    'red green blue yellow orange black white brown grey pink purple wooden metal plastic '
    'mug cup bottle can box bowl plate chair table desk drill banana apple fruit scissors '
    'dice globe bag toy airplane ball mallet hammer screwdriver wrench pitcher mustard sugar '
    'coffee soup tuna spam keyboard mouse monitor laptop phone book pen lamp stool trunk '
    'person hand door window shelf cabinet'
).split()


def make_clip_tokenizer() -> CLIPTokenizer:
    """Build a real CLIP byte-level BPE tokenizer over a small generated vocabulary.

    The vocabulary holds the 256 byte symbols (alone and word-final), the
    special tokens, and merges that build each word of a fixed list of common
    object words, so those words are few tokens and anything else falls back
    to bytes.
    """
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = list(alphabet) + [c + '</w>' for c in alphabet]
    merges = []
    for word in _WORDS:
        pieces = list(word)
        pieces[-1] += '</w>'
        left = pieces[0]
        for right in pieces[1:]:
            if (left, right) not in merges:
                merges.append((left, right))
            left += right
            if left not in tokens:
                tokens.append(left)
    tokens += [BOS, EOS]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=77)


def make_bert_tokenizer() -> BertTokenizerFast:
    """Build a real (fast) BERT WordPiece tokenizer over a small generated vocabulary.

    The vocabulary holds BERT's special tokens, the printable ASCII
    characters (alone and as ``##`` continuations) and the object words the
    CLIP test tokenizer (:func:`make_clip_tokenizer`) knows whole, so those words
    are one token and anything else is spelt out.
    """
    clip_vocab = make_clip_tokenizer().get_vocab()
    words = sorted(t[:-4] for t in clip_vocab if t.endswith('</w>') and len(t) > 5)
    chars = [chr(c) for c in range(33, 127)]
    tokens = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + chars + ['##' + c for c in chars]
    tokens += [w for w in words if w not in tokens]
    return BertTokenizerFast(vocab={tok: i for i, tok in enumerate(tokens)}, do_lower_case=True)


def _special_ids(tokenizer) -> Dict[str, int]:
    """Return the tokenizer's start, end and padding token ids for a text configuration."""
    return {'bos_token_id': tokenizer.bos_token_id, 'eos_token_id': tokenizer.eos_token_id,
            'pad_token_id': tokenizer.pad_token_id}


def _tiny_towers(tokenizer, max_tokens: int, image_size: int, patch_size: int,
                 vision_layers: int = 2) -> Dict[str, dict]:
    """``text_config`` and ``vision_config`` of a tiny CLIP-style model (32 wide, 2 heads)."""
    width = {'hidden_size': 32, 'intermediate_size': 64, 'num_attention_heads': 2}
    return {'text_config': {'vocab_size': len(tokenizer), 'num_hidden_layers': 2,
                            'max_position_embeddings': max_tokens, **width,
                            **_special_ids(tokenizer)},
            'vision_config': {'num_hidden_layers': vision_layers, 'image_size': image_size,
                              'patch_size': patch_size, **width}}


def clipseg_config(size: str, tokenizer: CLIPTokenizer) -> CLIPSegConfig:
    """Return the CLIPSeg configuration of a size, with a text encoder that fits ``tokenizer``."""
    if size == 'tiny':
        return CLIPSegConfig(
            **_tiny_towers(tokenizer, 77, image_size=224, patch_size=16, vision_layers=4),
            projection_dim=16, extract_layers=(0, 1, 2), reduce_dim=16,
            decoder_num_attention_heads=2, decoder_intermediate_size=32,
            use_complex_transposed_convolution=True)
    # CIDAS/clipseg-rd64-refined: CLIP ViT-B/16 + 512-d text encoder, rd64 decoder.
    return CLIPSegConfig(
        text_config={'vocab_size': 49408, **_special_ids(tokenizer)},
        vision_config={'patch_size': 16},
        projection_dim=512, extract_layers=(3, 6, 9), reduce_dim=64,
        use_complex_transposed_convolution=True)


def _small_init(module: torch.nn.Module, std: float) -> None:
    """Redraw every linear, convolution and embedding weight of ``module`` from N(0, std).

    Biases become 0; normalisation layers keep their identity initialisation.
    """
    for layer in module.modules():
        if isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.ConvTranspose2d,
                              torch.nn.Embedding)):
            torch.nn.init.normal_(layer.weight, 0.0, std)
            if getattr(layer, 'bias', None) is not None:
                torch.nn.init.zeros_(layer.bias)


def _marker_text(what: str, size: str, seed: int) -> str:
    return (f'RANDOM WEIGHTS: {what} written by zs_perception.testing.random_models '
            f'(size={size}, seed={seed}). For tests, demos of the plumbing and benchmarks only; '
            'it finds nothing real.\n')


def _save_pretrained(out_dir: Path, model, processor, what: str, size: str, seed: int) -> Path:
    """Save ``model`` and ``processor`` into ``out_dir`` and mark the directory as random."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / RANDOM_MARKER).write_text(_marker_text(what, size, seed))
    return out_dir


def write_clipseg(out_dir: Path, size: str = 'tiny', seed: int = 0) -> Path:
    """Write a random ``CLIPSegForImageSegmentation`` and its processor into ``out_dir``."""
    torch.manual_seed(seed)
    tokenizer = make_clip_tokenizer()
    model = CLIPSegForImageSegmentation(clipseg_config(size, tokenizer)).eval()
    if size == 'tiny':
        _small_init(model, _TINY_STD['clipseg'])
    image_processor = ViTImageProcessor(
        do_resize=True, size={'height': 352, 'width': 352}, resample=2, do_rescale=True,
        rescale_factor=1 / 255, do_normalize=True, image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225])
    processor = CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return _save_pretrained(out_dir, model, processor, 'this CLIPSeg model', size, seed)


def write_sam(out_dir: Path, sam_type: str, size: str = 'tiny', seed: int = 0) -> Path:
    """Write a random SAM state dict ``out_dir / sam_<sam_type>.pth`` and its marker file."""
    torch.manual_seed(seed)
    sam = build_sam(sam_type)
    if size == 'tiny':
        _small_init(sam, _TINY_STD['sam'])
        _small_init(sam.prompt_encoder, _TINY_STD['sam_prompt_encoder'])
        _small_init(sam.mask_decoder.iou_prediction_head, _TINY_STD['sam_iou_head'])
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / f'sam_{sam_type}.pth'
    torch.save(sam.state_dict(), checkpoint)
    sam_random_marker(checkpoint).write_text(
        _marker_text(f'SAM checkpoint {checkpoint.name}', size, seed))
    return checkpoint


def write_owlv2(out_dir: Path, size: str = 'tiny', seed: int = 0) -> Path:
    """Write a random ``Owlv2ForObjectDetection`` and its ``Owlv2Processor`` into ``out_dir``."""
    torch.manual_seed(seed)
    tokenizer = make_clip_tokenizer()
    tokenizer.model_max_length = OWL_MAX_TOKENS
    if size == 'tiny':
        image_size = 128
        config = Owlv2Config(
            **_tiny_towers(tokenizer, OWL_MAX_TOKENS, image_size=image_size, patch_size=16),
            # The class head maps image features to the text width: projection = text width.
            projection_dim=32)
    else:
        # google/owlv2-base-patch16-ensemble: CLIP B/16 at 960 px, 512-d text encoder.
        image_size = 960
        config = Owlv2Config(
            text_config={'vocab_size': 49408, 'max_position_embeddings': OWL_MAX_TOKENS,
                         **_special_ids(tokenizer)},
            vision_config={'image_size': image_size, 'patch_size': 16}, projection_dim=512)
    model = Owlv2ForObjectDetection(config).eval()
    if size == 'tiny':
        _small_init(model, _TINY_STD['owlv2'])
        _small_init(model.box_head, _TINY_STD['owlv2_box_head'])
    processor = Owlv2Processor(
        image_processor=Owlv2ImageProcessor(size={'height': image_size, 'width': image_size}),
        tokenizer=tokenizer)
    return _save_pretrained(out_dir, model, processor, 'this OWLv2 detector', size, seed)


def write_grounding_dino(out_dir: Path, size: str = 'tiny', seed: int = 0) -> Path:
    """Write a random ``GroundingDinoForObjectDetection`` and its processor into ``out_dir``."""
    torch.manual_seed(seed)
    tokenizer = make_bert_tokenizer()
    if size == 'tiny':
        config = GroundingDinoConfig(
            backbone_config={'model_type': 'swin', 'embed_dim': 16, 'depths': [1, 1, 1, 1],
                             'num_heads': [1, 1, 2, 2], 'window_size': 4,
                             'out_features': ['stage2', 'stage3', 'stage4']},
            text_config={'model_type': 'bert', 'vocab_size': len(tokenizer), 'hidden_size': 32,
                         'num_hidden_layers': 1, 'num_attention_heads': 2,
                         'intermediate_size': 64},
            d_model=32, encoder_layers=1, decoder_layers=2, encoder_ffn_dim=64,
            decoder_ffn_dim=64, encoder_attention_heads=2, decoder_attention_heads=2,
            num_queries=30, encoder_n_points=2, decoder_n_points=2, num_feature_levels=4,
            text_enhancer_dim_feedforward=64, fusion_dropout=0.0, fusion_droppath=0.0)
        image_size = {'shortest_edge': 128, 'longest_edge': 192}
    else:
        # IDEA-Research/grounding-dino-tiny: the config defaults (Swin-T, BERT-base, 900 queries).
        config = GroundingDinoConfig()
        image_size = {'shortest_edge': 800, 'longest_edge': 1333}
    model = GroundingDinoForObjectDetection(config).eval()
    processor = GroundingDinoProcessor(
        image_processor=GroundingDinoImageProcessor(size=image_size), tokenizer=tokenizer)
    return _save_pretrained(out_dir, model, processor, 'this Grounding DINO detector', size, seed)


def write_clip(out_dir: Path, size: str = 'tiny', seed: int = 0) -> Path:
    """Write a random ``CLIPModel`` and its ``CLIPProcessor`` into ``out_dir``."""
    torch.manual_seed(seed)
    tokenizer = make_clip_tokenizer()
    if size == 'tiny':
        image_size = 64
        config = CLIPConfig(**_tiny_towers(tokenizer, 77, image_size=image_size, patch_size=8),
                            projection_dim=16)
    else:
        # openai/clip-vit-base-patch32.
        image_size = 224
        config = CLIPConfig(text_config={'vocab_size': 49408, **_special_ids(tokenizer)},
                            vision_config={'image_size': image_size, 'patch_size': 32},
                            projection_dim=512)
    model = CLIPModel(config).eval()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={'shortest_edge': image_size},
            crop_size={'height': image_size, 'width': image_size},
            image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD),
        tokenizer=tokenizer)
    return _save_pretrained(out_dir, model, processor, 'this CLIP model', size, seed)


# Standard deviation of the tiny models' weights: large enough that the outputs depend on
# the prompt and the image, small enough that scores and mask probabilities stay between
# about 0.2 and 0.8 (torch's default initialisation saturates them at 0 or 1).
TINY_INIT_STD = 0.1
TINY_IMAGE_SIZE = 112
REDUCED_IMAGE_SIZE = 336
# Input side of the published SAM 3 (ViT-L/14: a 72 x 72 token grid, 3 x 3 attention windows).
SAM3_FULL_IMAGE_SIZE = 1008
SAM3_PATCH = 14
# SAM 3 sizes: 'reduced' is the full architecture at REDUCED_IMAGE_SIZE (the proportions of
# shared and per-prompt work of the full model, CPU minutes); 'reduced_vitb' is the earlier
# ViT-B-sized vision encoder with the full DETR and mask head at the same side.
SAM3_SIZES = ('tiny', 'reduced', 'reduced_vitb', 'full')
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


def _feature_sizes(side: int) -> list:
    """Return the FPN levels the DETR and mask head read (4x, 2x, 1x the grid) at ``side`` px."""
    grid = side // SAM3_PATCH
    return [[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]]


def sam3_full_vision(side: int) -> dict:
    """Return the published ViT-L/14 vision encoder and FPN neck at ``side`` px, not 1008.

    The token grid shrinks to ``side / 14``; the attention windows shrink with it so that
    the 4 global layers and 28 windowed layers keep the full model's 3 x 3 windows (24 at
    1008 px), and the learned 24 x 24 position embeddings are tiled as at 1008 px.

    Raises:
        ValueError: ``side`` is not a multiple of 42 (14 px patches, 3 windows a side).

    """
    if side <= 0 or side % (3 * SAM3_PATCH):
        raise ValueError(f'SAM 3 input side {side} px: expected a positive multiple of '
                         f'{3 * SAM3_PATCH} (14 px patches in 3 x 3 attention windows), '
                         f'e.g. 336, 504 or {SAM3_FULL_IMAGE_SIZE}')
    return {'backbone_config': {'model_type': 'sam3_vit_model', 'image_size': side,
                                'window_size': side // SAM3_PATCH // 3},
            'backbone_feature_sizes': _feature_sizes(side)}


def sam3_side(size: str) -> int:
    """Return the model input side (px) of a SAM 3 size (:data:`SAM3_SIZES`)."""
    if size == 'full':
        return SAM3_FULL_IMAGE_SIZE
    return REDUCED_IMAGE_SIZE if size.startswith('reduced') else TINY_IMAGE_SIZE


def _sam3_vision(size: str, fpn_width: int = 32) -> dict:
    if size == 'full':
        return {}
    return {'backbone_config': {'model_type': 'sam3_vit_model', **_sam3_vit(size)},
            'fpn_hidden_size': fpn_width,
            'backbone_feature_sizes': _feature_sizes(TINY_IMAGE_SIZE)}


def sam3_config(size: str, tokenizer, lite_text: bool = False, side: Optional[int] = None):
    """Return the ``Sam3Config`` (or ``Sam3LiteTextConfig``) of a size.

    Args:
        size: one of :data:`SAM3_SIZES`: ``'tiny'`` (tests), ``'full'`` (``facebook/sam3``,
            ViT-L/14 at 1008 px, 840 M parameters), ``'reduced'`` (CPU benchmarks: the full
            architecture at 336 px, so that the shared vision encoder and the per-prompt
            DETR encoder, decoder and mask head keep about the full model's proportions
            while a frame takes seconds) or ``'reduced_vitb'`` (the earlier CPU size: a
            ViT-B-sized vision encoder and a 6-layer text encoder at 336 px with the full
            DETR and mask head; its vision part is much smaller than the full model's
            relative to the per-prompt part).
        tokenizer: the processor's tokenizer (vocabulary size and special token ids).
        lite_text: build the MobileCLIP-text variant (``Sam3LiteTextConfig``).
        side: with ``'full'``, run the full architecture at this input side (px) instead
            of 1008 (:func:`sam3_full_vision`).

    """
    ids = {'vocab_size': len(tokenizer), 'bos_token_id': tokenizer.bos_token_id,
           'eos_token_id': tokenizer.eos_token_id, 'pad_token_id': tokenizer.pad_token_id}
    if size == 'reduced_vitb':
        vision = {'backbone_config': {'model_type': 'sam3_vit_model', 'hidden_size': 768,
                                      'intermediate_size': 3072, 'num_hidden_layers': 12,
                                      'num_attention_heads': 12, 'window_size': 12,
                                      'image_size': REDUCED_IMAGE_SIZE,
                                      'global_attn_indexes': [2, 5, 8, 11]},
                  'backbone_feature_sizes': _feature_sizes(REDUCED_IMAGE_SIZE)}
        text = {'model_type': 'clip_text_model', **ids, 'hidden_size': 512,
                'intermediate_size': 2048, 'projection_dim': 512, 'num_hidden_layers': 6,
                'num_attention_heads': 8, 'max_position_embeddings': SAM3_TEXT_TOKENS}
        return Sam3Config(vision_config=vision, text_config=text)
    if size == 'reduced':
        size, side = 'full', REDUCED_IMAGE_SIZE
    if size == 'full':
        vision = {} if side in (None, SAM3_FULL_IMAGE_SIZE) else sam3_full_vision(side)
        text = dict(ids)
        if lite_text:
            return Sam3LiteTextConfig(vision_config=vision or None, text_config=text)
        return Sam3Config(vision_config=vision or None,
                          text_config={'model_type': 'clip_text_model', **ids,
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


def sam3_processor(size: str, side: Optional[int] = None) -> Sam3Processor:
    """Return a ``Sam3Processor`` (real CLIP BPE tokenizer over a small vocabulary).

    ``side`` overrides the input side (px) of the size (:func:`sam3_side`).
    """
    tokenizer = make_clip_tokenizer()
    tokenizer.model_max_length = SAM3_TEXT_TOKENS
    side = side or sam3_side(size)
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
    return _save_pretrained(out_dir, model, processor, what, size, seed)


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
    return _save_pretrained(out_dir, model, processor, 'this SAM 3 tracker', size, seed)


def _sam2_video_processor(side: int) -> Sam2VideoProcessor:
    """Return the ``Sam2VideoProcessor`` of the SAM 2 and EdgeTAM trackers at ``side`` px."""
    return Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(size={'height': side, 'width': side},
                                           mask_size={'height': side // 4, 'width': side // 4}),
        video_processor=Sam2VideoVideoProcessor(size={'height': side, 'width': side},
                                                image_mean=_IMAGENET_MEAN,
                                                image_std=_IMAGENET_STD))


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
    processor = _sam2_video_processor(side)
    return _save_pretrained(out_dir, model, processor, 'this SAM 2 video tracker', size, seed)


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
    processor = _sam2_video_processor(side)
    return _save_pretrained(out_dir, model, processor, 'this EdgeTAM video tracker', size, seed)


def output_spread(values: torch.Tensor) -> Dict[str, float]:
    """Spread of sigmoid outputs: fraction saturated (below 0.01 or above 0.99) and std.

    Args:
        values: logits of any shape.

    """
    p = values.detach().float().sigmoid().ravel()
    return {'saturated': float(((p < 0.01) | (p > 0.99)).float().mean()),
            'std': float(p.std()) if p.numel() > 1 else 0.0,
            'min': float(p.min()), 'max': float(p.max())}


def write_models(out_dir: Path, size: str = 'tiny', only: Sequence[str] = MODELS,
                 sam_type: Optional[str] = None, seed: int = 0) -> Dict[str, str]:
    """Write the random models named by ``only`` under ``out_dir``.

    Args:
        out_dir: created if missing.
        size: ``'tiny'`` or ``'full'``.
        only: names from :data:`MODELS`.
        sam_type: SAM architecture; default ``'tiny'`` for the tiny size and ``'vit_b'`` for
            full.
        seed: torch seed; the same seed writes the same weights.

    Returns:
        For each model written, its path: ``'clipseg'``, ``'owlv2'``, ``'grounding_dino'``,
        ``'clip'``, ``'sam3'``, ``'sam3_lite_text'``, ``'sam2_video'``, ``'sam3_tracker'``,
        ``'edgetam'`` (directories), and for SAM ``'sam_checkpoint'`` (file) with
        ``'sam_model_type'``.

    Raises:
        ValueError: unknown size or model name.

    """
    if size not in SIZES:
        raise ValueError(f'Unknown size {size!r}; expected one of {SIZES}.')
    unknown = [name for name in only if name not in MODELS]
    if unknown:
        raise ValueError(f'Unknown random model(s) {unknown}; expected names from {MODELS}.')
    out_dir = Path(out_dir)
    writers = {'clipseg': write_clipseg, 'owlv2': write_owlv2,
               'grounding_dino': write_grounding_dino, 'clip': write_clip,
               'sam3': write_sam3,
               'sam3_lite_text': lambda out, size, seed: write_sam3(out, size, seed, True),
               'sam2_video': write_sam2, 'sam3_tracker': write_sam3_tracker,
               'edgetam': write_edgetam}
    written = {}
    for name in MODELS:
        if name not in only:
            continue
        if name == 'sam':
            sam_type = sam_type or (SAM_TINY_TYPE if size == 'tiny' else 'vit_b')
            written['sam_checkpoint'] = str(write_sam(out_dir, sam_type, size, seed))
            written['sam_model_type'] = sam_type
        else:
            written[name] = str(writers[name](out_dir / name, size, seed))
    return written


def write_random_models(out_dir: Path, size: str = 'tiny', sam_type: Optional[str] = None,
                        seed: int = 0) -> Dict[str, str]:
    """Write a random CLIPSeg directory and a random SAM checkpoint under ``out_dir``.

    ``sam_type='none'`` writes no SAM checkpoint.

    Returns:
        ``{'clipseg': dir, 'sam_checkpoint': path or '', 'sam_model_type': type or ''}``.

    """
    result = {'sam_checkpoint': '', 'sam_model_type': ''}
    only = ('clipseg',) if sam_type == 'none' else ('clipseg', 'sam')
    result.update(write_models(out_dir, size, only, None if sam_type == 'none' else sam_type,
                               seed))
    return result


def write_backend_models(out_dir: Path, size: str = 'tiny', seed: int = 0) -> Dict[str, str]:
    """Write random OWLv2, Grounding DINO and CLIP directories under ``out_dir``.

    Returns:
        ``{'owlv2': dir, 'grounding_dino': dir, 'clip': dir}``.

    """
    return write_models(out_dir, size, ('owlv2', 'grounding_dino', 'clip'), seed=seed)


def main(argv=None) -> int:
    """Command-line entry point; prints the written paths as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', type=Path, help='directory to write into (created)')
    parser.add_argument('--size', choices=SIZES, default='tiny',
                        help='tiny test models or full-size architectures (default tiny)')
    parser.add_argument('--only', default=','.join(MODELS),
                        help=f'comma-separated models to write (default all: {",".join(MODELS)})')
    parser.add_argument('--sam-type', choices=(SAM_TINY_TYPE,) + SAM_MODEL_TYPES + ('none',),
                        default=None, help='SAM architecture (default tiny for --size tiny, '
                        'vit_b for full; none: no SAM, as leaving sam out of --only)')
    parser.add_argument('--seed', type=int, default=0, help='torch seed (default 0)')
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(',') if name.strip()]
    unknown = [name for name in only if name not in MODELS]
    if unknown or not only:
        parser.error(f'--only {args.only!r}: expected comma-separated names from {MODELS}')
    if args.sam_type == 'none':
        only, args.sam_type = [name for name in only if name != 'sam'], None
    print(json.dumps(write_models(args.out_dir, args.size, only, args.sam_type, args.seed),
                     indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
