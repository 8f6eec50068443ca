"""Inputs of an annotation run: a folder of images or a replay directory, read one image at a time.

* **Image folder**: every file under the folder (recursively, hidden files and folders left
  out) whose extension is one of :data:`IMAGE_EXTENSIONS`, in sorted relative-path order.
  Files with other extensions are not images and are only counted.
* **Replay directory** (:mod:`zs_perception.replay_directory`: colour images, optional depth,
  ``camera_info.json``): its frames in play order; with depth, each frame also carries its
  depth in metres and the camera intrinsics, and the run adds 3D boxes to the records.

A rosbag2 recording is recognised and refused with a message saying how to convert it, until
bag reading lands in the package.

Every item has a ``key``: a file-name-safe name, unique in the source and stable between runs
over the same files, that names its record, overlay and YOLO files.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple, Union

import numpy as np

from zs_perception.geometry.camera import CameraIntrinsics
from zs_perception.replay_directory import INTRINSICS_FILES, read_color, ReplayDirectory

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
SOURCE_KINDS = ('auto', 'folder', 'replay')
_BAG_SUFFIXES = ('.db3', '.mcap')
_KEY_SEPARATOR = '__'


@dataclass
class Frame:
    """One decoded input image.

    Attributes:
        rgb: ``(H, W, 3)`` ``uint8`` RGB.
        depth_m: ``(H, W)`` ``float32`` metres along the optical axis (NaN: no reading),
            registered to ``rgb``; ``None`` without depth.
        intrinsics: pinhole intrinsics of ``rgb`` and ``depth_m``; ``None`` for a folder.

    """

    rgb: np.ndarray
    depth_m: Optional[np.ndarray] = None
    intrinsics: Optional[CameraIntrinsics] = None


@dataclass
class SourceItem:
    """One input image, not decoded yet.

    Attributes:
        key: unique, file-name-safe name (the relative path with ``/`` as ``__``, extension
            dropped unless two files would otherwise share a key).
        file_name: path relative to the source directory, ``/``-separated (the COCO
            ``file_name``).
        path: the colour image file.
        depth_path: the depth file, or ``None``.
        depth_file: ``depth_path`` relative to the source directory, or ``None``.
        read: decodes the image; raises ``ValueError`` (or ``OSError``) when it cannot.

    """

    key: str
    file_name: str
    path: Path
    depth_path: Optional[Path]
    read: Callable[[], Frame]
    depth_file: Optional[str] = None


@dataclass
class Source:
    """The items of one input and what was left out of it.

    Attributes:
        kind: ``'folder'`` or ``'replay'``.
        root: the input directory.
        items: the images, in order.
        has_depth: whether items carry depth and intrinsics.
        ignored: relative paths of files that are not images (by extension).

    """

    kind: str
    root: Path
    items: List[SourceItem]
    has_depth: bool = False
    ignored: Tuple[str, ...] = ()


def open_source(path: Union[str, Path], kind: str = 'auto',
                exclude: Optional[Path] = None) -> Source:
    """Scan an input path; nothing is decoded yet.

    Args:
        path: a folder of images or a replay directory.
        kind: ``'auto'`` (a replay directory when it holds one of
            :data:`~zs_perception.replay_directory.INTRINSICS_FILES`, else a folder),
            ``'folder'`` or ``'replay'``.
        exclude: a directory under ``path`` to leave out (the run's output folder).

    Raises:
        FileNotFoundError: the path does not exist or holds no image.
        ValueError: an unknown ``kind``, a rosbag2 recording, or a malformed replay directory.

    """
    if kind not in SOURCE_KINDS:
        raise ValueError(f'Unknown input kind {kind!r}; expected one of '
                         f'{", ".join(SOURCE_KINDS)}.')
    root = Path(path)
    if root.suffix in _BAG_SUFFIXES or (root.is_dir() and (root / 'metadata.yaml').is_file()):
        raise ValueError(
            f'{str(root)!r} is a rosbag2 recording, which this command cannot read yet. Play it '
            'and record the frames as a replay directory (NNNNNN-color.png, NNNNNN-depth.png, '
            'camera_info.json; see zs_perception/replay_directory.py), or export its images '
            'to a folder, and annotate that.')
    if not root.is_dir():
        raise FileNotFoundError(f'Input {str(root)!r} is not a directory; pass a folder of '
                                'images or a replay directory.')
    has_intrinsics = any((root / name).is_file() for name in INTRINSICS_FILES)
    if kind == 'replay' or (kind == 'auto' and has_intrinsics):
        return _replay_source(root)
    return _folder_source(root, exclude)


def _folder_source(root: Path, exclude: Optional[Path]) -> Source:
    exclude = exclude.resolve() if exclude is not None else None
    images, ignored = [], []
    for path in sorted(root.rglob('*')):
        rel = path.relative_to(root)
        if any(part.startswith('.') for part in rel.parts) or not path.is_file():
            continue
        if exclude is not None and path.resolve().is_relative_to(exclude):
            continue
        (images if path.suffix.lower() in IMAGE_EXTENSIONS else ignored).append(rel)
    if not images:
        raise FileNotFoundError(
            f'Input folder {str(root)!r} holds no image (expected files ending in '
            f'{", ".join(IMAGE_EXTENSIONS)}).')
    keys = _keys(images)
    items = [SourceItem(key=key, file_name=rel.as_posix(), path=root / rel, depth_path=None,
                        read=_reader(root / rel))
             for key, rel in zip(keys, images)]
    return Source(kind='folder', root=root, items=items,
                  ignored=tuple(p.as_posix() for p in ignored))


def _replay_source(root: Path) -> Source:
    replay = ReplayDirectory(root)
    rels = [p.relative_to(root) for p in replay.color_paths]
    items = []
    for index, (key, rel) in enumerate(zip(_keys(rels), rels)):
        depth = replay.depth_paths[index] if replay.has_depth else None
        items.append(SourceItem(key=key, file_name=rel.as_posix(), path=root / rel,
                                depth_path=depth, read=_replay_reader(replay, index),
                                depth_file=depth.relative_to(root).as_posix() if depth else None))
    return Source(kind='replay', root=root, items=items, has_depth=replay.has_depth)


def _reader(path: Path) -> Callable[[], Frame]:
    return lambda: Frame(rgb=read_color(path))


def _replay_reader(replay: ReplayDirectory, index: int) -> Callable[[], Frame]:
    def read() -> Frame:
        frame = replay.load(index)
        return Frame(rgb=frame.rgb, depth_m=frame.depth_m,
                     intrinsics=replay.intrinsics if frame.depth_m is not None else None)
    return read


def _keys(rels: List[Path]) -> List[str]:
    """File-name-safe unique keys: relative path without extension, ``/`` as ``__``."""
    def flat(rel: Path, keep_suffix: bool) -> str:
        parts = list(rel.parts)
        parts[-1] = rel.name.replace('.', '_') if keep_suffix else rel.stem
        return _KEY_SEPARATOR.join(parts)

    plain = [flat(rel, False) for rel in rels]
    counts = {}
    for key in plain:
        counts[key] = counts.get(key, 0) + 1
    keys = [key if counts[key] == 1 else flat(rel, True) for key, rel in zip(plain, rels)]
    seen = set()
    for i, key in enumerate(keys):  # 'a__b.png' beside 'a/b.png': number the later one
        n = 1
        while keys[i] in seen:
            keys[i] = f'{key}_{n}'
            n += 1
        seen.add(keys[i])
    return keys
