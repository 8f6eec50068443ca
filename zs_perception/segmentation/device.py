"""Device and precision selection, and the mapping of accelerator out-of-memory errors."""

import contextlib
import logging
import time

import torch

from zs_perception.segmentation.base import DeviceOutOfMemoryError

DEVICES = ('auto', 'cuda', 'cpu')
PRECISIONS = ('auto', 'fp32', 'fp16', 'bf16')

_DTYPES = {'fp32': torch.float32, 'fp16': torch.float16, 'bf16': torch.bfloat16}

logger = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """Turn a device setting into a torch device.

    Args:
        device: ``'auto'`` (CUDA when available, else CPU), ``'cuda'``,
            ``'cuda:N'`` or ``'cpu'``.

    Raises:
        ValueError: unknown name, or CUDA asked for but not available.

    """
    name = str(device).strip().lower()
    if name == 'auto':
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    if name == 'cpu':
        return torch.device('cpu')
    if name == 'cuda' or name.startswith('cuda:'):
        if not torch.cuda.is_available():
            raise ValueError(
                f'device {device!r} was requested but torch.cuda.is_available() is False '
                f'(torch {torch.__version__}, built for CUDA {torch.version.cuda}); '
                "use device 'cpu' or 'auto', or install a CUDA build of torch and its driver.")
        return torch.device(name)
    raise ValueError(f'Unknown device {device!r}; expected one of {DEVICES} or cuda:N.')


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """Turn a precision setting into the torch dtype the models run in.

    ``'auto'`` is fp16 on CUDA and fp32 on the CPU. fp16 on the CPU is refused
    (slow or unsupported there); bf16 works on both.

    Raises:
        ValueError: unknown name, or fp16 on the CPU.

    """
    name = str(precision).strip().lower()
    if name == 'auto':
        return torch.float16 if device.type == 'cuda' else torch.float32
    if name not in _DTYPES:
        raise ValueError(f'Unknown precision {precision!r}; expected one of {PRECISIONS}.')
    if name == 'fp16' and device.type == 'cpu':
        raise ValueError(
            "precision 'fp16' is not supported on the CPU; use 'fp32' or 'bf16' there.")
    return _DTYPES[name]


@contextlib.contextmanager
def out_of_memory_as_error(device: torch.device, what: str):
    """Turn a torch out-of-memory error raised inside the block into DeviceOutOfMemoryError.

    The CUDA caching allocator is emptied first so the caller can retry (e.g.
    with fewer prompts) on the same segmenter.

    Args:
        device: the device the block runs on (named in the message).
        what: what was being done, e.g. ``'segmenting a 640x480 image with 3 prompts'``.

    """
    try:
        yield
    except torch.OutOfMemoryError as exc:
        if device.type == 'cuda':
            torch.cuda.empty_cache()
        logger.error('Out of memory on %s while %s.', device, what)
        raise DeviceOutOfMemoryError(
            f'The {device} ran out of memory while {what}: {exc}. The segmenter is still '
            'usable: retry with fewer prompts or a smaller image, precision fp16/bf16, or '
            'free memory used by other processes.') from exc


class StageTimer:
    """Accumulates wall-clock seconds per named stage, synchronising CUDA so times are real."""

    def __init__(self, device: torch.device):
        self._sync = device.type == 'cuda'
        self._device = device
        self.timings = {}

    @contextlib.contextmanager
    def stage(self, name: str):
        """Time the block and add the seconds to ``timings[name]``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            if self._sync:
                torch.cuda.synchronize(self._device)
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t0
