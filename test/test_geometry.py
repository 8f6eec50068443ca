"""Known-answer tests of zs_perception.geometry on the rendered demo scene and real frames."""

import json
import pathlib

import cv2
import numpy as np
import pytest

from zs_perception.geometry import _box_fit, _cylinder_fit, _linalg, _measure, _object_steps
from zs_perception.geometry import _points, pose
from zs_perception.geometry import CameraIntrinsics, depth_to_metres, estimate_object_geometry
from zs_perception.geometry import obstacle_cloud, rotation_to_quaternion
from zs_perception.testing.scene import render_scene

DATA = pathlib.Path(__file__).resolve().parents[1] / '..' / 'shared' / 'data'
NAMES = ('box', 'cylinder')


@pytest.fixture(scope='module')
def scenes():
    return [render_scene(seed=seed) for seed in range(3)]


def _estimate(scene, *, noisy=False, seed=0):
    depth = scene['depth_m'].copy()
    masks = np.stack([scene['masks'][n] for n in NAMES])
    if noisy:
        rng = np.random.default_rng(seed)
        depth += rng.normal(0.0, 0.005, depth.shape).astype(np.float32)
        depth[rng.random(depth.shape) < 0.2] = np.nan
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))  # 3 px dilation
        masks = np.stack([cv2.dilate(m.view(np.uint8), kernel).view(bool) for m in masks])
    return dict(zip(NAMES, estimate_object_geometry(masks, depth, scene['intrinsics'])))


def _errors(scene, name, geo):
    position, rotation = scene['poses'][name]
    extents = scene['extents'][name]
    order = np.argsort(-extents, kind='stable')
    cos = abs(float(geo.rotation[:, 0] @ rotation[:, order[0]]))
    return (np.linalg.norm(geo.position - position),
            np.degrees(np.arccos(min(1.0, cos))),
            np.abs(geo.extents - extents[order]) / extents[order])


# The issue's bounds: position < 5 mm, principal (long) axis < 2 deg, extents within 5 %;
# with 5 mm depth noise, 20 % missing depth and a mask dilated by 3 px: 1.5x each.


@pytest.mark.parametrize('name, noisy, quantity', [
    ('box', False, 'position'), ('box', False, 'axis'), ('box', False, 'extents'),
    ('box', True, 'position'), ('box', True, 'axis'),
    ('box', True, 'extents'),
    ('cylinder', False, 'position'), ('cylinder', False, 'axis'),
    ('cylinder', False, 'extents'),
    ('cylinder', True, 'position'),
    ('cylinder', True, 'axis'),
    ('cylinder', True, 'extents')])
def test_known_answer_within_issue_bounds(scenes, name, noisy, quantity):
    factor = 1.5 if noisy else 1.0
    bound = {'position': 0.005, 'axis': 2.0, 'extents': 0.05}[quantity] * factor
    for i, scene in enumerate(scenes):
        geo = _estimate(scene, noisy=noisy, seed=i)[name]
        assert geo.has_pose and geo.status == 'ok'
        pos_err, axis_err, ext_err = _errors(scene, name, geo)
        error = {'position': pos_err, 'axis': axis_err, 'extents': np.max(ext_err)}[quantity]
        assert error < bound, (i, error)


