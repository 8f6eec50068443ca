"""Which depth pixels belong to the object: noise model, support planes, surface linking.

Numba kernels (explicit signatures, compiled at import and cached) on a window of the depth
image around one mask; they take C-contiguous arrays (typed ``[:, ::1]``), which they index
without strides. Depths are ``float32`` metres, NaN where missing. A pixel ``(row,
col)`` of a window back-projects to ``x = (x0 + col * x_step) * z``, ``y = (y0 + row *
y_step) * z`` in the camera optical frame. See docs/geometry.md for the method.
"""

from numba import njit
import numpy as np

from zs_perception.geometry._linalg import eigh3

# Depth noise (one deviation, m) assumed at least, at 1 m: a sensor's quantisation and a
# rendered image's float rounding; it grows as z^2 like the noise itself.
NOISE_FLOOR_M = 0.0005
# Steepest surface (degrees from facing the camera) whose neighbouring pixels are linked.
MAX_SLOPE_DEG = 80.0
# Deviations of depth noise allowed between linked neighbours and off a support plane.
GAP_SIGMAS = 4.0
PLANE_SIGMAS = 3.0
# Deviations by which an outline pixel may miss the surface extrapolated from behind it.
FLYING_SIGMAS = 3.0
# Seeds that make a linked piece part of the object whatever the best piece holds.
_PIECE_SEEDS = 10
# Pixels of missing depth a surface may be linked across.
_BRIDGE_PX = 3
# RANSAC iterations and the most ring points a support plane is fitted on.
_RANSAC_ITERATIONS = 60
_RANSAC_POINTS = 400
# The most core points a support plane is checked against; a plane needs this share of the
# ring's points.
_CORE_POINTS = 400
_PLANE_MIN_SHARE = 0.15
# The least height (m) of the object's core over a plane for the plane to be its support.
_MIN_HEIGHT_M = 0.003
# The most of the core that may lie behind a support plane (noise, a rim of background).
_BEHIND_SHARE = 0.05


@njit('UniTuple(i8, 4)(b1[:, :])', cache=True, nogil=True)
def bounding_rect(mask):
    """Return the bounding rectangle ``(x, y, width, height)`` of a ``(H, W)`` ``bool`` mask.

    ``(0, 0, 0, 0)`` for an empty mask (as ``cv2.boundingRect``). One pass that ORs each
    row and the columns, then the first and last set row and column.
    """
    rows, cols = mask.shape
    col_any = np.zeros(cols, np.bool_)
    r0, r1 = -1, -1
    for r in range(rows):
        row_any = False
        for c in range(cols):
            v = mask[r, c]
            col_any[c] |= v
            row_any |= v
        if row_any:
            if r0 < 0:
                r0 = r
            r1 = r
    if r0 < 0:
        return 0, 0, 0, 0
    c0, c1 = 0, cols - 1
    while not col_any[c0]:
        c0 += 1
    while not col_any[c1]:
        c1 -= 1
    return c0, r0, c1 - c0 + 1, r1 - r0 + 1


def mask_roi_in_depth(mask, depth_shape):
    """Crop a mask to its bounding box on the depth pixel grid.

    Args:
        mask: ``(H, W)`` ``bool``; ``(H, W)`` may differ from ``depth_shape`` by a scale
            (same aspect ratio): the mask is then sampled at the depth pixels' centres.
        depth_shape: ``(h, w)`` of the depth image.

    Returns:
        ``(roi, row0, col0, rect)``: ``(r, c)`` ``bool`` mask on depth pixels
        ``[row0:row0 + r, col0:col0 + c]`` and the mask's bounding rectangle ``(x, y,
        width, height)`` in its own pixels, or ``None`` for an empty mask (or one on no
        depth pixel's centre).

    """
    rect = bounding_rect(mask)
    x, y, bw, bh = rect
    if bw == 0 or bh == 0:
        return None
    mh, mw = mask.shape
    h, w = depth_shape
    if (mh, mw) == (h, w):
        return mask[y:y + bh, x:x + bw], y, x, rect
    sy, sx = h / mh, w / mw  # depth pixels per mask pixel
    r0, r1 = int(np.floor(y * sy)), min(h, int(np.ceil((y + bh) * sy)))
    c0, c1 = int(np.floor(x * sx)), min(w, int(np.ceil((x + bw) * sx)))
    rows = np.minimum(((np.arange(r0, r1) + 0.5) / sy).astype(np.intp), mh - 1)
    cols = np.minimum(((np.arange(c0, c1) + 0.5) / sx).astype(np.intp), mw - 1)
    roi = mask[np.ix_(rows, cols)]
    if not roi.any():  # a mask finer than the depth image, on no depth pixel's centre
        return None
    return roi, r0, c0, rect


