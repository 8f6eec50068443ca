"""Depth image unit conversion: raw sensor depth to float32 metres with NaN for missing."""

from typing import Dict, Tuple, Union

import numpy as np

#: The ROS ``sensor_msgs/Image`` depth encodings (REP-118): numpy dtype and raw units per
#: metre. The one table of depth encodings: image conversion and the replay node use it.
DEPTH_ENCODINGS: Dict[str, Tuple[str, float]] = {
    '16UC1': ('uint16', 1000.0),  # millimetres
    'mono16': ('uint16', 1000.0),  # some drivers publish 16UC1 depth as mono16
    '32FC1': ('float32', 1.0),  # metres
}


def depth_to_metres(depth: np.ndarray, encoding_or_scale: Union[str, float]) -> np.ndarray:
    """Convert a depth image to ``float32`` metres, with NaN wherever depth is missing.

    Args:
        depth: ``(H, W)`` depth image, ``uint16`` or floating point.
        encoding_or_scale: a ROS image encoding (``'16UC1'`` / ``'mono16'``: ``uint16``
            millimetres; ``'32FC1'``: ``float32`` metres), or the number of raw units per
            metre (e.g. ``5000.0`` for TUM RGB-D PNGs, ``1000.0`` for millimetres).

    Returns:
        ``(H, W)`` ``float32`` metres. Zero, negative, NaN and infinite readings (the
        conventions sensors use for "no return") become NaN. Always a new array.

    Raises:
        ValueError: unknown encoding, non-positive scale, or an image that is not 2-D.

    """
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(
            f'depth_to_metres: depth must be a single-channel (H, W) image, got shape '
            f'{depth.shape}. Pass the depth image itself, not a colour image.')
    if isinstance(encoding_or_scale, str):
        if encoding_or_scale not in DEPTH_ENCODINGS:
            raise ValueError(
                f'depth_to_metres: unsupported depth encoding {encoding_or_scale!r}; expected '
                f'one of {sorted(DEPTH_ENCODINGS)} or a number of raw units per metre.')
        units_per_metre = DEPTH_ENCODINGS[encoding_or_scale][1]
    else:
        units_per_metre = float(encoding_or_scale)
        if not (np.isfinite(units_per_metre) and units_per_metre > 0):
            raise ValueError(
                f'depth_to_metres: units per metre must be a finite number > 0, got '
                f'{encoding_or_scale!r} (1000 for millimetres, 1 for metres).')
    if depth.dtype.kind not in 'uif':
        raise ValueError(
            f'depth_to_metres: depth must be an integer or floating point image, got dtype '
            f'{depth.dtype}.')
    out = depth.astype(np.float32)
    if units_per_metre != 1.0:
        out *= np.float32(1.0 / units_per_metre)
    if depth.dtype.kind == 'u':  # only zero can be missing: one comparison
        out[depth == 0] = np.nan
        return out
    with np.errstate(invalid='ignore'):
        out[~(out > 0) | ~np.isfinite(out)] = np.nan
    return out
