"""Cylinder fit: a circle about a near-given axis, refined as a geometric cylinder fit.

Numba kernel with an explicit signature (compiled at import, cached beside this file).
"""

from numba import njit
import numpy as np

from zs_perception.geometry._linalg import solve

# Share of the length at each end left out of the fit (a visible cap is not the side).
CAP_BAND = 0.15
# The most side points fitted (evenly strided).
_FIT_POINTS = 400


@njit('f8[:](f8[:, :], f8, f8)', cache=True, nogil=True)
def fit_cylinder(local, x_lo, x_hi):
    """Fit a cylinder whose axis is near the x axis to the side points of ``local``.

    The side points are those of ``local`` ``(n, 3)`` away from the two ends ``x_lo`` and
    ``x_hi`` (``CAP_BAND`` of the length at each end, so a visible cap is left out), at
    most ``_FIT_POINTS`` of them (evenly strided).

    An algebraic (Kasa) circle fit to the points' ``(y, z)`` starts (the axis along x); the
    20 % of points farthest from that circle are dropped; three Gauss-Newton steps of the
    geometric fit (least squares of the distances to the surface) on the rest then fit the
    axis' point and tilt and the radius together. That removes the algebraic fit's bias
    toward a smaller circle on a short, noisy arc, and the tilt of an axis estimate that
    the visible half of the cylinder pulls off its true axis.

    Returns:
        ``(8,)``: the axis' ``y, z`` at ``x = 0``, its tilt ``dy/dx, dz/dx``, the radius and
        rms residual in metres, the angle in radians the fitted points span around the
        axis (10 degree sectors holding at least 1 % of them), and the median distance
        (m) of all side points to the fitted surface; all NaN for fewer than 20 side
        points or a degenerate fit (e.g. collinear points).

    """
    band = CAP_BAND * (x_hi - x_lo)
    points = local[(local[:, 0] > x_lo + band) & (local[:, 0] < x_hi - band)]
    if points.shape[0] < 20:
        return np.full(8, np.nan)
    points = points[::-(-points.shape[0] // _FIT_POINTS)]
    n = points.shape[0]
    all_x, all_y, all_z = points[:, 0], points[:, 1], points[:, 2]
    x, y, z = all_x, all_y, all_z
    normal = np.zeros((3, 3))
    rhs = np.zeros(3)
    for k in range(n):
        row = (2.0 * y[k], 2.0 * z[k], 1.0)
        for a in range(3):
            rhs[a] += row[a] * (y[k] * y[k] + z[k] * z[k])
            for b in range(3):
                normal[a, b] += row[a] * row[b]
    sol = solve(normal, rhs)
    radius = np.sqrt(max(sol[2] + sol[0] * sol[0] + sol[1] * sol[1], 1e-12))
    # Distances as square roots of sums of squares: np.hypot is a libm call per point.
    resid = np.abs(np.sqrt((y - sol[0]) ** 2 + (z - sol[1]) ** 2) - radius)
    kept = resid <= np.partition(resid, int(0.8 * (n - 1)))[int(0.8 * (n - 1))]
    x, y, z = x[kept], y[kept], z[kept]
    params = np.array([sol[0], sol[1], 0.0, 0.0, radius])  # y, z at x = 0; dy/dx, dz/dx; r
    for _ in range(3):
        normal = np.zeros((5, 5))
        rhs = np.zeros(5)
        for k in range(x.size):
            dy = y[k] - params[0] - params[2] * x[k]
            dz = z[k] - params[1] - params[3] * x[k]
            dist = max(np.sqrt(dy * dy + dz * dz), 1e-12)
            ey, ez = dy / dist, dz / dist
            row = (ey, ez, ey * x[k], ez * x[k], 1.0)  # minus the gradient of dist - r
            for a in range(5):
                rhs[a] += row[a] * (dist - params[4])
                for b in range(5):
                    normal[a, b] += row[a] * row[b]
        params += solve(normal, rhs)
    out = np.full(8, np.nan)
    if not np.all(np.isfinite(params)):
        return out
    dy, dz = y - params[0] - params[2] * x, z - params[1] - params[3] * x
    out[:4] = params[:4]
    out[4] = abs(params[4])
    out[5] = np.sqrt(np.mean((np.sqrt(dy * dy + dz * dz) - out[4]) ** 2))
    # The arc the points span: 10 degree sectors holding a real share of them (a few
    # stray points on another face do not make an arc).
    sectors = np.zeros(36, np.int64)
    for k in range(dy.size):
        sectors[int((np.arctan2(dz[k], dy[k]) + np.pi) / (2.0 * np.pi) * 36.0) % 36] += 1
    out[6] = np.radians(10.0) * np.count_nonzero(sectors >= max(2, dy.size // 100))
    all_dy = all_y - params[0] - params[2] * all_x
    all_dz = all_z - params[1] - params[3] * all_x
    out[7] = np.median(np.abs(np.sqrt(all_dy * all_dy + all_dz * all_dz) - out[4]))
    return out