def _assert_same(compiled, source):
    for a, b in zip(compiled, source):
        if np.asarray(a).dtype == bool:
            np.testing.assert_array_equal(a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_object_steps_kernel_gives_what_its_python_source_gives(scenes, monkeypatch):
    # One object's steps run as one kernel; its Python source (each step's kernel called
    # from the interpreter) is the reference, with smoothing on (noisy depth), a dilated
    # mask, and objects without a pose (a line mask, a mask without depth).
    scene = scenes[1]
    rng = np.random.default_rng(3)
    depth = scene['depth_m'] + rng.normal(0.0, 0.004, scene['depth_m'].shape).astype(
        np.float32)
    depth[rng.random(depth.shape) < 0.1] = np.nan
    line = np.zeros_like(scene['masks']['box'])
    line[100, 50:300] = True
    blind = np.zeros_like(line)
    blind[200:240, 400:460] = True
    depth[200:240, 400:460] = np.nan
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
    masks = np.stack([scene['masks']['box'], scene['masks']['cylinder'],
                      cv2.dilate(scene['masks']['box'].view(np.uint8), kernel).view(bool),
                      line, blind])

    def run():
        return estimate_object_geometry(masks, depth, scene['intrinsics'])

    compiled = run()
    monkeypatch.setattr(_object_steps, 'object_geometry',
                        _object_steps.object_geometry.py_func)
    source = run()
    assert [g.has_pose for g in compiled] == [True, True, True, False, False]
    for a, b in zip(compiled, source):
        assert (a.status, a.shape, a.truncated, a.occluded, a.num_points) == (
            b.status, b.shape, b.truncated, b.occluded, b.num_points)
        _assert_same([a.position, a.rotation, a.quaternion, a.extents, a.points,
                      a.valid_fraction, a.pose_confidence],
                     [b.position, b.rotation, b.quaternion, b.extents, b.points,
                      b.valid_fraction, b.pose_confidence])


def test_numba_kernels_give_what_their_python_source_gives(scenes):
    # The kernels' Python source run by the interpreter (numpy semantics) is the reference:
    # the compiled code must agree, NaN depth, ties and integer division included.
    scene = scenes[0]
    intr = scene['intrinsics']
    depth = scene['depth_m'].copy()
    depth[::7, ::5] = np.nan
    for name in NAMES:
        rows, cols = np.nonzero(scene['masks'][name])
        r0, c0 = rows.min() - 8, cols.min() - 8
        # The kernels take C-contiguous windows (as object_geometry's caller passes them).
        roi = np.ascontiguousarray(scene['masks'][name][r0:rows.max() + 9, c0:cols.max() + 9])
        window = np.ascontiguousarray(depth[r0:r0 + roi.shape[0], c0:c0 + roi.shape[1]])
        core = cv2.erode(roi.view(np.uint8), np.ones((5, 5), np.uint8)).view(bool)
        geo = (window, (c0 - intr.cx) / intr.fx, (r0 - intr.cy) / intr.fy, 1.0 / intr.fx,
               1.0 / intr.fy)
        args = (geo[0], roi, *geo[1:], 0.1, 10.0, 4000)
        points = _points.window_points(*args)
        _assert_same([points], [_points.window_points.py_func(*args)])
        ring = cv2.dilate(roi.view(np.uint8), np.ones((9, 9), np.uint8)).view(bool) & ~roi
        ring_points = np.ascontiguousarray(_points.window_points(
            geo[0], ring, *geo[1:], 0.1, 10.0, 400)[:, :3])
        tol = np.full(len(ring_points), 0.002)
        with np.errstate(over='ignore'):  # the sample sequence wraps modulo 2 ** 64
            _assert_same(_points.fit_plane(ring_points, tol, 0),
                         _points.fit_plane.py_func(ring_points, tol, 0))
            args = (geo[0], ring, core, *geo[1:], 0.1, 10.0, 0.001, 1.0)
            _assert_same(_points.support_planes(*args), _points.support_planes.py_func(*args))
        inscribed = cv2.distanceTransform(roi.view(np.uint8), cv2.DIST_L2, 3)
        outside = cv2.distanceTransform((~roi).view(np.uint8), cv2.DIST_L2, 3)
        args = (geo[0], roi, inscribed, outside, 0.1, 10.0, 5, 3.5, 3.5, 12.5, 7.5)
        _assert_same(_points.window_regions(*args), _points.window_regions.py_func(*args))
        planes = _points.fit_plane(ring_points, tol, 0)[0][None]
        args = (geo[0], roi, *geo[1:], 0.1, 10.0, 0.001, 1.0, planes)
        gone = _points.background(*args)
        _assert_same([gone], [_points.background.py_func(*args)])
        args = (geo[0], roi & ~gone, core, 0.001, 1.0, 0.01, 0.2)
        kept = _points.link_surface(*args)
        _assert_same([kept], [_points.link_surface.py_func(*args)])
        args = (geo[0], kept, _points.outline_of(kept), 0.001, 1.0, 2)
        _assert_same([_points.peel_flying(*args)], [_points.peel_flying.py_func(*args)])

        edge = _points.outline_of(kept)
        assert edge.any() and np.array_equal(edge, [
            [_points.on_outline(kept, r, c) for c in range(kept.shape[1])]
            for r in range(kept.shape[0])])
        args = (geo[0], kept, edge, r0, c0, 480, 640, 0.001, 1.0, 0.01, 3)
        _assert_same([_points.outline(*args)], [_points.outline.py_func(*args)])
        points = points[:, :3].copy()
        assert 0 < len(points) <= 4000
        centred = points - points.mean(axis=0)
        _, vecs = np.linalg.eigh(centred.T @ centred)
        sub = np.ascontiguousarray(centred[::10])
        _assert_same([_box_fit.fit_box_axes(sub, vecs, 0, 6)],
                     [_box_fit.fit_box_axes.py_func(sub, vecs, 0, 6)])
        u, v = sub[:, 0].copy(), sub[:, 1].copy()
        hull = _box_fit.convex_hull(u, v)
        _assert_same([hull], [_box_fit.convex_hull.py_func(u, v)])
        # Every point is inside the hull (counter-clockwise: no point right of an edge), so
        # the hull vertices hold every extreme of a projection.
        a, b = np.stack([u, v], 1)[hull], np.roll(np.stack([u, v], 1)[hull], -1, axis=0)
        cross = ((b - a)[:, None, 0] * (v[None] - a[:, None, 1])
                 - (b - a)[:, None, 1] * (u[None] - a[:, None, 0]))
        assert 3 <= hull.size < u.size and (cross >= -1e-12).all()
        brute = _box_fit.hug_score.py_func(u, v, 0.3, np.arange(u.size))
        assert _box_fit.hug_score(u, v, 0.3, hull) == pytest.approx(brute)
        args = (centred, vecs[:, ::-1].copy(), 0.005, 0.0)
        box = _box_fit.oriented_box(*args)
        _assert_same(box, _box_fit.oriented_box.py_func(*args))
        local = np.ascontiguousarray(centred @ box[0])
        _assert_same([_cylinder_fit.fit_cylinder(local, box[1][0], box[2][0])],
                     [_cylinder_fit.fit_cylinder.py_func(local, box[1][0], box[2][0])])
        measured = _measure.measure(points, 0.005, 0.001)
        _assert_same(measured, _measure.measure.py_func(points, 0.005, 0.001))
        position, rotation, _, extents, shape, _, trimmed_ends, thin_shift = measured
        table = np.array([[0.0, -np.sqrt(0.5), -np.sqrt(0.5), 1.0]])
        for planes in (np.zeros((0, 4)), table):
            for thin in (thin_shift, np.array([0.0, 0.0, 0.004])):
                args = (position, rotation, extents, shape, planes,
                        np.full(len(planes), 0.002), 0.001, 0.001, 1.0, trimmed_ends, thin,
                        1.0 / 615.0)
                _assert_same(_measure.settle(*args), _measure.settle.py_func(*args))
        toward = -points.mean(axis=0) @ box[0] / np.linalg.norm(points.mean(axis=0))
        for noise in (0.002, 0.02):  # 0.02: every axis thin
            args = (local, box[1], box[2], noise, toward)
            _assert_same(_measure.face_ends(*args), _measure.face_ends.py_func(*args))
        args = (local, box[0], box[1], box[2], points.mean(axis=0), 0.0)
        seen = _measure.on_seen_faces(*args)
        assert seen.any() and not seen.all()
        _assert_same([seen], [_measure.on_seen_faces.py_func(*args)])
        # The box axes found do not depend on the signs of the starting axes.
        for signs in ((1, 1, -1), (1, -1, 1), (-1, 1, 1)):
            flipped = _box_fit.fit_box_axes(sub, vecs * np.array(signs, float), 0, 6)
            np.testing.assert_allclose(np.abs(flipped),
                                       np.abs(_box_fit.fit_box_axes(sub, vecs, 0, 6)), atol=1e-9)


def test_symmetric_eigen_decomposition_matches_lapack():
    rng = np.random.default_rng(1)
    cases = [np.diag([3.0, 1.0, 2.0]), np.eye(3), np.zeros((3, 3)), np.diag([1.0, 1.0, 5.0])]
    for _ in range(100):
        a = rng.normal(size=(3, 3)) * rng.uniform(1e-4, 10.0)
        cases.append(a @ a.T)
    for a in cases:
        values, vecs = _linalg.eigh3(a)
        expected_values, expected_vecs = np.linalg.eigh(a)
        scale = max(1.0, np.abs(expected_values).max())
        np.testing.assert_allclose(values, expected_values, atol=1e-10 * scale)
        np.testing.assert_allclose(vecs.T @ vecs, np.eye(3), atol=1e-10)
        np.testing.assert_allclose(vecs @ np.diag(values) @ vecs.T, a, atol=1e-10 * scale)
        distinct = np.abs(np.diff(expected_values)) > 1e-6 * scale
        if distinct.all():  # then each vector is unique up to its sign
            np.testing.assert_allclose(np.abs(np.sum(vecs * expected_vecs, axis=0)), 1.0,
                                       atol=1e-7)


def test_depth_noise_estimate_and_edge_preserving_denoise():
    rng = np.random.default_rng(3)
    rows, cols = np.mgrid[0:60, 0:80]
    plane = (0.6 + 0.002 * cols + 0.001 * rows).astype(np.float32)  # a slanted surface
    mask = np.zeros((60, 80), bool)
    mask[5:55, 5:75] = True
    # A clean slanted surface has no noise: its depth is left as it is.
    assert _points.depth_noise(plane, mask) == pytest.approx(0.0, abs=1e-4)
    noisy = plane + rng.normal(0.0, 0.005, plane.shape).astype(np.float32)
    noisy[rng.random(plane.shape) < 0.2] = np.nan
    assert _points.depth_noise(noisy, mask) == pytest.approx(0.005, rel=0.15)
    # Background 0.5 m behind the right part of the mask (a mask bleeding onto it).
    noisy[:, 60:] += 0.5
    out = _points.denoise(noisy, mask, 2, 3 * 0.005)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(noisy))
    inner = mask & np.isfinite(noisy)
    inner[:, 56:64] = False
    residual = (out - plane - np.where(cols >= 60, 0.5, 0.0))[inner]
    assert np.std(residual) < 0.0025  # noise averaged out
    assert np.max(np.abs(residual)) < 0.02  # object and background depth never mixed
    np.testing.assert_array_equal(out[~mask], noisy[~mask])
    np.testing.assert_allclose(out, _points.denoise.py_func(noisy, mask, 2, 0.015), rtol=1e-6)
    assert _points.depth_noise(noisy, mask) == pytest.approx(
        _points.depth_noise.py_func(noisy, mask))


