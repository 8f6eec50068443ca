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

from dataclasses import dataclass
import os
from pathlib import Path
import socket
import time
from typing import Any, Callable, Dict, Mapping, Optional, Tuple
from urllib.parse import urlparse

from zs_perception.segmentation.base import ModelLoadError

DEFAULT_ENDPOINT = 'https://huggingface.co'
# The file that marks a model directory as random weights (zs_perception.testing.random_models).
RANDOM_MARKER = 'RANDOM_WEIGHTS.txt'


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
    elif backend == 'sam3':
        setting = 'sam3_model'
        name = settings[setting].strip()
        if not name:
            from zs_perception.segmentation.sam3 import DEFAULT_SAM3_MODEL as name
    else:
        setting = 'clip_model'
        name = settings[setting].strip()
        if not name:
            from zs_perception.segmentation.clip_dense import DEFAULT_CLIP_MODEL as name
    models = {setting: name}
    tracker = settings.get('tracker', 'none')
    if tracker != 'none':
        name = settings.get('tracker_model', '').strip()
        if not name:
            from zs_perception.segmentation.propagation import DEFAULT_TRACKER_MODELS
            name = DEFAULT_TRACKER_MODELS[tracker]
        models['tracker_model'] = name
    return {setting: name for setting, name in models.items()
            if not (os.path.isdir(os.path.expanduser(name)) or looks_like_path(name))}


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


# Files of a transformers model repository the loaders need (no duplicate .bin weights).
_MODEL_FILES = ('*.json', '*.txt', '*.model', '*.safetensors')
_WEIGHT_FILES = ('model.safetensors', 'pytorch_model.bin')
WEIGHT_SOURCES = ('local', 'cache', 'download', 'random')


@dataclass
class WeightsChoice:
    """Where a model's weights come from, as decided by :func:`choose_weights`.

    Attributes:
        source: ``'local'`` (a directory given), ``'cache'`` (the Hugging Face cache),
            ``'download'`` (just fetched from the hub) or ``'random'`` (none found: the
            caller generates random weights).
        path: the model directory to load (``''`` for ``'random'``).
        random: the directory is marked as random weights (``RANDOM_WEIGHTS.txt``), or
            ``source`` is ``'random'``.
        download_s: seconds the download took (``'download'`` only).
        detail: one sentence saying what was found or tried, for the log.

    """

    source: str
    path: str
    random: bool
    download_s: Optional[float] = None
    detail: str = ''


def _marked_random(folder: Path) -> bool:
    return (folder / RANDOM_MARKER).is_file()


def cached_snapshot(model_id: str) -> Optional[Path]:
    """Return the cache snapshot of ``model_id`` holding its config and weights, or ``None``.

    The cache is ``HF_HUB_CACHE`` (or ``HF_HOME/hub``, default ``~/.cache/huggingface/hub``)
    as read when ``huggingface_hub`` was first imported; ``refs/main`` names the snapshot.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    try:
        folder = Path(snapshot_download(model_id, local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    if (folder / 'config.json').is_file() and any((folder / w).is_file()
                                                  for w in _WEIGHT_FILES):
        return folder
    return None


def choose_weights(model: str, *, allow_download: bool = True, timeout_s: float = 2.0,
                   download: Optional[Callable[[str], str]] = None) -> WeightsChoice:
    """Find real weights for ``model``: a local directory, the cache, then the hub.

    Args:
        model: a local directory or a hub id (``'owner/name'``).
        allow_download: try the hub when the cache lacks the model (also skipped in
            offline mode, ``HF_HUB_OFFLINE``).
        timeout_s: the hub reachability check's connect timeout (s).
        download: ``model_id -> directory``; default ``huggingface_hub.snapshot_download``
            of the files the loaders need. Tests pass a double.

    Returns:
        The choice; ``source == 'random'`` when nothing was found, ``detail`` saying why.

    """
    from huggingface_hub import constants
    local = Path(os.path.expanduser(model))
    if local.is_dir():
        return WeightsChoice('local', str(local), _marked_random(local),
                             detail=f'the local directory {local}')
    if looks_like_path(model):
        return WeightsChoice('random', '', True, detail=f'{model!r} is neither a directory '
                             'nor a hub id (owner/name)')
    folder = cached_snapshot(model)
    if folder is not None:
        return WeightsChoice('cache', str(folder), _marked_random(folder),
                             detail=f'{model} from the Hugging Face cache ({folder})')
    missing = f'{model} is not in the Hugging Face cache ({constants.HF_HUB_CACHE})'
    if not allow_download:
        return WeightsChoice('random', '', True, detail=f'{missing}; downloading is off')
    if constants.HF_HUB_OFFLINE:
        return WeightsChoice('random', '', True, detail=f'{missing} and HF_HUB_OFFLINE is set')
    ok, where = hub_reachable(timeout_s)
    if not ok:
        return WeightsChoice('random', '', True,
                             detail=f'{missing} and the hub cannot be reached at {where}')
    if download is None:
        def download(model_id: str) -> str:
            from huggingface_hub import snapshot_download
            return snapshot_download(model_id, allow_patterns=list(_MODEL_FILES))
    started = time.monotonic()
    try:
        path = Path(download(model))
    except Exception as err:  # noqa: B902 any hub or network failure means: not downloaded
        return WeightsChoice('random', '', True, detail=f'{missing} and downloading it from '
                             f'{where} failed: {type(err).__name__}: {err}')
    seconds = time.monotonic() - started
    return WeightsChoice('download', str(path), _marked_random(path), download_s=seconds,
                         detail=f'{model} downloaded from {where} in {seconds:.1f} s to {path}')