@njit('Tuple((f4[:, ::1], b1[:, ::1], b1[:, ::1], b1[:, ::1], b1[:, ::1], b1[:, ::1], f8, i8,'
      ' i8, f8))(f4[:, ::1], b1[:, ::1], f4[:, ::1], f4[:, ::1], f8, f8, i8, f8, f8, f8, f8)',
      cache=True, nogil=True)
def window_regions(depth, inside, inscribed, outside, min_depth, max_depth, seed_px,
                   grow_px, ring_inner_px, ring_px, near_px):
    """Return the depth and the pixel regions of one mask's window, in one pass.

    Args:
        depth: ``(r, c)`` ``float32`` metres of the window.
        inside: ``(r, c)`` the mask.
        inscribed, outside: ``(r, c)`` ``float32`` distances (px) of each pixel to the
            nearest pixel outside / inside the mask (``cv2.distanceTransform``).
        min_depth, max_depth: valid depth range (m).
        seed_px: the core lies this far inside the mask (at most half the largest
            inscribed distance); 0 makes the whole mask the core.
        grow_px, ring_inner_px, ring_px, near_px: distances (px) outside the mask bounding
            the grow band (``<= grow_px``), the plane ring (``ring_inner_px < d <=
            ring_px``) and the region whose depth later steps read (``<= near_px``).

    Returns:
        ``(depth_in, seeds, core, ring, near, candidate, z_ref, n_mask, n_valid,
        widest)``: the depth with NaN out of range, the core before and after dropping
        pixels without depth (the whole mask's valid pixels when none is left), the ring,
        the read region, the grow band with the mask, the core's median depth (m; NaN
        without one), the mask's pixel count and those with a valid depth, and the
        largest inscribed distance (px).

    """
    rows, cols = depth.shape
    widest = 0.0
    for r in range(rows):
        for c in range(cols):
            widest = max(widest, inscribed[r, c])
    thr = min(seed_px, 0.5 * widest) if seed_px > 0 else 0.0
    depth_in = np.empty((rows, cols), np.float32)
    seeds = np.zeros((rows, cols), np.bool_)
    core = np.zeros((rows, cols), np.bool_)
    ring = np.zeros((rows, cols), np.bool_)
    near = np.zeros((rows, cols), np.bool_)
    candidate = np.zeros((rows, cols), np.bool_)
    core_depth = np.empty(rows * cols)
    n_core, n_mask, n_valid = 0, 0, 0
    for r in range(rows):
        for c in range(cols):
            z = depth[r, c]
            ok = min_depth <= z <= max_depth
            depth_in[r, c] = z if ok else np.nan
            d = outside[r, c]
            ring[r, c] = ring_inner_px < d <= ring_px
            near[r, c] = d <= near_px
            candidate[r, c] = d <= grow_px
            if inside[r, c]:
                n_mask += 1
                n_valid += ok
                seeds[r, c] = seed_px == 0 or inscribed[r, c] >= thr
                if seeds[r, c] and ok:
                    core[r, c] = True
                    core_depth[n_core] = z
                    n_core += 1
    if n_core == 0:
        for r in range(rows):
            for c in range(cols):
                if inside[r, c] and min_depth <= depth[r, c] <= max_depth:
                    core[r, c] = True
                    core_depth[n_core] = depth[r, c]
                    n_core += 1
    z_ref = np.median(core_depth[:n_core]) if n_core else np.nan
    return depth_in, seeds, core, ring, near, candidate, z_ref, n_mask, n_valid, widest