def _peel(depth, kept, passes):
    return _points.peel_flying(depth, kept, _points.outline_of(kept), 0.0005, 1.0, passes)


def _peel_py(depth, kept, passes):
    return _points.peel_flying.py_func(depth, kept, _points.outline_of(kept), 0.0005, 1.0,
                                       passes)


def test_flying_pixels_are_peeled_a_layer_per_pass():
    # A square at 0.8 m before a wall at 1.0 m, ringed by two layers of mixed pixels at
    # random depths between the two, all kept by linking.
    rng = np.random.default_rng(3)
    depth = (1.0 + 0.0005 * rng.standard_normal((60, 60))).astype(np.float32)
    kept = np.zeros((60, 60), bool)
    kept[14:46, 14:46] = True
    depth[kept] = rng.uniform(0.83, 0.97, kept.sum())
    depth[16:44, 16:44] = 0.8 + 0.0005 * rng.standard_normal((28, 28))
    one = _peel(depth, kept, 1)
    two = _peel(depth, kept, 2)
    square = kept & (depth < 0.81)
    outer = kept & ~cv2.erode(kept.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool)
    assert np.array_equal(one & square, square) and np.array_equal(two & square, square)
    assert (~one & kept).sum() > 0.5 * outer.sum() and not (~one & kept & ~outer).any()
    assert (~two & kept & ~outer).sum() > 0.5 * (kept & ~outer & ~square).sum()
    # The second pass looks only near what the first peeled: the same as two calls.
    assert np.array_equal(two, _peel(depth, one, 1))
    assert np.array_equal(two, _peel_py(depth, kept, 2))


def test_trimmed_range_is_the_order_statistics():
    rng = np.random.default_rng(0)
    for n, trim in ((1200, 0.005), (1700, 0.01), (3000, 0.1), (50, 0.2), (7, 0.0), (1, 0.005)):
        values = np.round(rng.normal(size=(n, 3)), 2)  # ties included
        lo, hi = _linalg.trimmed_range(values, trim)
        k = int(round(trim * (n - 1)))
        part = np.partition(values, [k, n - 1 - k], axis=0)
        np.testing.assert_array_equal(lo, part[k])
        np.testing.assert_array_equal(hi, part[n - 1 - k])


def test_extremes_are_the_ends_of_a_stable_sort():
    rng = np.random.default_rng(1)
    for n, count in ((1200, 11), (300, 64), (5, 5), (1, 1)):
        values = np.round(rng.normal(size=n), 1)  # ties included
        small, large = _linalg.extremes(values, count)
        np.testing.assert_array_equal(small, np.argsort(values, kind='stable')[:count])
        np.testing.assert_array_equal(large, np.argsort(-values, kind='stable')[:count])


def _three_faces(seed, count, noise):
    """Return noisy points on the +x, +y, +z faces of a 300 x 200 x 150 mm box.

    Each face ``(count, 3)``, in the box frame, with Gaussian ``noise`` (m) along its normal;
    also the half extents and the generator (to draw more from).
    """
    rng = np.random.default_rng(seed)
    half = np.array([0.150, 0.100, 0.075])
    faces = []
    for c in range(3):
        face = rng.uniform(-1.0, 1.0, (count, 3)) * half
        face[:, c] = half[c] + rng.normal(0.0, noise, count)
        faces.append(face)
    return faces, half, rng


