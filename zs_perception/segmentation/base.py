"""The segmenter interface shared by every backend, and the types it returns.

A backend turns one RGB image plus the active prompts into instances: one
full-resolution boolean mask per object found, with the prompt that matched it
and a score. Backends are plain Python/torch; nothing here imports ROS.
"""

import abc
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np


class SegmentationError(RuntimeError):
    """Base class of the errors a backend raises at run time."""


class ModelLoadError(SegmentationError):
    """Weights or configuration could not be found or loaded; says where and how to fetch them."""


class DeviceOutOfMemoryError(SegmentationError):
    """The accelerator ran out of memory for this frame; the segmenter stays usable."""


@dataclass(frozen=True)
class Prompt:
    """One thing to look for.

    Exactly one of ``text`` and ``image`` is set.

    Attributes:
        label: name reported for instances that match (the text itself for a
            text prompt, a caller-chosen name for an image prompt).
        text: a phrase such as ``'red mug'``.
        image: an example image, ``(h, w, 3)`` ``uint8`` RGB ("find things like
            this crop").

    """

    label: str
    text: Optional[str] = None
    image: Optional[np.ndarray] = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if (self.text is None) == (self.image is None):
            raise ValueError(
                f'Prompt {self.label!r}: exactly one of text and image must be set, '
                f'got text={self.text!r} and image={"set" if self.image is not None else None}.')


PromptLike = Union[str, Prompt]


@dataclass
class Instance:
    """One object found in an image.

    Attributes:
        label: label of the prompt that matched (``Prompt.label``).
        prompt_index: index of that prompt in the active prompt list.
        score: confidence in ``[0, 1]``.
        box: ``(4,)`` ``float32`` ``[x0, y0, x1, y1]`` in pixels of the input
            image, x1/y1 exclusive (the box of the mask's true pixels).
        mask: ``(H, W)`` ``bool`` at the input image's resolution, True on
            the object.
        track_id: the object's id from a video tracker (``>= 1``, the same object in
            successive frames; see ``zs_perception.segmentation.propagation``), or
            ``-1`` when the segmenter does not track.

    """

    label: str
    prompt_index: int
    score: float
    box: np.ndarray
    mask: np.ndarray
    track_id: int = -1


@dataclass
class SegmentationResult:
    """What a segmenter found in one image.

    Attributes:
        instances: objects found, highest score first.
        timings: seconds spent per stage (e.g. ``'preprocess'``, ``'encode'``,
            ``'decode'``, ``'postprocess'``), for diagnostics and benchmarks.
        probabilities: ``(N, H, W)`` ``float32`` per-prompt probability maps
            in ``[0, 1]`` at the input image's resolution, in prompt order,
            for backends that produce dense maps (None otherwise).

    """

    instances: List[Instance]
    timings: Dict[str, float] = field(default_factory=dict)
    probabilities: Optional[np.ndarray] = field(default=None, repr=False)


@dataclass
class PromptReport:
    """What :meth:`Segmenter.set_prompts` did with the prompts it was given.

    Attributes:
        active: labels now active, in order.
        dropped: ``(prompt, reason)`` for each prompt not used (duplicates,
            empty, over the limit).
        truncated: ``(label, reason)`` for each prompt shortened to fit the
            model (e.g. over the text encoder's token limit).

    """

    active: List[str]
    dropped: List[tuple] = field(default_factory=list)
    truncated: List[tuple] = field(default_factory=list)


class Segmenter(abc.ABC):
    """Finds the objects named by the active prompts in RGB images.

    Usage::

        seg.set_prompts(['red mug', 'screwdriver'])   # encoded once, cached
        result = seg.segment(rgb)                     # any number of frames

    """

    @abc.abstractmethod
    def set_prompts(self, prompts: Sequence[PromptLike]) -> PromptReport:
        """Replace the active prompts; encodes them once and caches the embeddings.

        Args:
            prompts: text phrases (``str``) or :class:`Prompt` objects. An
                empty sequence clears the prompts (then :meth:`segment`
                returns no instances).

        Returns:
            A :class:`PromptReport` saying which prompts are active and which
            were dropped or truncated, and why.

        """

    @abc.abstractmethod
    def segment(self, image: np.ndarray) -> SegmentationResult:
        """Segment one image with the active prompts.

        Args:
            image: ``(H, W, 3)`` ``uint8`` RGB.

        Returns:
            The instances found, each with an ``(H, W)`` bool mask.

        Raises:
            ValueError: the image has the wrong dtype, shape or channel count.
            DeviceOutOfMemoryError: the accelerator ran out of memory; the
                segmenter can be called again.

        """

    @property
    @abc.abstractmethod
    def prompts(self) -> List[str]:
        """Labels of the active prompts, in order."""

    #: Names of the run-time thresholds :meth:`set_thresholds` accepts.
    THRESHOLDS: Tuple[str, ...] = ('threshold', 'min_area_px', 'max_objects')

    #: False for backends that find objects with no prompt at all (zero-guidance): the
    #: caller then segments frames even while no goal is set.
    needs_prompts = True

    def set_thresholds(self, **kwargs) -> None:
        """Change any of :attr:`THRESHOLDS` without reloading the models.

        Raises:
            ValueError: an unknown name or an invalid value (see :func:`validate_thresholds`).

        """
        validate_thresholds(type(self).__name__, self.THRESHOLDS, kwargs)
        for name, value in kwargs.items():
            setattr(self, name, value)


def validate_thresholds(owner: str, allowed: Sequence[str], values: Dict[str, object]) -> None:
    """Check run-time thresholds: names in ``allowed``; fractions in [0, 1]; counts ints >= 0.

    ``threshold`` and names ending in ``_iou`` or ``_weight`` are fractions; every other
    name is a count.

    Raises:
        ValueError: naming the threshold, the value and what was expected.

    """
    for name, value in values.items():
        if name not in allowed:
            raise ValueError(f'{owner} has no threshold {name!r}; expected one of {allowed}.')
        if name == 'threshold' or name.endswith(('_iou', '_weight')):
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f'{name} must be a number in [0, 1], got {value!r}.')
        elif isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f'{name} must be an integer >= 0, got {value!r}.')


def check_rgb_image(image: np.ndarray) -> np.ndarray:
    """Validate an RGB input image.

    Args:
        image: expected ``(H, W, 3)`` ``uint8`` RGB.

    Returns:
        The same array (C-contiguous).

    Raises:
        ValueError: naming what was expected and what was received.

    """
    if not isinstance(image, np.ndarray):
        raise ValueError(
            f'Expected an (H, W, 3) uint8 RGB numpy array, got {type(image).__name__}.')
    if image.dtype != np.uint8:
        raise ValueError(
            f'Expected an (H, W, 3) uint8 RGB image, got dtype {image.dtype}; '
            'convert with (img * 255).clip(0, 255).astype(np.uint8) if it is float in [0, 1].')
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f'Expected an (H, W, 3) uint8 RGB image, got shape {image.shape}; '
            'convert mono or RGBA images to RGB first.')
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise ValueError(f'Expected an image of at least 2x2 pixels, got shape {image.shape}.')
    return np.ascontiguousarray(image)
