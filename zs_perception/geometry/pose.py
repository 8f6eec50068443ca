"""Object poses from instance masks + depth + pinhole intrinsics (the public API).

:func:`estimate_object_geometry` turns each mask into an :class:`ObjectGeometry`: which depth
pixels are the object (``_points``: noise model, support planes, surface linking), the box
or cylinder that fits them (``_measure``, ``_box_fit``, ``_cylinder_fit``), flags for what
the camera cannot see (truncated, occluded) and a heuristic confidence. The method, its
constants and measured accuracy and speed are in docs/geometry.md.

Orientation convention (matches ``msg/SegmentedObject.msg``), camera optical frame
(REP-103: x right, y down, z forward), ``rotation`` columns = the object axes: object x the
longest extent, z the shortest (extents ``x >= y >= z``), y = z x x; z points toward the
camera (``z . position < 0``); x has a non-negative camera-x component (ties: +y, then
+z); quaternion ``x, y, z, w`` with ``w >= 0``. A cylinder's axis is x (z for one shorter
than its diameter).
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import itertools
import os
from typing import List, Optional, Sequence, Union

import cv2
import numpy as np

from zs_perception.geometry import _object_steps, _points
from zs_perception.geometry._linalg import quaternion
from zs_perception.geometry._measure import SHAPES
from zs_perception.geometry._object_steps import RING_INNER_PX
from zs_perception.geometry.camera import CameraIntrinsics

STATUS_OK = 'ok'
# Mask pixels this close (px) to the image border make the object truncated.
TRUNCATED_BORDER_PX = 1
# Threads that measure the objects of one call beside the calling thread (they start on
# first use): one fewer than the cores, at most 3.
_HELPERS = max(0, min(4, os.cpu_count() or 1) - 1)
_POOL = ThreadPoolExecutor(max_workers=max(1, _HELPERS), thread_name_prefix='zs_geometry')


@dataclass
class ObjectGeometry:
    """The 3D geometry of one masked object, in the camera optical frame of the depth image.

    Attributes:
        has_pose: True when ``position``, ``rotation``, ``quaternion`` and ``extents`` were
            computed from depth.
        status: ``'ok'``, or why there is no pose (e.g. ``'no valid depth in mask'``).
        position: ``(3,)`` ``float64`` metres, centre of the fitted box (a cylinder: its
            axis at mid-length), not the mean of the visible points.
        rotation: ``(3, 3)`` ``float64``, columns = object x, y, z axes (see module docs).
        quaternion: ``(4,)`` ``float64`` ``x, y, z, w`` of ``rotation``, ``w >= 0``.
        extents: ``(3,)`` ``float64`` metres along object x, y, z (x >= y >= z).
        num_points: number of 3D points kept as the object's (at most ``max_points``).
        valid_fraction: fraction of the mask pixels with a valid depth, [0, 1].
        points: ``(M, 3)`` ``float32`` metres, the object's kept points (``M == num_points``).
        shape: ``'box'``, ``'cylinder'`` or ``'unknown'`` (neither model fits: the pose and
            extents of the oriented box around the points); ``''`` without a pose.
        truncated: the mask touches the image border: the object may continue outside.
        occluded: nearer depth borders at least ``_object_steps.OCCLUDED_SHARE`` (10 %) of
            the object's outline (of the part with depth beyond it): something in front
            hides part of it.
        pose_confidence: heuristic trust in the pose, [0, 1] (docs/geometry.md): the
            product of the observed share of the outline, the depth coverage, the fit
            residual and point count terms; 0.0 without a pose.

    """

    has_pose: bool
    status: str
    position: np.ndarray
    rotation: np.ndarray
    quaternion: np.ndarray
    extents: np.ndarray
    num_points: int
    valid_fraction: float
    points: np.ndarray
    shape: str = ''
    truncated: bool = False
    occluded: bool = False
    pose_confidence: float = 0.0

    @classmethod
    def without_pose(cls, status: str, num_points: int = 0, valid_fraction: float = 0.0,
                     points: Optional[np.ndarray] = None, truncated: bool = False,
                     occluded: bool = False) -> 'ObjectGeometry':
        """Return an object that got no pose, and why (zero position and extents, identity)."""
        return cls(has_pose=False, status=status, position=np.zeros(3), rotation=np.eye(3),
                   quaternion=np.array([0.0, 0.0, 0.0, 1.0]), extents=np.zeros(3),
                   num_points=num_points, valid_fraction=valid_fraction,
                   points=np.zeros((0, 3), np.float32) if points is None else points,
                   truncated=truncated, occluded=occluded)


MaskInput = Union[np.ndarray, Sequence[np.ndarray]]


def estimate_object_geometry(
        masks: MaskInput,
        depth_m: np.ndarray,
        intrinsics: CameraIntrinsics,
        *,
        min_depth_m: float = 0.1,
        max_depth_m: float = 10.0,
        erode_px: int = 2,
        min_points: int = 30,
        cluster_bin_m: float = 0.01,
        cluster_bin_rel: float = 0.02,
        cluster_min_share: float = 0.2,
        trim_percent: float = 0.5,
        max_points: int = 4000,
        grow_px: int = 3,
        ring_px: int = 12) -> List[ObjectGeometry]:
    """Estimate the pose, extents, shape, flags and points of every masked object.

    Args:
        masks: ``(N, H, W)`` ``bool`` array or a sequence of ``(H, W)`` ``bool`` masks, all of
            one size, True on the object. ``(H, W)`` may differ from the depth image's size
            if the aspect ratio is the same (the masks are then sampled at depth pixels).
        depth_m: ``(h, w)`` ``float32``/``float64`` depth in metres along the optical axis,
            NaN (or 0, inf) where missing, registered to the masks' image.
        intrinsics: pinhole intrinsics of the depth image (``width == w``, ``height == h``).
        min_depth_m, max_depth_m: valid depth range in metres.
        erode_px: the mask's confident core, where the surface linking starts, lies
            ``2 * erode_px + 1`` depth pixels inside the mask (at most half its inscribed
            radius); 0 makes the whole mask the core.
        min_points: fewest kept points for a pose.
        cluster_bin_m, cluster_bin_rel: accepted for callers of the former depth-histogram
            step, which surface linking replaced; they have no effect.
        cluster_min_share: a piece of surface linked to the core is kept when it holds at
            least this share of the core pixels the best piece holds, in ``(0, 1]``.
        trim_percent: percentile trimmed at each end of each axis for the extents, in
            ``[0, 25)``.
        max_points: at most this many points (an even subsample) are fitted per object;
            ``points`` has at most this many rows.
        grow_px: depth pixels beyond the mask that may join the object when linked to its
            surface (a mask eroded by the segmenter loses no rim); 0 disables it.
        ring_px: outer radius (depth pixels) of the ring around the mask that the support
            planes are fitted on.

    Returns:
        One :class:`ObjectGeometry` per mask, in mask order.

    Raises:
        ValueError: wrong shapes or dtypes, intrinsics not of the depth image, masks and
            depth of different aspect ratios, or invalid parameters.

    """
    depth_m = _check_depth(depth_m)
    mask_list = _check_masks(masks)
    if not isinstance(intrinsics, CameraIntrinsics):
        raise ValueError(
            f'estimate_object_geometry: intrinsics must be a CameraIntrinsics, got '
            f'{type(intrinsics).__name__}; build one with CameraIntrinsics.from_k(K, w, h).')
    h, w = depth_m.shape
    if (intrinsics.width, intrinsics.height) != (w, h):
        raise ValueError(
            f'estimate_object_geometry: intrinsics are for a {intrinsics.width}x'
            f'{intrinsics.height} image but depth is {w}x{h}; pass the depth camera intrinsics, '
            f'or intrinsics.scaled_to({w}, {h}) if depth is a resized image.')
    if not (0.0 < min_depth_m < max_depth_m):
        raise ValueError(
            f'estimate_object_geometry: need 0 < min_depth_m < max_depth_m, got '
            f'{min_depth_m} and {max_depth_m}.')
    for name, value in (('erode_px', erode_px), ('grow_px', grow_px)):
        if int(value) != value or value < 0:
            raise ValueError(f'estimate_object_geometry: {name} must be an integer >= 0, got '
                             f'{value!r}.')
    if int(ring_px) != ring_px or ring_px < RING_INNER_PX + 2:
        raise ValueError(f'estimate_object_geometry: ring_px must be an integer >= '
                         f'{RING_INNER_PX + 2}, got {ring_px!r}.')
    if int(min_points) != min_points or min_points < 3:
        raise ValueError(f'estimate_object_geometry: min_points must be an integer >= 3 (a '
                         f'plane), got {min_points!r}.')
    if max_points < min_points:
        raise ValueError(f'estimate_object_geometry: max_points ({max_points}) must be >= '
                         f'min_points ({min_points}).')
    if not (0.0 <= trim_percent < 25.0):
        raise ValueError(f'estimate_object_geometry: trim_percent must be in [0, 25), got '
                         f'{trim_percent}.')
    if not (0.0 < cluster_min_share <= 1.0):
        raise ValueError(f'estimate_object_geometry: cluster_min_share must be in (0, 1], got '
                         f'{cluster_min_share}.')
    if not mask_list:
        return []
    mh, mw = mask_list[0].shape
    if (mh, mw) != (h, w) and abs(mw / mh - w / h) > 0.01 * (w / h):
        raise ValueError(
            f'estimate_object_geometry: masks are {mw}x{mh} but depth is {w}x{h}, a different '
            'aspect ratio, so depth cannot be registered to the masks by scaling. Use depth '
            'registered to the colour image (e.g. a RealSense aligned_depth_to_color topic).')
    params = {'min_depth_m': min_depth_m, 'max_depth_m': max_depth_m, 'erode_px': int(erode_px),
              'min_points': int(min_points), 'min_share': cluster_min_share,
              'trim_percent': trim_percent, 'max_points': int(max_points),
              'grow_px': int(grow_px), 'ring_px': int(ring_px)}
    return _each_object(lambda m: _one_object(m, depth_m, intrinsics, **params), mask_list)


def _each_object(measure_one, masks):
    """``[measure_one(m) for m in masks]``, on the calling thread and the pool's helpers.

    Objects are independent and the kernels release the GIL, so the cores share them: each
    thread takes the next object not yet taken. The calling thread works too (waking a
    helper costs more than it saves for one object), so one object never leaves it.
    """
    results = [None] * len(masks)
    taken = itertools.count()  # next() is atomic under the GIL
    failed = []  # set on a thread's error: the others stop taking objects

    def drain():
        for i in iter(taken.__next__, None):
            if i >= len(masks) or failed:
                return
            try:
                results[i] = measure_one(masks[i])
            except BaseException:
                failed.append(True)
                raise

    helpers = [_POOL.submit(drain) for _ in range(min(_HELPERS, len(masks) - 1))]
    try:
        drain()
    finally:
        for helper in helpers:
            # One still queued (behind another call's objects) has nothing left to take.
            if not helper.cancel():
                helper.result()  # waits for its object; re-raises its error
    return results


def _check_depth(depth_m):
    if not isinstance(depth_m, np.ndarray) or depth_m.ndim != 2:
        raise ValueError(
            f'estimate_object_geometry: depth_m must be a (H, W) numpy array, got '
            f'{getattr(depth_m, "shape", type(depth_m).__name__)}.')
    if depth_m.dtype not in (np.float32, np.float64):
        raise ValueError(
            f'estimate_object_geometry: depth_m must be float32/float64 metres, got dtype '
            f'{depth_m.dtype}. Convert raw depth first, e.g. depth_to_metres(depth, "16UC1") '
            'for uint16 millimetres.')
    return depth_m


def _check_masks(masks) -> List[np.ndarray]:
    if isinstance(masks, np.ndarray):
        if masks.ndim == 2:
            raise ValueError(
                'estimate_object_geometry: masks must be (N, H, W) or a list of (H, W) masks, '
                f'got one (H, W) array of shape {masks.shape}; wrap it as masks[None].')
        if masks.ndim != 3:
            raise ValueError(f'estimate_object_geometry: masks must be (N, H, W), got shape '
                             f'{masks.shape}.')
        mask_list = list(masks)
    else:
        mask_list = list(masks)
    shape = mask_list[0].shape if mask_list else None
    for i, m in enumerate(mask_list):
        if not isinstance(m, np.ndarray) or m.dtype != np.bool_ or m.ndim != 2:
            raise ValueError(
                f'estimate_object_geometry: mask {i} must be a (H, W) bool array, got '
                f'{getattr(m, "dtype", type(m).__name__)} of shape {getattr(m, "shape", None)}'
                '; convert with mask > 0 (or mask > threshold for soft masks).')
        if m.shape != shape:
            raise ValueError(f'estimate_object_geometry: all masks must have one size; mask 0 '
                             f'is {shape}, mask {i} is {m.shape}.')
        if not m.flags.writeable:  # the kernels take no read-only arrays
            mask_list[i] = m.copy()
    return mask_list


def rotation_to_quaternion(rot: np.ndarray) -> np.ndarray:
    """``(3, 3)`` rotation matrix -> ``(4,)`` ``float64`` quaternion ``x, y, z, w``, ``w >= 0``."""
    return quaternion(np.ascontiguousarray(rot, dtype=np.float64))


def _touches_border(rect, shape) -> bool:
    """Whether a mask's bounding rectangle ``(x, y, width, height)`` reaches the border."""
    x, y, bw, bh = rect
    h, w = shape
    b = TRUNCATED_BORDER_PX
    return bool(bw and (x <= b or y <= b or x + bw >= w - b or y + bh >= h - b))


