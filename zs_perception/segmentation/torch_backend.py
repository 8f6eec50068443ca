"""The skeleton every torch backend shares; a backend implements only its hooks.

:class:`TorchSegmenter` owns what the backends have in common, so that they make the same
promises:

- thread safety: ``set_prompts``, ``segment`` and ``set_thresholds`` may be called from
  different threads and run one at a time (one re-entrant lock per segmenter);
- the ``device`` and ``prompts`` properties and the threshold attributes;
- input checks (:func:`~zs_perception.segmentation.base.check_rgb_image`) and the empty
  result while no prompt is set;
- out-of-memory errors turned into
  :class:`~zs_perception.segmentation.base.DeviceOutOfMemoryError` (the segmenter stays
  usable), ``torch.inference_mode()`` and per-stage timing;
- loading (:meth:`TorchSegmenter.from_settings`): check the thresholds, resolve the device
  and dtype, load the models, log one line naming them.

A backend implements, as transformers pipelines do with preprocess / forward / postprocess:

- :meth:`~TorchSegmenter._load`: load its models, return the segmenter and their names;
- :meth:`~TorchSegmenter._normalize_prompts`, :meth:`~TorchSegmenter._truncation` and
  :meth:`~TorchSegmenter._encode_prompts`: clean the prompt list, say which prompts the model
  cuts, encode (and cache) the prompts;
- :meth:`~TorchSegmenter._segment`: one image to instances (and probability maps), timing
  its stages with the timer it is given.
"""

import logging
import threading
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from zs_perception.segmentation.base import check_rgb_image, Instance, Prompt, PromptLike
from zs_perception.segmentation.base import PromptReport, SegmentationResult, Segmenter
from zs_perception.segmentation.base import validate_thresholds
from zs_perception.segmentation.device import out_of_memory_as_error, resolve_device
from zs_perception.segmentation.device import resolve_dtype, StageTimer
from zs_perception.segmentation.prompting import normalize_text_prompts

logger = logging.getLogger(__name__)


