"""Pose, extents and shape of an object's kept points: box, cylinder, or neither.

Neither ('unknown'): the pose and extents are those of the oriented box the points hug
(their robust axes and trimmed range), which claims no model.

Numba kernel with an explicit signature (compiled at import, cached beside this file).
See docs/geometry.md for the shape rule and its margins.
"""

from numba import njit
import numpy as np

from zs_perception.geometry._box_fit import box_residual, oriented_box
from zs_perception.geometry._cylinder_fit import fit_cylinder
from zs_perception.geometry._linalg import cross, eigh3, extremes, matvec, orient, project
from zs_perception.geometry._linalg import quaternion, trimmed_range
from zs_perception.geometry._points import PLANE_SIGMAS

SHAPES = ('box', 'cylinder', 'unknown')
# The box and shape fits use every (n // _FIT_POINTS)-th point: under 2 _FIT_POINTS of them.
_FIT_POINTS = 1200
# Shape rule: a cylinder's side must span this arc (deg) and fit this much better than the
# box (median residual ratio); a shape fits when its median residual is under
# _FIT_SIGMAS noise deviations plus _FIT_SHARE of the object's size.
_MIN_ARC_DEG = 100.0
_CYLINDER_WIN = 0.5
_FIT_SIGMAS = 3.0
_FIT_SHARE = 0.04
# Noise deviations (at the trimmed percentile) each end of an extent is widened by.
_NOISE_QUANTILE = 1.5
# A cylinder's axis, or a book's thin axis, this close (deg) to a support plane's normal
# rests on it along that axis (_rest, settle). A gap to the plane is closed across at most
# _CONTACT_GAP plane tolerances (the band of points dropped with the plane is one) ...
_CONTACT_DEG = 40.0
_CONTACT_COS = float(np.cos(np.radians(_CONTACT_DEG)))
_CONTACT_GAP = 2.0
# ... plus this many pixels' footprint along the normal on the object's sides (the layers
# at its base that the outline steps may drop, and the pixels' spacing up a steep side),
# where the sides are seen: the view ray's sine to the normal at least _MIN_SIDE_SIN (sides
# along the normal at under 60 degrees incidence; not a wall seen face-on behind it).
_CONTACT_PX = 2.0
_MIN_SIDE_SIN = 0.5
# Incidence cosine below which a box point's surface weight stops growing.
_MIN_COS = 0.5
# The most extreme points per end kept in a buffer by surface_range; more are sorted.
_SURFACE_BUFFER = 64
# Seen box faces (face_ends): an axis at least _FACE_MIN_SIGMAS noise deviations long; a
# face holding _FACE_SHARE of the points (and _FACE_MIN_POINTS), their median absolute
# deviation along the axis under _FACE_SPREAD_SIGMAS deviations plus _FACE_SPREAD_SHARE of
# the axis, their median _FACE_SHIFT_SIGMAS deviations inside the trimmed end or more; of
# two opposite faces under _FACE_SEPARATION deviations apart, the larger only.
_FACE_MIN_SIGMAS = 8.0
_FACE_SHARE = 0.05
_FACE_MIN_POINTS = 30
_FACE_SPREAD_SIGMAS = 2.0
_FACE_SPREAD_SHARE = 0.01
_FACE_SHIFT_SIGMAS = 1.0
_FACE_SEPARATION = 4.0
# Across a thin axis, points whose median absolute deviation along it is under this many
# noise deviations lie on one face (face_ends).
_THIN_SPREAD_SIGMAS = 1.0
# A face turned away from the camera by more than this cosine cannot be seen (on_seen_faces).
_HIDDEN_COS = 0.25
# The largest turn (deg) of the box axes onto its faces' fitted planes.
_MAX_REFINE_DEG = 10.0
# A face's plane counts when its points' second spread is this many times their thinnest
# (its deviation at least half the edge margin: a strip along an edge has no normal across).
_FLAT_FACE = 25.0
_SEEN_PASSES = 2