def test_seen_faces_are_placed_at_their_points_median():
    # A 300 x 200 x 150 mm box seen on three faces (x = +150, y = +100, z = +75 mm) with
    # 4 mm noise along each face's normal: the trimmed range overshoots each seen face by
    # about two deviations, the face's median does not; the hidden ends (x, y, z low) keep
    # the trimmed value.
    faces, half, rng = _three_faces(3, 1500, 0.004)
    local = np.concatenate(faces)
    lo, hi = _linalg.trimmed_range(local, 0.005)
    toward = np.array([1.0, 1.0, 1.0]) / np.sqrt(3.0)
    new_lo, new_hi, trimmed_ends, thin_shift = _measure.face_ends(local, lo, hi, 0.004, toward)
    np.testing.assert_array_equal(thin_shift, [0.0, 0.0, 0.0])
    np.testing.assert_array_equal(trimmed_ends, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(new_lo, lo)
    assert np.all(hi - half > 0.006)  # the percentile overshoots
    np.testing.assert_allclose(new_hi, half, atol=0.0005)
    # Clean depth: the trimmed range already ends on the faces, and is kept.
    for c in range(3):
        local[1500 * c:1500 * (c + 1), c] = half[c]
    lo, hi = _linalg.trimmed_range(local, 0.005)
    np.testing.assert_array_equal(
        _measure.face_ends(local, lo, hi, 0.0005, toward)[2], [2.0] * 3)
    # A 20 mm book seen on its top face only, under 4 mm noise: the points nearer its
    # bottom are the top face's noise, so the thin axis keeps both trimmed ends; its
    # thin_shift puts the camera's end at the top face (z = +10 mm).
    book = rng.uniform(-1.0, 1.0, (3000, 3)) * np.array([0.150, 0.100, 0.0])
    book[:, 2] = 0.010 + rng.normal(0.0, 0.004, 3000)
    lo, hi = _linalg.trimmed_range(book, 0.005)
    # 2 % of the points on its sides, below the top face: the trimmed range reaches lower
    # than the top face's noise does, so the two ends lie unequally far from the median.
    sides = rng.choice(3000, 60, replace=False)
    book[sides, 2] = rng.uniform(-0.010, 0.010, 60)
    lo, hi = _linalg.trimmed_range(book, 0.005)
    assert (hi[2] - 0.010) - (0.010 - lo[2]) < -0.003
    up = np.array([0.0, 0.6, 0.8])
    ends = _measure.face_ends(book, lo, hi, 0.004, up)
    assert ends[2][2] == 2.0 and ends[3][0] == ends[3][1] == 0.0
    assert hi[2] - ends[3][2] == pytest.approx(0.010, abs=0.0005)
    # Seen from below (the camera on the other side), the shift is from the low end; a
    # face seen edge-on, or the sides of a small box (spread along the axis), get none.
    down = _measure.face_ends(book, lo, hi, 0.004, -up)[3][2]
    assert lo[2] + down == pytest.approx(0.010, abs=0.0005)
    assert _measure.face_ends(book, lo, hi, 0.004, np.array([0.0, 1.0, 0.0]))[3][2] == 0.0
    sides = book.copy()
    sides[:, 2] = rng.uniform(-0.012, 0.012, 3000)
    lo, hi = _linalg.trimmed_range(sides, 0.005)
    assert hi[2] - lo[2] < _measure._FACE_MIN_SIGMAS * 0.004  # a thin axis
    assert _measure.face_ends(sides, lo, hi, 0.004, up)[3][2] == 0.0


def _settled(position, rotation, extents, planes, lowest, thin_shift=(0.0, 0.0, 0.0),
             shape=0, sigma=0.002, measured=0.0):
    """``_measure.settle`` with ``z_ref`` the depth; noise taken off both ends of each axis."""
    return _measure.settle(np.asarray(position, float), np.asarray(rotation, float),
                           np.asarray(extents, float), shape, np.asarray(planes, float),
                           np.asarray(lowest, float), measured, sigma, float(position[2]),
                           np.full(3, 2.0), np.asarray(thin_shift, float), 1.0 / 615.0)


def test_a_box_short_of_its_support_plane_is_rested_on_it():
    # A table 1 m from the camera along its normal n (toward the camera); a 200 x 100 x 60 mm
    # box on it 1 m to the side (seen at 46 degrees to the normal), flat and on an edge
    # (turned 45 degrees about its x axis), measured 8 mm short of the table (the band of
    # points dropped with the plane; 6 mm plane tolerance).
    normal = np.array([0.0, -0.6, -0.8])
    planes = [[*normal, 1.0]]
    c, s = np.cos(np.radians(45.0)), np.sin(np.radians(45.0))
    up = -normal  # the box's z axis, flat on the table
    side = np.array([1.0, 0.0, 0.0])
    flat = np.stack([side, np.cross(up, side), up], axis=1)
    edge = flat @ np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    extents = np.array([0.200, 0.100, 0.060])
    for rotation in (flat, edge):
        cos = np.abs(rotation.T @ normal)
        lowest_corner = 0.5 * cos @ extents
        centre = -normal * (1.0 - lowest_corner) + side  # its lowest corner on the table
        gap = 0.008
        # What the points give: each axis short at its end toward the table, together by
        # the gap along the normal, at the least growth (cos-weighted) that closes it.
        measured = extents - gap * cos
        short = centre + normal * (0.5 * gap)
        position, rot, ext = _settled(short, rotation, measured, planes, [gap])
        np.testing.assert_allclose(position, centre, atol=1e-9)
        np.testing.assert_allclose(np.sort(ext), np.sort(extents), atol=1e-9)
        assert abs(normal @ position + 1.0 - 0.5 * np.abs(rot.T @ normal) @ ext) < 1e-9
        # A gap beyond the plane tolerances and the pixels' footprint (an object on
        # something else, a wall behind it) is left as it is, as is a box through the plane.
        for far in (0.05, -0.004):
            moved = centre + normal * far
            position, _, ext = _settled(moved, rotation, extents, planes, [far])
            np.testing.assert_allclose(position, moved, atol=1e-12)
            np.testing.assert_allclose(np.sort(ext), np.sort(extents), atol=1e-12)
        # Beyond two tolerances (12 mm) but within them plus two pixels' footprint along the
        # normal (1.8 mm each: a pixel at 0.78 m depth over the sine 0.71 of the view ray to
        # the normal): rested only when the lowest point is as near, and only where the
        # sides are seen (not seen along the normal, as a wall behind the object is).
        gap = 0.0135
        measured = extents - gap * cos
        short = centre + normal * (0.5 * gap)
        assert np.allclose(_settled(short, rotation, measured, planes, [gap])[0], centre)
        assert np.allclose(_settled(short, rotation, measured, planes, [0.05])[0], short)
        face_on = short - side
        assert np.allclose(_settled(face_on, rotation, measured, planes, [gap])[0], face_on)


def test_a_far_books_thickness_spans_its_top_face_to_the_table():
    # A 20 mm book flat on the table, seen at 1 m with its top face's points noisy: the
    # trimmed range along its thin axis runs from 8 mm (the band dropped with the table)
    # to 32 mm above the table; the top face's median (thin_shift 12 mm inside the
    # camera's end) and the table give the thickness, whatever the noise taken off and
    # either sign of the axis. Without the shift the table only sets the bottom.
    normal = np.array([0.0, -0.6, -0.8])
    planes = [[*normal, 1.0]]
    side = np.array([1.0, 0.0, 0.0])
    extents = np.array([0.250, 0.180, 0.024])
    position = -normal * (1.0 - 0.020)  # 20 mm above the table: from 8 to 32 mm
    for up in (normal, -normal):  # z toward the camera (the convention) and away
        rotation = np.stack([side, np.cross(up, side), up], axis=1)
        for measured in (0.0, 0.002):
            out = _settled(position, rotation, extents, planes, [0.008], (0.0, 0.0, 0.012),
                           measured=measured)
            np.testing.assert_allclose(out[2], [0.250, 0.180, 0.020], atol=1e-9)
            np.testing.assert_allclose(normal @ out[0] + 1.0, 0.010, atol=1e-9)
        out = _settled(position, rotation, extents, planes, [0.008])
        np.testing.assert_allclose(out[2], [0.250, 0.180, 0.032], atol=1e-9)
    # A book tilted 50 degrees off the table's normal, its lowest corner 8 mm above the
    # table, rests on it, but not on its thin axis: the shift is not used.
    c, s = np.cos(np.radians(50.0)), np.sin(np.radians(50.0))
    tilted = rotation @ np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    corner = 0.5 * np.abs(tilted.T @ normal) @ extents
    raised = -normal * (1.0 - corner - 0.008)
    args = (raised, tilted, extents, planes, [0.008])
    shifted, plain = _settled(*args, (0.0, 0.0, 0.012)), _settled(*args)
    assert not np.allclose(plain[0], raised)  # it did rest
    np.testing.assert_allclose(shifted[2], plain[2])
    np.testing.assert_allclose(shifted[0], plain[0])


def _ray_cast_box(rotation, centre, half, fx=600.0, size=(640, 480)):
    """Points where the pixel rays of a pinhole camera first hit a box; the hit mask."""
    v, u = np.mgrid[0:size[1], 0:size[0]]
    rays = np.stack([(u - size[0] / 2) / fx, (v - size[1] / 2) / fx, np.ones(u.shape)],
                    -1).reshape(-1, 3)
    origin, along = rotation.T @ -centre, rays @ rotation  # in box coordinates
    with np.errstate(divide='ignore', invalid='ignore'):
        t1, t2 = (-half - origin) / along, (half - origin) / along
    t_in = np.max(np.minimum(t1, t2), axis=1)
    hit = (t_in <= np.min(np.maximum(t1, t2), axis=1)) & (t_in > 0)
    return rays[hit] * t_in[hit, None], hit.reshape(size[1], size[0]), rays


def test_points_off_a_boxs_seen_faces_do_not_grow_it():
    # A 100 x 70 x 50 mm box seen on three faces at 0.6 m, its mask bled 3 px over its
    # upper outline onto a surface 4 cm behind its centre (7 % of the points: a mug behind
    # a brick). Those points lie beyond the box's hidden faces, far from its seen ones.
    c, s = np.cos(np.radians(35.0)), np.sin(np.radians(35.0))
    turn_y = np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])
    c, s = np.cos(np.radians(-40.0)), np.sin(np.radians(-40.0))
    turn_x = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    rotation, centre = turn_y @ turn_x, np.array([0.02, 0.01, 0.6])
    half = np.array([0.05, 0.035, 0.025])
    points, hit, rays = _ray_cast_box(rotation, centre, half)
    band = cv2.dilate(hit.view(np.uint8), np.ones((7, 7), np.uint8)).view(bool) & ~hit
    band[int(np.median(np.nonzero(hit)[0])):] = False  # the upper outline only
    behind = rays[band.ravel()] * (centre[2] + 0.04)
    bled = np.concatenate([points, behind])
    lo, hi = _linalg.trimmed_range((bled - centre) @ rotation, 0.005)
    assert np.max(np.maximum(hi - half, -half - lo)) > 0.02  # the bleed is in the range
    for cloud, bound in ((points, 0.001), (bled, 0.006)):
        position, _, _, extents, shape = _measure.measure(cloud, 0.005, 0.0005)[:5]
        assert _measure.SHAPES[shape] == 'box'
        assert np.linalg.norm(position - centre) < bound
        np.testing.assert_allclose(np.sort(extents), np.sort(2 * half), atol=10 * bound)


