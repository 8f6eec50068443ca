"""Labels of an annotation run: a vocabulary given by the user, or tags found in each image.

A vocabulary is phrases separated by commas, semicolons or new lines (a file may also hold
``#`` comments), split as the node splits a goal
(:func:`zs_perception.segmentation.prompting.parse_goal`).

Without a vocabulary each image is tagged first, the role RAM plays in Grounded-SAM's
automatic labelling: the ``zero_guidance`` backend (Segment Anything segments everything,
CLIP names each segment from a tag vocabulary, default
:data:`~zs_perception.segmentation.zero_guidance.DEFAULT_VOCABULARY`) runs on the image, and
the names it gives with at least the tag threshold, best first, become the prompts of the
chosen backend for that image.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Union

import numpy as np

from zs_perception.config import SPECS
from zs_perception.segmentation.base import Segmenter
from zs_perception.segmentation.prompting import parse_goal

# Longest vocabulary; far more than a text encoder can tell apart in one image.
MAX_VOCABULARY = 10_000


def parse_vocabulary(text: str) -> List[str]:
    """Split a vocabulary string into phrases (commas, semicolons or new lines; ``#`` comments).

    Duplicates (ignoring case) are dropped; over-long phrases are cut at the node's
    ``max_prompt_chars`` default.
    """
    lines = [line.split('#', 1)[0] for line in str(text).splitlines()]
    return parse_goal(','.join(lines), MAX_VOCABULARY, SPECS['max_prompt_chars'].default).phrases


def read_vocabulary_file(path: Union[str, Path]) -> List[str]:
    """Read a vocabulary file (see :func:`parse_vocabulary`).

    Raises:
        ValueError: the file cannot be read as UTF-8 text.

    """
    try:
        return parse_vocabulary(Path(path).read_text(encoding='utf-8'))
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f'Cannot read the vocabulary file {str(path)!r}: {exc}. Expected a '
                         'UTF-8 text file with one label per line (or comma-separated).') from exc


@dataclass
class Tag:
    """One tag of an image.

    Attributes:
        label: the vocabulary phrase.
        score: the best CLIP label probability of a segment with this label, in ``[0, 1]``.
        segments: how many segments got this label.

    """

    label: str
    score: float
    segments: int


class Tagger:
    """Tags images with a ``zero_guidance`` segmenter (no goal: every segment is named).

    Args:
        segmenter: built by ``create_segmenter('zero_guidance', vocabulary=...,
            threshold=tag_threshold, ...)``.
        max_tags: at most this many tags per image, best first.

    """

    def __init__(self, segmenter: Segmenter, max_tags: int = 10):
        if int(max_tags) < 1:
            raise ValueError(f'max_tags must be at least 1, got {max_tags!r}.')
        self.segmenter = segmenter
        self.max_tags = int(max_tags)
        segmenter.set_prompts([])

    def tag(self, rgb: np.ndarray) -> List[Tag]:
        """Tag one ``(H, W, 3)`` ``uint8`` RGB image; best score first (ties: label order)."""
        found: Dict[str, Tag] = {}
        for instance in self.segmenter.segment(rgb).instances:
            tag = found.setdefault(instance.label, Tag(instance.label, 0.0, 0))
            tag.score = max(tag.score, float(instance.score))
            tag.segments += 1
        tags = sorted(found.values(), key=lambda t: (-t.score, t.label))
        return tags[:self.max_tags]
