"""How an object's 3D pose is computed: mask + depth + intrinsics -> position, axes, extents.

Per object mask, in this order (all on the mask's bounding box, never the whole image):

1. **Resolution.** The depth image and its intrinsics define the pixel grid. A mask of another
   resolution (same aspect ratio, e.g. 1280x720 colour with 640x360 depth) is sampled at the
   depth pixels' centres (nearest neighbour); intrinsics are never rescaled here.
2. **Edge erosion.** The mask is eroded by ``erode_px`` pixels (elliptical kernel), so pixels
   where the mask bleeds onto the background, and the mixed "flying" depth pixels of object
   edges, are not used. If fewer than ``min_points`` pixels survive (a thin object), the
   un-eroded mask is used instead.
3. **Valid depth, denoised.** Depth must be finite and in ``[min_depth_m, max_depth_m]``.
   The depth noise of the eroded mask is estimated from second differences along rows
   (:func:`_depth_noise`, which a surface's slope does not affect); above 1 mm, each mask
   pixel's depth is replaced by the mean of its 5x5 mask neighbours within 3 noise
   deviations of it (:func:`_denoise`): noise averages out, object and background depth
   are never mixed. Noise-free depth is used as it is.
4. **Dominant near depth cluster.** The valid depths are histogrammed (bin width
   ``max(cluster_bin_m, cluster_bin_rel * median depth)``); runs of occupied bins (one empty
   bin bridged) are clusters. The nearest cluster holding at least ``cluster_min_share`` of
   the points is kept (the largest if none does): the background seen through or beside a
   thin object is farther away and is dropped instead of pulling the centre.
5. **Axes.** Principal axes of the kept core points (about 1200, evenly strided), turned
   onto the faces of the box the points hug (:func:`_fit_box_axes`, on at most 200 points;
   each of the three planes of two axes twice, the second time within 5 degrees).
6. **Box.** The points are expressed along those axes; the extent along each axis is the
   spread between the ``trim_percent`` and ``100 - trim_percent`` order statistics and the
   position is the centre of that robust oriented box (not the mean of the points, which
   would sit on the visible surface only). Rim points the erosion removed are kept where
   they lie within the eroded width of the core's box.
7. **Shape rule: cylinder or box.** The points away from the two ends (15 % of the length
   at each end, so a visible cap is left out) are fitted with a cylinder about the longest
   axis (:func:`_fit_cylinder`: algebraic circle fit of their cross-section, 20 % worst
   points dropped, Gauss-Newton of the geometric fit for the axis' point, tilt and radius;
   on at most 400 points).
   The object is a cylinder (``shape == 'cylinder'``) when the rms residual is under 7 % of
   the radius, the visible arc spans at least 120 degrees, the diameter is 0.7..1.3 times
   the visible width and shorter than the length; then the object x axis is the fitted
   axis (the box fit of step 5 has no faces to hug on a cylinder), the position is on that
   axis at mid-length (the camera sees only the front half, whose centre lies nearer the
   camera) and the extents are ``(length along the axis, 2 r, 2 r)``. Otherwise it is a box
   (``shape == 'box'``). Only cylinders longer than their diameter are recognised (cans,
   bottles, mugs standing or lying).

Orientation convention (matches ``msg/SegmentedObject.msg``), all in the camera optical frame
(REP-103: x right, y down, z forward), ``rotation`` columns are the object axes:

- object **x** = the longest principal axis, object **z** = the shortest (for a flat object,
  its surface normal), object **y** = ``z x x`` (right-handed, ``det = +1``); for a
  cylinder x is its fitted axis and y, z are the box axes found around it, made
  perpendicular to it;
- **z points toward the camera**: ``z . position < 0`` (tie: ``z`` has a negative camera-z
  component);
- **x points toward camera +x**: ``x . (1, 0, 0) >= 0``; when that component is zero, toward
  camera +y, then +z;
- quaternion ``(x, y, z, w)`` with ``w >= 0``.

An object that cannot get a pose has ``has_pose = False``, ``status`` saying why, a zero
position and extents, the identity rotation, and whatever points it had (maybe none).

Speed: everything after the mask's bounding box and erosion (OpenCV) runs in numba kernels
(``_object_points`` for steps 2-4, ``_measure`` for steps 5-7, and their helpers) that
release the GIL, so the objects of one call are measured in parallel on a small thread pool
(one thread per core, at most 4; results do not depend on it). The kernels have explicit
signatures, so they are compiled when this module is imported, never on the first frame.
The machine code is cached beside this file (``__pycache__``, numba's ``cache=True``): the
first import after an install or a change of this file compiles for tens of seconds on a
small CPU, later imports load the cache in well under a second. The kernels use no
BLAS/LAPACK (numba needs SciPy for those): the 3x3 eigen-decomposition of step 5 is a
Jacobi iteration (:func:`_eigh3`). The box fit tries every hull edge direction, so its
answer does not depend on the signs of the eigenvectors. A float64 depth image is used as
float32 metres.
"""

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import functools
import os
from typing import List, Optional, Sequence, Union

import cv2
from numba import njit
import numpy as np

from zs_perception.geometry.camera import CameraIntrinsics