@njit('i8(f8[:, :], i8, f8[:], f8[:])', cache=True, nogil=True, inline='always')
def nearest_face(local, k, lo, hi):
    """Return the face ``2 c + e`` of the box ``lo..hi`` nearest point ``k`` of ``local``.

    Axis ``c``, end ``e`` (0 at ``lo``, 1 at ``hi``); ties go to the first axis, then to ``lo``.
    """
    best, which = np.inf, 0
    for c in range(3):
        d_lo, d_hi = abs(local[k, c] - lo[c]), abs(hi[c] - local[k, c])
        if d_lo < best:
            best, which = d_lo, 2 * c
        if d_hi < best:
            best, which = d_hi, 2 * c + 1
    return which


@njit('UniTuple(f8[:], 2)(f8[:, :], f8[:, :], f8[:], f8[:], f8[:, :], f8)',
      cache=True, nogil=True)
def surface_range(local, axes, lo, hi, fit, trim):
    """Per-axis trimmed range of box points weighted by the surface each one stands for.

    A depth pixel covers a patch of area ``z^2 / (fx fy cos(theta))`` of the surface it
    hits, ``theta`` its incidence on its face; trimming by that area instead of by count
    keeps the far end of a face seen at a grazing angle, whose few points each stand for
    much surface (a count trim cuts them first).

    Args:
        local: ``(n, 3)`` the points in box coordinates (``oriented_box``).
        axes: ``(3, 3)`` the box axes (columns), camera frame.
        lo, hi: ``(3,)`` the box's count-trimmed range.
        fit: ``(n, 3)`` the same points in the camera frame, metres.
        trim: area fraction trimmed at each end of each axis.

    Returns:
        ``(lo, hi)``, ``(3,)`` each.

    """
    n = local.shape[0]
    weight = np.empty(n)
    for k in range(n):
        face = nearest_face(local, k, lo, hi) // 2
        r2 = fit[k, 0] ** 2 + fit[k, 1] ** 2 + fit[k, 2] ** 2
        cos = abs(axes[0, face] * fit[k, 0] + axes[1, face] * fit[k, 1]
                  + axes[2, face] * fit[k, 2]) / np.sqrt(r2)
        weight[k] = fit[k, 2] ** 2 / max(cos, _MIN_COS)
    total = np.sum(weight)
    # The cut at each end lies among the ``need`` most extreme points (each weighs at
    # least the least weight): one pass keeps those in sorted buffers (``extremes``);
    # a larger need sorts.
    need = min(n, int(trim * total / np.min(weight)) + 2)
    out_lo, out_hi = lo.copy(), hi.copy()
    for c in range(3):
        if need > _SURFACE_BUFFER:
            order = np.argsort(local[:, c])
            low, high = order[:need], order[::-1][:need]
        else:
            low, high = extremes(local[:, c], need)
        for end, picked in ((0, low), (1, high)):
            acc = 0.0
            for k in picked:
                acc += weight[k]
                if acc > trim * total:
                    if end == 0:
                        out_lo[c] = local[k, c]
                    else:
                        out_hi[c] = local[k, c]
                    break
    return out_lo, out_hi


