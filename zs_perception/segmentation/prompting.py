"""Prompt-list clean-up shared by the backends: strip, drop empty and duplicate prompts."""

import hashlib
from typing import Hashable, List, Sequence, Tuple

from zs_perception.segmentation.base import check_rgb_image, Prompt, PromptLike


def prompt_key(prompt: Prompt) -> Hashable:
    """Identity of a prompt for de-duplication and embedding caches.

    Text prompts compare case-insensitively with runs of whitespace collapsed;
    image prompts compare by shape and pixel content.
    """
    if prompt.text is not None:
        return ('text', ' '.join(prompt.text.split()).casefold())
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
