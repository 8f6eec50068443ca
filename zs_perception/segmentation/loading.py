"""Loading model weights, with errors that say how to get them.

CLIPSeg, OWLv2, Grounding DINO and CLIP are transformers models; SAM is a checkpoint file.

Transformers models come from a Hugging Face model id (looked up in the local
cache first, then the hub) or a local directory written by ``save_pretrained``;
the model class is fixed per backend (no auto classes).
SAM comes from one of Meta's checkpoint files plus its model type, since the
files carry no configuration. Nothing is executed from the downloaded files:
no ``trust_remote_code``, and checkpoints load with ``weights_only=True``.

Directories and checkpoints written by ``zs_perception.testing.random_models``
hold random weights and are marked as such (:data:`RANDOM_MARKER`); loading one
needs ``allow_random_weights=True`` and logs a loud warning.
"""

from functools import partial
import logging
import os
from pathlib import Path
from typing import Tuple

from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam
from segment_anything.modeling import TwoWayTransformer
import torch
from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

from zs_perception.segmentation.base import ModelLoadError
from zs_perception.segmentation.hub import fetch_hint as _fetch_hint
from zs_perception.segmentation.hub import looks_like_path as _looks_like_path
from zs_perception.segmentation.hub import RANDOM_MARKER

DEFAULT_CLIPSEG_MODEL = 'CIDAS/clipseg-rd64-refined'
SAM_MODEL_TYPES = ('vit_b', 'vit_l', 'vit_h')
# Only for random test models (zs_perception.testing.random_models); no real checkpoint has it.
SAM_TINY_TYPE = 'tiny'
SAM_CHECKPOINT_URLS = {
    'vit_b': 'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth',
    'vit_l': 'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth',
    'vit_h': 'https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth',
}
# (embed_dim, depth, num_heads, global_attn_indexes) of each SAM image encoder.
_SAM_ENCODERS = {
    'vit_b': (768, 12, 12, (2, 5, 8, 11)),
    'vit_l': (1024, 24, 16, (5, 11, 17, 23)),
    'vit_h': (1280, 32, 16, (7, 15, 23, 31)),
}

logger = logging.getLogger(__name__)