STATUS_OK = 'ok'
_AXIS_FIT_POINTS = 200
_FIT_POINTS = 1200
_REFINE_DEG = 5.0
_TRIM_BUFFER = 16
_CYLINDER_FIT_POINTS = 400
_CAP_BAND = 0.15
_CIRCLE_MAX_RMS = 0.07
_CIRCLE_MIN_SPAN_DEG = 120.0
# Depth noise (m, estimated per object) above which depth is smoothed before use, and the
# half width (px) of the edge-preserving smoothing window.
_DENOISE_MIN_SIGMA_M = 0.001
_DENOISE_HALF_WINDOW = 2
# Threads the objects of one call are measured on (their threads start on first use).
_POOL = ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1)),
                           thread_name_prefix='zs_geometry')


@dataclass
class ObjectGeometry:
    """The 3D geometry of one masked object, in the camera optical frame of the depth image.

    Attributes:
        has_pose: True when ``position``, ``rotation``, ``quaternion`` and ``extents`` were
            computed from depth.
        status: ``'ok'``, or why there is no pose (e.g. ``'no valid depth in mask'``).
        position: ``(3,)`` ``float64`` metres, centre of the robust oriented box.
        rotation: ``(3, 3)`` ``float64``, columns = object x, y, z axes (see module docs).
        quaternion: ``(4,)`` ``float64`` ``x, y, z, w`` of ``rotation``, ``w >= 0``.
        extents: ``(3,)`` ``float64`` metres along object x, y, z (x >= y >= z).
        num_points: number of 3D points that survived erosion, range and cluster rejection.
        valid_fraction: fraction of the (un-eroded) mask pixels with a valid depth, [0, 1].
        points: ``(M, 3)`` ``float32`` metres, the object's kept points (``M == num_points``).
        shape: ``'box'`` or ``'cylinder'`` (see the shape rule in the module docs); ``''``
            without a pose.

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

    @classmethod
    def without_pose(cls, status: str, num_points: int = 0, valid_fraction: float = 0.0,
                     points: Optional[np.ndarray] = None) -> 'ObjectGeometry':
        """Return an object that got no pose, and why (zero position and extents, identity)."""
        return cls(has_pose=False, status=status, position=np.zeros(3), rotation=np.eye(3),
                   quaternion=np.array([0.0, 0.0, 0.0, 1.0]), extents=np.zeros(3),
                   num_points=num_points, valid_fraction=valid_fraction,
                   points=np.zeros((0, 3), np.float32) if points is None else points)


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
        max_points: int = 4000) -> List[ObjectGeometry]:
    """Estimate the pose, extents and points of every masked object.

    Args:
        masks: ``(N, H, W)`` ``bool`` array or a sequence of ``(H, W)`` ``bool`` masks, all of
            one size, True on the object. ``(H, W)`` may differ from the depth image's size
            if the aspect ratio is the same (the masks are then sampled at depth pixels).
        depth_m: ``(h, w)`` ``float32``/``float64`` depth in metres along the optical axis,
            NaN (or 0, inf) where missing, registered to the masks' image.
        intrinsics: pinhole intrinsics of the depth image (``width == w``, ``height == h``).
        min_depth_m, max_depth_m: valid depth range in metres.
        erode_px: mask erosion in depth pixels before using depth (0 disables it).
        min_points: fewest kept points for a pose.
        cluster_bin_m, cluster_bin_rel: depth-histogram bin width is
            ``max(cluster_bin_m, cluster_bin_rel * median depth)`` metres.
        cluster_min_share: share of the valid points a depth cluster needs to be chosen over
            a farther one.
        trim_percent: percentile trimmed at each end of each axis for the extents, in
            ``[0, 25)``.
        max_points: at most this many mask pixels (an even subsample) are used per object,
            which bounds the cost of large masks; ``points`` has at most this many rows.

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
    if int(erode_px) != erode_px or erode_px < 0:
        raise ValueError(f'estimate_object_geometry: erode_px must be an integer >= 0, got '
                         f'{erode_px!r}.')
    if min_points < 3:
        raise ValueError(f'estimate_object_geometry: min_points must be >= 3 (a plane), got '
                         f'{min_points}.')
    if max_points < min_points:
        raise ValueError(f'estimate_object_geometry: max_points ({max_points}) must be >= '
                         f'min_points ({min_points}).')
    if not (0.0 <= trim_percent < 25.0):
        raise ValueError(f'estimate_object_geometry: trim_percent must be in [0, 25), got '
                         f'{trim_percent}.')
    if not mask_list:
        return []
    mh, mw = mask_list[0].shape
    if (mh, mw) != (h, w) and abs(mw / mh - w / h) > 0.01 * (w / h):
        raise ValueError(
            f'estimate_object_geometry: masks are {mw}x{mh} but depth is {w}x{h}, a different '
            'aspect ratio, so depth cannot be registered to the masks by scaling. Use depth '
            'registered to the colour image (e.g. a RealSense aligned_depth_to_color topic).')
    params = {'min_depth_m': min_depth_m, 'max_depth_m': max_depth_m, 'erode_px': erode_px,
              'min_points': min_points, 'cluster_bin_m': cluster_bin_m,
              'cluster_bin_rel': cluster_bin_rel, 'cluster_min_share': cluster_min_share,
              'trim_percent': trim_percent, 'max_points': int(max_points)}
    depth_m = depth_m.astype(np.float32, copy=False)  # the kernels take float32 metres
    if len(mask_list) == 1:
        return [_one_object(mask_list[0], depth_m, intrinsics, **params)]
    # Objects are independent and the kernels release the GIL: use the cores.
    return list(_POOL.map(lambda m: _one_object(m, depth_m, intrinsics, **params),
                          mask_list))


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
    return mask_list


