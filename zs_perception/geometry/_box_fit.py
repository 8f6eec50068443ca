"""Box fit: the axes of the box whose faces the points lie on, and how well they lie on it.

Numba kernels with explicit signatures (compiled at import, cached beside this file).
"""

from numba import njit
import numpy as np

from zs_perception.geometry._linalg import project, trimmed_range

# Points the box axes are turned on, and the tolerance (degrees) of the second visit.
AXIS_FIT_POINTS = 200
_REFINE_DEG = 5.0
# A fit from a turned start replaces the first one when its box residual (on at most
# _RESIDUAL_POINTS points) is under this share.
_SWITCH_SHARE = 0.5
_RESIDUAL_POINTS = 500


@njit('f8(f8[::1], f8[::1], f8, i8[::1])', cache=True, nogil=True)
def hug_score(u, v, angle, hull):
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


@njit('i8[::1](f8[::1], f8[::1])', cache=True, nogil=True)
def convex_hull(u, v):
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


@njit('f8[:, :](f8[:, :], f8[:, :], i8, i8)', cache=True, nogil=True)
def fit_box_axes(points, axes, first_step, end_step):
    """Turn principal axes into the axes of the box whose faces the points lie on.

    The principal axes of a box's *visible* surface are tilted by the faces the camera does
    not see. Each step projects the points on the plane of two axes and tries every
    orientation of a rectangle with one side along an edge of the projection's convex hull
    (and the current orientation): it keeps the one whose sides the points hug best (least
    mean distance from each point to the nearest side; a minimum-area rectangle would be
    ambiguous for the L-shaped section of a box seen on two faces). The three planes are
    visited twice (steps 0-2, then 3-5); the second visit only tries hull edges within
    ``_REFINE_DEG`` of the first visit's answer.

    Args:
        points: ``(n, 3)`` centred points (the caller strides them to ``AXIS_FIT_POINTS``).
        axes: ``(3, 3)`` columns = the starting axes.
        first_step, end_step: the steps run, ``range(first_step, end_step)`` of ``0..5``.

    Returns:
        ``(3, 3)`` the turned axes (a new array).

    """
    axes = axes.copy()
    n = points.shape[0]
    u, v = np.empty(n), np.empty(n)
    refine = np.radians(_REFINE_DEG)
    for step in range(first_step, end_step):
        i, j = (0, 1, 0)[step % 3], (1, 2, 2)[step % 3]
        for k in range(n):
            x, y, z = points[k, 0], points[k, 1], points[k, 2]
            u[k] = x * axes[0, i] + y * axes[1, i] + z * axes[2, i]
            v[k] = x * axes[0, j] + y * axes[1, j] + z * axes[2, j]
        hull = convex_hull(u, v)
        best, best_score = 0.0, hug_score(u, v, 0.0, hull)
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
            score = hug_score(u, v, angle, hull)
            if score < best_score:
                best, best_score = angle, score
        c, s = np.cos(best), np.sin(best)
        for r in range(3):
            a_i, a_j = axes[r, i], axes[r, j]
            axes[r, i], axes[r, j] = c * a_i + s * a_j, -s * a_i + c * a_j
    return axes


@njit('f8(f8[:, :], f8[:], f8[:])', cache=True, nogil=True)
def box_residual(local, lo, hi):
    """Median distance (m) of points ``local`` ``(n, 3)`` (box axes) to the box's surface.

    The box spans ``lo..hi`` along each axis; a point inside is at the distance of its
    nearest face, one outside at its distance to the box.
    """
    dist = np.empty(local.shape[0])
    for k in range(local.shape[0]):
        inside = np.inf
        outside = 0.0
        for c in range(3):
            a = local[k, c]
            inside = min(inside, a - lo[c], hi[c] - a)
            gap = max(lo[c] - a, a - hi[c], 0.0)
            outside += gap * gap
        dist[k] = np.sqrt(outside) if outside > 0 else inside
    return np.median(dist)


@njit('f8(f8[:, :], f8[:, :], f8)', cache=True, nogil=True)
def _residual(centred, axes, trim):
    """``box_residual`` of the points ``centred`` ``(n, 3)`` in the trimmed box on ``axes``."""
    local = project(centred, axes)
    lo, hi = trimmed_range(local, trim)
    return box_residual(local, lo, hi)


@njit('Tuple((f8[:, :], f8[:], f8[:], f8[:, :]))(f8[:, :], f8[:, :], f8, f8)', cache=True,
      nogil=True)
def oriented_box(centred, axes, trim, settled):
    """Fit the box the centred points hug: axes turned onto its faces, trimmed extents.

    The hug objective can have two close minima (flying pixels or an eroded rim tilt the
    principal axes toward the wrong one), so the fit also starts from the starting axes
    turned by 45 degrees about each of them. A turned start gets the first visit of the
    three planes only, and replaces the given start's full fit when its box residual
    (median distance to the box surface, ``box_residual``) is under ``_SWITCH_SHARE`` of
    that fit's (near ties keep the given start: a thin book's box fits about as well
    turned, and the principal axes are the better start there); it then gets the second
    visit too. No turned start is tried when the given start's residual is at most
    ``settled`` (m; the caller passes the depth noise): its box already fits within the
    noise.

    Args:
        centred: ``(n, 3)`` points minus their mean, metres.
        axes: ``(3, 3)`` starting axes (columns), e.g. the principal axes.
        trim: fraction of the points trimmed at each end of each axis.
        settled: residual (m) under which the given start is kept without trying others.

    Returns:
        ``(axes, lo, hi, local)``: the turned axes, columns longest first, the trimmed
        range ``(3,)`` of the points along each, and the points ``(n, 3)`` in those axes.

    """
    sample = centred[::-(-centred.shape[0] // AXIS_FIT_POINTS)]
    check = centred[::-(-centred.shape[0] // _RESIDUAL_POINTS)]
    half = np.sqrt(0.5)
    best = fit_box_axes(sample, axes, 0, 6)
    best_res = _residual(check, best, trim)
    switched = False
    for start in range(3 if best_res > settled else 0):  # turned 45 deg about axis 0, 1, 2
        i, j = (1, 0, 0)[start], (2, 2, 1)[start]
        begin = axes.copy()
        begin[:, i] = half * (axes[:, i] + axes[:, j])
        begin[:, j] = half * (axes[:, j] - axes[:, i])
        turned = fit_box_axes(sample, begin, 0, 3)
        res = _residual(check, turned, trim)
        if res < _SWITCH_SHARE * best_res:
            best_res, best, switched = res, turned, True
    if switched:
        best = fit_box_axes(sample, best, 3, 6)
    local = project(centred, best)
    lo, hi = trimmed_range(local, trim)
    order = np.argsort(lo - hi, kind='mergesort')  # longest first
    return best[:, order].copy(), lo[order], hi[order], local[:, order].copy()