@njit('f8[:, :](f8[:, :], f8[:, :], f8[:], f8[:], f8)', cache=True, nogil=True)
def face_plane_axes(local, axes, lo, hi, margin):
    """Turn the box axes onto the planes fitted to its faces' points.

    Each face's points (those whose nearest face it is, within ``4 margin`` of it and
    farther than ``margin`` from the planes of the faces beside it: not its edges) give a
    least-squares plane when there are at least _FACE_MIN_POINTS of them and they span a
    face, not a strip (the deviation of their second spread at least half of ``margin``, and
    that spread _FLAT_FACE times their thinnest). The rotation nearest the planes' normals,
    weighted by their points (polar decomposition; an axis without a plane: across the other
    two), turns the axes: the hull search that found them works on 200 points, the planes on
    all those given. Unchanged with fewer than two planes on different axes, or when the
    turn would be a reflection or exceed _MAX_REFINE_DEG.

    Args:
        local: ``(n, 3)`` the points in box coordinates.
        axes: ``(3, 3)`` the box axes (columns), camera frame.
        lo, hi: ``(3,)`` the box's range.
        margin: distance (m) from a face's neighbours within which its points are edges.

    Returns:
        ``(3, 3)`` the turned axes (a new array).

    """
    n = local.shape[0]
    member = np.full(n, -1, np.int64)  # the face of each point that is a face's inner point
    count = np.zeros(6)
    total = np.zeros((6, 3))
    for k in range(n):
        f = nearest_face(local, k, lo, hi)
        c = f // 2
        if abs(local[k, c] - (hi[c] if f % 2 else lo[c])) > 4.0 * margin:
            continue
        inner = True
        for o in range(3):
            if o != c and (local[k, o] - lo[o] < margin or hi[o] - local[k, o] < margin):
                inner = False
        if inner:
            member[k] = f
            count[f] += 1.0
            for a in range(3):
                total[f, a] += local[k, a]
    for f in range(6):
        if count[f] > 0:
            for a in range(3):
                total[f, a] /= count[f]
    cov = np.zeros((6, 3, 3))
    for k in range(n):
        f = member[k]
        if f < 0 or count[f] < _FACE_MIN_POINTS:
            continue
        d0, d1 = local[k, 0] - total[f, 0], local[k, 1] - total[f, 1]
        d2 = local[k, 2] - total[f, 2]
        cov[f, 0, 0] += d0 * d0
        cov[f, 0, 1] += d0 * d1
        cov[f, 0, 2] += d0 * d2
        cov[f, 1, 1] += d1 * d1
        cov[f, 1, 2] += d1 * d2
        cov[f, 2, 2] += d2 * d2
    for f in range(6):
        cov[f, 1, 0], cov[f, 2, 0], cov[f, 2, 1] = cov[f, 0, 1], cov[f, 0, 2], cov[f, 1, 2]
    corr = np.zeros((3, 3))
    used = np.zeros(3, np.bool_)
    for f in range(6):
        if count[f] < _FACE_MIN_POINTS:
            continue
        c = f // 2
        values, vectors = eigh3(cov[f] / count[f])  # spreads (m^2) of the face's points
        if values[1] < max(_FLAT_FACE * values[0], (0.5 * margin) ** 2):
            continue  # a strip, not a face: its normal is not defined across it
        normal = vectors[:, 0].copy()
        if normal[c] < 0:
            normal = -normal  # along +axis c (the sign of the face is the same for both ends)
        for a in range(3):
            corr[a, c] += count[f] * normal[a]
        used[c] = True
    if np.count_nonzero(used) < 2:
        return axes.copy()
    weight = np.zeros(3)
    for c in range(3):
        weight[c] = np.sqrt(np.sum(corr[:, c] ** 2))
    for c in range(3):  # an axis without a fitted face: across the other two
        if not used[c]:
            a, b = corr[:, (c + 1) % 3] / weight[(c + 1) % 3], corr[:, (c + 2) % 3] / weight[
                (c + 2) % 3]
            corr[:, c] = cross(a, b) * min(weight[(c + 1) % 3], weight[(c + 2) % 3])
    # The nearest rotation to the weighted normals: corr (corr^T corr)^(-1/2) (polar).
    values, vectors = eigh3(project(corr.T, corr))
    if values[0] <= 1e-12 * values[2]:
        return axes.copy()
    root = np.zeros((3, 3))
    for e in range(3):
        for a in range(3):
            for b in range(3):
                root[a, b] += vectors[a, e] * vectors[b, e] / np.sqrt(values[e])
    turn = project(corr, root)
    if (np.sum(cross(turn[:, 0], turn[:, 1]) * turn[:, 2]) <= 0.0  # a reflection
            or turn[0, 0] + turn[1, 1] + turn[2, 2] - 1.0 < 2.0 * np.cos(
                np.radians(_MAX_REFINE_DEG))):
        return axes.copy()
    return project(axes, turn)