class TorchSegmenter(Segmenter):
    """A :class:`~zs_perception.segmentation.base.Segmenter` whose models run in torch.

    Args:
        device: where the backend's models run.
        **thresholds: a value for each name in :attr:`THRESHOLDS` (validated, then set as
            attributes).

    Raises:
        ValueError: a threshold is unknown, missing or invalid.

    """

    #: Backend name, as in :data:`~zs_perception.segmentation.factory.BACKENDS` (for logs
    #: and messages).
    name = ''
    #: True for backends whose results carry per-prompt probability maps (then an empty
    #: result carries a ``(0, H, W)`` array).
    dense_maps = False

    def __init__(self, device: torch.device, **thresholds):
        missing = [name for name in self.THRESHOLDS if name not in thresholds]
        if missing:
            raise ValueError(f'{type(self).__name__} needs thresholds {missing}.')
        validate_thresholds(type(self).__name__, self.THRESHOLDS, thresholds)
        for name, value in thresholds.items():
            setattr(self, name, value)
        self._device = device
        self._lock = threading.RLock()
        self._active: List[Prompt] = []

    @classmethod
    def from_settings(cls, *, device: str = 'auto', precision: str = 'auto',
                      allow_random_weights: bool = False, **settings) -> 'TorchSegmenter':
        """Load the backend's models named by the settings and return a ready segmenter.

        Args:
            device: ``'auto'``, ``'cuda'``, ``'cuda:N'`` or ``'cpu'``.
            precision: ``'auto'``, ``'fp32'``, ``'fp16'`` or ``'bf16'``.
            allow_random_weights: accept models marked as random weights.
            **settings: the backend's model settings and thresholds (see its ``_load``).

        Raises:
            ValueError: unknown device, precision or model type, or a bad threshold (checked
                before anything is loaded).
            ModelLoadError: weights missing, wrong or random (not allowed).

        """
        thresholds = {k: v for k, v in settings.items() if k in cls.THRESHOLDS}
        validate_thresholds(cls.__name__, cls.THRESHOLDS, thresholds)
        torch_device = resolve_device(device)
        dtype = resolve_dtype(precision, torch_device)
        segmenter, models = cls._load(torch_device, dtype, allow_random_weights, **settings)
        logger.info('Segmentation backend %s on %s in %s (%s).', cls.name, torch_device, dtype,
                    models)
        return segmenter

    @classmethod
    def _load(cls, device: torch.device, dtype: torch.dtype, allow_random_weights: bool,
              **settings) -> Tuple['TorchSegmenter', str]:
        """Load the models and build the segmenter; return it and a text naming the models."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """The device the models run on."""
        return self._device

    @property
    def prompts(self) -> List[str]:
        """Labels of the active prompts, in order."""
        return [p.label for p in self._active]

    def set_thresholds(self, **kwargs) -> None:
        """Change any of :attr:`THRESHOLDS` without reloading the models.

        Raises:
            ValueError: an unknown name or an invalid value.

        """
        with self._lock:
            super().set_thresholds(**kwargs)

    def set_prompts(self, prompts: Sequence[PromptLike]) -> PromptReport:
        """Replace the active prompts; only prompts not seen before are encoded.

        Raises:
            ValueError: a prompt is neither ``str`` nor ``Prompt``, an image prompt is not
                ``(h, w, 3)`` ``uint8``, or the model cannot take the prompts together.
            DeviceOutOfMemoryError: the accelerator ran out of memory; the previous prompts
                stay active.

        """
        with self._lock:
            active, dropped = self._normalize_prompts(prompts)
            truncated = [(p.label, reason) for p in active if p.text is not None
                         for reason in [self._truncation(p.text)] if reason]
            with out_of_memory_as_error(self.device, f'encoding {len(active)} prompts'), \
                    torch.inference_mode():
                self._encode_prompts(active)
            self._active = active
            return PromptReport(active=self.prompts, dropped=dropped, truncated=truncated)

    def segment(self, image: np.ndarray) -> SegmentationResult:
        """Segment one ``(H, W, 3)`` ``uint8`` RGB image with the active prompts.

        Raises:
            ValueError: the image has the wrong type, dtype or shape.
            DeviceOutOfMemoryError: the accelerator ran out of memory; the segmenter can be
                called again.

        """
        image = check_rgb_image(image)
        height, width = image.shape[:2]
        with self._lock:
            if self.needs_prompts and not self._active:
                return SegmentationResult(
                    instances=[], probabilities=np.zeros((0, height, width), np.float32)
                    if self.dense_maps else None)
            timer = StageTimer(self.device)
            with out_of_memory_as_error(
                    self.device, f'segmenting a {width}x{height} image with '
                    f'{len(self._active)} prompts'), torch.inference_mode():
                instances, probabilities = self._segment(image, timer)
            return SegmentationResult(instances=instances, timings=timer.timings,
                                      probabilities=probabilities)

    # Hooks.

    def _normalize_prompts(self, prompts: Sequence[PromptLike]
                           ) -> Tuple[List[Prompt], List[tuple]]:
        """Return ``(active, dropped)``; text-only by default (image prompts are dropped)."""
        return normalize_text_prompts(prompts, self.name)

    def _truncation(self, text: str) -> Optional[str]:
        """Say why the model cuts the text prompt ``text`` (None: used whole)."""
        return None

    def _encode_prompts(self, active: List[Prompt]) -> None:
        """Encode the prompts about to become active (under inference mode and the lock)."""
        raise NotImplementedError

    def _segment(self, image: np.ndarray, timer: StageTimer
                 ) -> Tuple[List[Instance], Optional[np.ndarray]]:
        """Segment a checked image with at least one active prompt (or any, without prompts).

        Returns:
            ``(instances, probabilities)``: instances highest score first; ``(N, H, W)``
            ``float32`` per-prompt maps or None.

        """
        raise NotImplementedError


def token_limit_reason(count: int, limit: int, model: str, effect: str) -> Optional[str]:
    """Describe a prompt over a text encoder's token limit, or None when it fits.

    Args:
        count: the prompt's tokens.
        limit: the encoder's limit.
        model: names the encoder, e.g. ``'text encoder'``.
        effect: what happens to the rest, e.g. ``'the rest is cut off'``.

    """
    if count <= limit:
        return None
    return f'{count} tokens, over the {model} limit of {limit}; {effect}'
