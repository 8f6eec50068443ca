"""Inputs of an annotation run: an image folder, a replay directory or a bag, one image at a time.

* **Image folder**: every file under the folder (recursively, hidden files and folders left
  out) whose extension is one of :data:`IMAGE_EXTENSIONS`, in sorted relative-path order.
  Files with other extensions are not images and are only counted.
* **Replay directory** (:mod:`zs_perception.replay_directory`: colour images, optional depth,
  ``camera_info.json``): its frames in play order; with depth, each frame also carries its
  depth in metres and the camera intrinsics, and the run adds 3D boxes to the records.

* **rosbag2 recording** (a directory with ``metadata.yaml``, or one ``.mcap`` / ``.db3``
  file; read with :class:`zs_perception.bags.BagFrames`): one item per colour message, in
  recording order, keyed ``frame_NNNNNN`` (its index, six digits) and named
  ``images/frame_NNNNNN.png`` (``file_name``: where the run writes the decoded frame,
  relative to the output's ``yolo/`` folder, since the bag holds no image file). Depth and
  camera info of the same stamp come with the frame when the bag has them (3D boxes as for
  a replay directory); topics are chosen by name or found by type
  (:func:`zs_perception.bags.choose_topics`). ``path`` is the bag's storage file, whose
  size and modification time identify it when a run resumes.

Every item has a ``key``: a file-name-safe name, unique in the source and stable between runs
over the same files, that names its record, overlay and YOLO files.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from zs_perception.bags import BagFrames
from zs_perception.geometry.camera import CameraIntrinsics
from zs_perception.replay_directory import INTRINSICS_FILES, read_color, ReplayDirectory

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
SOURCE_KINDS = ('auto', 'folder', 'replay', 'bag')
BAG_SUFFIXES = ('.db3', '.mcap')
# Bag items have no image file: the run writes the decoded frame as a PNG here (under yolo/).
BAG_IMAGE_DIR = 'images'
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
        stamp_ns: header stamp of a bag frame (integer ns), else ``None``.
        in_container: the image is a message inside ``path`` (a bag), not a file of its
            own: the run writes the decoded frame as ``file_name`` under ``yolo/``.

    """

    key: str
    file_name: str
    path: Path
    depth_path: Optional[Path]
    read: Callable[[], Frame]
    depth_file: Optional[str] = None
    stamp_ns: Optional[int] = None
    in_container: bool = False


@dataclass
class Source:
    """The items of one input and what was left out of it.

    Attributes:
        kind: ``'folder'``, ``'replay'`` or ``'bag'``.
        root: the input directory (or bag file).
        items: the images, in order.
        has_depth: whether items carry depth and intrinsics.
        ignored: relative paths of files that are not images (by extension).
        topics: a bag's chosen ``{'image', 'depth', 'camera_info'}`` topics (``None``:
            none of that role); empty for other kinds.

    """

    kind: str
    root: Path
    items: List[SourceItem]
    has_depth: bool = False
    ignored: Tuple[str, ...] = ()
    topics: Dict[str, Optional[str]] = field(default_factory=dict)


def is_bag(path: Union[str, Path]) -> bool:
    """Whether ``path`` looks like a rosbag2 recording (``metadata.yaml`` or a bag file)."""
    path = Path(path)
    return (path.is_file() and path.suffix in BAG_SUFFIXES) \
        or (path.is_dir() and (path / 'metadata.yaml').is_file())


def open_source(path: Union[str, Path], kind: str = 'auto',
                exclude: Optional[Path] = None,
                bag_topics: Optional[Dict[str, str]] = None) -> Source:
    """Scan an input path; nothing is decoded yet (a bag's messages are read into memory).

    Args:
        path: a folder of images, a replay directory or a rosbag2 recording.
        kind: ``'auto'`` (a bag when :func:`is_bag`, a replay directory when it holds one of
            :data:`~zs_perception.replay_directory.INTRINSICS_FILES`, else a folder),
            ``'folder'``, ``'replay'`` or ``'bag'``.
        exclude: a directory under ``path`` to leave out (the run's output folder).
        bag_topics: ``{'image': ..., 'depth': ..., 'camera_info': ...}`` topic names of a
            bag; a missing or empty one is found by type.

    Raises:
        FileNotFoundError: the path does not exist or holds no image.
        ValueError: an unknown ``kind``, a malformed replay directory, or a bag that cannot
            be read (:class:`zs_perception.bags.BagError`).

    """
    if kind not in SOURCE_KINDS:
        raise ValueError(f'Unknown input kind {kind!r}; expected one of '
                         f'{", ".join(SOURCE_KINDS)}.')
    root = Path(path)
    if kind == 'bag' or (kind == 'auto' and is_bag(root)):
        return _bag_source(root, bag_topics or {})
    if not root.is_dir():
        raise FileNotFoundError(f'Input {str(root)!r} is not a directory; pass a folder of '
                                'images, a replay directory or a rosbag2 recording.')
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


def _bag_source(root: Path, topics: Dict[str, str]) -> Source:
    bag = BagFrames(root, image_topic=topics.get('image') or '',
                    depth_topic=topics.get('depth') or '',
                    camera_info_topic=topics.get('camera_info') or '')
    if not len(bag):
        raise FileNotFoundError(f'Bag {str(root)!r} holds no message on its colour topic '
                                f'{bag.topics["image"]!r}; pass --bag-image-topic to choose '
                                'another.')
    storage = _bag_storage_file(bag.path)
    items = []
    for index, frame in enumerate(bag.frames):
        key = f'frame_{index:06d}'
        items.append(SourceItem(key=key, file_name=f'{BAG_IMAGE_DIR}/{key}.png', path=storage,
                                depth_path=None, read=_bag_reader(bag, index),
                                stamp_ns=frame.stamp_ns, in_container=True))
    return Source(kind='bag', root=bag.path, items=items, has_depth=bag.has_depth,
                  topics=dict(bag.topics))


def _bag_storage_file(path: Path) -> Path:
    """Return the file whose stat identifies a bag: itself, or a directory's largest one."""
    if path.is_file():
        return path
    files = [p for p in path.iterdir() if p.is_file() and p.suffix in BAG_SUFFIXES]
    return max(files, key=lambda p: (p.stat().st_size, p.name)) if files \
        else path / 'metadata.yaml'


def _bag_reader(bag: BagFrames, index: int) -> Callable[[], Frame]:
    def read() -> Frame:
        rgb, depth_m, intrinsics = bag.decode(index)
        if depth_m is None or intrinsics is None:  # 3D boxes need both
            return Frame(rgb=rgb)
        return Frame(rgb=rgb, depth_m=depth_m, intrinsics=intrinsics)
    return read


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
