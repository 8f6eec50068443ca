"""Write random-weight CLIPSeg and SAM models that the segmentation loader accepts.

For tests, demos of the plumbing and benchmarks on machines without the real
weights. The output finds nothing real and is marked as random, so loading it
needs ``allow_random_weights=True`` and logs a loud warning.

Usage::

    python -m zs_perception.testing.random_models OUT_DIR [--size tiny|full]
        [--sam-type tiny|vit_b|vit_l|vit_h|none] [--seed 0]

writes::

    OUT_DIR/clipseg/                      CLIPSegForImageSegmentation + CLIPSegProcessor
    OUT_DIR/clipseg/RANDOM_WEIGHTS.txt    marker
    OUT_DIR/sam_<type>.pth                SAM state dict (Meta's file layout)
    OUT_DIR/sam_<type>.pth.RANDOM_WEIGHTS.txt

``tiny`` builds in about a second (small widths, 352 px input as the real
processor); ``full`` has the real architectures (CLIPSeg rd64-refined,
152 M parameters; SAM ViT-B by default, 94 M) for benchmarks. The CLIPSeg
processor holds a real ``CLIPTokenizer`` (byte-level BPE) over a small
generated vocabulary of common object words.
"""

import argparse
import json
from pathlib import Path
import sys
from typing import Dict, Optional

from tokenizers import pre_tokenizers
import torch
from transformers import CLIPSegConfig, CLIPSegForImageSegmentation, CLIPSegProcessor
from transformers import CLIPTokenizer, ViTImageProcessor

from zs_perception.segmentation.loading import build_sam, RANDOM_MARKER, SAM_MODEL_TYPES
from zs_perception.segmentation.loading import sam_random_marker, SAM_TINY_TYPE

SIZES = ('tiny', 'full')
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


def clipseg_config(size: str, tokenizer: CLIPTokenizer) -> CLIPSegConfig:
    """Return the CLIPSeg configuration of a size, with a text encoder that fits ``tokenizer``."""
    ids = {'bos_token_id': tokenizer.bos_token_id, 'eos_token_id': tokenizer.eos_token_id,
           'pad_token_id': tokenizer.pad_token_id}
    if size == 'tiny':
        return CLIPSegConfig(
            text_config={'vocab_size': len(tokenizer), 'hidden_size': 32,
                         'intermediate_size': 64, 'num_hidden_layers': 2,
                         'num_attention_heads': 2, 'max_position_embeddings': 77, **ids},
            vision_config={'hidden_size': 32, 'intermediate_size': 64, 'num_hidden_layers': 4,
                           'num_attention_heads': 2, 'image_size': 224, 'patch_size': 16},
            projection_dim=16, extract_layers=(0, 1, 2), reduce_dim=16,
            decoder_num_attention_heads=2, decoder_intermediate_size=32,
            use_complex_transposed_convolution=True)
    # CIDAS/clipseg-rd64-refined: CLIP ViT-B/16 + 512-d text encoder, rd64 decoder.
    return CLIPSegConfig(
        text_config={'vocab_size': 49408, **ids},
        vision_config={'patch_size': 16},
        projection_dim=512, extract_layers=(3, 6, 9), reduce_dim=64,
        use_complex_transposed_convolution=True)


def _marker_text(what: str, size: str, seed: int) -> str:
    return (f'RANDOM WEIGHTS: {what} written by zs_perception.testing.random_models '
            f'(size={size}, seed={seed}). For tests, demos of the plumbing and benchmarks only; '
            'it finds nothing real.\n')


def write_random_models(out_dir: Path, size: str = 'tiny', sam_type: Optional[str] = None,
                        seed: int = 0) -> Dict[str, str]:
    """Write a random CLIPSeg directory and a random SAM checkpoint under ``out_dir``.

    Args:
        out_dir: created if missing.
        size: ``'tiny'`` or ``'full'``.
        sam_type: SAM architecture; default ``'tiny'`` for the tiny size and
            ``'vit_b'`` for full; ``'none'`` writes no SAM checkpoint.
        seed: torch seed; the same seed writes the same weights.

    Returns:
        ``{'clipseg': dir, 'sam_checkpoint': path or '', 'sam_model_type': type or ''}``.

    """
    if size not in SIZES:
        raise ValueError(f'Unknown size {size!r}; expected one of {SIZES}.')
    sam_type = sam_type or (SAM_TINY_TYPE if size == 'tiny' else 'vit_b')
    out_dir = Path(out_dir)
    clip_dir = out_dir / 'clipseg'
    clip_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    tokenizer = make_clip_tokenizer()
    model = CLIPSegForImageSegmentation(clipseg_config(size, tokenizer)).eval()
    image_processor = ViTImageProcessor(
        do_resize=True, size={'height': 352, 'width': 352}, resample=2, do_rescale=True,
        rescale_factor=1 / 255, do_normalize=True, image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225])
    model.save_pretrained(clip_dir)
    processor = CLIPSegProcessor(image_processor=image_processor, tokenizer=tokenizer)
    processor.save_pretrained(clip_dir)
    (clip_dir / RANDOM_MARKER).write_text(_marker_text('this CLIPSeg model', size, seed))
    result = {'clipseg': str(clip_dir), 'sam_checkpoint': '', 'sam_model_type': ''}
    if sam_type != 'none':
        sam = build_sam(sam_type)
        checkpoint = out_dir / f'sam_{sam_type}.pth'
        torch.save(sam.state_dict(), checkpoint)
        sam_random_marker(checkpoint).write_text(
            _marker_text(f'SAM checkpoint {checkpoint.name}', size, seed))
        result.update(sam_checkpoint=str(checkpoint), sam_model_type=sam_type)
    return result


def main(argv=None) -> int:
    """Command-line entry point; prints the written paths as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', type=Path, help='directory to write into (created)')
    parser.add_argument('--size', choices=SIZES, default='tiny',
                        help='tiny test models or full-size architectures (default tiny)')
    parser.add_argument('--sam-type', choices=(SAM_TINY_TYPE,) + SAM_MODEL_TYPES + ('none',),
                        default=None,
                        help='SAM architecture (default tiny for --size tiny, vit_b for full)')
    parser.add_argument('--seed', type=int, default=0, help='torch seed (default 0)')
    args = parser.parse_args(argv)
    print(json.dumps(write_random_models(args.out_dir, args.size, args.sam_type, args.seed),
                     indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