@njit('b1[:](f8[:, :], f8[:, :], f8[:], f8[:], f8[:], f8)', cache=True, nogil=True)
def on_seen_faces(local, axes, lo, hi, mean, reach):
    """Which points are nearest a face of the box that can be seen from the camera.

    A seen point lies on a face turned toward the camera; one whose nearest face is turned
    away by more than _HIDDEN_COS (the box's back, bottom or far side) belongs to something
    behind or beside the object (a mask that bled onto it) or is noise at an edge.

    Args:
        local: ``(n, 3)`` the points in box coordinates (centred on ``mean``).
        axes: ``(3, 3)`` the box axes (columns), camera frame.
        lo, hi: ``(3,)`` the box's range.
        mean: ``(3,)`` the origin of the box coordinates, camera frame (m).
        reach: a point nearest a hidden face is kept when it lies within this distance (m)
            of the plane of a face turned toward the camera (an edge of that face).

    Returns:
        ``(n,)`` ``bool``.

    """
    centre = 0.5 * (lo + hi)
    hidden = np.zeros(6, np.bool_)
    for c in range(3):
        for e in range(2):
            face = centre.copy()
            face[c] = hi[c] if e else lo[c]
            point = mean + matvec(axes, face)
            sign = 1.0 if e else -1.0
            cos = -sign * np.sum(axes[:, c] * point) / np.sqrt(np.sum(point * point))
            hidden[2 * c + e] = cos < -_HIDDEN_COS
    out = np.empty(local.shape[0], np.bool_)
    for k in range(local.shape[0]):
        out[k] = not hidden[nearest_face(local, k, lo, hi)]
        if not out[k]:  # still on a seen face's plane (an edge of it, within reach)?
            for c in range(3):
                if ((not hidden[2 * c] and abs(local[k, c] - lo[c]) <= reach)
                        or (not hidden[2 * c + 1] and abs(hi[c] - local[k, c]) <= reach)):
                    out[k] = True
    return out


@njit('Tuple((f8[:], f8[:], f8[:], f8[:]))(f8[:, :], f8[:], f8[:], f8, f8[:])', cache=True,
      nogil=True)