def test_box_axes_are_turned_onto_its_faces_planes():
    # A 300 x 200 x 150 mm box seen on three faces with 1 mm noise, its axes given 1.4
    # degrees off (1 degree about two axes): the planes of its faces turn them back; a book
    # seen on one face only (one plane) leaves them as given.
    faces, half, _ = _three_faces(4, 800, 0.001)
    points = np.concatenate(faces)
    angle = np.radians(1.0)
    off = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0],
                    [0.0, 0.0, 1.0]]) @ np.array([[1.0, 0.0, 0.0], [0.0, np.cos(angle),
                                                  -np.sin(angle)], [0.0, np.sin(angle),
                                                  np.cos(angle)]])
    local = np.ascontiguousarray(points @ off)
    lo, hi = _linalg.trimmed_range(local, 0.005)
    turned = _measure.face_plane_axes(local, off, lo, hi, 0.01)
    cos = np.abs(np.diag(turned))  # the true axes are the identity
    assert np.degrees(np.arccos(cos.min())) < 0.2
    _assert_same([turned], [_measure.face_plane_axes.py_func(local, off, lo, hi, 0.01)])
    book = np.ascontiguousarray(faces[2] @ off)
    lo, hi = _linalg.trimmed_range(book, 0.005)
    np.testing.assert_array_equal(_measure.face_plane_axes(book, off, lo, hi, 0.01), off)
    # Axes far off (15 to 40 degrees): a proper rotation comes back, never turned by more
    # than the limit, never a reflection.
    for degrees in (15.0, 22.0, 30.0, 40.0):
        c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
        far = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
        local = np.ascontiguousarray(points @ far)
        lo, hi = _linalg.trimmed_range(local, 0.005)
        turned = _measure.face_plane_axes(local, far, lo, hi, 0.01)
        np.testing.assert_allclose(turned.T @ turned, np.eye(3), atol=1e-9)
        assert np.linalg.det(turned) == pytest.approx(1.0)
        turn = np.degrees(np.arccos(np.clip((np.trace(far.T @ turned) - 1.0) / 2.0, -1, 1)))
        assert turn <= 10.0 + 1e-6, degrees


