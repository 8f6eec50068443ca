"""One object's steps, from its mask window to its pose, as one kernel.

``object_geometry`` runs the steps of docs/geometry.md in order (regions, noise model,
support planes, smoothing, background, surface linking, flying pixels, occlusion, fit,
corrections, confidence) without returning to Python between them, so the objects of one
call measured on the pool's threads never wait for the GIL in between (the Python between
separate kernel calls serialised them). Its ``py_func`` runs the same steps with every
kernel called from Python (``benchmarks/profile_geometry.py`` times them so).

Numba kernel with an explicit signature (compiled at import, cached beside this file).
"""

from numba import njit
import numpy as np

from zs_perception.geometry import _points
from zs_perception.geometry._linalg import quaternion
from zs_perception.geometry._measure import measure, settle

# Depth noise (m, estimated per object) above which depth is smoothed before use, the half
# width (px) of the edge-preserving smoothing window, and the share of the noise left after.
_DENOISE_MIN_SIGMA_M = 0.001
_DENOISE_HALF_WINDOW = 2
_DENOISED_SHARE = 0.5
# The support-plane ring: from RING_INNER_PX to ring_px pixels outside the mask.
RING_INNER_PX = 3
# Layers of mixed depth pixels at the outline that may be peeled off.
_FLYING_PASSES = 2
# Outline pixels searched (px) for nearer depth, and the outline share that is occlusion.
OCCLUSION_RADIUS_PX = 3
OCCLUDED_SHARE = 0.10
# Largest float32 magnitude: points beyond it cannot be published.
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# The index of 'unknown' in _measure.SHAPES (no model fits: half the confidence).
_UNKNOWN = 2
# Outcomes (``object_geometry``'s first value); all but OK come without a pose.
OK = 0
NO_DEPTH = 1
DEGENERATE_MASK = 2
TOO_FEW_POINTS = 3
NON_FINITE = 4
COLLINEAR = 5


@njit('Tuple((i8, f8, b1, f4[:, :], f8[:], f8[:, :], f8[:], f8[:], i8, f8))'
      '(f4[:, ::1], b1[:, ::1], f4[:, ::1], f4[:, ::1], i8, i8, i8, i8, f8, f8, f8, f8, f8,'
      ' f8, f8, i8, f8, f8, f8, i8, i8, f8)', cache=True, nogil=True)
