"""Rigid transforms (zs_perception.geometry.transform) against known extrinsics."""

import numpy as np
import pytest

from zs_perception.geometry import estimate_object_geometry
from zs_perception.geometry.transform import quaternion_to_rotation, RigidTransform
from zs_perception.geometry.transform import transform_geometry
from zs_perception.testing.scene import render_scene

# A forward-looking camera 0.5 m above base_link, 0.1 m ahead (REP-103): the optical z
# axis is base x, optical x is base -y, optical y is base -z.
OPTICAL_IN_BASE_R = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
OPTICAL_IN_BASE = RigidTransform.from_parts([0.1, 0.0, 0.5], [-0.5, 0.5, -0.5, 0.5])


def _random_transform(rng):
    q = rng.normal(size=4)
    return RigidTransform.from_parts(rng.normal(size=3), q / np.linalg.norm(q))


def test_known_optical_to_base_extrinsics():
    np.testing.assert_allclose(OPTICAL_IN_BASE.rotation, OPTICAL_IN_BASE_R, atol=1e-12)
    # 2 m straight ahead of the lens, then 1 m to the image right, 0.3 m image down.
    pts = np.array([[0.0, 0.0, 2.0], [1.0, 0.0, 2.0], [0.0, 0.3, 2.0]], np.float32)
    out = OPTICAL_IN_BASE.apply_points(pts)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[2.1, 0.0, 0.5], [2.1, -1.0, 0.5], [2.1, 0.0, 0.2]],
                               atol=1e-6)
    # An object whose axes are the optical axes gets the optical frame's orientation.
    np.testing.assert_allclose(abs(OPTICAL_IN_BASE.apply_quaternion([0, 0, 0, 1])),
                               [0.5, 0.5, 0.5, 0.5], atol=1e-12)


def test_parse_matches_parts_and_rejects_bad_text():
    parsed = RigidTransform.parse('0.1 0 0.5 -0.5 0.5 -0.5 0.5')
    np.testing.assert_allclose(parsed.matrix, OPTICAL_IN_BASE.matrix, atol=1e-12)
    np.testing.assert_allclose(RigidTransform.parse('1, 2, 3, 0, 0, 0, 1').translation,
                               [1, 2, 3])
    for bad in ('', '1 2 3', '1 2 3 0 0 0 1 9', 'a b c 0 0 0 1', '0 0 0 0 0 0 2',
                '0 0 nan 0 0 0 1'):
        with pytest.raises(ValueError, match='expected|norm'):
            RigidTransform.parse(bad)


def test_compose_inverse_and_matrix_agree():
    rng = np.random.default_rng(3)
    a, b = _random_transform(rng), _random_transform(rng)
    np.testing.assert_allclose(a.compose(b).matrix, a.matrix @ b.matrix, atol=1e-12)
    np.testing.assert_allclose(a.compose(a.inverse()).matrix, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(a.inverse().matrix, np.linalg.inv(a.matrix), atol=1e-12)
    np.testing.assert_allclose(RigidTransform.from_matrix(a.matrix).matrix, a.matrix,
                               atol=1e-12)
    pts = rng.normal(size=(50, 3))
    np.testing.assert_allclose(a.inverse().apply_points(a.apply_points(pts)), pts, atol=1e-12)
    assert RigidTransform.identity().is_identity and not a.is_identity
    r = quaternion_to_rotation(a.quaternion)
    np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(r) == pytest.approx(1.0)


def test_geometry_in_target_frame_equals_geometry_of_moved_points():
    """A pose moved to base_link equals what the scene's true pose is in base_link."""
    scene = render_scene(seed=1)
    masks = np.stack([scene['masks'][n] for n in ('box', 'cylinder')])
    geos = estimate_object_geometry(masks, scene['depth_m'], scene['intrinsics'])
    for name, geo in zip(('box', 'cylinder'), geos):
        moved = transform_geometry(geo, OPTICAL_IN_BASE)
        true_position, true_rotation = scene['poses'][name]
        camera_error = np.linalg.norm(geo.position - true_position)
        base_error = np.linalg.norm(moved.position
                                    - OPTICAL_IN_BASE.apply_position(true_position))
        assert base_error == pytest.approx(camera_error, abs=1e-9)  # rigid: same error
        np.testing.assert_allclose(moved.rotation, OPTICAL_IN_BASE_R @ geo.rotation,
                                   atol=1e-12)
        np.testing.assert_allclose(quaternion_to_rotation(moved.quaternion), moved.rotation,
                                   atol=1e-9)
        np.testing.assert_allclose(moved.points, OPTICAL_IN_BASE.apply_points(geo.points),
                                   atol=1e-5)
        np.testing.assert_array_equal(moved.extents, geo.extents)
        # Objects in front of the lens are ahead of the camera in base_link.
        assert moved.position[0] > 0.1 + 0.5 * geo.position[2]
