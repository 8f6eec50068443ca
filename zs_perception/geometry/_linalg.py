"""Small numerics for the geometry kernels: 3x3 linear algebra, order statistics, rotations.

All numba kernels with explicit signatures (compiled at import, cached beside this file). They
use no BLAS/LAPACK (numba would need SciPy for those): the 3x3 eigen-decomposition is a Jacobi
iteration, small systems are solved by Gaussian elimination.
"""

from numba import njit
import numpy as np

# Order statistics at most this far from either end are kept in small sorted buffers.
_TRIM_BUFFER = 16


@njit('Tuple((f8[:], f8[:, :]))(f8[:, :])', cache=True, nogil=True)
def eigh3(matrix):
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
def matvec(m, v):
    """``m @ v`` for a ``(3, 3)`` matrix and a ``(3,)`` vector (no BLAS in the kernels)."""
    return np.array([m[0, 0] * v[0] + m[0, 1] * v[1] + m[0, 2] * v[2],
                     m[1, 0] * v[0] + m[1, 1] * v[1] + m[1, 2] * v[2],
                     m[2, 0] * v[0] + m[2, 1] * v[1] + m[2, 2] * v[2]])


@njit('f8[:](f8[:], f8[:])', cache=True, nogil=True)
def cross(a, b):
    """Cross product of two ``(3,)`` vectors."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2],
                     a[0] * b[1] - a[1] * b[0]])


@njit('f8[:](f8[:, :], f8[:])', cache=True, nogil=True)
def solve(a, b):
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


@njit('f8[:, :](f8[:, :], f8[:, :])', cache=True, nogil=True)
def project(points, axes):
    """``points @ axes`` for ``(n, 3)`` points and ``(3, 3)`` axes (no BLAS in the kernels)."""
    out = np.zeros((points.shape[0], 3))
    for k in range(points.shape[0]):
        for c in range(3):
            for r in range(3):
                out[k, c] += points[k, r] * axes[r, c]
    return out


@njit('UniTuple(i8[:], 2)(f8[:], i8)', cache=True, nogil=True)
def extremes(values, count):
    """Return the indices of the ``count`` smallest (ascending) and largest ``values``.

    One pass over ``values`` with two sorted buffers of ``count`` entries: for a small
    ``count`` much cheaper than sorting. Ties keep the earlier index first.
    """
    small_v, large_v = np.full(count, np.inf), np.full(count, -np.inf)
    small_i, large_i = np.zeros(count, np.int64), np.zeros(count, np.int64)
    for i in range(values.size):
        x = values[i]
        if x < small_v[count - 1]:
            j = count - 1
            while j > 0 and small_v[j - 1] > x:
                small_v[j], small_i[j] = small_v[j - 1], small_i[j - 1]
                j -= 1
            small_v[j], small_i[j] = x, i
        if x > large_v[count - 1]:
            j = count - 1
            while j > 0 and large_v[j - 1] < x:
                large_v[j], large_i[j] = large_v[j - 1], large_i[j - 1]
                j -= 1
            large_v[j], large_i[j] = x, i
    return small_i, large_i


@njit('UniTuple(f8[:], 2)(f8[:, :], f8)', cache=True, nogil=True)
def trimmed_range(values, trim_fraction):
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
        small, large = extremes(values[:, c], k_lo + 1)
        lo[c], hi[c] = values[small[k_lo], c], values[large[k_lo], c]
    return lo, hi


@njit('f8[:, :](f8[:, :], f8[:])', cache=True, nogil=True)
def orient(axes, position):
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
    out[:, 0], out[:, 1], out[:, 2] = x, cross(z, x), z
    return out


@njit('f8[:](f8[:, :])', cache=True, nogil=True)
def quaternion(m):
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