def object_geometry(depth, inside, inscribed, outside, row0, col0, height, width,
                    x0, y0, x_step, y_step, slope_per_px, min_depth, max_depth, seed_px,
                    grow_px, ring_px, min_share, min_points, max_points, trim):
    """Measure one masked object on its window (docs/geometry.md, steps 2-12).

    Args:
        depth: ``(r, c)`` ``float32`` metres of the window, any value where missing.
            This and the other ``(r, c)`` arrays are C-contiguous.
        inside: ``(r, c)`` ``bool`` the mask on the window.
        inscribed, outside: ``(r, c)`` ``float32`` distances (px) of each pixel to the
            nearest pixel outside / inside the mask.
        row0, col0: the window's first pixel in the image; ``height``, ``width``: the
            image's size (px).
        x0, y0, x_step, y_step: the window's back-projection, ``x = (x0 + c x_step) z``,
            ``y = (y0 + r y_step) z`` (metres for ``z`` in metres).
        slope_per_px: what the steepest linked surface rises per pixel, per metre of depth.
        min_depth, max_depth: valid depth range (m).
        seed_px: the confident core's depth inside the mask (px; 0: the whole mask).
        grow_px: the grow band's outer distance (px, with its half pixel).
        ring_px: the support-plane ring's outer distance (px, with its half pixel).
        min_share: ``cluster_min_share`` of the surface linking.
        min_points, max_points: fewest points for a pose; most points kept.
        trim: fraction trimmed at each end of each axis.

    Returns:
        ``(outcome, valid_fraction, occluded, points, position, rotation, quaternion,
        extents, shape, confidence)``: ``OK`` or why there is no pose (the module's
        outcome codes), the share of mask pixels with a valid depth, the occlusion flag,
        the kept points ``(m, 3)`` ``float32`` metres, ``(3,)`` position (m), ``(3, 3)``
        rotation (columns = object axes), ``(4,)`` quaternion ``x, y, z, w``, ``(3,)``
        extents (m, sorted ``x >= y >= z``), the index into ``_measure.SHAPES`` and the
        confidence in [0, 1]. Without a pose the last six are zeros (identity rotation,
        quaternion ``0, 0, 0, 1``), and ``points`` is empty except for ``TOO_FEW_POINTS``
        and ``COLLINEAR``.

    """
    no_points = np.zeros((0, 3), np.float32)
    zero, eye, unit = np.zeros(3), np.eye(3), np.array([0.0, 0.0, 0.0, 1.0])
    (depth_in, seeds, core, ring, near, candidate, z_ref, n_mask, n_valid,
     widest) = _points.window_regions(depth, inside, inscribed, outside, min_depth, max_depth,
                                      seed_px, grow_px, RING_INNER_PX + 0.5, ring_px,
                                      grow_px + OCCLUSION_RADIUS_PX + 1.0)
    valid_fraction = n_valid / max(1, n_mask)
    if n_valid == 0:
        return NO_DEPTH, valid_fraction, False, no_points, zero, eye, unit, zero, 0, 0.0
    if widest < 1.5:
        return DEGENERATE_MASK, valid_fraction, False, no_points, zero, eye, unit, zero, 0, 0.0
    # Per-object noise model: sigma(z) = sigma_ref * (z / z_ref) ** 2, with a floor.
    measured = _points.depth_noise(depth_in, core)
    floor = _points.NOISE_FLOOR_M * z_ref ** 2
    sigma = max(measured, floor)
    planes, above = _points.support_planes(depth_in, ring, core, x0, y0, x_step, y_step,
                                           min_depth, max_depth, sigma, z_ref)
    if sigma > _DENOISE_MIN_SIGMA_M:
        # Never average across the object's height over its support plane (a book on a
        # table), so the table around a bleeding mask stays on the plane. Only where the
        # later steps read depth (near): the grow band and the occlusion search.
        depth_in = _points.denoise(depth_in, near, _DENOISE_HALF_WINDOW,
                                   min(3.0 * sigma, 0.5 * above))
        sigma = max(_DENOISED_SHARE * sigma, floor)
        measured *= _DENOISED_SHARE
    gone = _points.background(depth_in, candidate, x0, y0, x_step, y_step, min_depth,
                              max_depth, sigma, z_ref, planes)
    kept = _points.link_surface(depth_in, candidate & ~gone, seeds & ~gone, sigma, z_ref,
                                slope_per_px, min_share)
    kept = _points.peel_flying(depth_in, kept, _points.outline_of(kept), sigma, z_ref,
                               _FLYING_PASSES)
    points = _points.window_points(depth_in, kept, x0, y0, x_step, y_step, min_depth,
                                   max_depth, max_points)[:, :3]
    points32 = points.astype(np.float32)
    if points.shape[0] < min_points:
        return TOO_FEW_POINTS, valid_fraction, False, points32, zero, eye, unit, zero, 0, 0.0
    # Occlusion is looked for on three outlines: the kept points' (a mask that bleeds onto
    # the occluder ends on it, the object's points do not), the mask's own (where the
    # object's points end short of the occluder, e.g. its part near the table went with the
    # support plane) and the kept core's (where flying pixels link the occluder to the
    # object, the core still ends beside it). Only the outline with depth around it is seen
    # to be occluded or not (real depth has holes inside and around objects).
    occluded = False
    observed = 0.0
    for which in range(3):
        region = kept if which == 0 else (inside if which == 1 else kept & seeds)
        counts = _points.outline(depth_in, region, _points.outline_of(region), row0, col0,
                                 height, width, sigma, z_ref, slope_per_px,
                                 OCCLUSION_RADIUS_PX)
        if counts[1] >= OCCLUDED_SHARE * max(1, counts[0] - counts[3]):
            occluded = True
        if which == 0:  # the observed share of the kept points' outline: confidence
            observed = 1.0 - (counts[1] + counts[2] + 0.5 * counts[3]) / max(1, counts[0])
    position, rotation, quat, extents, shape, residual, trimmed_ends, thin_shift = measure(
        points, trim, sigma)
    # What is published must be finite in float32 too.
    if not (np.all(np.isfinite(position)) and np.all(np.isfinite(quat))
            and np.all(np.isfinite(extents)) and np.max(np.abs(points)) < _FLOAT32_MAX):
        return NON_FINITE, valid_fraction, False, no_points, zero, eye, unit, zero, 0, 0.0
    lowest = np.full(planes.shape[0], np.inf)  # the kept points' least height over each plane
    for p in range(planes.shape[0]):
        for k in range(points.shape[0]):
            lowest[p] = min(lowest[p], planes[p, 0] * points[k, 0] + planes[p, 1] * points[k, 1]
                            + planes[p, 2] * points[k, 2] + planes[p, 3])
    position, rotation, extents = settle(position, rotation, extents, shape, planes, lowest,
                                         measured, sigma, z_ref, trimmed_ends, thin_shift,
                                         0.5 * (x_step + y_step))
    if extents[1] < 2.0 * sigma * (position[2] / z_ref) ** 2 + 1e-6:
        return COLLINEAR, valid_fraction, occluded, points32, zero, eye, unit, zero, 0, 0.0
    n = points.shape[0]
    confidence = (max(0.0, observed) * min(1.0, valid_fraction / 0.8)
                  / (1.0 + residual ** 2) * n / (n + 30.0)
                  * (0.5 if shape == _UNKNOWN else 1.0))
    confidence = min(1.0, max(0.0, confidence))
    return (OK, valid_fraction, occluded, points32, position, rotation, quaternion(rotation),
            extents, shape, confidence)
