"""Crash-safe files of an annotation run: atomic writes and the per-image records.

Every file is written to a temporary name in its final directory, flushed to disk and then
moved into place with :func:`os.replace`, so a reader (or a resumed run) sees either the old
file or the whole new one, never a partial one, whatever interrupts the writer. Leftover
temporary files of a killed run carry :data:`TMP_MARKER` in their name and are removed when
the next run starts.
"""

import json
import os
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Union

TMP_MARKER = '.tmp-'
# Version of the record and manifest layout; a resumed run refuses other versions.
FORMAT_VERSION = 1


def atomic_write(path: Union[str, Path], write: Callable[[Path], None]) -> Path:
    """Write a file atomically.

    Args:
        path: the final path; its directory is created if missing.
        write: called with a temporary path in the same directory; must create that file.

    Returns:
        ``path``.

    Raises:
        OSError: the directory is not writable or the disk is full (the temporary file is
            removed and ``path`` is left as it was).

    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f'.{path.name}{TMP_MARKER}{os.getpid()}{path.suffix}')
    try:
        write(tmp)
        with open(tmp, 'rb+') as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text(path: Union[str, Path], text: str) -> Path:
    """Write a UTF-8 text file atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding='utf-8'))


def write_json(path: Union[str, Path], data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically (see :func:`atomic_write`)."""
    return write_text(path, json.dumps(data, indent=1, ensure_ascii=False) + '\n')


def read_json(path: Union[str, Path]) -> Optional[Dict[str, Any]]:
    """Read a JSON object written by :func:`write_json`; ``None`` if missing or not an object."""
    try:
        data = json.loads(Path(path).read_text(encoding='utf-8'))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def remove_stale_temporaries(directory: Union[str, Path]) -> int:
    """Delete temporary files a killed run left under ``directory``; return how many."""
    count = 0
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    for path in directory.rglob(f'.*{TMP_MARKER}*'):
        if path.is_file():
            path.unlink()
            count += 1
    return count
