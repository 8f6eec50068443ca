"""How an object's 3D pose is computed: mask + depth + intrinsics -> position, axes, extents.

Per object mask, in this order (all on the mask's bounding box, never the whole image):

1. **Resolution.** The depth image and its intrinsics define the pixel grid. A mask of another
   resolution (same aspect ratio, e.g. 1280x720 colour with 640x360 depth) is sampled at the
   depth pixels' centres (nearest neighbour); intrinsics are never rescaled here.
2. **Edge erosion.** The mask is eroded by ``erode_px`` pixels (elliptical kernel), so pixels
   where the mask bleeds onto the background, and the mixed "flying" depth pixels of object
   edges, are not used. If fewer than ``min_points`` pixels survive (a thin object), the
   un-eroded mask is used instead.
3. **Valid depth.** Depth must be finite and in ``[min_depth_m, max_depth_m]``.
4. **Dominant near depth cluster.** The valid depths are histogrammed (bin width
   ``max(cluster_bin_m, cluster_bin_rel * median depth)``); runs of occupied bins (one empty
   bin bridged) are clusters. The nearest cluster holding at least ``cluster_min_share`` of
   the points is kept (the largest if none does): the background seen through or beside a
   thin object is farther away and is dropped instead of pulling the centre.
5. **Axes.** Principal axes of the kept core points (at most 1200, evenly strided), turned
   onto the faces of the box the points hug (:func:`_fit_box_axes`, on 300 points).
6. **Box.** The points are expressed along those axes; the extent along each axis is the
   spread between the ``trim_percent`` and ``100 - trim_percent`` order statistics and the
   position is the centre of that robust oriented box (not the mean of the points, which
   would sit on the visible surface only). Rim points the erosion removed are kept where
   they lie within the eroded width of the core's box.
7. **Shape rule: cylinder or box.** The points away from the two ends (15 % of the length
   at each end, so a visible cap is left out) are fitted with a cylinder about the longest
   axis (:func:`_fit_cylinder`: algebraic circle fit of their cross-section, 20 % worst
   points dropped, Gauss-Newton of the geometric fit for the axis' point, tilt and radius).
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
"""

from dataclasses import dataclass
from typing import List, Sequence, Union

import cv2
import numpy as np

from zs_perception.geometry.camera import CameraIntrinsics

STATUS_OK = 'ok'
_AXIS_FIT_POINTS = 300
_FIT_POINTS = 1200
_ANGLE_STEP = np.radians(0.1)
_AXIS_ROUNDS = 2
_CAP_BAND = 0.15
_CIRCLE_MAX_RMS = 0.07
_CIRCLE_MIN_SPAN_DEG = 120.0


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
    return [_one_object(m, depth_m, intrinsics, **params) for m in mask_list]


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


def _no_pose(status, num_points=0, valid_fraction=0.0, points=None):
    return ObjectGeometry(
        has_pose=False, status=status, position=np.zeros(3), rotation=np.eye(3),
        quaternion=np.array([0.0, 0.0, 0.0, 1.0]), extents=np.zeros(3),
        num_points=num_points, valid_fraction=valid_fraction,
        points=np.zeros((0, 3), np.float32) if points is None else points)


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


def _dominant_near_cluster(z, bin_m, min_share):
    """Depth interval ``(near, far)`` in metres of the dominant near cluster of depths ``z``.

    ``z``: 1-D valid depths (not empty).
    """
    z_min = float(z.min())
    counts = np.bincount(((z - z_min) / bin_m).astype(np.intp))
    occupied = counts >= max(2, int(0.002 * z.size))
    bridged = occupied.copy()
    bridged[1:-1] |= occupied[:-2] & occupied[2:]  # one empty bin does not split a cluster
    starts = bridged & ~np.concatenate(([False], bridged[:-1]))
    labels = np.cumsum(starts) * bridged  # 0 = not in a cluster, 1..K nearest first
    sizes = np.bincount(labels, weights=counts)[1:]
    if sizes.size == 0:  # no bin is dense enough: every depth is its own cluster
        return z_min, float(z.max())
    big = np.flatnonzero(sizes >= min_share * z.size)
    chosen = (big[0] if big.size else int(np.argmax(sizes))) + 1
    in_cluster = np.flatnonzero(labels == chosen)
    return z_min + in_cluster[0] * bin_m, z_min + (in_cluster[-1] + 1) * bin_m


