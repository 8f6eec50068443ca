"""Prompts in one place: the goal string split into phrases, and the backends' prompt lists.

:func:`parse_goal` turns a goal that arrives from anyone on the ``goal`` topic (any string)
into phrases: split on commas and semicolons, whitespace collapsed, non-printable characters
made spaces, empty segments ignored, duplicates dropped, over-long phrases cut, phrases over
the count limit dropped; what was changed comes back with a reason so the node can warn.
:func:`normalize_prompts` cleans a caller's prompt list (text and image prompts) for a
backend. Both recognise duplicates by :func:`text_key`.
"""

from dataclasses import dataclass, field
import hashlib
import re
from typing import Hashable, List, Sequence, Tuple

from zs_perception.segmentation.base import check_rgb_image, Prompt, PromptLike


def text_key(text: str) -> str:
    """Identity of a text prompt: case-insensitive, runs of whitespace collapsed."""
    return ' '.join(text.split()).casefold()


def prompt_key(prompt: Prompt) -> Hashable:
    """Identity of a prompt for de-duplication and embedding caches.

    Text prompts compare case-insensitively with runs of whitespace collapsed;
    image prompts compare by shape and pixel content.
    """
    if prompt.text is not None:
        return ('text', text_key(prompt.text))
    digest = hashlib.sha1(prompt.image.tobytes()).hexdigest()
    return ('image', prompt.image.shape, digest)


def normalize_prompts(prompts: Sequence[PromptLike]) -> Tuple[List[Prompt], List[tuple]]:
    """Turn a caller's prompt list into the prompts to encode.

    Strings become text prompts labelled with the stripped text. Text is
    stripped of surrounding whitespace; empty prompts and duplicates of an
    earlier prompt (see :func:`prompt_key`) are dropped.

    Args:
        prompts: ``str`` phrases and/or :class:`Prompt` objects.

    Returns:
        ``(active, dropped)``: the prompts kept, in order, and ``(prompt,
        reason)`` for each one dropped.

    Raises:
        ValueError: an entry is neither ``str`` nor ``Prompt``, or an image
            prompt is not an ``(h, w, 3)`` ``uint8`` RGB array.

    """
    if isinstance(prompts, (str, Prompt)):
        prompts = [prompts]
    active, dropped, seen = [], [], {}
    for i, raw in enumerate(prompts):
        if isinstance(raw, str):
            prompt = Prompt(label=raw.strip(), text=raw.strip())
        elif isinstance(raw, Prompt):
            prompt = raw
            if raw.text is not None:
                text = raw.text.strip()
                prompt = Prompt(label=raw.label.strip() or text, text=text)
            else:
                try:
                    check_rgb_image(raw.image)
                except ValueError as exc:
                    raise ValueError(f'Image prompt {i} ({raw.label!r}): {exc}') from exc
        else:
            raise ValueError(
                f'Prompt {i}: expected a str or a Prompt, got {type(raw).__name__} ({raw!r}).')
        if prompt.text is not None and not prompt.text:
            dropped.append((raw, 'empty after stripping whitespace'))
            continue
        key = prompt_key(prompt)
        if key in seen:
            dropped.append((raw, f'duplicate of prompt {seen[key][0]} ({seen[key][1]!r})'))
            continue
        seen[key] = (len(active), prompt.label)
        active.append(prompt)
    return active, dropped


def normalize_text_prompts(prompts: Sequence[PromptLike],
                           backend: str) -> Tuple[List[Prompt], List[tuple]]:
    """As :func:`normalize_prompts`, for a backend that takes text only.

    Image prompts are dropped with a reason naming ``backend`` and the backends that take them.
    """
    normalized, dropped = normalize_prompts(prompts)
    active = []
    for prompt in normalized:
        if prompt.text is None:
            dropped.append((prompt, f'image prompts are not supported by {backend}; use text '
                            'phrases or the clipseg backends'))
        else:
            active.append(prompt)
    return active, dropped


_SEPARATORS = re.compile(r'[,;]')
# Phrases quoted per reason in a warning; the rest are counted.
_EXAMPLES_PER_REASON = 3
_EXAMPLE_CHARS = 40


@dataclass
class ParsedGoal:
    """The phrases taken from one goal string, and what was not taken as given.

    Attributes:
        phrases: the phrases to segment, in the order given, at most
            ``max_prompts``, each at most ``max_chars`` characters.
        dropped: ``(phrase, reason)`` for each phrase not used.
        truncated: ``(original phrase, reason)`` for each phrase that was cut.

    """

    phrases: List[str]
    dropped: List[Tuple[str, str]] = field(default_factory=list)
    truncated: List[Tuple[str, str]] = field(default_factory=list)

    def warning(self) -> str:
        """Describe what was dropped or cut, or return ``''`` if the goal was used as given.

        The text stays short for any input: at most a few phrases are quoted
        per reason, each shortened, and the rest are counted.
        """
        parts = []
        for verb, items in (('dropped', self.dropped), ('cut', self.truncated)):
            by_reason = {}
            for phrase, reason in items:
                by_reason.setdefault(reason, []).append(phrase)
            for reason, phrases in by_reason.items():
                quoted = ', '.join(repr(_shorten(p)) for p in phrases[:_EXAMPLES_PER_REASON])
                more = len(phrases) - _EXAMPLES_PER_REASON
                parts.append(f'{verb} {len(phrases)} phrase{"s" if len(phrases) != 1 else ""} '
                             f'({reason}): {quoted}{f" and {more} more" if more > 0 else ""}')
        if not parts:
            return ''
        return f'goal: using {len(self.phrases)} phrase(s); ' + '; '.join(parts)


def parse_goal(text: str, max_prompts: int, max_chars: int) -> ParsedGoal:
    """Split a goal string into phrases.

    Args:
        text: phrases separated by commas or semicolons; ``''`` (or only
            separators and spaces) means no goal.
        max_prompts: most phrases kept; later ones are dropped.
        max_chars: longest phrase kept, in characters; longer ones are cut at
            the last space before the limit (or at the limit if none).

    Returns:
        The phrases and what was dropped or cut, with reasons. Duplicates are
        recognised ignoring case, after cutting.

    Raises:
        ValueError: if ``text`` is not a string or a limit is below 1.

    """
    if not isinstance(text, str):
        raise ValueError(f'goal must be a string, got {type(text).__name__}.')
    if max_prompts < 1 or max_chars < 1:
        raise ValueError(
            f'max_prompts and max_chars must be at least 1, got {max_prompts} and {max_chars}.')
    goal = ParsedGoal(phrases=[])
    seen = set()
    for raw in _SEPARATORS.split(text):
        phrase = ' '.join(''.join(c if c.isprintable() else ' ' for c in raw).split())
        if not phrase:
            if raw.strip():
                goal.dropped.append((raw, 'only non-printable characters'))
            continue
        if len(phrase) > max_chars:
            cut = phrase[:max_chars]
            if phrase[max_chars] != ' ' and ' ' in cut:
                cut = cut.rsplit(' ', 1)[0]
            goal.truncated.append((phrase, f'longer than max_prompt_chars={max_chars}'))
            phrase = cut.rstrip()
        key = text_key(phrase)
        if key in seen:
            goal.dropped.append((phrase, 'duplicate'))
            continue
        if len(goal.phrases) >= max_prompts:
            goal.dropped.append((phrase, f'over max_prompts={max_prompts}'))
            continue
        seen.add(key)
        goal.phrases.append(phrase)
    return goal


def _shorten(phrase: str) -> str:
    return phrase if len(phrase) <= _EXAMPLE_CHARS else phrase[:_EXAMPLE_CHARS - 3] + '...'