def test_cylinder_is_recognised_and_box_is_not(scenes):
    for i, scene in enumerate(scenes):
        for noisy in (False, True):
            geos = _estimate(scene, noisy=noisy, seed=i)
            assert geos['box'].shape == 'box', (i, noisy)
            assert geos['cylinder'].shape == 'cylinder', (i, noisy)
            ext = geos['cylinder'].extents
            assert ext[1] == pytest.approx(ext[2])  # (length, 2 r, 2 r)


def test_orientation_convention(scenes):
    for scene in scenes:
        for geo in _estimate(scene).values():
            r = geo.rotation
            np.testing.assert_allclose(r.T @ r, np.eye(3), atol=1e-9)
            assert np.linalg.det(r) == pytest.approx(1.0)
            assert geo.extents[0] >= geo.extents[1] >= geo.extents[2]
            assert r[:, 2] @ geo.position < 0  # z toward the camera
            assert r[0, 0] >= 0  # x toward camera +x
            q = geo.quaternion
            assert q[3] >= 0 and np.linalg.norm(q) == pytest.approx(1.0)
            x, y, z, w = q
            expected = np.array([
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
            np.testing.assert_allclose(expected, r, atol=1e-9)


def test_quaternion_of_half_turns_has_non_negative_w():
    for rot in (np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]),
                np.diag([-1.0, -1.0, 1.0]), np.eye(3)):
        q = rotation_to_quaternion(rot)
        assert q[3] >= 0 and np.linalg.norm(q) == pytest.approx(1.0)


def test_millimetres_and_metres_give_the_same_answer(scenes):
    scene = scenes[0]
    depth_mm = np.round(scene['depth_m'] * 1000.0).astype(np.uint16)
    from_mm = depth_to_metres(depth_mm, '16UC1')
    from_m = depth_to_metres((depth_mm / 1000.0).astype(np.float32), '32FC1')
    assert from_mm.dtype == np.float32
    masks = np.stack([scene['masks'][n] for n in NAMES])
    a = estimate_object_geometry(masks, from_mm, scene['intrinsics'])
    b = estimate_object_geometry(masks, from_m, scene['intrinsics'])
    for ga, gb in zip(a, b):
        np.testing.assert_allclose(ga.position, gb.position, atol=1e-5)
        np.testing.assert_allclose(ga.rotation, gb.rotation, atol=1e-4)
        np.testing.assert_allclose(ga.extents, gb.extents, atol=1e-5)
        assert ga.num_points == gb.num_points


def test_depth_to_metres_marks_missing_as_nan():
    raw = np.array([[0, 1500], [65535, 1]], np.uint16)
    out = depth_to_metres(raw, '16UC1')
    assert np.isnan(out[0, 0]) and out[0, 1] == pytest.approx(1.5)
    f = np.array([[0.0, np.nan], [np.inf, -1.0]], np.float32)
    assert np.all(np.isnan(depth_to_metres(f, '32FC1')))
    np.testing.assert_allclose(depth_to_metres(np.array([[5000]], np.uint16), 5000.0), [[1.0]])
    signed = depth_to_metres(np.array([[-5, 0, 1000]], np.int16), 1000.0)
    assert np.isnan(signed[0, :2]).all() and signed[0, 2] == pytest.approx(1.0)
    with pytest.raises(ValueError, match='unsupported depth encoding'):
        depth_to_metres(raw, 'rgb8')
    with pytest.raises(ValueError, match='units per metre'):
        depth_to_metres(raw, 0.0)


def test_background_behind_thin_object_does_not_pull_the_centre():
    intr = CameraIntrinsics(fx=500.0, fy=500.0, cx=319.5, cy=239.5, width=640, height=480)
    depth = np.full((480, 640), 2.0, np.float32)  # wall
    depth[100:400, 315:325] = 0.8  # a 10 px wide pole in front
    mask = np.zeros((480, 640), bool)
    mask[100:400, 310:330] = True  # the mask bleeds 5 px onto the wall on each side
    geo = estimate_object_geometry(mask[None], depth, intr)[0]
    assert geo.has_pose
    assert geo.position[2] == pytest.approx(0.8, abs=0.01)
    assert np.all(np.abs(geo.points[:, 2] - 0.8) < 0.01)
    assert abs(geo.rotation[1, 0]) > 0.99  # longest axis along the pole (camera y)