def _one_object(mask, depth_m, intr, *, min_depth_m, max_depth_m, erode_px, min_points,
                min_share, trim_percent, max_points, grow_px, ring_px) -> ObjectGeometry:
    found = _points.mask_roi_in_depth(mask, depth_m.shape)
    if found is None:
        return ObjectGeometry.without_pose('empty mask')
    roi, r0, c0, rect = found
    truncated = _touches_border(rect, mask.shape)
    h, w = depth_m.shape
    # A window around the mask that holds the grow band and the support-plane ring.
    pad = max(grow_px, ring_px) + 1
    w0, w1 = max(0, r0 - pad), min(h, r0 + roi.shape[0] + pad)
    v0, v1 = max(0, c0 - pad), min(w, c0 + roi.shape[1] + pad)
    inside = np.zeros((w1 - w0, v1 - v0), bool)
    inside[r0 - w0:r0 - w0 + roi.shape[0], c0 - v0:c0 - v0 + roi.shape[1]] = roi
    # The distance to the nearest pixel outside the mask, on the mask's bounding box and
    # the one pixel around it (all outside: no nearer one lies beyond).
    inscribed = np.zeros(inside.shape, np.float32)
    a0, b0 = max(0, r0 - w0 - 1), max(0, c0 - v0 - 1)
    a1, b1 = r0 - w0 + roi.shape[0] + 1, c0 - v0 + roi.shape[1] + 1
    inscribed[a0:a1, b0:b1] = cv2.distanceTransform(
        np.ascontiguousarray(inside[a0:a1, b0:b1]).view(np.uint8), cv2.DIST_L2, 3)
    # Distance (px) of every window pixel to the mask: the grow band and the plane ring.
    outside = cv2.distanceTransform((~inside).view(np.uint8), cv2.DIST_L2, 3)
    # The kernel takes the window as a float32, C-contiguous, writeable array: a copy, so
    # float64, strided and read-only (e.g. memory-mapped) depth images are all accepted.
    window = np.array(depth_m[w0:w1, v0:v1], np.float32, order='C')
    (outcome, valid_fraction, occluded, points, position, rotation, quat, extents, shape,
     confidence) = _object_steps.object_geometry(
        window, inside, inscribed, outside, w0, v0, h, w,
        (v0 - intr.cx) / intr.fx, (w0 - intr.cy) / intr.fy, 1.0 / intr.fx, 1.0 / intr.fy,
        np.tan(np.radians(_points.MAX_SLOPE_DEG)) / min(intr.fx, intr.fy),
        min_depth_m, max_depth_m, 2 * erode_px + 1 if erode_px else 0, grow_px + 0.5,
        ring_px + 0.5, min_share, min_points, max_points, trim_percent / 100.0)
    if outcome != _object_steps.OK:
        return ObjectGeometry.without_pose(
            _why_no_pose(outcome, len(points), min_points, min_depth_m, max_depth_m),
            len(points), valid_fraction, points, truncated, occluded)
    return ObjectGeometry(
        has_pose=True, status=STATUS_OK, position=position, rotation=rotation,
        quaternion=quat, extents=extents, num_points=len(points),
        valid_fraction=valid_fraction, points=points, shape=SHAPES[shape],
        truncated=truncated, occluded=occluded, pose_confidence=confidence)


def _why_no_pose(outcome, n_points, min_points, min_depth_m, max_depth_m) -> str:
    """Return the ``status`` of an object without a pose, from ``object_geometry``'s outcome."""
    if outcome == _object_steps.NO_DEPTH:
        return f'no valid depth in mask (none in [{min_depth_m:g}, {max_depth_m:g}] m)'
    if outcome == _object_steps.DEGENERATE_MASK:
        return 'degenerate mask (under 3 pixels wide: a line or scattered pixels)'
    if outcome == _object_steps.TOO_FEW_POINTS:
        return f'too few points ({n_points} < {min_points})'
    if outcome == _object_steps.NON_FINITE:
        return ('non-finite pose (absurd intrinsics? e.g. a principal point far outside the '
                'image)')
    return 'degenerate points (collinear: a line seen on depth, no surface to fit)'
