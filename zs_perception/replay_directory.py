"""Replay directories: colour images, optional depth images and camera intrinsics on disk.

A replay directory holds one recording, played back as camera topics by
``zs_perception.ros.replay`` and written by ``zs_perception.tools.make_demo_scene``.
Layout (either form)::

    DIR/camera_info.json            DIR/camera_info.json
    DIR/000000-color.png            DIR/color/000000.png
    DIR/000000-depth.png            DIR/depth/000000.png
    DIR/000001-color.jpg            DIR/color/000001.jpg
    DIR/000001-depth.npy            DIR/depth/000001.npy

* Colour: ``.png``, ``.jpg`` or ``.jpeg`` whose file name contains ``color`` (flat form),
  or every such image in ``DIR/color/``. Frames play in sorted file-name order.
* Depth (optional, for all frames or for none): the colour file name with its last
  ``color`` replaced by ``depth`` (flat form), or the same stem in ``DIR/depth/``, with
  extension ``.png`` (single-channel ``uint16``, ``depth_scale`` raw units per metre,
  default 1000 = millimetres, 0 = no reading) or ``.npy`` (``float32`` metres, or an integer
  array in ``depth_scale`` units). Depth is registered pixel-to-pixel to the colour image.
* Intrinsics: ``camera_info.json`` or ``intrinsics.json``: a JSON object with ``fx``,
  ``fy``, ``cx``, ``cy`` (pixels; or a row-major 3x3 ``K`` instead), ``width``, ``height``
  (pixels) and optionally ``depth_scale`` (raw depth units per metre, default 1000).

The frames in ``../shared/data/rgbd/<frame>/`` (``color.png``, ``depth.png``,
``camera_info.json``) are replay directories of one frame each.
"""

from dataclasses import dataclass
import json
from pathlib import Path
from typing import Iterator, List, Optional, Union

import cv2
import numpy as np

from zs_perception.geometry.camera import CameraIntrinsics
from zs_perception.geometry.depth import depth_to_metres

COLOR_EXTENSIONS = ('.png', '.jpg', '.jpeg')
DEPTH_EXTENSIONS = ('.png', '.npy')
INTRINSICS_FILES = ('camera_info.json', 'intrinsics.json')
DEFAULT_DEPTH_SCALE = 1000.0  # raw units per metre of a uint16 depth PNG: millimetres


@dataclass
class ReplayFrame:
    """One frame of a replay directory.

    Attributes:
        name: the colour file's stem, e.g. ``'000003-color'``.
        rgb: ``(H, W, 3)`` ``uint8`` RGB.
        depth_m: ``(H, W)`` ``float32`` metres along the optical axis, NaN where the
            sensor had no reading; ``None`` when the directory has no depth.

    """

    name: str
    rgb: np.ndarray
    depth_m: Optional[np.ndarray]


class ReplayDirectory:
    """The frames of a replay directory, read from disk one at a time.

    Attributes:
        directory: the directory.
        intrinsics: :class:`CameraIntrinsics` of every colour (and depth) image.
        depth_scale: raw units per metre of integer depth files.
        color_paths: colour image of each frame, in play order.
        depth_paths: depth file of each frame (same order), or ``None`` when the
            directory has no depth.

    """

    def __init__(self, directory: Union[str, Path]):
        """Scan ``directory`` and pair its files; nothing is decoded yet.

        Raises:
            FileNotFoundError: the directory, its colour images or its intrinsics file
                are missing.
            ValueError: the intrinsics file is malformed, or only some frames have depth.

        """
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise FileNotFoundError(
                f'Replay directory {str(self.directory)!r} does not exist or is not a '
                'directory. Make one with: python -m zs_perception.tools.make_demo_scene DIR')
        self.intrinsics, self.depth_scale = read_intrinsics(_find_intrinsics(self.directory))
        self.color_paths = _find_color_images(self.directory)
        depth = [_depth_path_for(self.directory, p) for p in self.color_paths]
        missing = [p.name for p, d in zip(self.color_paths, depth) if d is None]
        if len(missing) == len(depth):
            self.depth_paths: Optional[List[Path]] = None
        elif missing:
            raise ValueError(
                f'Replay directory {str(self.directory)!r}: {len(missing)} of '
                f'{len(depth)} colour images have no depth file (first: {missing[0]!r}). '
                'Depth must exist for every frame or for none; for each NAME-color.png add '
                'NAME-depth.png (uint16) or NAME-depth.npy (float32 metres), or remove '
                'the depth files.')
        else:
            self.depth_paths = depth

    def __len__(self) -> int:
        """Return the number of frames."""
        return len(self.color_paths)

    def __iter__(self) -> Iterator[ReplayFrame]:
        """Yield every frame in play order."""
        return (self.load(i) for i in range(len(self)))

    @property
    def has_depth(self) -> bool:
        """Whether every frame has a depth image."""
        return self.depth_paths is not None

    def load(self, index: int) -> ReplayFrame:
        """Read and decode frame ``index``.

        Raises:
            IndexError: ``index`` is out of range.
            ValueError: a file cannot be decoded, or an image's size differs from the
                intrinsics' ``width`` x ``height``.

        """
        if not 0 <= index < len(self):
            raise IndexError(f'Frame index {index} out of range: the directory has '
                             f'{len(self)} frames.')
        color_path = self.color_paths[index]
        rgb = read_color(color_path)
        self._check_size(color_path, rgb.shape[:2])
        depth_m = None
        if self.depth_paths is not None:
            depth_m = read_depth(self.depth_paths[index], self.depth_scale)
            self._check_size(self.depth_paths[index], depth_m.shape)
        return ReplayFrame(name=color_path.stem, rgb=rgb, depth_m=depth_m)

    def _check_size(self, path: Path, shape) -> None:
        expected = (self.intrinsics.height, self.intrinsics.width)
        if tuple(shape) != expected:
            raise ValueError(
                f'{str(path)!r} is {shape[1]}x{shape[0]} pixels but the intrinsics file says '
                f'{expected[1]}x{expected[0]}. Colour, depth and intrinsics must describe '
                'the same image size; fix width/height in the intrinsics file or resize '
                'the images (scaling fx, fy, cx, cy with them).')


