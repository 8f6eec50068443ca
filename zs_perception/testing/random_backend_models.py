"""Write random-weight OWLv2, Grounding DINO and CLIP models for the extra segmentation backends.

The companion of :mod:`zs_perception.testing.random_models` (CLIPSeg and
SAM) for the ``grounded_sam``, ``zero_guidance`` and ``clip_dense`` backends.
Every directory holds a real ``transformers`` model and processor
(``save_pretrained``), finds nothing real, and carries the
:data:`~zs_perception.segmentation.loading.RANDOM_MARKER` file, so loading it
needs ``allow_random_weights=True``.

Usage::

    python -m zs_perception.testing.random_backend_models OUT_DIR [--size tiny|full] [--seed 0]

writes ``OUT_DIR/owlv2``, ``OUT_DIR/grounding_dino`` and ``OUT_DIR/clip``.
``tiny`` builds in about a second (small widths; OWLv2 at 128 px, Grounding
DINO at 128..192 px, CLIP at 64 px); ``full`` has the real architectures
(``google/owlv2-base-patch16-ensemble`` at 960 px,
``IDEA-Research/grounding-dino-tiny`` with a Swin-T backbone at 800..1333 px,
``openai/clip-vit-base-patch32``) for benchmarks.
"""

import argparse
import json
from pathlib import Path
import sys
from typing import Dict

import torch
from transformers import BertTokenizerFast, CLIPConfig, CLIPImageProcessor, CLIPModel
from transformers import CLIPProcessor, GroundingDinoConfig, GroundingDinoForObjectDetection
from transformers import GroundingDinoImageProcessor, GroundingDinoProcessor, Owlv2Config
from transformers import Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

from zs_perception.segmentation.loading import RANDOM_MARKER
from zs_perception.testing.random_models import make_clip_tokenizer, SIZES

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
# OWL-ViT / OWLv2 pad every query to 16 tokens.
OWL_MAX_TOKENS = 16


def make_bert_tokenizer() -> BertTokenizerFast:
    """Build a real (fast) BERT WordPiece tokenizer over a small generated vocabulary.

    The vocabulary holds BERT's special tokens, the printable ASCII
    characters (alone and as ``##`` continuations) and the object words the
    CLIP test tokenizer of ``make_random_models`` knows whole, so those words
    are one token and anything else is spelt out.
    """
    clip_vocab = make_clip_tokenizer().get_vocab()
    words = sorted(t[:-4] for t in clip_vocab if t.endswith('</w>') and len(t) > 5)
    chars = [chr(c) for c in range(33, 127)]
    tokens = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] + chars + ['##' + c for c in chars]
    tokens += [w for w in words if w not in tokens]
    return BertTokenizerFast(vocab={tok: i for i, tok in enumerate(tokens)}, do_lower_case=True)