@njit('f8(f4[:, ::1], b1[:, ::1])', cache=True, nogil=True)
def depth_noise(depth, core):
    """Estimate the depth noise (m, one standard deviation) on the mask ``core``.

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


@njit('f4[:, ::1](f4[:, ::1], b1[:, ::1], i8, f8)', cache=True, nogil=True)
def denoise(depth, roi, half, max_diff):
    """Edge-preserving smoothing of the depth of the pixels ``roi``.

    Each ``roi`` pixel with a depth becomes the mean of the ``roi`` pixels with a depth
    within ``half`` pixels whose depth differs from its own by at most ``max_diff`` metres,
    so noise is averaged but an object's depth is never mixed with a farther surface's.
    Returns a new ``float32`` array; pixels outside ``roi`` are copied.
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


@njit('f8[:, ::1](f4[:, ::1], b1[:, ::1], f8, f8, f8, f8, f8, f8, i8)', cache=True, nogil=True)
def window_points(depth, pick, x0, y0, x_step, y_step, min_depth, max_depth, max_count):
    """Back-project the ``pick`` pixels with a depth in range, at most ``max_count`` (even).

    Returns:
        ``(m, 4)``: ``x, y, z`` metres and the pixel's flat index in the window.

    """
    rows, cols = depth.shape
    n = 0
    for r in range(rows):
        for c in range(cols):
            if pick[r, c] and min_depth <= depth[r, c] <= max_depth:
                n += 1
    step = max(1, -(-n // max_count))
    out = np.empty((-(-n // step), 4))
    k, m = 0, 0
    for r in range(rows):
        for c in range(cols):
            z = depth[r, c]
            if pick[r, c] and min_depth <= z <= max_depth:
                if k % step == 0 and m < out.shape[0]:
                    out[m, 0] = (x0 + c * x_step) * z
                    out[m, 1] = (y0 + r * y_step) * z
                    out[m, 2] = z
                    out[m, 3] = r * cols + c
                    m += 1
                k += 1
    return out[:m]


@njit('f8[::1](f8[:, ::1], b1[::1])', cache=True, nogil=True)
def _plane_lsq(points, use):
    """Least-squares plane ``(nx, ny, nz, d)`` of ``points[use]``, ``d >= 0`` (camera side)."""
    n = 0
    mean = np.zeros(3)
    for k in range(points.shape[0]):
        if use[k]:
            mean += points[k, :3]
            n += 1
    mean /= max(n, 1)
    cov = np.zeros((3, 3))
    for k in range(points.shape[0]):
        if use[k]:
            d = points[k, :3] - mean
            for a in range(3):
                for b in range(3):
                    cov[a, b] += d[a] * d[b]
    normal = eigh3(cov)[1][:, 0].copy()
    offset = -(normal[0] * mean[0] + normal[1] * mean[1] + normal[2] * mean[2])
    if offset < 0:
        normal, offset = -normal, -offset
    return np.array([normal[0], normal[1], normal[2], offset])


@njit('Tuple((f8[::1], b1[::1]))(f8[:, ::1], f8[::1], i8)', cache=True, nogil=True)
def fit_plane(points, tolerance, seed):
    """RANSAC plane through ``points`` ``(n, >=3)``, refined by least squares on its inliers.

    A point is an inlier when its distance to the plane is at most its ``tolerance`` (m).
    The samples come from a fixed linear congruential sequence started at ``seed``, so the
    answer is repeatable.

    Returns:
        ``(plane, inliers)``: ``(4,)`` ``nx, ny, nz, d`` with ``n . p + d`` the signed
        distance, positive on the camera's side (``d >= 0``), and the ``(n,)`` inliers; the
        plane is all NaN for fewer than 3 points or no non-degenerate sample.

    """
    n = points.shape[0]
    best = np.full(4, np.nan)
    best_in = np.zeros(n, np.bool_)
    if n < 3:
        return best, best_in
    state = np.uint64(seed * 2654435761 + 1)
    best_count = 0
    for _ in range(_RANSAC_ITERATIONS):
        idx = np.empty(3, np.int64)
        for j in range(3):
            state = state * np.uint64(6364136223846793005) + np.uint64(1442695040888963407)
            idx[j] = np.int64((state >> np.uint64(33)) % np.uint64(n))
        a, b, c = points[idx[0], :3], points[idx[1], :3], points[idx[2], :3]
        u, v = b - a, c - a
        normal = np.array([u[1] * v[2] - u[2] * v[1], u[2] * v[0] - u[0] * v[2],
                           u[0] * v[1] - u[1] * v[0]])
        norm = np.sqrt(np.sum(normal * normal))
        if norm < 1e-12:
            continue
        normal /= norm
        offset = -np.sum(normal * a)
        count = 0
        for k in range(n):
            dist = (normal[0] * points[k, 0] + normal[1] * points[k, 1]
                    + normal[2] * points[k, 2] + offset)
            if abs(dist) <= tolerance[k]:
                count += 1
        if count > best_count:
            best_count = count
            best[:3], best[3] = normal, offset
    if best_count < 3:
        return np.full(4, np.nan), best_in
    for _ in range(2):  # refine on the inliers, then re-collect them
        for k in range(n):
            dist = (best[0] * points[k, 0] + best[1] * points[k, 1] + best[2] * points[k, 2]
                    + best[3])
            best_in[k] = abs(dist) <= tolerance[k]
        if np.count_nonzero(best_in) < 3:
            break
        best = _plane_lsq(points, best_in)
    for k in range(n):
        dist = best[0] * points[k, 0] + best[1] * points[k, 1] + best[2] * points[k, 2] + best[3]
        best_in[k] = abs(dist) <= tolerance[k]
    return best, best_in


@njit('Tuple((f8[:, ::1], f8))'
      '(f4[:, ::1], b1[:, ::1], b1[:, ::1], f8, f8, f8, f8, f8, f8, f8, f8)',
      cache=True, nogil=True)
def support_planes(depth, ring, core, x0, y0, x_step, y_step, min_depth, max_depth,
                   sigma_ref, z_ref):
    """Up to two planes fitted on the ``ring`` around the mask that the object stands before.

    RANSAC (:func:`fit_plane`) on at most ``_RANSAC_POINTS`` ring points, then again on the
    ring points off the first plane. A plane needs ``_PLANE_MIN_SHARE`` of the ring's
    points; it is a support (or background) plane when the median of the ``core`` points
    is more than the noise deviation (at least ``_MIN_HEIGHT_M``) in front of it and at
    most ``_BEHIND_SHARE`` of them are behind it by more than its tolerance (the top of a
    box in front of the object is no support). Tolerances: ``PLANE_SIGMAS`` deviations of
    the depth noise ``sigma_ref * (z / z_ref) ** 2``.

    Returns:
        ``(planes, height)``: ``(k, 4)`` planes ``nx, ny, nz, d`` (signed distance positive
        toward the camera) and the least median height (m) of the core over them (inf
        without a plane).

    """
    ring_points = window_points(depth, ring, x0, y0, x_step, y_step, min_depth, max_depth,
                                _RANSAC_POINTS)
    core_points = window_points(depth, core, x0, y0, x_step, y_step, min_depth, max_depth,
                                _CORE_POINTS)
    n_core = core_points.shape[0]
    planes = np.zeros((2, 4))
    n_planes = 0
    height = np.inf
    rest = ring_points
    ahead = np.empty(n_core)
    for attempt in range(2):
        if rest.shape[0] < 20:
            break
        tol = PLANE_SIGMAS * sigma_ref * (rest[:, 2] / z_ref) ** 2
        plane, inliers = fit_plane(rest, tol, attempt)
        if not np.all(np.isfinite(plane)) or (np.count_nonzero(inliers)
                                              < _PLANE_MIN_SHARE * ring_points.shape[0]):
            break
        behind = 0
        for k in range(n_core):
            ahead[k] = (plane[0] * core_points[k, 0] + plane[1] * core_points[k, 1]
                        + plane[2] * core_points[k, 2] + plane[3])
            if ahead[k] < -PLANE_SIGMAS * sigma_ref * (core_points[k, 2] / z_ref) ** 2:
                behind += 1
        if n_core:
            median = np.median(ahead)
            if median > max(sigma_ref, _MIN_HEIGHT_M) and behind <= _BEHIND_SHARE * n_core:
                planes[n_planes] = plane
                n_planes += 1
                height = min(height, median)
        rest = rest[~inliers]
    return planes[:n_planes].copy(), height


@njit('b1[:, ::1](f4[:, ::1], b1[:, ::1], f8, f8, f8, f8, f8, f8, f8, f8, f8[:, ::1])',
      cache=True, nogil=True)
def background(depth, pick, x0, y0, x_step, y_step, min_depth, max_depth,
               sigma_ref, z_ref, planes):
    """Pixels of ``pick`` without a depth in range or on/behind a support plane.

    ``planes`` ``(k, 4)``: planes with the object on their camera side; a pixel whose
    signed distance is under ``PLANE_SIGMAS`` deviations of the depth noise at its depth
    (``sigma_ref * (z / z_ref) ** 2``) is on or behind one of them.
    """
    rows, cols = depth.shape
    out = np.zeros((rows, cols), np.bool_)
    for r in range(rows):
        for c in range(cols):
            if not pick[r, c]:
                continue
            z = depth[r, c]
            if not (min_depth <= z <= max_depth):
                out[r, c] = True
                continue
            tol = PLANE_SIGMAS * sigma_ref * (z / z_ref) ** 2
            x, y = (x0 + c * x_step) * z, (y0 + r * y_step) * z
            for p in range(planes.shape[0]):
                if planes[p, 0] * x + planes[p, 1] * y + planes[p, 2] * z + planes[p, 3] <= tol:
                    out[r, c] = True
                    break
    return out


@njit('b1[:, ::1](f4[:, ::1], b1[:, ::1], b1[:, ::1], f8, f8, f8, f8)', cache=True, nogil=True)
def link_surface(depth, candidate, seeds, sigma_ref, z_ref, slope_per_px, min_share):
    """Keep the candidate pixels linked along the surface to the mask's confident core.

    Neighbouring candidate pixels (8-connected) are linked when their depths differ by at
    most ``GAP_SIGMAS`` deviations of the noise at that depth plus what a surface at
    ``MAX_SLOPE_DEG`` rises over their distance (``slope_per_px * z`` per pixel). The
    linked pieces holding at least ``min_share`` of the seeds the best piece holds, or at
    least ``_PIECE_SEEDS`` seeds (an object cut in pieces by missing depth), are kept; when
    no seed is a candidate, the largest piece is. Pieces within ``_BRIDGE_PX`` pixels of a
    kept one, at a depth it continues to (a gap of missing depth), join it.

    Args:
        depth: ``(r, c)`` ``float32`` metres (NaN where missing).
        candidate: ``(r, c)`` pixels that may belong to the object (valid depth, not
            background).
        seeds: ``(r, c)`` the mask's confident core.
        sigma_ref, z_ref: depth noise ``sigma_ref`` (m) at depth ``z_ref`` (m); it scales
            as ``z ** 2``.
        slope_per_px: ``tan(MAX_SLOPE_DEG) / f`` (per pixel).
        min_share: see above.

    Returns:
        ``(r, c)`` ``bool`` the kept pixels.

    """
    rows, cols = depth.shape
    size = rows * cols
    flat_depth = depth.ravel()
    open_ = candidate.ravel().copy()  # candidates not labelled yet
    flat_seeds = seeds.ravel()
    label = np.full(size, -1, np.int32)
    stack_r = np.empty(size, np.int32)  # rows and columns apart: no division per pixel
    stack_c = np.empty(size, np.int32)
    seed_count = np.zeros(size + 1, np.int32)
    piece_size = np.zeros(size + 1, np.int32)
    gap = GAP_SIGMAS * np.sqrt(2.0) * sigma_ref / (z_ref * z_ref)  # times z ** 2
    diag_slope = np.sqrt(2.0) * slope_per_px
    n_labels = 0
    for start in range(size):
        if not open_[start]:
            continue
        label[start] = n_labels
        open_[start] = False
        stack_r[0], stack_c[0] = start // cols, start % cols
        top = 1
        while top > 0:
            top -= 1
            r, c = stack_r[top], stack_c[top]
            p = r * cols + c
            z = flat_depth[p]
            piece_size[n_labels] += 1
            if flat_seeds[p]:
                seed_count[n_labels] += 1
            noise = gap * z * z
            straight = noise + slope_per_px * z
            diagonal = noise + diag_slope * z
            for dr in range(-1, 2):
                rr = r + dr
                if rr < 0 or rr >= rows:
                    continue
                for dc in range(-1, 2):
                    cc = c + dc
                    if cc < 0 or cc >= cols or (dr == 0 and dc == 0):
                        continue
                    q = rr * cols + cc
                    if not open_[q]:
                        continue
                    if abs(flat_depth[q] - z) <= (diagonal if dr != 0 and dc != 0
                                                  else straight):
                        label[q] = n_labels
                        open_[q] = False
                        stack_r[top], stack_c[top] = rr, cc
                        top += 1
        n_labels += 1
    keep = np.zeros(n_labels, np.bool_)
    best_seeds = 0
    for k in range(n_labels):
        best_seeds = max(best_seeds, seed_count[k])
    if best_seeds > 0:
        for k in range(n_labels):
            keep[k] = seed_count[k] >= min(min_share * best_seeds, _PIECE_SEEDS)
    elif n_labels > 0:
        keep[np.argmax(piece_size[:n_labels])] = True
    # A piece that missing depth cut off: within _BRIDGE_PX of a kept piece, across pixels
    # without depth, at a depth that piece continues to.
    if n_labels > 1 and not np.all(keep):
        span = 2 * _BRIDGE_PX + 1
        reach = np.empty((span, span))  # pixel distance of each offset, times the slope
        for dr in range(span):
            for dc in range(span):
                reach[dr, dc] = np.sqrt((dr - _BRIDGE_PX) ** 2
                                        + (dc - _BRIDGE_PX) ** 2) * slope_per_px
        for _ in range(2):
            join = np.zeros(n_labels, np.bool_)
            for p in range(size):
                k = label[p]
                if k < 0 or keep[k] or join[k]:
                    continue
                r, c = p // cols, p % cols
                z = flat_depth[p]
                noise = gap * z * z
                for rr in range(max(0, r - _BRIDGE_PX), min(rows, r + _BRIDGE_PX + 1)):
                    for cc in range(max(0, c - _BRIDGE_PX), min(cols, c + _BRIDGE_PX + 1)):
                        q = label[rr * cols + cc]
                        if q >= 0 and keep[q] and abs(flat_depth[rr * cols + cc] - z) <= (
                                noise + reach[rr - r + _BRIDGE_PX, cc - c + _BRIDGE_PX] * z):
                            join[k] = True
            keep |= join
    out = np.zeros((rows, cols), np.bool_)
    flat_out = out.ravel()
    for p in range(size):
        if label[p] >= 0 and keep[label[p]]:
            flat_out[p] = True
    return out


@njit('b1(b1[:, ::1], i8, i8)', cache=True, nogil=True, inline='always')
def on_outline(kept, r, c):
    """Whether pixel ``(r, c)`` is kept and has a non-kept 8-neighbour (or the window edge)."""
    rows, cols = kept.shape
    if not kept[r, c]:
        return False
    for rr in range(r - 1, r + 2):
        for cc in range(c - 1, c + 2):
            if rr < 0 or rr >= rows or cc < 0 or cc >= cols or not kept[rr, cc]:
                return True
    return False


@njit('b1[:, ::1](b1[:, ::1])', cache=True, nogil=True)
def outline_of(region):
    """Pixels of ``region`` ``(r, c)`` ``bool`` with an 8-neighbour outside it or off the window.

    The same as :func:`on_outline` at every pixel, as a separable 3x3 erosion: a pixel is
    inside when its row's three pixels are in the region in its row and the rows above and
    below (pixels off the window count as outside).
    """
    rows, cols = region.shape
    across = np.zeros((rows, cols), np.bool_)  # the pixel and both row neighbours in it
    for r in range(rows):
        for c in range(1, cols - 1):
            across[r, c] = region[r, c - 1] & region[r, c] & region[r, c + 1]
    out = region.copy()  # the first and last rows: all on the outline
    for r in range(1, rows - 1):
        for c in range(cols):
            out[r, c] = region[r, c] & ~(across[r - 1, c] & across[r, c] & across[r + 1, c])
    return out


@njit('f8(f4[:, ::1], b1[:, ::1], i8, i8, i8)', cache=True, nogil=True, inline='always')
def _nearest_kept(depth, kept, r, c, radius):
    """Return the nearest finite depth of the kept pixels within ``radius`` of ``(r, c)``."""
    rows, cols = depth.shape
    front = np.inf
    for rr in range(max(0, r - radius), min(rows, r + radius + 1)):
        for cc in range(max(0, c - radius), min(cols, c + radius + 1)):
            if kept[rr, cc] and depth[rr, cc] < front:  # NaN compares False
                front = depth[rr, cc]
    return front


@njit('i8[::1](f4[:, ::1], b1[:, ::1], b1[:, ::1], i8, i8, i8, i8, f8, f8, f8, i8)', cache=True,
      nogil=True)
def outline(depth, kept, edge, row0, col0, height, width, sigma_ref, z_ref,
            slope_per_px, radius):
    """Classify the kept region's outline pixels by what lies just outside them.

    A kept pixel with a non-kept 8-neighbour (or the window edge) is on the outline:
    ``edge``, given by the caller (:func:`outline_of`). It is *occluded* when a
    non-kept pixel within ``radius`` pixels is nearer than it by more than
    ``GAP_SIGMAS`` noise deviations plus the rise of a surface at ``MAX_SLOPE_DEG`` over
    their distance (a support plane in front of the object rises less steeply: not
    occlusion), and nearer than every kept pixel within ``radius`` of it by more than
    the noise (a mixed depth pixel kept at the object's edge lies behind the object's
    surface: the object's own pixels beside it are not in front of it); *at the border*
    when it lies within one pixel of the image border (the window starts at image pixel
    ``row0, col0`` of a ``height`` x ``width`` image);
    *unseen* when most pixels around it have no depth.

    Returns:
        ``(4,)`` counts: outline pixels, occluded, at the border, unseen.

    """
    rows, cols = depth.shape
    counts = np.zeros(4, np.int64)
    span = 2 * radius + 1
    rise = np.empty((span, span))  # each offset's pixel distance times the slope
    for dr in range(span):
        for dc in range(span):
            rise[dr, dc] = np.sqrt((dr - radius) ** 2 + (dc - radius) ** 2) * slope_per_px
    for r in range(rows):
        for c in range(cols):
            if not edge[r, c]:
                continue
            counts[0] += 1
            gr, gc = row0 + r, col0 + c
            if gr <= 1 or gc <= 1 or gr >= height - 2 or gc >= width - 2:
                counts[2] += 1
                continue
            z = depth[r, c]
            noise = GAP_SIGMAS * sigma_ref * (z / z_ref) ** 2
            nearer = False
            missing, seen = 0, 0
            front, looked = np.inf, False  # the nearest kept depth around, when first needed
            c_lo, c_hi = max(0, c - radius), min(cols, c + radius + 1)
            for rr in range(max(0, r - radius), min(rows, r + radius + 1)):
                for cc in range(c_lo, c_hi):
                    if kept[rr, cc]:
                        continue
                    d = depth[rr, cc]
                    if not np.isfinite(d):
                        missing += 1
                        continue
                    seen += 1
                    if d < z - noise - rise[rr - r + radius, cc - c + radius] * z:
                        # Nearer than the object's surface around too, not only than this
                        # pixel (a mixed pixel kept at the edge lies behind the object).
                        if not looked:
                            front, looked = _nearest_kept(depth, kept, r, c, radius), True
                        if d < front - GAP_SIGMAS * sigma_ref * (front / z_ref) ** 2:
                            nearer = True  # occluded whatever the rest holds
                            break
                if nearer:
                    break
            if nearer:
                counts[1] += 1
            elif missing > seen:
                counts[3] += 1
    return counts


@njit('b1(f4[:, ::1], b1[:, ::1], i8, i8, f8, f8)', cache=True, nogil=True)
def _flying(depth, kept, r, c, sigma_ref, z_ref):
    """Whether kept outline pixel ``(r, c)`` is a flying pixel (see :func:`peel_flying`)."""
    rows, cols = depth.shape
    z = depth[r, c]
    tol = FLYING_SIGMAS * np.sqrt(6.0) * sigma_ref * (z / z_ref) ** 2
    tried = False
    for dr in range(-1, 2):
        for dc in range(-1, 2):
            if dr == 0 and dc == 0:
                continue
            r1, c1, r2, c2 = r + dr, c + dc, r + 2 * dr, c + 2 * dc
            if r2 < 0 or r2 >= rows or c2 < 0 or c2 >= cols:
                continue
            if not (kept[r1, c1] and kept[r2, c2]):
                continue
            tried = True
            if abs(z - (2.0 * depth[r1, c1] - depth[r2, c2])) <= tol:
                return False
    return tried


@njit('b1[:, ::1](f4[:, ::1], b1[:, ::1], b1[:, ::1], f8, f8, i8)', cache=True, nogil=True)
def peel_flying(depth, kept, edge, sigma_ref, z_ref, passes):
    """Drop the kept outline pixels whose depth the surface behind them does not continue.

    Mixed ("flying") pixels at a depth edge lie between the object and what is behind it,
    often within the linking gap. An outline pixel (a non-kept 8-neighbour) stays when,
    along at least one of the 8 directions, the two kept pixels behind it extrapolate
    linearly to its depth within ``FLYING_SIGMAS`` deviations of that extrapolation's noise
    (``sqrt(6)`` times the depth noise); one with no such pair stays too. Each of the
    ``passes`` peels one layer, judged on what the layer before left; after the first, only
    the pixels within 2 of a peeled one can change and only they are looked at again.
    ``edge``: the outline of ``kept`` (:func:`outline_of`).

    Returns:
        ``(r, c)`` ``bool`` the kept pixels left (a new array).

    """
    rows, cols = depth.shape
    out = kept.copy()
    peeled = np.empty(rows * cols, np.int64)
    n_peeled = 0
    for r in range(rows):
        for c in range(cols):
            if edge[r, c] and _flying(depth, kept, r, c, sigma_ref, z_ref):
                peeled[n_peeled] = r * cols + c
                n_peeled += 1
    for k in range(n_peeled):
        out[peeled[k] // cols, peeled[k] % cols] = False
    seen = np.zeros((rows, cols), np.bool_)
    for _ in range(passes - 1):
        if n_peeled == 0:
            break
        before = out.copy()
        look = np.empty(25 * n_peeled, np.int64)
        n_look = 0
        for k in range(n_peeled):
            r, c = peeled[k] // cols, peeled[k] % cols
            for rr in range(max(0, r - 2), min(rows, r + 3)):
                for cc in range(max(0, c - 2), min(cols, c + 3)):
                    if before[rr, cc] and not seen[rr, cc]:
                        seen[rr, cc] = True
                        look[n_look] = rr * cols + cc
                        n_look += 1
        n_peeled = 0
        for k in range(n_look):
            r, c = look[k] // cols, look[k] % cols
            seen[r, c] = False
            if on_outline(before, r, c) and _flying(depth, before, r, c, sigma_ref, z_ref):
                peeled[n_peeled] = look[k]
                n_peeled += 1
        for k in range(n_peeled):
            out[peeled[k] // cols, peeled[k] % cols] = False
    return out