def _mask_roi_in_depth(mask, depth_shape):
    """Crop the mask to its bounding box, on the depth pixel grid.

    Returns:
        ``(roi, row0, col0)``: ``(r, c)`` ``bool`` mask on depth pixels
        ``[row0:row0 + r, col0:col0 + c]``, or ``None`` for an empty mask.

    """
    mask_u8 = np.ascontiguousarray(mask).view(np.uint8)
    x, y, bw, bh = cv2.boundingRect(mask_u8)
    if bw == 0 or bh == 0:
        return None
    mh, mw = mask.shape
    h, w = depth_shape
    if (mh, mw) == (h, w):
        return mask[y:y + bh, x:x + bw], y, x
    sy, sx = h / mh, w / mw  # depth pixels per mask pixel
    r0, r1 = int(np.floor(y * sy)), min(h, int(np.ceil((y + bh) * sy)))
    c0, c1 = int(np.floor(x * sx)), min(w, int(np.ceil((x + bw) * sx)))
    rows = np.minimum(((np.arange(r0, r1) + 0.5) / sy).astype(np.intp), mh - 1)
    cols = np.minimum(((np.arange(c0, c1) + 0.5) / sx).astype(np.intp), mw - 1)
    return mask[np.ix_(rows, cols)], r0, c0


@njit('UniTuple(f8, 2)(f8[:], f8, f8)', cache=True, nogil=True)
def _dominant_near_cluster(z, bin_m, min_share):
    """Depth interval ``(near, far)`` in metres of the dominant near cluster of depths ``z``.

    ``z``: 1-D valid depths (not empty). Depths are histogrammed in bins of ``bin_m``; runs
    of occupied bins (one empty bin bridged) are clusters; the nearest cluster holding at
    least ``min_share`` of the depths is chosen, the largest if none does.
    """
    z_min = z.min()
    counts = np.zeros(int((z.max() - z_min) / bin_m) + 1, np.int64)
    for d in z:
        counts[int((d - z_min) / bin_m)] += 1
    occupied = counts >= max(2, int(0.002 * z.size))
    bridged = occupied.copy()
    bridged[1:-1] |= occupied[:-2] & occupied[2:]  # one empty bin does not split a cluster
    best_start, best_end, best_size = -1, -1, -1
    start, size = -1, 0
    for b in range(counts.size + 1):
        if b < counts.size and bridged[b]:
            if start < 0:
                start, size = b, 0
            size += counts[b]
            continue
        if start >= 0:  # the run start..b-1 ends here
            if size >= min_share * z.size:
                return z_min + start * bin_m, z_min + b * bin_m
            if size > best_size:
                best_start, best_end, best_size = start, b, size
            start = -1
    if best_start < 0:  # no bin is dense enough: every depth is its own cluster
        return z_min, z.max()
    return z_min + best_start * bin_m, z_min + best_end * bin_m