def _fit_box_axes(centred, axes, max_points=_AXIS_FIT_POINTS, rounds=_AXIS_ROUNDS):
    """Turn principal axes into the axes of the box whose faces the points lie on.

    The principal axes of a box's *visible* surface are tilted by the faces the camera does
    not see. Each step projects the points on the plane of two axes and tries every
    orientation of a rectangle with one side along an edge of the projection's convex hull
    (and the current orientation): it keeps the one whose sides the points hug best (least
    mean distance from each point to the nearest side; a minimum-area rectangle would be
    ambiguous for the L-shaped section of a box seen on two faces). The three planes are
    visited ``rounds`` times, on at most ``max_points`` evenly strided points.
    """
    sub = centred[::max(1, centred.shape[0] // max_points)]
    axes = axes.copy()
    for i, j in ((0, 1), (1, 2), (0, 2)) * rounds:
        flat = sub @ axes[:, [i, j]]  # (n, 2)
        hull = cv2.convexHull(flat.astype(np.float32))[:, 0, :]
        edges = np.diff(hull, axis=0, append=hull[:1])
        angles = np.arctan2(edges[:, 1], edges[:, 0])
        angles = (angles + np.pi / 4) % (np.pi / 2) - np.pi / 4  # sides 90 deg apart
        steps = np.unique(np.round(angles / _ANGLE_STEP))  # one candidate per 0.1 deg
        angles = np.append(steps, 0.0) * _ANGLE_STEP
        c, s = np.cos(angles), np.sin(angles)
        # Rows: every candidate's u direction, then every candidate's v direction.
        uv = np.concatenate([np.stack([c, s], axis=1), np.stack([-s, c], axis=1)]) @ flat.T
        lo, hi = uv.min(axis=1, keepdims=True), uv.max(axis=1, keepdims=True)
        gap = 0.5 * (hi - lo) - np.abs(uv - 0.5 * (hi + lo))  # distance to the nearer side
        count = angles.size
        best = int(np.argmin(np.minimum(gap[:count], gap[count:]).sum(axis=1)))
        c, s = c[best], s[best]
        axes[:, i], axes[:, j] = c * axes[:, i] + s * axes[:, j], \
            -s * axes[:, i] + c * axes[:, j]
    return axes


def _orient(axes, position):
    """Apply the sign convention to principal axes ``axes`` (columns: longest..shortest)."""
    x, z = axes[:, 0], axes[:, 2]
    zp = float(z @ position)
    if zp > 0 or (zp == 0 and z[2] > 0):
        z = -z
    nonzero = np.flatnonzero(np.abs(x) > 1e-12)
    if x[nonzero[0]] < 0:
        x = -x
    return np.stack([x, _cross(z, x), z], axis=1)


def _cross(a, b):
    """Cross product of two ``(3,)`` vectors (``np.cross`` costs more than the arithmetic)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2],
                     a[0] * b[1] - a[1] * b[0]])


def rotation_to_quaternion(rot: np.ndarray) -> np.ndarray:
    """``(3, 3)`` rotation matrix -> ``(4,)`` ``float64`` quaternion ``x, y, z, w``, ``w >= 0``."""
    m = np.asarray(rot, dtype=np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = [s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * np.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = [(m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def _trimmed_range(values, trim_fraction):
    """Per-column ``trim_fraction`` and ``1 - trim_fraction`` order statistics of ``(n, k)``."""
    last = values.shape[0] - 1
    k_lo = int(round(trim_fraction * last))
    part = np.partition(values, [k_lo, last - k_lo], axis=0)
    return part[k_lo], part[last - k_lo]


def _median(values):
    """Median (upper middle element) of a 1-D array, cheaper than ``np.median``."""
    middle = values.size // 2
    return float(np.partition(values, middle)[middle])


def _one_object(mask, depth_m, intr, *, min_depth_m, max_depth_m, erode_px, min_points,
                cluster_bin_m, cluster_bin_rel, cluster_min_share,
                trim_percent, max_points) -> ObjectGeometry:
    found = _mask_roi_in_depth(mask, depth_m.shape)
    if found is None:
        return _no_pose('empty mask')
    roi, r0, c0 = found
    depth_roi = depth_m[r0:r0 + roi.shape[0], c0:c0 + roi.shape[1]]
    rows, cols = np.nonzero(roi)
    z_all = depth_roi[rows, cols]
    valid = (z_all >= min_depth_m) & (z_all <= max_depth_m)
    n_valid_all = int(np.count_nonzero(valid))
    valid_fraction = n_valid_all / z_all.size
    if n_valid_all == 0:
        return _no_pose(f'no valid depth in mask (none in [{min_depth_m:g}, '
                        f'{max_depth_m:g}] m)')

    core = roi
    if erode_px > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode_px + 1,) * 2)
        eroded = cv2.erode(roi.view(np.uint8), kernel, borderType=cv2.BORDER_CONSTANT,
                           borderValue=0).view(bool)
        if np.count_nonzero(eroded) >= min_points:
            core = eroded
    if rows.size > max_points:  # an even subsample, in raster order, bounds the cost
        step = -(-rows.size // max_points)
        rows, cols, z, valid = rows[::step], cols[::step], z_all[::step], valid[::step]
    else:
        z = z_all
    in_core = core[rows, cols] & valid
    if not in_core.any():
        in_core = valid
    z_core = z[in_core]
    bin_m = max(cluster_bin_m, cluster_bin_rel * _median(z_core))
    near, far = _dominant_near_cluster(z_core, bin_m, cluster_min_share)
    keep = valid & (z >= near) & (z <= far)
    in_core = in_core[keep]
    rows, cols, z = rows[keep], cols[keep], z[keep].astype(np.float64)
    points = np.empty((z.size, 3), np.float64)
    points[:, 0] = (cols + (c0 - intr.cx)) * z / intr.fx
    points[:, 1] = (rows + (r0 - intr.cy)) * z / intr.fy
    points[:, 2] = z
    if z.size < min_points:
        return _no_pose(f'too few points ({z.size} < {min_points})', z.size, valid_fraction,
                        points.astype(np.float32))

    trim = trim_percent / 100.0
    core_points = points[in_core] if np.count_nonzero(in_core) >= min_points else points
    core_points = core_points[::max(1, len(core_points) // _FIT_POINTS)]
    mean = core_points.mean(axis=0)
    centred = core_points - mean
    _, vecs = np.linalg.eigh(centred.T @ centred)  # ascending eigenvalues
    axes = _fit_box_axes(centred, vecs[:, ::-1])
    local = centred @ axes
    lo, hi = _trimmed_range(local, trim)
    order = np.argsort(lo - hi, kind='stable')  # longest first
    axes, lo, hi = axes[:, order], lo[order], hi[order]
    # The rim the erosion removed belongs to the object where it lies within the eroded
    # width of the core's box; farther rim points are background the mask bled onto.
    margin = (erode_px + 0.5) * _median(z) / min(intr.fx, intr.fy)
    along = (points - mean) @ axes
    inside = np.all(np.abs(along - 0.5 * (hi + lo)) <= 0.5 * (hi - lo) + margin, axis=1)
    points, along = points[inside], along[inside]
    fit = along[::max(1, len(along) // _FIT_POINTS)]
    lo, hi = _trimmed_range(fit, trim)
    order = np.argsort(lo - hi, kind='stable')
    if np.any(order != np.arange(3)):  # the rim changed which side is longest
        axes, fit, lo, hi = axes[:, order], fit[:, order], lo[order], hi[order]
    shape = 'box'
    position = mean + axes @ ((lo + hi) / 2.0)
    extents = hi - lo
    cylinder = _cylinder(fit, lo, hi, trim)
    if cylinder is not None:
        shape = 'cylinder'
        axis, centre, length, diameter = cylinder
        position = mean + axes @ centre
        x = axes @ axis
        y = axes[:, 1] - (axes[:, 1] @ x) * x
        y /= np.linalg.norm(y)
        axes = np.stack([x, y, _cross(x, y)], axis=1)
        extents = np.array([length, diameter, diameter])
    rotation = _orient(axes, position)
    return ObjectGeometry(
        has_pose=True, status=STATUS_OK, position=position, rotation=rotation,
        quaternion=rotation_to_quaternion(rotation), extents=extents, num_points=len(points),
        valid_fraction=valid_fraction, points=points.astype(np.float32), shape=shape)


def _cylinder(local, lo, hi, trim):
    """Cylinder test on object coordinates ``local`` ``(n, 3)`` (x = longest axis).

    Returns:
        ``(axis, centre, length, diameter)`` of the cylinder, ``axis`` and ``centre``
        ``(3,)`` in object coordinates, lengths in metres; or ``None`` for a box.

    """
    length = hi[0] - lo[0]
    side = (local[:, 0] > lo[0] + _CAP_BAND * length) & (local[:, 0] < hi[0] - _CAP_BAND * length)
    if np.count_nonzero(side) < 20:
        return None
    fitted = _fit_cylinder(local[side])
    if fitted is None:
        return None
    origin, axis, radius, rms, span = fitted
    width = float(np.max(hi[1:] - lo[1:]))
    if not (rms < _CIRCLE_MAX_RMS * radius and span >= np.radians(_CIRCLE_MIN_SPAN_DEG)
            and 0.7 * width <= 2.0 * radius <= 1.3 * width and 2.0 * radius < length):
        return None
    t_lo, t_hi = _trimmed_range((local - origin) @ axis, trim)
    return axis, origin + axis * (0.5 * (t_lo + t_hi)), float(t_hi - t_lo), 2.0 * radius


def _fit_cylinder(points):
    """Fit a cylinder whose axis is near the x axis to ``(n, 3)`` points.

    An algebraic (Kasa) circle fit to the points' ``(y, z)`` starts (the axis along x); the
    20 % of points farthest from that circle are dropped; three Gauss-Newton steps of the
    geometric fit (least squares of the distances to the surface) on the rest then fit the
    axis' point and tilt and the radius together. That removes the algebraic fit's bias
    toward a smaller circle on a short, noisy arc, and the tilt of an axis estimate that
    the visible half of the cylinder pulls off its true axis.

    Returns:
        ``(origin, axis, radius, rms, span)``: the axis' point at ``x = 0`` and its unit
        direction ``(3,)``, the radius and rms residual in metres, and the angle in radians
        the fitted points span around the axis; or ``None`` for a degenerate fit.

    """
    x, y, z = points[:, 0], points[:, 1], points[:, 2]
    design = np.stack([2.0 * y, 2.0 * z, np.ones_like(y)], axis=1)
    try:
        sol = np.linalg.solve(design.T @ design, design.T @ (y * y + z * z))
        cy, cz = sol[0], sol[1]
        radius = np.sqrt(max(sol[2] + cy * cy + cz * cz, 1e-12))
        resid = np.abs(np.hypot(y - cy, z - cz) - radius)
        k = int(0.8 * (resid.size - 1))
        kept = resid <= np.partition(resid, k)[k]
        x, y, z = x[kept], y[kept], z[kept]
        params = np.array([cy, cz, 0.0, 0.0, radius])  # axis y, z at x = 0; dy/dx, dz/dx; r
        for _ in range(3):
            dy, dz = y - params[0] - params[2] * x, z - params[1] - params[3] * x
            dist = np.maximum(np.hypot(dy, dz), 1e-12)
            ey, ez = dy / dist, dz / dist
            # Minus the Jacobian of dist - r with respect to the parameters.
            jac = np.stack([ey, ez, ey * x, ez * x, np.ones_like(x)], axis=1)
            params += np.linalg.solve(jac.T @ jac, jac.T @ (dist - params[4]))
    except np.linalg.LinAlgError:  # collinear points: no circle
        return None
    if not np.all(np.isfinite(params)):
        return None
    dy, dz = y - params[0] - params[2] * x, z - params[1] - params[3] * x
    radius = abs(float(params[4]))
    rms = float(np.sqrt(np.mean((np.hypot(dy, dz) - radius) ** 2)))
    angle = np.sort(np.arctan2(dz, dy))
    largest_gap = max(float(np.max(np.diff(angle))), float(angle[0] + 2.0 * np.pi - angle[-1]))
    axis = np.array([1.0, params[2], params[3]])
    return (np.array([0.0, params[0], params[1]]), axis / np.linalg.norm(axis), radius, rms,
            2.0 * np.pi - largest_gap)