def test_no_valid_depth_and_too_few_points_say_why():
    intr = CameraIntrinsics(fx=500.0, fy=500.0, cx=319.5, cy=239.5, width=640, height=480)
    depth = np.full((480, 640), np.nan, np.float32)
    depth[0:3, 0:3] = 1.0
    masks = np.zeros((3, 480, 640), bool)
    masks[0, 100:200, 100:200] = True  # all NaN
    masks[1, 0:4, 0:4] = True  # 9 valid pixels
    geos = estimate_object_geometry(masks, depth, intr)
    assert not geos[0].has_pose and 'no valid depth' in geos[0].status
    assert geos[0].valid_fraction == 0.0
    assert not geos[1].has_pose and geos[1].status.startswith('too few points')
    assert not geos[2].has_pose and geos[2].status == 'empty mask'
    for g in geos:
        assert np.all(np.isfinite(g.position)) and np.all(np.isfinite(g.quaternion))
    points, index = obstacle_cloud(geos)
    assert len(points) == len(index) == geos[1].num_points


def test_absurd_intrinsics_never_give_a_non_finite_pose(scenes):
    scene = scenes[0]
    absurd = CameraIntrinsics(fx=500.0, fy=500.0, cx=1e200, cy=239.5, width=640, height=480)
    geo = estimate_object_geometry(scene['masks']['box'][None], scene['depth_m'], absurd)[0]
    assert not geo.has_pose and geo.status.startswith('non-finite pose')
    assert np.all(np.isfinite(geo.position)) and np.all(np.isfinite(geo.quaternion))


def test_whole_image_mask_and_all_nan_depth(scenes):
    scene = scenes[0]
    full = np.ones((1, 480, 640), bool)
    geo = estimate_object_geometry(full, scene['depth_m'], scene['intrinsics'])[0]
    assert geo.has_pose and geo.valid_fraction == 1.0
    assert np.all(np.isfinite(geo.position)) and np.all(np.isfinite(geo.extents))
    nan = np.full((480, 640), np.nan, np.float32)
    geo = estimate_object_geometry(full, nan, scene['intrinsics'])[0]
    assert not geo.has_pose and 'no valid depth' in geo.status


def test_depth_at_half_the_mask_resolution(scenes):
    scene = scenes[0]
    masks = np.stack([scene['masks'][n] for n in NAMES])
    full = estimate_object_geometry(masks, scene['depth_m'], scene['intrinsics'])
    small_depth = cv2.resize(scene['depth_m'], (320, 240), interpolation=cv2.INTER_NEAREST)
    small = estimate_object_geometry(masks, small_depth, scene['intrinsics'].scaled_to(320, 240))
    for a, b in zip(full, small):
        assert b.has_pose
        assert np.linalg.norm(a.position - b.position) < 0.005
        assert abs(a.rotation[:, 0] @ b.rotation[:, 0]) > np.cos(np.radians(3.0))
    with pytest.raises(ValueError, match='aspect ratio'):
        estimate_object_geometry(masks, np.zeros((240, 400), np.float32),
                                 CameraIntrinsics(300.0, 300.0, 200.0, 120.0, 400, 240))


def test_obstacle_cloud_indexes_objects(scenes):
    geos = _estimate(scenes[0])
    points, index = obstacle_cloud(list(geos.values()))
    assert points.dtype == np.float32 and index.dtype == np.uint32
    assert len(points) == sum(g.num_points for g in geos.values())
    for k, g in enumerate(geos.values()):
        np.testing.assert_array_equal(points[index == k], g.points)
    p, i = obstacle_cloud([])
    assert p.shape == (0, 3) and i.shape == (0,)


def test_bad_intrinsics_raise_useful_errors():
    with pytest.raises(ValueError, match='calibrat'):
        CameraIntrinsics.from_k([0.0] * 9, 640, 480)
    with pytest.raises(ValueError, match='fx must be a finite focal length of at least 1'):
        CameraIntrinsics.from_k([np.nan, 0, 320, 0, 500, 240, 0, 0, 1], 640, 480)
    with pytest.raises(ValueError, match='fy must be a finite focal length of at least 1'):
        CameraIntrinsics.from_k([500, 0, 320, 0, 1e-300, 240, 0, 0, 1], 640, 480)
    with pytest.raises(ValueError, match='9 elements'):
        CameraIntrinsics.from_k([500.0, 500.0, 320.0, 240.0], 640, 480)
    with pytest.raises(ValueError, match='width'):
        CameraIntrinsics.from_k([500, 0, 320, 0, 500, 240, 0, 0, 1], 0, 480)
    intr = CameraIntrinsics.from_k([500, 0, 319.5, 0, 500, 239.5, 0, 0, 1], 640, 480)
    half = intr.scaled_to(320, 240)
    assert (half.fx, half.cx, half.cy) == (250.0, 159.5, 119.5)


def test_bad_inputs_raise_value_error():
    intr = CameraIntrinsics(500.0, 500.0, 319.5, 239.5, 640, 480)
    depth = np.ones((480, 640), np.float32)
    mask = np.ones((1, 480, 640), bool)
    with pytest.raises(ValueError, match='depth_to_metres'):
        estimate_object_geometry(mask, depth.astype(np.uint16), intr)
    with pytest.raises(ValueError, match='bool'):
        estimate_object_geometry(mask.astype(np.uint8), depth, intr)
    with pytest.raises(ValueError, match=r'masks\[None\]'):
        estimate_object_geometry(mask[0], depth, intr)
    with pytest.raises(ValueError, match='scaled_to'):
        estimate_object_geometry(mask, depth, intr.scaled_to(320, 240))
    with pytest.raises(ValueError, match='one size'):
        estimate_object_geometry([mask[0], mask[0, :240]], depth, intr)
    assert estimate_object_geometry(np.zeros((0, 480, 640), bool), depth, intr) == []