@njit('f8(f4[:, :], b1[:, :])', cache=True, nogil=True)
def _depth_noise(depth, core):
    """Estimate the depth noise (m, one standard deviation) on the eroded mask ``core``.

    From second differences along rows, which cancel a surface's slope: for independent
    noise of deviation s, ``d[c + 1] - 2 d[c] + d[c - 1]`` has deviation ``sqrt(6) s``; the
    median absolute value makes the estimate robust to creases. Returns 0.0 with fewer than
    20 samples.
    """
    rows, cols = depth.shape
    out = np.empty(rows * cols)
    n = 0
    for r in range(0, rows, max(1, rows * cols // 4000)):  # a few thousand samples suffice
        for c in range(1, cols - 1):
            if core[r, c - 1] and core[r, c] and core[r, c + 1]:
                v = depth[r, c + 1] - 2.0 * depth[r, c] + depth[r, c - 1]
                if np.isfinite(v):
                    out[n] = abs(v)
                    n += 1
    if n < 20:
        return 0.0
    return 1.4826 * np.median(out[:n]) / np.sqrt(6.0)


@njit('f4[:, :](f4[:, :], b1[:, :], i8, f8)', cache=True, nogil=True)
def _denoise(depth, roi, half, max_diff):
    """Edge-preserving smoothing of the depth of mask ``roi`` (module docs, step 3).

    Each mask pixel with a depth becomes the mean of the mask pixels with a depth within
    ``half`` pixels whose depth differs from its own by at most ``max_diff`` metres, so
    noise is averaged but an object's depth is never mixed with the background's.
    Returns a new ``float32`` array; pixels outside the mask are copied.
    """
    rows, cols = depth.shape
    out = depth.copy()
    for r in range(rows):
        for c in range(cols):
            d0 = depth[r, c]
            if not roi[r, c] or not np.isfinite(d0):
                continue
            total = 0.0
            count = 0
            for rr in range(max(0, r - half), min(rows, r + half + 1)):
                for cc in range(max(0, c - half), min(cols, c + half + 1)):
                    d = depth[rr, cc]
                    if roi[rr, cc] and abs(d - d0) <= max_diff:  # False for NaN
                        total += d
                        count += 1
            out[r, c] = total / count
    return out


@njit('Tuple((f8[:, :], b1[:], i8, i8))(b1[:, :], b1[:, :], f4[:, :], f8, f8, f8, f8, f8, '
      'f8, i8, f8, f8, f8)', cache=True, nogil=True)
def _object_points(roi, core, depth, x0, y0, x_step, y_step, min_depth, max_depth,
                   max_points, bin_abs, bin_rel, min_share):
    """Find the mask's points with valid depth in the near cluster (module docs, steps 2-4).

    Args:
        roi, core: ``(r, c)`` mask and eroded mask on the depth pixels ``depth`` ``(r, c)``
            (``float32`` metres, NaN where missing).
        x0, y0, x_step, y_step: pixel ``(row, col)`` of ``depth`` back-projects to
            ``x = (x0 + col * x_step) * z``, ``y = (y0 + row * y_step) * z``.
        min_depth, max_depth, max_points, bin_abs, bin_rel, min_share: see
            :func:`estimate_object_geometry` (``max_points``, ``cluster_bin_m``,
            ``cluster_bin_rel``, ``cluster_min_share``).

    Returns:
        ``(points, in_core, n_valid, n_mask)``: ``(m, 3)`` kept points in the camera frame,
        ``(m,)`` whether each is a core (eroded mask) point, the number of mask pixels with a
        valid depth, and the number of mask pixels.

    """
    rows, cols = np.nonzero(roi)
    n_mask = rows.size
    n_valid = 0
    for k in range(n_mask):
        d = depth[rows[k], cols[k]]
        if min_depth <= d <= max_depth:  # False for NaN
            n_valid += 1
    step = -(-n_mask // max_points)  # an even subsample, in raster order, bounds the cost
    rows, cols = rows[::step], cols[::step]
    z = np.empty(rows.size)
    valid = np.empty(rows.size, np.bool_)
    in_core = np.empty(rows.size, np.bool_)
    for k in range(rows.size):
        z[k] = depth[rows[k], cols[k]]
        valid[k] = min_depth <= z[k] <= max_depth
        in_core[k] = valid[k] and core[rows[k], cols[k]]
    if not np.any(in_core):
        in_core = valid.copy()
    z_core = z[in_core]
    if z_core.size == 0:
        return np.empty((0, 3)), in_core[:0], n_valid, n_mask
    near, far = _dominant_near_cluster(z_core, max(bin_abs, bin_rel * np.median(z_core)),
                                       min_share)
    keep = valid & (z >= near) & (z <= far)
    z, rows, cols = z[keep], rows[keep], cols[keep]
    points = np.empty((z.size, 3))
    for k in range(z.size):
        points[k, 0] = (x0 + cols[k] * x_step) * z[k]
        points[k, 1] = (y0 + rows[k] * y_step) * z[k]
        points[k, 2] = z[k]
    return points, in_core[keep], n_valid, n_mask


@njit('f8(f8[:], f8[:], f8, i8[:])', cache=True, nogil=True)
def _hug_score(u, v, angle, hull):
    """Sum of the points' distances to the nearest side of a rectangle turned by ``angle``.

    The rectangle is the bounding rectangle of the points ``(u, v)`` with sides at ``angle``
    radians and ``angle + pi / 2``; it is found from the convex ``hull`` vertices (indices
    into ``u`` and ``v``), where every extreme of a projection lies.
    """
    c, s = np.cos(angle), np.sin(angle)
    lo_a, hi_a, lo_b, hi_b = np.inf, -np.inf, np.inf, -np.inf
    for k in hull:
        a, b = c * u[k] + s * v[k], -s * u[k] + c * v[k]
        lo_a, hi_a, lo_b, hi_b = min(lo_a, a), max(hi_a, a), min(lo_b, b), max(hi_b, b)
    mid_a, half_a = 0.5 * (hi_a + lo_a), 0.5 * (hi_a - lo_a)
    mid_b, half_b = 0.5 * (hi_b + lo_b), 0.5 * (hi_b - lo_b)
    total = 0.0
    for k in range(u.size):
        a, b = c * u[k] + s * v[k], -s * u[k] + c * v[k]
        total += min(half_a - abs(a - mid_a), half_b - abs(b - mid_b))
    return total


@njit('i8[:](f8[:], f8[:])', cache=True, nogil=True)
def _convex_hull(u, v):
    """Return the indices of the convex hull vertices of ``(u, v)``, counter-clockwise.

    Andrew's monotone chain on the points sorted by ``u``; fewer than 3 points are all kept.
    """
    if u.size < 3:
        return np.arange(u.size)
    order = np.argsort(u)
    hull = np.empty(2 * u.size + 1, np.int64)
    size = 0
    for half in range(2):  # lower hull left to right, then upper hull right to left
        start = size
        for m in range(u.size):
            k = order[m] if half == 0 else order[u.size - 1 - m]
            while size >= start + 2:
                o, a = hull[size - 2], hull[size - 1]
                turn = (u[a] - u[o]) * (v[k] - v[o]) - (v[a] - v[o]) * (u[k] - u[o])
                if turn > 0:
                    break
                size -= 1
            hull[size] = k
            size += 1
        size -= 1  # the last point starts the other half
    return hull[:size].copy()


@njit('f8[:, :](f8[:, :], f8[:, :])', cache=True, nogil=True)
def _fit_box_axes(points, axes):
    """Turn principal axes into the axes of the box whose faces the points lie on.

    The principal axes of a box's *visible* surface are tilted by the faces the camera does
    not see. Each step projects the points on the plane of two axes and tries every
    orientation of a rectangle with one side along an edge of the projection's convex hull
    (and the current orientation): it keeps the one whose sides the points hug best (least
    mean distance from each point to the nearest side; a minimum-area rectangle would be
    ambiguous for the L-shaped section of a box seen on two faces). The three planes are
    visited twice; the second visit only tries hull edges within ``_REFINE_DEG`` of the
    first visit's answer.

    Args:
        points: ``(n, 3)`` centred points (the caller strides them to ``_AXIS_FIT_POINTS``).
        axes: ``(3, 3)`` columns = the starting axes.

    Returns:
        ``(3, 3)`` the turned axes (a new array).

    """
    axes = axes.copy()
    n = points.shape[0]
    u, v = np.empty(n), np.empty(n)
    refine = np.radians(_REFINE_DEG)
    for step in range(6):
        i, j = (0, 1, 0)[step % 3], (1, 2, 2)[step % 3]
        for k in range(n):
            x, y, z = points[k, 0], points[k, 1], points[k, 2]
            u[k] = x * axes[0, i] + y * axes[1, i] + z * axes[2, i]
            v[k] = x * axes[0, j] + y * axes[1, j] + z * axes[2, j]
        hull = _convex_hull(u, v)
        best, best_score = 0.0, _hug_score(u, v, 0.0, hull)
        angles = np.empty(hull.size)  # the hull's edge directions
        for m in range(hull.size):
            a, b = hull[m], hull[(m + 1) % hull.size]
            angles[m] = np.arctan2(v[b] - v[a], u[b] - u[a])
        angles = np.sort((angles + np.pi / 4) % (np.pi / 2) - np.pi / 4)
        tried = -np.inf
        for angle in angles:  # sides 90 deg apart; every edge direction (the answer does
            # not depend on the signs of the starting axes)
            if angle == tried or (step >= 3 and abs(angle) >= refine):
                continue
            tried = angle
            score = _hug_score(u, v, angle, hull)
            if score < best_score:
                best, best_score = angle, score
        c, s = np.cos(best), np.sin(best)
        for r in range(3):
            a_i, a_j = axes[r, i], axes[r, j]
            axes[r, i], axes[r, j] = c * a_i + s * a_j, -s * a_i + c * a_j
    return axes


@njit('UniTuple(f8[:], 2)(f8[:, :], f8)', cache=True, nogil=True)
def _trimmed_range(values, trim_fraction):
    """Per-column ``trim_fraction`` and ``1 - trim_fraction`` order statistics of ``(n, k)``.

    For the usual small trims one pass keeps the few smallest and largest values in sorted
    buffers; larger trims partition.
    """
    last = values.shape[0] - 1
    k_lo = int(np.round(trim_fraction * last))
    lo, hi = np.empty(values.shape[1]), np.empty(values.shape[1])
    for c in range(values.shape[1]):
        if k_lo > _TRIM_BUFFER:
            part = np.partition(values[:, c].copy(), k_lo)  # part[k_lo:] holds the upper ones
            lo[c] = part[k_lo]
            hi[c] = np.partition(part[k_lo:], last - 2 * k_lo)[last - 2 * k_lo]
            continue
        smallest = np.full(k_lo + 1, np.inf)  # ascending
        largest = np.full(k_lo + 1, -np.inf)  # descending
        for i in range(values.shape[0]):
            x = values[i, c]
            if x < smallest[k_lo]:
                j = k_lo
                while j > 0 and smallest[j - 1] > x:
                    smallest[j] = smallest[j - 1]
                    j -= 1
                smallest[j] = x
            if x > largest[k_lo]:
                j = k_lo
                while j > 0 and largest[j - 1] < x:
                    largest[j] = largest[j - 1]
                    j -= 1
                largest[j] = x
        lo[c], hi[c] = smallest[k_lo], largest[k_lo]
    return lo, hi


@njit('f8[:, :](f8[:, :], f8[:, :])', cache=True, nogil=True)
def _project(points, axes):
    """``points @ axes`` for ``(n, 3)`` points and ``(3, 3)`` axes (no BLAS in the kernels)."""
    out = np.zeros((points.shape[0], 3))
    for k in range(points.shape[0]):
        for c in range(3):
            for r in range(3):
                out[k, c] += points[k, r] * axes[r, c]
    return out


@njit('Tuple((f8[:, :], f8[:, :], f8[:, :], f8[:], f8[:]))(f8[:, :], f8[:, :], f8[:], '
      'f8[:, :], f8, f8)', cache=True, nogil=True)
def _oriented_box(points, core, mean, axes, trim, margin):
    """Fit the box: its axes, the rim points kept, trimmed extents (module docs, steps 5-6).

    Args:
        points: ``(n, 3)`` all kept points.
        core: ``(m, 3)`` core points (strided to about ``_FIT_POINTS``), minus ``mean``.
        mean: ``(3,)`` the core points' mean.
        axes: ``(3, 3)`` principal axes of ``core``, columns longest first.
        trim: fraction of the points trimmed at each end of each axis.
        margin: metres a rim point may lie outside the core's trimmed box.

    Returns:
        ``(axes, points, fit, lo, hi)``: the axes turned onto the box faces, columns longest
        first; the ``(k, 3)`` points kept; about ``_FIT_POINTS`` of them minus ``mean``, in
        those axes; their trimmed ``lo`` and ``hi`` ``(3,)`` along each axis.

    """
    axes = _fit_box_axes(core[::-(-core.shape[0] // _AXIS_FIT_POINTS)], axes)
    lo, hi = _trimmed_range(_project(core, axes), trim)
    order = np.argsort(lo - hi, kind='mergesort')  # longest first
    axes, lo, hi = axes[:, order], lo[order], hi[order]
    along = _project(points - mean, axes)
    inside = np.ones(points.shape[0], np.bool_)
    for k in range(points.shape[0]):
        for c in range(3):
            if abs(along[k, c] - 0.5 * (hi[c] + lo[c])) > 0.5 * (hi[c] - lo[c]) + margin:
                inside[k] = False
    along = along[inside]
    fit = along[::max(1, along.shape[0] // _FIT_POINTS)]
    lo, hi = _trimmed_range(fit, trim)
    order = np.argsort(lo - hi, kind='mergesort')  # the rim may change which side is longest
    return axes[:, order], points[inside], fit[:, order], lo[order], hi[order]


@njit('Tuple((f8[:], f8[:, :]))(f8[:, :])', cache=True, nogil=True)
def _eigh3(matrix):
    """Eigenvalues (ascending) and eigenvectors (columns) of a symmetric ``(3, 3)`` matrix.

    Cyclic Jacobi rotations (no LAPACK in the kernels); the same answer as
    ``np.linalg.eigh`` up to each vector's sign.
    """
    a = matrix.copy()
    vecs = np.eye(3)
    for _ in range(50):
        off = a[0, 1] ** 2 + a[0, 2] ** 2 + a[1, 2] ** 2
        if off <= 1e-30 * (a[0, 0] ** 2 + a[1, 1] ** 2 + a[2, 2] ** 2) or off == 0.0:
            break
        for p, q in ((0, 1), (0, 2), (1, 2)):
            if a[p, q] == 0.0:
                continue
            theta = (a[q, q] - a[p, p]) / (2.0 * a[p, q])
            t = 1.0 / (abs(theta) + np.sqrt(theta * theta + 1.0))
            if theta < 0.0:
                t = -t
            c = 1.0 / np.sqrt(t * t + 1.0)
            s = t * c
            for k in range(3):  # a <- a J, vecs <- vecs J
                a[k, p], a[k, q] = c * a[k, p] - s * a[k, q], s * a[k, p] + c * a[k, q]
                vecs[k, p], vecs[k, q] = (c * vecs[k, p] - s * vecs[k, q],
                                          s * vecs[k, p] + c * vecs[k, q])
            for k in range(3):  # a <- J^T a
                a[p, k], a[q, k] = c * a[p, k] - s * a[q, k], s * a[p, k] + c * a[q, k]
    values = np.array([a[0, 0], a[1, 1], a[2, 2]])
    order = np.argsort(values, kind='mergesort')
    return values[order], vecs[:, order]


@njit('f8[:](f8[:, :], f8[:])', cache=True, nogil=True)
def _matvec(m, v):
    """``m @ v`` for a ``(3, 3)`` matrix and a ``(3,)`` vector (no BLAS in the kernels)."""
    return np.array([m[0, 0] * v[0] + m[0, 1] * v[1] + m[0, 2] * v[2],
                     m[1, 0] * v[0] + m[1, 1] * v[1] + m[1, 2] * v[2],
                     m[2, 0] * v[0] + m[2, 1] * v[1] + m[2, 2] * v[2]])


@njit('f8[:](f8[:], f8[:])', cache=True, nogil=True)
def _cross(a, b):
    """Cross product of two ``(3,)`` vectors."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2],
                     a[0] * b[1] - a[1] * b[0]])


@njit('f8[:, :](f8[:, :], f8[:])', cache=True, nogil=True)
def _orient(axes, position):
    """Apply the sign convention to ``(3, 3)`` axes (columns: longest..shortest)."""
    x, z = axes[:, 0].copy(), axes[:, 2].copy()
    zp = z[0] * position[0] + z[1] * position[1] + z[2] * position[2]
    if zp > 0 or (zp == 0 and z[2] > 0):
        z = -z
    for c in range(3):  # the first non-zero component of x is positive
        if abs(x[c]) > 1e-12:
            if x[c] < 0:
                x = -x
            break
    out = np.empty((3, 3))
    out[:, 0], out[:, 1], out[:, 2] = x, _cross(z, x), z
    return out


@njit('f8[:](f8[:, :])', cache=True, nogil=True)
def _quaternion(m):
    """``(3, 3)`` rotation -> ``(4,)`` quaternion ``x, y, z, w`` with ``w >= 0``."""
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = np.array([m[2, 1] - m[1, 2], m[0, 2] - m[2, 0], m[1, 0] - m[0, 1], s * s / 4]) / s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = np.array([s * s / 4, m[0, 1] + m[1, 0], m[0, 2] + m[2, 0], m[2, 1] - m[1, 2]]) / s
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = np.array([m[0, 1] + m[1, 0], s * s / 4, m[1, 2] + m[2, 1], m[0, 2] - m[2, 0]]) / s
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = np.array([m[0, 2] + m[2, 0], m[1, 2] + m[2, 1], s * s / 4, m[1, 0] - m[0, 1]]) / s
    q /= np.sqrt(np.sum(q * q))
    return -q if q[3] < 0 else q


def rotation_to_quaternion(rot: np.ndarray) -> np.ndarray:
    """``(3, 3)`` rotation matrix -> ``(4,)`` ``float64`` quaternion ``x, y, z, w``, ``w >= 0``."""
    return _quaternion(np.ascontiguousarray(rot, dtype=np.float64))


@functools.lru_cache(maxsize=8)
def _erosion_kernel(erode_px: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode_px + 1,) * 2)


def _one_object(mask, depth_m, intr, *, min_depth_m, max_depth_m, erode_px, min_points,
                cluster_bin_m, cluster_bin_rel, cluster_min_share,
                trim_percent, max_points) -> ObjectGeometry:
    found = _mask_roi_in_depth(mask, depth_m.shape)
    if found is None:
        return ObjectGeometry.without_pose('empty mask')
    roi, r0, c0 = found
    core = roi
    if erode_px > 0:
        eroded = cv2.erode(roi.view(np.uint8), _erosion_kernel(erode_px),
                           borderType=cv2.BORDER_CONSTANT, borderValue=0).view(bool)
        if np.count_nonzero(eroded) >= min_points:
            core = eroded
    depth_roi = depth_m[r0:r0 + roi.shape[0], c0:c0 + roi.shape[1]]
    noise = _depth_noise(depth_roi, core)
    if noise > _DENOISE_MIN_SIGMA_M:
        depth_roi = _denoise(depth_roi, roi, _DENOISE_HALF_WINDOW, 3.0 * noise)
    points, in_core, n_valid_all, n_mask = _object_points(
        roi, core, depth_roi, (c0 - intr.cx) / intr.fx, (r0 - intr.cy) / intr.fy,
        1.0 / intr.fx, 1.0 / intr.fy, min_depth_m, max_depth_m, max_points, cluster_bin_m,
        cluster_bin_rel, cluster_min_share)
    valid_fraction = n_valid_all / n_mask
    if n_valid_all == 0:
        return ObjectGeometry.without_pose(
            f'no valid depth in mask (none in [{min_depth_m:g}, {max_depth_m:g}] m)')
    if len(points) < min_points:
        return ObjectGeometry.without_pose(
            f'too few points ({len(points)} < {min_points})', len(points), valid_fraction,
            points.astype(np.float32))
    # The rim the erosion removed belongs to the object where it lies within the eroded
    # width of the core's box (metres per metre of depth); farther rim points are background
    # the mask bled onto.
    margin = (erode_px + 0.5) / min(intr.fx, intr.fy)
    kept, position, rotation, quaternion, extents, cylinder = _measure(
        points, in_core, min_points, trim_percent / 100.0, margin)
    if not (np.isfinite(position).all() and np.isfinite(quaternion).all()
            and np.isfinite(extents).all() and np.isfinite(kept).all()):  # float32 points
        return ObjectGeometry.without_pose(
            'non-finite pose (absurd intrinsics? e.g. a principal point far outside the image)',
            0, valid_fraction)
    return ObjectGeometry(
        has_pose=True, status=STATUS_OK, position=position, rotation=rotation,
        quaternion=quaternion, extents=extents, num_points=len(kept),
        valid_fraction=valid_fraction, points=kept, shape='cylinder' if cylinder else 'box')


@njit('f8[:](f8[:, :], f8[:])', cache=True, nogil=True)
def _solve(a, b):
    """Solve the small square system ``a x = b`` (Gaussian elimination, partial pivoting).

    Returns:
        ``x``, all NaN when ``a`` is singular. ``a`` and ``b`` are overwritten.

    """
    n = b.size
    for col in range(n):
        pivot = col + np.argmax(np.abs(a[col:, col]))
        if abs(a[pivot, col]) < 1e-300:
            return np.full(n, np.nan)
        for c in range(n):
            a[col, c], a[pivot, c] = a[pivot, c], a[col, c]
        b[col], b[pivot] = b[pivot], b[col]
        for r in range(col + 1, n):
            f = a[r, col] / a[col, col]
            a[r, col:] -= f * a[col, col:]
            b[r] -= f * b[col]
    x = np.empty(n)
    for r in range(n - 1, -1, -1):
        x[r] = (b[r] - np.sum(a[r, r + 1:] * x[r + 1:])) / a[r, r]
    return x


@njit('f8[:](f8[:, :], f8, f8)', cache=True, nogil=True)
def _fit_cylinder(local, x_lo, x_hi):
    """Fit a cylinder whose axis is near the x axis to the side points of ``local``.

    The side points are those of ``local`` ``(n, 3)`` away from the two ends ``x_lo`` and
    ``x_hi`` (``_CAP_BAND`` of the length at each end, so a visible cap is left out), at
    most ``_CYLINDER_FIT_POINTS`` of them (evenly strided).

    An algebraic (Kasa) circle fit to the points' ``(y, z)`` starts (the axis along x); the
    20 % of points farthest from that circle are dropped; three Gauss-Newton steps of the
    geometric fit (least squares of the distances to the surface) on the rest then fit the
    axis' point and tilt and the radius together. That removes the algebraic fit's bias
    toward a smaller circle on a short, noisy arc, and the tilt of an axis estimate that
    the visible half of the cylinder pulls off its true axis.

    Returns:
        ``(7,)``: the axis' ``y, z`` at ``x = 0``, its tilt ``dy/dx, dz/dx``, the radius and
        rms residual in metres, and the angle in radians the fitted points span around the
        axis; all NaN for fewer than 20 side points or a degenerate fit (e.g. collinear
        points).

    """
    band = _CAP_BAND * (x_hi - x_lo)
    points = local[(local[:, 0] > x_lo + band) & (local[:, 0] < x_hi - band)]
    if points.shape[0] < 20:
        return np.full(7, np.nan)
    points = points[::-(-points.shape[0] // _CYLINDER_FIT_POINTS)]
    n = points.shape[0]
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    normal = np.zeros((3, 3))
    rhs = np.zeros(3)
    for k in range(n):
        row = (2.0 * y[k], 2.0 * z[k], 1.0)
        for a in range(3):
            rhs[a] += row[a] * (y[k] * y[k] + z[k] * z[k])
            for b in range(3):
                normal[a, b] += row[a] * row[b]
    sol = _solve(normal, rhs)
    radius = np.sqrt(max(sol[2] + sol[0] * sol[0] + sol[1] * sol[1], 1e-12))
    resid = np.abs(np.hypot(y - sol[0], z - sol[1]) - radius)
    kept = resid <= np.partition(resid, int(0.8 * (n - 1)))[int(0.8 * (n - 1))]
    x, y, z = x[kept], y[kept], z[kept]
    params = np.array([sol[0], sol[1], 0.0, 0.0, radius])  # y, z at x = 0; dy/dx, dz/dx; r
    for _ in range(3):
        normal = np.zeros((5, 5))
        rhs = np.zeros(5)
        for k in range(x.size):
            dy = y[k] - params[0] - params[2] * x[k]
            dz = z[k] - params[1] - params[3] * x[k]
            dist = max(np.hypot(dy, dz), 1e-12)
            ey, ez = dy / dist, dz / dist
            row = (ey, ez, ey * x[k], ez * x[k], 1.0)  # minus the gradient of dist - r
            for a in range(5):
                rhs[a] += row[a] * (dist - params[4])
                for b in range(5):
                    normal[a, b] += row[a] * row[b]
        params += _solve(normal, rhs)
    out = np.full(7, np.nan)
    if not np.all(np.isfinite(params)):
        return out
    dy, dz = y - params[0] - params[2] * x, z - params[1] - params[3] * x
    out[:4] = params[:4]
    out[4] = abs(params[4])
    out[5] = np.sqrt(np.mean((np.hypot(dy, dz) - out[4]) ** 2))
    angle = np.sort(np.arctan2(dz, dy))
    out[6] = 2.0 * np.pi - max(np.max(np.diff(angle)), angle[0] + 2.0 * np.pi - angle[-1])
    return out


@njit('Tuple((f4[:, :], f8[:], f8[:, :], f8[:], f8[:], b1))(f8[:, :], b1[:], i8, f8, f8)',
      cache=True, nogil=True)
def _measure(points, in_core, min_points, trim, margin_per_m):
    """Pose, extents and shape of an object's kept points (module docs, steps 5-7).

    Args:
        points: ``(n, 3)`` kept points, camera frame, metres (``n >= min_points``).
        in_core: ``(n,)`` whether each point is in the eroded mask.
        min_points: fewest core points to fit the axes on the core alone.
        trim: fraction trimmed at each end of each axis for the extents.
        margin_per_m: how far (metres per metre of depth) a rim point may lie outside the
            core's box and still be kept.

    Returns:
        ``(kept, position, rotation, quaternion, extents, is_cylinder)``: the ``(k, 3)``
        ``float32`` points kept, ``(3,)`` position, ``(3, 3)`` rotation (columns = object
        axes, signs per the module docs), ``(4,)`` ``x, y, z, w`` quaternion, ``(3,)``
        extents in metres, and whether the shape rule found a cylinder.

    """
    core = points[in_core] if np.count_nonzero(in_core) >= min_points else points
    core = core[::max(1, core.shape[0] // _FIT_POINTS)]
    mean = np.empty(3)
    for c in range(3):
        mean[c] = np.mean(core[:, c])
    centred = core - mean
    cov = np.zeros((3, 3))
    for k in range(centred.shape[0]):
        for r in range(3):
            for c in range(3):
                cov[r, c] += centred[k, r] * centred[k, c]
    vecs = _eigh3(cov)[1]
    axes, kept, fit, lo, hi = _oriented_box(points, centred, mean, vecs[:, ::-1].copy(), trim,
                                            margin_per_m * mean[2])
    position = mean + _matvec(axes, 0.5 * (lo + hi))
    extents = hi - lo
    fitted = _fit_cylinder(fit, lo[0], hi[0])
    radius, rms, span = fitted[4], fitted[5], fitted[6]
    width = max(hi[1] - lo[1], hi[2] - lo[2])
    cylinder = (np.isfinite(fitted[0]) and rms < _CIRCLE_MAX_RMS * radius
                and span >= np.radians(_CIRCLE_MIN_SPAN_DEG)
                and 0.7 * width <= 2.0 * radius <= 1.3 * width and 2.0 * radius < hi[0] - lo[0])
    if cylinder:  # x = the fitted axis, the centre on it at mid-length
        origin = np.array([0.0, fitted[0], fitted[1]])
        axis = np.array([1.0, fitted[2], fitted[3]])
        axis /= np.sqrt(np.sum(axis * axis))
        along = np.empty((fit.shape[0], 1))
        for k in range(fit.shape[0]):
            along[k, 0] = ((fit[k, 0] - origin[0]) * axis[0] + (fit[k, 1] - origin[1]) * axis[1]
                           + (fit[k, 2] - origin[2]) * axis[2])
        t_lo, t_hi = _trimmed_range(along, trim)
        position = mean + _matvec(axes, origin + axis * (0.5 * (t_lo[0] + t_hi[0])))
        x = _matvec(axes, axis)
        y = axes[:, 1] - np.sum(axes[:, 1] * x) * x
        y /= np.sqrt(np.sum(y * y))
        axes = np.empty((3, 3))
        axes[:, 0], axes[:, 1], axes[:, 2] = x, y, _cross(x, y)
        extents = np.array([t_hi[0] - t_lo[0], 2.0 * radius, 2.0 * radius])
    rotation = _orient(axes, position)
    return (kept.astype(np.float32), position, rotation, _quaternion(rotation), extents,
            cylinder)