def _save(out_dir: Path, model, processor, what: str, size: str, seed: int) -> Path:
    """Save ``model`` and ``processor`` into ``out_dir`` and mark the directory as random."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / RANDOM_MARKER).write_text(
        f'RANDOM WEIGHTS: {what} written by zs_perception.testing.random_backend_models '
        f'(size={size}, seed={seed}). For tests, demos of the plumbing and benchmarks only; '
        'it finds nothing real.\n')
    return out_dir


def write_owlv2(out_dir: Path, size: str = 'tiny', seed: int = 0) -> Path:
    """Write a random ``Owlv2ForObjectDetection`` and its ``Owlv2Processor`` into ``out_dir``."""
    torch.manual_seed(seed)
    tokenizer = make_clip_tokenizer()
    tokenizer.model_max_length = OWL_MAX_TOKENS
    ids = {'bos_token_id': tokenizer.bos_token_id, 'eos_token_id': tokenizer.eos_token_id,
           'pad_token_id': tokenizer.pad_token_id}
    if size == 'tiny':
        image_size = 128
        config = Owlv2Config(
            text_config={'vocab_size': len(tokenizer), 'hidden_size': 32,
                         'intermediate_size': 64, 'num_hidden_layers': 2,
                         'num_attention_heads': 2,
                         'max_position_embeddings': OWL_MAX_TOKENS, **ids},
            vision_config={'hidden_size': 32, 'intermediate_size': 64, 'num_hidden_layers': 2,
                           'num_attention_heads': 2, 'image_size': image_size,
                           'patch_size': 16},
            # The class head maps image features to the text width: projection = text width.
            projection_dim=32)
    else:
        # google/owlv2-base-patch16-ensemble: CLIP B/16 at 960 px, 512-d text encoder.
        image_size = 960
        config = Owlv2Config(
            text_config={'vocab_size': 49408, 'max_position_embeddings': OWL_MAX_TOKENS, **ids},
            vision_config={'image_size': image_size, 'patch_size': 16}, projection_dim=512)
    model = Owlv2ForObjectDetection(config).eval()
    processor = Owlv2Processor(
        image_processor=Owlv2ImageProcessor(size={'height': image_size, 'width': image_size}),
        tokenizer=tokenizer)
    return _save(out_dir, model, processor, 'this OWLv2 detector', size, seed)


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
    return _save(out_dir, model, processor, 'this Grounding DINO detector', size, seed)


def write_clip(out_dir: Path, size: str = 'tiny', seed: int = 0) -> Path:
    """Write a random ``CLIPModel`` and its ``CLIPProcessor`` into ``out_dir``."""
    torch.manual_seed(seed)
    tokenizer = make_clip_tokenizer()
    ids = {'bos_token_id': tokenizer.bos_token_id, 'eos_token_id': tokenizer.eos_token_id,
           'pad_token_id': tokenizer.pad_token_id}
    if size == 'tiny':
        image_size = 64
        config = CLIPConfig(
            text_config={'vocab_size': len(tokenizer), 'hidden_size': 32,
                         'intermediate_size': 64, 'num_hidden_layers': 2,
                         'num_attention_heads': 2, 'max_position_embeddings': 77, **ids},
            vision_config={'hidden_size': 32, 'intermediate_size': 64, 'num_hidden_layers': 2,
                           'num_attention_heads': 2, 'image_size': image_size,
                           'patch_size': 8},
            projection_dim=16)
    else:
        # openai/clip-vit-base-patch32.
        image_size = 224
        config = CLIPConfig(text_config={'vocab_size': 49408, **ids},
                            vision_config={'image_size': image_size, 'patch_size': 32},
                            projection_dim=512)
    model = CLIPModel(config).eval()
    processor = CLIPProcessor(
        image_processor=CLIPImageProcessor(
            size={'shortest_edge': image_size},
            crop_size={'height': image_size, 'width': image_size},
            image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD),
        tokenizer=tokenizer)
    return _save(out_dir, model, processor, 'this CLIP model', size, seed)


def write_backend_models(out_dir: Path, size: str = 'tiny', seed: int = 0) -> Dict[str, str]:
    """Write all three random models under ``out_dir``.

    Returns:
        ``{'owlv2': dir, 'grounding_dino': dir, 'clip': dir}``.

    """
    if size not in SIZES:
        raise ValueError(f'Unknown size {size!r}; expected one of {SIZES}.')
    out_dir = Path(out_dir)
    return {
        'owlv2': str(write_owlv2(out_dir / 'owlv2', size, seed)),
        'grounding_dino': str(write_grounding_dino(out_dir / 'grounding_dino', size, seed)),
        'clip': str(write_clip(out_dir / 'clip', size, seed)),
    }


def main(argv=None) -> int:
    """Command-line entry point; prints the written paths as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', type=Path, help='directory to write into (created)')
    parser.add_argument('--size', choices=SIZES, default='tiny',
                        help='tiny test models or full-size architectures (default tiny)')
    parser.add_argument('--seed', type=int, default=0, help='torch seed (default 0)')
    args = parser.parse_args(argv)
    print(json.dumps(write_backend_models(args.out_dir, args.size, args.seed), indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