def read_intrinsics(path: Union[str, Path]):
    """Read an intrinsics JSON file.

    Args:
        path: JSON object with ``fx``, ``fy``, ``cx``, ``cy`` (or ``K``: 9 numbers,
            row-major), ``width``, ``height`` and optionally ``depth_scale``.

    Returns:
        ``(CameraIntrinsics, depth_scale)``, ``depth_scale`` in raw units per metre.

    Raises:
        ValueError: a key is missing or a value is invalid.

    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f'Intrinsics file {str(path)!r} is not valid JSON: {exc}.') from exc
    if not isinstance(data, dict):
        raise ValueError(f'Intrinsics file {str(path)!r} must hold a JSON object, got '
                         f'{type(data).__name__}.')
    missing = [k for k in ('width', 'height') if k not in data]
    if not all(k in data for k in ('fx', 'fy', 'cx', 'cy')) and 'K' not in data:
        missing.append('fx, fy, cx, cy (or K)')
    if missing:
        raise ValueError(
            f'Intrinsics file {str(path)!r} lacks {", ".join(missing)}. Expected a JSON '
            'object like {"fx": 525.0, "fy": 525.0, "cx": 319.5, "cy": 239.5, '
            '"width": 640, "height": 480, "depth_scale": 1000.0}.')
    if all(k in data for k in ('fx', 'fy', 'cx', 'cy')):
        intrinsics = CameraIntrinsics(fx=float(data['fx']), fy=float(data['fy']),
                                      cx=float(data['cx']), cy=float(data['cy']),
                                      width=data['width'], height=data['height'])
    else:
        intrinsics = CameraIntrinsics.from_k(data['K'], data['width'], data['height'])
    depth_scale = float(data.get('depth_scale', DEFAULT_DEPTH_SCALE))
    if not (np.isfinite(depth_scale) and depth_scale > 0):
        raise ValueError(
            f'Intrinsics file {str(path)!r}: depth_scale must be the number of raw depth '
            f'units per metre (> 0; 1000 for millimetres), got {data["depth_scale"]!r}.')
    return intrinsics, depth_scale


def read_color(path: Union[str, Path]) -> np.ndarray:
    """Read a colour image file as ``(H, W, 3)`` ``uint8`` RGB (alpha dropped, grey expanded).

    Raises:
        ValueError: the file cannot be decoded as an image.

    """
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f'Cannot decode colour image {str(path)!r}: expected a PNG or JPEG.')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_depth(path: Union[str, Path], depth_scale: float = DEFAULT_DEPTH_SCALE) -> np.ndarray:
    """Read a depth file as ``(H, W)`` ``float32`` metres, NaN where there is no reading.

    Args:
        path: ``.png`` single-channel ``uint16`` in ``depth_scale`` units, or ``.npy``
            (floating point: metres; integer: ``depth_scale`` units).
        depth_scale: raw units per metre of integer depth.

    Raises:
        ValueError: the file cannot be decoded, or is not a single-channel depth image.

    """
    path = Path(path)
    if path.suffix.lower() == '.npy':
        raw = np.load(path, allow_pickle=False)
    else:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise ValueError(f'Cannot decode depth image {str(path)!r}: expected a '
                             'single-channel 16-bit PNG.')
        if raw.dtype != np.uint16:
            raise ValueError(
                f'Depth image {str(path)!r} has dtype {raw.dtype}, expected uint16 (raw '
                'depth units, e.g. millimetres). An 8-bit PNG is a visualisation, not depth.')
    if raw.ndim != 2:
        raise ValueError(f'Depth file {str(path)!r} has shape {raw.shape}, expected a '
                         'single-channel (H, W) image.')
    scale = 1.0 if raw.dtype.kind == 'f' else depth_scale
    return depth_to_metres(raw, scale)


def depth_to_millimetres(depth_m: np.ndarray) -> np.ndarray:
    """Convert ``float32`` metres to ``uint16`` millimetres (ROS ``16UC1``).

    Args:
        depth_m: ``(H, W)`` metres; NaN, infinite, zero and negative mean no reading.

    Returns:
        ``(H, W)`` ``uint16`` millimetres, rounded, 0 where there is no reading or the
        depth is beyond 65.535 m.

    """
    depth_m = np.asarray(depth_m, dtype=np.float32)
    with np.errstate(invalid='ignore'):
        mm = np.rint(depth_m * np.float32(1000.0))
        valid = np.isfinite(mm) & (mm > 0) & (mm <= np.iinfo(np.uint16).max)
    return np.where(valid, mm, 0).astype(np.uint16)


def write_intrinsics(directory: Union[str, Path], intrinsics: CameraIntrinsics,
                     depth_scale: float = DEFAULT_DEPTH_SCALE) -> Path:
    """Write ``DIR/camera_info.json`` (the replay intrinsics format); return its path."""
    path = Path(directory) / INTRINSICS_FILES[0]
    path.write_text(json.dumps({
        'fx': intrinsics.fx, 'fy': intrinsics.fy, 'cx': intrinsics.cx, 'cy': intrinsics.cy,
        'width': intrinsics.width, 'height': intrinsics.height, 'depth_scale': depth_scale,
    }, indent=2) + '\n')
    return path


def write_frame(directory: Union[str, Path], index: int, rgb: np.ndarray,
                depth_m: Optional[np.ndarray] = None) -> None:
    """Write one frame in the flat layout: ``NNNNNN-color.png`` and ``NNNNNN-depth.png``.

    Args:
        directory: an existing replay directory.
        index: frame number (sets the sort order).
        rgb: ``(H, W, 3)`` ``uint8`` RGB.
        depth_m: ``(H, W)`` metres, written as ``uint16`` millimetres; ``None``: no depth.

    Raises:
        ValueError: an image cannot be encoded.

    """
    directory = Path(directory)
    stem = f'{index:06d}'
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'write_frame: rgb must be (H, W, 3) uint8, got {rgb.shape} '
                         f'{rgb.dtype}.')
    _imwrite(directory / f'{stem}-color.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if depth_m is not None:
        _imwrite(directory / f'{stem}-depth.png', depth_to_millimetres(depth_m))


def _imwrite(path: Path, image: np.ndarray) -> None:
    if not cv2.imwrite(str(path), image):
        raise ValueError(f'Could not write {str(path)!r}; is the directory writable?')


def _find_intrinsics(directory: Path) -> Path:
    for name in INTRINSICS_FILES:
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f'Replay directory {str(directory)!r} has no intrinsics file: expected one of '
        f'{", ".join(INTRINSICS_FILES)} with fx, fy, cx, cy, width, height (pixels).')


def _find_color_images(directory: Path) -> List[Path]:
    def images(folder: Path, need_color_in_name: bool) -> List[Path]:
        return sorted(p for p in folder.iterdir()
                      if p.is_file() and p.suffix.lower() in COLOR_EXTENSIONS
                      and (not need_color_in_name or 'color' in p.name))

    found = images(directory, True)
    if not found and (directory / 'color').is_dir():
        found = images(directory / 'color', False)
    if not found:
        raise FileNotFoundError(
            f'Replay directory {str(directory)!r} has no colour images: expected files '
            f'named *color*{{{",".join(COLOR_EXTENSIONS)}}} (e.g. 000000-color.png) or '
            'images in a color/ subdirectory.')
    return found


def _depth_path_for(directory: Path, color_path: Path) -> Optional[Path]:
    if color_path.parent == directory:
        head, _, tail = color_path.stem.rpartition('color')
        stem = head + 'depth' + tail
        folder = directory
    else:
        stem = color_path.stem
        folder = directory / 'depth'
    for ext in DEPTH_EXTENSIONS:
        candidate = folder / (stem + ext)
        if candidate.is_file():
            return candidate
    return None