def face_ends(local, lo, hi, noise, toward):
    """Each end of each box axis at the median of the points on that face, when it is seen.

    A trimmed range of noisy points overshoots a face by about two noise deviations; the
    median coordinate of the points whose nearest face it is does not. An end keeps its
    trimmed value when its face is not seen: the axis is shorter than ``_FACE_MIN_SIGMAS``
    noise deviations (``noise``, m); the face holds under ``_FACE_SHARE`` of the points; its
    points spread along the axis (they lie on the faces beside a hidden one); their median
    is within ``_FACE_SHIFT_SIGMAS`` deviations of the trimmed end (clean depth: the range is
    already right); or it is the smaller of two opposite faces under ``_FACE_SEPARATION``
    deviations apart (across a thin object seen on one face, the points nearer the hidden
    face are that face's noise).

    Across a thin axis (under ``_FACE_MIN_SIGMAS`` deviations: a book seen far away) the two
    faces cannot be told apart point by point, and the far end is not seen. When the points
    lie on one face (their median absolute deviation along the axis under
    ``_THIN_SPREAD_SIGMAS`` deviations: the top of a book, not the sides of a small box)
    turned toward the camera, their median is that face: ``thin_shift`` says how far inside
    the trimmed end on the camera's side it lies, for ``settle`` to use where the far end is
    a support plane.

    Args:
        local: ``(n, 3)`` the points in box coordinates.
        lo, hi: ``(3,)`` the trimmed range.
        noise: one depth noise deviation (m) at the points' median depth.
        toward: ``(3,)`` unit direction from the points toward the camera, box coordinates.

    Returns:
        ``(lo, hi, trimmed_ends, thin_shift)``: the ends ``(3,)`` each, per axis how many of
        its two ends kept the trimmed value (0, 1 or 2), as floats, and per axis the
        ``thin_shift`` (m, >= 0; 0 for the other axes).

    """
    n = local.shape[0]
    face = np.empty(n, np.int64)
    for k in range(n):
        face[k] = nearest_face(local, k, lo, hi)
    out_lo, out_hi = lo.copy(), hi.copy()
    trimmed_ends = np.full(3, 2.0)
    thin_shift = np.zeros(3)
    for c in range(3):
        if hi[c] - lo[c] < _FACE_MIN_SIGMAS * noise:
            if abs(toward[c]) > _HIDDEN_COS:
                along = local[:, c].copy()
                middle = np.median(along)
                if np.median(np.abs(along - middle)) < _THIN_SPREAD_SIGMAS * noise:
                    thin_shift[c] = max(0.0, hi[c] - middle if toward[c] > 0.0
                                        else middle - lo[c])
            continue
        count = np.zeros(2)
        end = np.zeros(2)
        for e in range(2):
            members = np.flatnonzero(face == 2 * c + e)
            count[e] = members.size
            if members.size >= max(_FACE_MIN_POINTS, _FACE_SHARE * n):
                along = local[members, c]
                end[e] = np.median(along)
                spread = np.median(np.abs(along - end[e]))
                if spread > _FACE_SPREAD_SIGMAS * noise + _FACE_SPREAD_SHARE * (hi[c] - lo[c]):
                    count[e] = 0.0  # the points of the faces beside a hidden one
            else:
                count[e] = 0.0
        if count[0] > 0 and count[1] > 0 and end[1] - end[0] < _FACE_SEPARATION * noise:
            count[0 if count[0] < count[1] else 1] = 0.0
        for e in range(2):  # a face within the noise of its trimmed end: the range holds
            if count[e] > 0 and abs(end[e] - (lo[c], hi[c])[e]) < _FACE_SHIFT_SIGMAS * noise:
                count[e] = 0.0
        if count[0] > 0:
            out_lo[c] = end[0]
            trimmed_ends[c] -= 1.0
        if count[1] > 0:
            out_hi[c] = end[1]
            trimmed_ends[c] -= 1.0
        if out_hi[c] <= out_lo[c]:
            out_lo[c], out_hi[c], trimmed_ends[c] = lo[c], hi[c], 2.0
    return out_lo, out_hi, trimmed_ends, thin_shift


@njit('Tuple((f8[:], f8[:, :], f8[:], f8[:], i8, f8, f8[:], f8[:]))(f8[:, :], f8, f8)',
      cache=True, nogil=True)