SHIPPED = pathlib.Path(__file__).resolve().parent / 'data'


def _real_frames():
    """Return the shipped real RGB-D frames (test/data) and those of ../shared/data if present."""
    frames = {p.name: p for p in sorted(SHIPPED.iterdir()) if (p / 'camera_info.json').is_file()
              and (p / 'depth.png').is_file()}
    index = DATA / 'index.json'
    if index.exists():
        for entry in json.loads(index.read_text())['rgbd']:
            frames.setdefault(pathlib.Path(entry['dir']).name, DATA / entry['dir'])
    return list(frames.values())


@pytest.mark.parametrize('frame', _real_frames(), ids=lambda p: p.name)
def test_real_frames_give_finite_poses_within_depth_range(frame):
    info = json.loads((frame / 'camera_info.json').read_text())
    raw = cv2.imread(str(frame / 'depth.png'), cv2.IMREAD_UNCHANGED)
    depth = depth_to_metres(raw, float(info['depth_scale']))
    intr = CameraIntrinsics.from_k(info['K'], info['width'], info['height'])
    h, w = depth.shape
    masks = np.zeros((5, h, w), bool)  # image quarters, centre, whole image
    masks[0, :h // 2, :w // 2] = True
    masks[1, h // 2:, w // 2:] = True
    masks[2, h // 3:2 * h // 3, w // 3:2 * w // 3] = True
    masks[3, :, :] = True
    masks[4, h // 2 - 10:h // 2 + 10, ::3] = True  # 1 px wide lines: degenerate
    lo, hi = np.nanmin(depth), np.nanmax(depth)
    geos = estimate_object_geometry(masks, depth, intr)
    assert not geos[4].has_pose and geos[4].status.startswith('degenerate mask')
    for geo in geos[:4]:
        assert geo.has_pose, geo.status
        for value in (geo.position, geo.rotation, geo.quaternion, geo.extents, geo.points):
            assert np.all(np.isfinite(value))
        assert lo - 1e-3 <= geo.position[2] <= hi + 1e-3
        assert np.all((geo.points[:, 2] >= lo - 1e-3) & (geo.points[:, 2] <= hi + 1e-3))
        assert 0.0 < geo.valid_fraction <= 1.0


def test_each_object_keeps_mask_order_and_raises_what_a_thread_raised():
    items = list(range(9))
    assert pose._each_object(lambda i: i * i, items) == [i * i for i in items]
    assert pose._each_object(lambda i: -i, [4]) == [-4]
    assert pose._each_object(lambda i: i, []) == []

    def fails_on_five(i):
        if i == 5:
            raise ValueError('five')
        return i

    with pytest.raises(ValueError, match='five'):
        pose._each_object(fails_on_five, items)
    assert pose._each_object(lambda i: i + 1, items) == [i + 1 for i in items]  # still usable


def test_bounding_rect_is_opencvs():
    rng = np.random.default_rng(5)
    masks = [np.zeros((7, 9), bool), np.ones((4, 3), bool)]
    for _ in range(30):
        m = np.zeros((int(rng.integers(1, 60)), int(rng.integers(1, 70))), bool)
        for _ in range(int(rng.integers(1, 4))):
            r, c = int(rng.integers(0, m.shape[0])), int(rng.integers(0, m.shape[1]))
            m[r:r + int(rng.integers(1, 9)), c:c + int(rng.integers(1, 9))] = True
        masks += [m, m[::2, 1::3], m.T]  # strided and transposed views too
    for m in masks:
        expected = cv2.boundingRect(np.ascontiguousarray(m).view(np.uint8))
        assert _points.bounding_rect(m) == expected, m.shape


def test_each_object_from_several_threads_at_once():
    # Calls from several threads share the helpers; each gets its own results, in order.
    import concurrent.futures
    with concurrent.futures.ThreadPoolExecutor(4) as callers:
        runs = [callers.submit(pose._each_object, lambda i, k=k: (k, i), list(range(7)))
                for k in range(8)]
        for k, run in enumerate(runs):
            assert run.result() == [(k, i) for i in range(7)]


def test_strided_and_fortran_order_inputs_give_the_same_pose(scenes):
    # The kernels take C-contiguous windows; views of other layouts are copied, not refused.
    scene = scenes[0]
    mask, depth = scene['masks']['box'], scene['depth_m']
    expected = estimate_object_geometry(mask[None], depth, scene['intrinsics'])[0]
    wide = np.full((depth.shape[0], 2 * depth.shape[1]), np.nan, np.float32)
    wide[:, ::2] = depth  # every other column of a wider image: a strided view
    for masks, image in ((mask[None], wide[:, ::2]),
                         ([np.asfortranarray(mask)], np.asfortranarray(depth)),
                         (np.repeat(mask, 2, axis=1)[None, :, ::2], depth)):
        got = estimate_object_geometry(masks, image, scene['intrinsics'])[0]
        assert got.status == 'ok'
        np.testing.assert_array_equal(got.position, expected.position)
        np.testing.assert_array_equal(got.extents, expected.extents)


def test_read_only_and_sub_pixel_masks(scenes):
    scene = scenes[0]
    mask = scene['masks']['box'].copy()
    depth = scene['depth_m'].copy()
    expected = estimate_object_geometry(mask[None], depth, scene['intrinsics'])[0]
    mask.flags.writeable = False
    depth.flags.writeable = False
    got = estimate_object_geometry(mask[None], depth, scene['intrinsics'])[0]
    assert got.status == 'ok'
    np.testing.assert_array_equal(got.position, expected.position)
    # A mask twice the depth image's size, set on no depth pixel's centre (an even row).
    fine = np.zeros((2 * depth.shape[0], 2 * depth.shape[1]), bool)
    fine[200, 300:340] = True
    got = estimate_object_geometry(fine[None], depth, scene['intrinsics'])[0]
    assert not got.has_pose and got.status == 'empty mask'
    with pytest.raises(ValueError, match='min_points must be an integer'):
        estimate_object_geometry(mask[None], depth, scene['intrinsics'], min_points=30.5)