def sam_random_marker(checkpoint: Path) -> Path:
    """Path of the marker file that flags a SAM checkpoint as random weights."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(f'{checkpoint.name}.{RANDOM_MARKER}')


def build_sam(model_type: str) -> Sam:
    """Build an untrained SAM of the given type, in eval mode, on the CPU.

    Args:
        model_type: ``'vit_b'``, ``'vit_l'``, ``'vit_h'`` (Meta's
            architectures, 1024 px input, 256-d prompt embeddings) or
            ``'tiny'`` (256 px input, 32-d, two encoder blocks; only for
            random test models).

    """
    if model_type == SAM_TINY_TYPE:
        img_size, patch, dim, depth, heads, global_idx, window = 256, 16, 32, 2, 2, (1,), 4
        prompt_dim, mlp_dim, decoder_heads = 32, 64, 2
    elif model_type in _SAM_ENCODERS:
        dim, depth, heads, global_idx = _SAM_ENCODERS[model_type]
        img_size, patch, window = 1024, 16, 14
        prompt_dim, mlp_dim, decoder_heads = 256, 2048, 8
    else:
        raise ValueError(
            f'Unknown SAM model type {model_type!r}; expected one of {SAM_MODEL_TYPES} '
            f'(or {SAM_TINY_TYPE!r} for random test models).')
    grid = img_size // patch
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=depth, embed_dim=dim, img_size=img_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=heads,
            patch_size=patch, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=global_idx, window_size=window, out_chans=prompt_dim),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim, image_embedding_size=(grid, grid),
            input_image_size=(img_size, img_size), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=prompt_dim, mlp_dim=mlp_dim, num_heads=decoder_heads),
            transformer_dim=prompt_dim, iou_head_depth=3, iou_head_hidden_dim=prompt_dim),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def check_random(marker: Path, what: str, allow_random_weights: bool) -> None:
    if not marker.exists():
        return
    if not allow_random_weights:
        raise ModelLoadError(
            f'{what} holds RANDOM weights (marker file {marker}); it was written by '
            'zs_perception.testing.random_models for tests and benchmarks and finds nothing '
            'real. Point the setting at real weights, or pass allow_random_weights=True '
            '(ROS parameter allow_random_weights: true) if random output is what you want.')
    logger.warning(
        '!!! %s holds RANDOM weights (marker %s): its masks are meaningless. '
        'Use it only for tests, demos of the plumbing and benchmarks. !!!', what, marker)


def _hub_offline() -> bool:
    from huggingface_hub import constants
    return bool(constants.HF_HUB_OFFLINE)


def load_clipseg(model: str, device: torch.device, dtype: torch.dtype,
                 allow_random_weights: bool = False
                 ) -> Tuple[CLIPSegForImageSegmentation, CLIPSegProcessor]:
    """Load a CLIPSeg model and its processor, in eval mode on ``device`` in ``dtype``.

    ``model`` is a Hugging Face model id (default :data:`DEFAULT_CLIPSEG_MODEL`; the local
    cache is tried first, so a cached model works offline) or a local directory; see
    :func:`load_hf_model` for the rules and errors.
    """
    return load_hf_model(CLIPSegForImageSegmentation, CLIPSegProcessor, model,
                         setting='clipseg_model', default_id=DEFAULT_CLIPSEG_MODEL,
                         model_type='clipseg', device=device, dtype=dtype,
                         allow_random_weights=allow_random_weights)


def load_hf_model(model_cls, processor_cls, model: str, *, setting: str, default_id: str,
                  model_type: str, device: torch.device, dtype: torch.dtype,
                  allow_random_weights: bool = False) -> Tuple[torch.nn.Module, object]:
    """Load a transformers model and its processor, in eval mode on ``device`` in ``dtype``.

    Args:
        model_cls: the model class, e.g. ``Owlv2ForObjectDetection``.
        processor_cls: its processor class, e.g. ``Owlv2Processor``.
        model: a Hugging Face id (cache first, then the hub) or a local
            directory holding ``config.json``, the weights and the processor
            files.
        setting: name of the setting that holds ``model`` (for messages).
        default_id: the id to suggest when ``model`` is empty.
        model_type: the ``config.json`` ``model_type`` expected (e.g.
            ``'owlv2'``).
        device: where the model runs.
        dtype: the model's parameter dtype.
        allow_random_weights: accept a directory marked as random weights.

    Raises:
        ModelLoadError: not found, wrong model type, weights that do not match
            the configuration, or random weights not allowed; the message
            says where it looked and how to fetch the model.

    """
    name = str(model).strip()
    what = model_cls.__name__
    if not name:
        raise ModelLoadError(
            f'{setting} is empty; set it to a Hugging Face id such as {default_id!r} or a local '
            'directory. ' + _fetch_hint(default_id, setting))
    local = Path(os.path.expanduser(name))
    if local.is_dir():
        check_random(local / RANDOM_MARKER, f'{what} directory {local}', allow_random_weights)
        return _load_from(model_cls, processor_cls, str(local), f'directory {local}',
                          model_type, device, dtype, True, _fetch_hint(default_id, setting))
    if local.exists() or _looks_like_path(name):
        raise ModelLoadError(
            f'{what} directory {local} does not exist or is not a directory ({setting}='
            f'{name!r}). ' + _fetch_hint(default_id, setting))
    from huggingface_hub import constants
    where = f'Hugging Face cache {constants.HF_HUB_CACHE}'
    hint = _fetch_hint(name, setting)
    try:
        return _load_from(model_cls, processor_cls, name, f'model {name!r} in the {where}',
                          model_type, device, dtype, True, hint)
    except ModelLoadError as cache_error:
        if _hub_offline():
            raise
        logger.info('%s %r is not in the local cache (%s); trying the hub.', what, name,
                    cache_error)
    return _load_from(
        model_cls, processor_cls, name, f'model {name!r} (not in the {where}; the hub could not '
        'be reached or has no such model)', model_type, device, dtype, False, hint)


def _load_from(model_cls, processor_cls, source, where, model_type, device, dtype,
               local_files_only, hint):
    what = model_cls.__name__
    expected = (f'Expected a checkpoint with config.json (model_type "{model_type}"), '
                f'model.safetensors and the {processor_cls.__name__} files. {hint}')
    try:
        config, _ = model_cls.config_class.get_config_dict(
            source, local_files_only=local_files_only)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(
            f'Could not read the configuration of {what} {where}: {type(exc).__name__}: '
            f'{exc}. {expected}') from exc
    if config.get('model_type') != model_type:
        raise ModelLoadError(
            f'{where} holds a {config.get("model_type")!r} model, not the {model_type!r} model '
            f'{what} needs; point {what} at a {model_type} checkpoint. {hint}')
    try:
        net, info = model_cls.from_pretrained(
            source, dtype=dtype, local_files_only=local_files_only, output_loading_info=True)
        processor = processor_cls.from_pretrained(source, local_files_only=local_files_only)
    except Exception as exc:  # transformers, safetensors and the hub raise many types
        raise ModelLoadError(
            f'Could not load {what} {where}: {type(exc).__name__}: {exc}. {expected}') from exc
    bad = {k: v for k, v in info.items() if k in ('missing_keys', 'mismatched_keys') and v}
    if bad:
        raise ModelLoadError(
            f'{what} {where} does not match its configuration: {bad}. The weights are from a '
            f'different model or damaged. {hint}')
    return net.to(device).eval(), processor


def load_sam(checkpoint: str, model_type: str, device: torch.device,
             allow_random_weights: bool = False) -> Sam:
    """Load a Segment Anything model from a checkpoint file, in eval mode on ``device``.

    Args:
        checkpoint: path of Meta's ``sam_vit_*.pth`` (or a random checkpoint
            from ``zs_perception.testing.random_models``).
        model_type: ``'vit_b'``, ``'vit_l'`` or ``'vit_h'``, matching the file
            (``'tiny'`` only for random test checkpoints).
        device: where the model runs (kept in fp32; the caller may cast the
            image encoder).
        allow_random_weights: accept a checkpoint marked as random weights.

    Raises:
        ModelLoadError: no such file, not a SAM checkpoint, wrong model type,
            or random weights not allowed.
        ValueError: unknown model type.

    """
    if model_type not in SAM_MODEL_TYPES and model_type != SAM_TINY_TYPE:
        raise ValueError(f'Unknown sam_model_type {model_type!r}; expected one of '
                         f'{SAM_MODEL_TYPES}.')
    url = SAM_CHECKPOINT_URLS.get(model_type, SAM_CHECKPOINT_URLS['vit_b'])
    fetch = f'On a machine with internet run `wget {url}` and set sam_checkpoint to the file.'
    if not str(checkpoint).strip():
        raise ModelLoadError(
            'The clipseg_sam backend needs a Segment Anything checkpoint but sam_checkpoint is '
            f'not set (sam_model_type={model_type!r}). {fetch}')
    path = Path(os.path.expanduser(str(checkpoint)))
    if not path.is_file():
        raise ModelLoadError(
            f'SAM checkpoint {path} (sam_model_type={model_type!r}) does not exist or is not a '
            f'file. {fetch}')
    marker = sam_random_marker(path)
    if model_type == SAM_TINY_TYPE and not marker.exists():
        raise ValueError(f'sam_model_type {SAM_TINY_TYPE!r} exists only for random test '
                         f'checkpoints (with {marker.name}); expected one of {SAM_MODEL_TYPES}.')
    check_random(marker, f'SAM checkpoint {path}', allow_random_weights)
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or non-torch files
        raise ModelLoadError(
            f'Could not read SAM checkpoint {path}: {type(exc).__name__}: {exc}. Expected a '
            f'PyTorch state dict such as {url.rsplit("/", 1)[1]}. {fetch}') from exc
    if not isinstance(state, dict) or 'image_encoder.patch_embed.proj.weight' not in state:
        raise ModelLoadError(
            f'{path} is not a Segment Anything checkpoint (no image_encoder weights). {fetch}')
    sam = build_sam(model_type)
    try:
        sam.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        width = state['image_encoder.patch_embed.proj.weight'].shape[0]
        guess = [t for t, enc in _SAM_ENCODERS.items() if enc[0] == width]
        raise ModelLoadError(
            f'SAM checkpoint {path} does not fit sam_model_type={model_type!r} (its image '
            f'encoder is {width} wide, which is {guess[0] if guess else "no known type"}); '
            f'set sam_model_type to match the file. {fetch}') from exc
    return sam.to(device)
