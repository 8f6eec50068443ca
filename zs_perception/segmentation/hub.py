"""Where models come from: hub ids or local paths, how to fetch them, whether the hub answers.

Loading a hub id that is not in the local cache makes ``huggingface_hub`` retry the
network for half a minute before it gives up. :func:`check_hub_models` looks at the cache
and, only when something is missing there, tries the hub's address once (one TCP connect);
when that fails it sets offline mode (``HF_HUB_OFFLINE``) and raises at once, saying which
model is missing from which cache and that the hub cannot be reached.

This module imports neither torch nor transformers, so the node runs the check before the
seconds those imports take; :mod:`zs_perception.segmentation.loading` uses its
:func:`looks_like_path` and :func:`fetch_hint` too.
"""

import os
import socket
from typing import Any, Dict, Mapping, Optional, Tuple
from urllib.parse import urlparse

from zs_perception.segmentation.base import ModelLoadError

DEFAULT_ENDPOINT = 'https://huggingface.co'


def looks_like_path(name: str) -> bool:
    """Tell whether a model setting means a local path: hub ids are ``'owner/name'``."""
    return name.startswith(('/', '.', '~')) or name.count('/') != 1


def fetch_hint(model_id: str, setting: str) -> str:
    """Say how to get ``model_id`` onto this machine and point ``setting`` at it."""
    return (
        f'On a machine with internet run `huggingface-cli download {model_id}` (or '
        f'`hf download {model_id}`) and copy its Hugging Face cache (~/.cache/huggingface/hub/'
        f'models--{model_id.replace("/", "--")}) here, or run `huggingface-cli download '
        f'{model_id} --local-dir DIR`, copy DIR here and set {setting} to DIR.')


def hub_models(settings: Mapping[str, Any]) -> Dict[str, str]:
    """Return ``{setting: hub id}`` of the models the settings' backend loads from the hub.

    Local directories and paths are left out; empty settings give the backend's default id.
    """
    # The defaults for empty settings live with their loaders (importing torch); the
    # parameters' own defaults are hub ids already, so that is the rare case.
    backend = settings['backend']
    if backend in ('clipseg', 'clipseg_sam'):
        setting = 'clipseg_model'
        name = settings[setting].strip()
        if not name:
            from zs_perception.segmentation.loading import DEFAULT_CLIPSEG_MODEL as name
    elif backend == 'grounded_sam':
        setting = 'detector_model'
        name = settings[setting].strip()
        if not name:
            from zs_perception.segmentation.detectors import DEFAULT_DETECTOR_MODELS
            name = DEFAULT_DETECTOR_MODELS[settings['detector']]
    else:
        setting = 'clip_model'
        name = settings[setting].strip()
        if not name:
            from zs_perception.segmentation.clip_dense import DEFAULT_CLIP_MODEL as name
    if os.path.isdir(os.path.expanduser(name)) or looks_like_path(name):
        return {}
    return {setting: name}


def is_cached(model_id: str) -> bool:
    """Tell whether the Hugging Face cache holds ``model_id``'s ``config.json``."""
    from huggingface_hub import try_to_load_from_cache
    return isinstance(try_to_load_from_cache(model_id, 'config.json'), str)


def hub_reachable(timeout_s: float = 2.0) -> Tuple[bool, str]:
    """Try one TCP connection to the hub (``HF_ENDPOINT``); return ``(ok, address or error)``."""
    endpoint = os.environ.get('HF_ENDPOINT', DEFAULT_ENDPOINT)
    url = urlparse(endpoint)
    host, port = url.hostname or '', url.port or (80 if url.scheme == 'http' else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True, f'{host}:{port}'
    except OSError as err:
        return False, f'{host}:{port} ({type(err).__name__}: {err})'


def check_hub_models(settings: Mapping[str, Any], timeout_s: float = 2.0) -> Optional[str]:
    """Raise at once when a model is neither cached nor downloadable.

    Returns:
        ``None`` when nothing needs the network (all cached, local, or offline mode set by
        the user), else the hub address that was reached (the download will proceed).

    Raises:
        ModelLoadError: a model is not in the cache and the hub is unreachable; offline
            mode is then set for this process.

    """
    from huggingface_hub import constants
    if constants.HF_HUB_OFFLINE:
        return None  # the loaders look in the cache only and say so
    missing = {s: m for s, m in hub_models(settings).items() if not is_cached(m)}
    if not missing:
        return None
    ok, where = hub_reachable(timeout_s)
    if ok:
        return where
    os.environ['HF_HUB_OFFLINE'] = '1'
    constants.HF_HUB_OFFLINE = True
    setting, model_id = next(iter(missing.items()))
    raise ModelLoadError(
        f'{setting}={model_id!r} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) '
        f'and the hub cannot be reached at {where}. ' + fetch_hint(model_id, setting))
