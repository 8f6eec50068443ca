"""Loading the extra backends' transformers models (OWLv2, Grounding DINO, CLIP).

Same rules as :func:`zs_perception.segmentation.loading.load_clipseg`: a
Hugging Face id is looked up in the local cache first (so a cached model works
offline), then the hub; a local directory written by ``save_pretrained`` is
loaded as is. The model class is fixed per backend (no ``trust_remote_code``,
no auto classes), and directories marked as random weights need
``allow_random_weights=True``.
"""

import logging
import os
from pathlib import Path
from typing import Tuple

import torch

from zs_perception.segmentation.base import ModelLoadError
from zs_perception.segmentation.loading import _check_random, _hub_offline, _looks_like_path
from zs_perception.segmentation.loading import RANDOM_MARKER

logger = logging.getLogger(__name__)


def _fetch_hint(model_id: str, setting: str) -> str:
    return (
        f'On a machine with internet run `huggingface-cli download {model_id}` (or '
        f'`hf download {model_id}`) and copy its Hugging Face cache (~/.cache/huggingface/hub/'
        f'models--{model_id.replace("/", "--")}) here, or run `huggingface-cli download '
        f'{model_id} --local-dir DIR`, copy DIR here and set {setting} to DIR.')


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
        _check_random(local / RANDOM_MARKER, f'{what} directory {local}', allow_random_weights)
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
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ModelLoadError(
            f'Could not load {what} {where}: {type(exc).__name__}: {exc}. {expected}') from exc
    bad = {k: v for k, v in info.items() if k in ('missing_keys', 'mismatched_keys') and v}
    if bad:
        raise ModelLoadError(
            f'{what} {where} does not match its configuration: {bad}. The weights are from a '
            f'different model or damaged. {hint}')
    return net.to(device).eval(), processor
