"""Turn a goal string such as ``'red mug; screwdriver'`` into a clean list of phrases.

The goal arrives from anyone on the ``goal`` topic, so any string must be
handled: phrases are split on commas and semicolons, whitespace is collapsed,
non-printable characters become spaces, empty segments (as in ``'a,,b,'``) are
ignored, duplicate phrases are dropped, over-long phrases are cut and phrases
over the count limit are dropped. What was changed is returned with a reason so
the node can warn about it.
"""

from dataclasses import dataclass, field
import re
from typing import List, Tuple

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
        key = phrase.casefold()
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