def measure(points, trim, tolerance):
    """Pose, extents and shape of ``points`` (module docs).

    Args:
        points: ``(n, 3)`` the object's kept points, camera frame, metres (``n >= 3``).
        trim: fraction trimmed at each end of each axis for the extents.
        tolerance: the depth noise (m, one deviation) at the points' median depth.

    Returns:
        ``(position, rotation, quaternion, extents, shape, residual, trimmed_ends,
        thin_shift)``:
        ``(3,)`` metres, ``(3, 3)`` columns = object axes (signs per the convention), ``(4,)``
        ``x, y, z, w``, ``(3,)`` extents in metres along those axes (``settle`` sorts them),
        the index into ``SHAPES``, the chosen model's median residual divided by its fit
        tolerance (under 1 fits), ``(3,)`` per axis how many of its ends are a trimmed
        percentile rather than a seen face (``face_ends``; 2 for a cylinder), and ``(3,)``
        ``face_ends``' ``thin_shift`` (zeros for a cylinder).

    """
    fit = points[::max(1, points.shape[0] // _FIT_POINTS)]
    mean = np.empty(3)
    for c in range(3):
        mean[c] = np.mean(fit[:, c])
    centred = fit - mean
    cov = np.zeros((3, 3))
    for k in range(centred.shape[0]):
        for r in range(3):
            for c in range(3):
                cov[r, c] += centred[k, r] * centred[k, c]
    principal = eigh3(cov)[1][:, ::-1].copy()
    axes, lo, hi, local = oriented_box(centred, principal, trim, tolerance)
    size = hi[0] - lo[0]
    allowed = _FIT_SIGMAS * tolerance + _FIT_SHARE * size
    box_res = box_residual(local, lo, hi)
    best_axis, best_res = -1, np.inf
    best = np.full(8, np.nan)
    for j in range(3):  # a cylinder about each box axis
        # The visible side of a cylinder is at least half its circumference: across the
        # axis the points span about its diameter one way and at least its radius the other
        # (below: within 0.6-1.2 and at least 0.3 diameters, so never under a quarter of
        # the wider span, which needs no fit to check).
        a, b = hi[(j + 1) % 3] - lo[(j + 1) % 3], hi[(j + 2) % 3] - lo[(j + 2) % 3]
        if min(a, b) < 0.25 * max(a, b):
            continue
        perm = np.empty_like(local)
        perm[:, 0] = local[:, j]
        perm[:, 1] = local[:, (j + 1) % 3]
        perm[:, 2] = local[:, (j + 2) % 3]
        fitted = fit_cylinder(perm, lo[j], hi[j])
        if not np.isfinite(fitted[0]) or fitted[6] < np.radians(_MIN_ARC_DEG):
            continue
        diameter = 2.0 * fitted[4]
        if not (0.6 * diameter <= max(a, b) <= 1.2 * diameter and min(a, b) >= 0.3 * diameter):
            continue
        if fitted[7] < best_res:
            best_axis, best_res, best = j, fitted[7], fitted
    if best_axis >= 0 and best_res < _CYLINDER_WIN * box_res and best_res < allowed:
        shape, residual = 1, best_res / allowed
    elif box_res < allowed:
        shape, residual = 0, box_res / allowed
    else:
        shape, residual = 2, min(box_res, best_res) / allowed
    trimmed_ends, thin_shift = np.full(3, 2.0), np.zeros(3)
    if shape != 1:
        seen_local, seen_fit = local, fit
        if shape == 0:  # a box: its axes onto the planes of its faces, then the points off
            # its seen faces (not the object's) dropped
            axes = face_plane_axes(local, axes, lo, hi, allowed)
            local = seen_local = project(centred, axes)
            lo, hi = trimmed_range(local, trim)
            for _ in range(_SEEN_PASSES):
                seen = on_seen_faces(seen_local, axes, lo, hi, mean, allowed)
                if np.all(seen) or np.count_nonzero(seen) < max(3, local.shape[0] // 2):
                    break
                seen_local, seen_fit = seen_local[seen], seen_fit[seen]
                lo, hi = trimmed_range(seen_local, trim)
        lo, hi = surface_range(seen_local, axes, lo, hi, seen_fit, trim)
        toward = -matvec(axes.T.copy(), mean) / np.sqrt(np.sum(mean * mean))
        lo, hi, trimmed_ends, thin_shift = face_ends(seen_local, lo, hi, tolerance, toward)
    position = mean + matvec(axes, 0.5 * (lo + hi))
    extents = hi - lo
    if shape == 1:  # the axis and its centre at mid-length; the box axes turned onto it
        j = best_axis
        frame = np.empty((3, 3))
        for c in range(3):
            frame[:, c] = axes[:, (j + c) % 3]
        origin = np.array([0.0, best[0], best[1]])
        axis = np.array([1.0, best[2], best[3]])
        axis /= np.sqrt(np.sum(axis * axis))
        along = np.empty((local.shape[0], 1))
        for k in range(local.shape[0]):
            a, b, c = local[k, j], local[k, (j + 1) % 3], local[k, (j + 2) % 3]
            along[k, 0] = ((a - origin[0]) * axis[0] + (b - origin[1]) * axis[1]
                           + (c - origin[2]) * axis[2])
        t_lo, t_hi = trimmed_range(along, trim)
        position = mean + matvec(frame, origin + axis * (0.5 * (t_lo[0] + t_hi[0])))
        x = matvec(frame, axis)
        y = frame[:, 1] - np.sum(frame[:, 1] * x) * x
        y /= np.sqrt(np.sum(y * y))
        z = cross(x, y)
        length, diameter = t_hi[0] - t_lo[0], 2.0 * best[4]
        axes = np.empty((3, 3))
        if length >= diameter:
            axes[:, 0], axes[:, 1], axes[:, 2] = x, y, z
            extents = np.array([length, diameter, diameter])
        else:  # a short cylinder (a can, a puck): its axis is the shortest
            axes[:, 0], axes[:, 1], axes[:, 2] = y, z, x
            extents = np.array([diameter, diameter, length])
    rotation = orient(axes, position)
    return (position, rotation, quaternion(rotation), extents, shape, residual, trimmed_ends,
            thin_shift)


@njit('Tuple((f8[:], f8[:, :]))(f8[:, :], f8[:], f8[:])', cache=True, nogil=True)
def _longest_first(rotation, extents, position):
    """Sort extents ``x >= y >= z`` with their axes; the sign convention applied again."""
    order = np.argsort(-extents, kind='mergesort')
    if order[0] == 0 and order[1] == 1:
        return extents.copy(), rotation.copy()
    return extents[order], orient(np.ascontiguousarray(rotation[:, order]), position)


@njit('Tuple((f8[:], f8[:, :]))(f8[:], f8[:, :], f8[:], f8, f8, f8[:])', cache=True,
      nogil=True)
def _noise_trimmed(position, rotation, extents, measured, z_ref, ends):
    """Extents less the noise at each of an axis' ``ends`` trimmed ends; sorted (``settle``)."""
    norm = max(np.sqrt(np.sum(position * position)), 1e-9)
    scale = _NOISE_QUANTILE * measured * (position[2] / z_ref) ** 2
    trimmed = np.empty(3)
    for k in range(3):
        along = abs(np.sum(rotation[:, k] * position)) / norm
        trimmed[k] = max(extents[k] - ends[k] * scale * along, 0.5 * extents[k])
    return _longest_first(rotation, trimmed, position)


@njit('Tuple((f8[:], f8[:, :], f8[:], i8))'
      '(f8[:], f8[:, :], f8[:], i8, f8[:, :], f8[:], f8, f8, f8)', cache=True, nogil=True)
def _rest(position, rotation, extents, shape, planes, lowest, sigma, z_ref, pixel):
    """Move the box's lowest corner onto its support plane across a small gap (``settle``).

    The gap is closed along the plane's normal: each axis grows at its end toward the plane
    by the gap times its cosine to the normal (the growth of least sum of squares that
    closes it; the corner farthest from the plane stays where it is: a box flat on the plane
    grows its height only, one resting on an edge both axes across the edge). A cylinder
    grows along its own axis only, when that is within ``_CONTACT_DEG`` of the normal. The
    gap is closed when it is at most ``_CONTACT_GAP`` plane tolerances, or at most that plus
    ``_CONTACT_PX`` pixels' footprint along the normal (where the object's sides are seen,
    ``_MIN_SIDE_SIN``) and the lowest point (``lowest`` ``(k,)``, m over each plane) is as
    near too (and not more than a tolerance beyond it).

    Returns:
        ``(position, rotation, extents, plane)``: the box (sorted again) and the index of
        the plane it was moved onto, -1 when none.

    """
    for p in range(planes.shape[0]):
        normal = planes[p, :3]
        cos = np.empty(3)
        for k in range(3):
            cos[k] = np.sum(rotation[:, k] * normal)
        k = int(np.argmax(np.abs(cos)))
        if shape == 1 and (abs(cos[k]) < _CONTACT_COS
                           or k != (0 if extents[1] == extents[2] else 2)):
            continue
        low = np.sum(normal * position) + planes[p, 3] - 0.5 * np.sum(np.abs(cos) * extents)
        tol = PLANE_SIGMAS * sigma * (max(position[2], 1e-3) / z_ref) ** 2
        # One pixel's footprint along the normal on a side: pixel z / sin(ray, normal).
        dist = np.sqrt(np.sum(position * position))
        ray_sin = np.sqrt(max(0.0, 1.0 - (np.sum(normal * position) / max(dist, 1e-9)) ** 2))
        step = pixel * position[2] / ray_sin if ray_sin >= _MIN_SIDE_SIN else 0.0
        reach = _CONTACT_GAP * tol + _CONTACT_PX * step
        if not (0.0 < low <= _CONTACT_GAP * tol
                or (0.0 < low <= reach and -tol <= lowest[p] <= reach)):
            continue
        extents = extents.copy()
        if shape == 1:
            grow = low / abs(cos[k])
            extents[k] += grow
            position = position - np.sign(cos[k]) * rotation[:, k] * (0.5 * grow)
        else:
            for c in range(3):
                extents[c] += low * abs(cos[c])
            position = position - normal * (0.5 * low)
        extents, rotation = _longest_first(rotation, extents, position)
        return position, rotation, extents, p
    return position, rotation, extents, -1


@njit('Tuple((f8[:], f8[:, :], f8[:]))'
      '(f8[:], f8[:, :], f8[:], i8, f8[:, :], f8[:], f8, f8, f8, f8[:], f8[:], f8)',
      cache=True, nogil=True)
def settle(position, rotation, extents, shape, planes, lowest, measured, sigma, z_ref,
           trimmed_ends, thin_shift, pixel):
    """Take the depth noise off a measured box and rest it on its support plane.

    Measured depth noise (``measured``, m at ``z_ref``) widens the trimmed range along the
    viewing ray at each end by ``_NOISE_QUANTILE`` deviations: that is taken off the box at
    each of an axis' ``trimmed_ends`` ``(3,)`` (the ends ``face_ends`` left trimmed)
    (not a cylinder, whose diameter comes from its fitted radius; at most half of each
    extent; a thin book seen at 2 m would grow by a third). The points within the plane
    tolerance of a support plane (``planes`` ``(k, 4)``) were dropped with it, so an object
    resting on one ends that much short of it: its lowest corner is moved onto the first
    plane it is near (``_rest``; the tolerance is ``PLANE_SIGMAS`` deviations of ``sigma``
    at ``z_ref``, scaled as ``z ** 2``; ``lowest`` ``(k,)`` the kept points' least height
    over each plane, m; ``pixel`` the angle of one pixel, rad).

    A box's thin axis with a ``thin_shift`` (``face_ends``: its points on the face toward
    the camera) that rests so on a plane, within ``_CONTACT_DEG`` of its normal, spans from
    that face's median to the plane: the camera's end is moved in by the shift first and the
    far end keeps its trimmed value until the rest sets it (a book seen at 2 m, whose
    trimmed thickness is mostly noise).

    Returns:
        ``(position, rotation, extents)``: extents sorted ``x >= y >= z`` again with their
        axes (signs per the convention).

    """
    if shape == 1:
        return _rest(position, rotation, extents, shape, planes, lowest, sigma, z_ref, pixel)[:3]
    if shape == 0:
        for k in range(3):
            if thin_shift[k] <= 0.0:
                continue
            axis = rotation[:, k].copy()
            away = axis if np.sum(axis * position) > 0.0 else -axis
            # The camera's end of axis k moves in by the shift; the far end keeps its
            # trimmed value (no noise taken off): the plane it rests on will set it.
            shift = min(thin_shift[k], extents[k])
            shifted = extents.copy()
            shifted[k] = extents[k] - shift
            moved = position + away * (0.5 * shift)
            ends = trimmed_ends.copy()
            ends[k] = 0.0
            trimmed, turned = _noise_trimmed(moved, rotation, shifted, measured, z_ref, ends)
            rested, turned, trimmed, p = _rest(moved, turned, trimmed, shape, planes, lowest,
                                               sigma, z_ref, pixel)
            if p >= 0 and abs(np.sum(axis * planes[p, :3])) >= _CONTACT_COS:
                return rested, turned, trimmed
    extents, rotation = _noise_trimmed(position, rotation, extents, measured, z_ref,
                                       trimmed_ends)
    return _rest(position, rotation, extents, shape, planes, lowest, sigma, z_ref, pixel)[:3]
