"""Outputs in target_frame: the node with a static target_transform, and with tf2 where it is."""

from helpers_node import FixedMaskSegmenter, Graph
import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.parameter import Parameter

from zs_perception.geometry import estimate_object_geometry
from zs_perception.geometry.transform import RigidTransform
from zs_perception.ros.conversions import cloud_to_arrays
from zs_perception.ros.node import PerceptionNode
from zs_perception.ros.target_frame import tf2_available
from zs_perception.testing.scene import render_scene

CAMERA = 'camera_color_optical_frame'
# The camera optical frame in base_link: 0.1 m ahead, 0.5 m up, looking forward (REP-103).
EXTRINSICS = '0.1 0 0.5 -0.5 0.5 -0.5 0.5'
NAMES = ('box', 'cylinder')


@pytest.fixture(scope='module')
def scene():
    return render_scene(320, 240, seed=5)


def _expected(scene, transform):
    """Return the core's geometry of the scene's masks, moved into base_link."""
    masks = np.stack([scene['masks'][n] for n in NAMES])
    geos = estimate_object_geometry(masks, scene['depth_m'], scene['intrinsics'])
    return [(transform.apply_position(g.position), transform.apply_rotation(g.rotation),
             transform.apply_points(g.points)) for g in geos]


def _check_outputs(graph, scene, header, frame, transform):
    objects = graph.wait_for_stamp('objects', header)
    poses = graph.wait_for_stamp('poses', header)
    markers = graph.wait_for_stamp('markers', header)
    cloud = graph.wait_for_stamp('points', header)
    masks = graph.wait_for_stamp('masks', header)
    assert objects.header.frame_id == poses.header.frame_id == cloud.header.frame_id == frame
    assert all(m.header.frame_id == frame for m in markers.markers)
    assert objects.header.stamp == header.stamp
    # Images stay in the camera frame: they are pixels of the camera.
    assert masks.header.frame_id == CAMERA
    assert all(o.mask.header.frame_id == CAMERA for o in objects.objects)
    points, index = cloud_to_arrays(cloud)
    expected = _expected(scene, transform)
    for k, (obj, (position, rotation, pts)) in enumerate(zip(objects.objects, expected)):
        assert obj.has_pose, obj.pose_status
        p, q = obj.pose.position, obj.pose.orientation
        np.testing.assert_allclose([p.x, p.y, p.z], position, atol=1e-6)
        r = RigidTransform.from_parts([0, 0, 0], [q.x, q.y, q.z, q.w]).rotation
        np.testing.assert_allclose(r, rotation, atol=1e-6)
        np.testing.assert_allclose(points[index == k], pts, atol=1e-5)
        pose = poses.poses[k]
        assert (pose.position.x, pose.position.y, pose.position.z) == (p.x, p.y, p.z)
        box = [m for m in markers.markers if m.type == m.CUBE or m.type == m.CYLINDER][k]
        assert box.pose.position.x == pytest.approx(p.x)
    return objects


def test_static_target_transform_puts_every_3d_output_in_base_link(scene):
    graph = Graph(FixedMaskSegmenter(scene['masks']),
                  {'backend': 'clipseg', 'target_frame': 'base_link',
                   'target_transform': EXTRINSICS})
    try:
        graph.set_goal('box; cylinder')
        header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'],
                                     frame_id=CAMERA)
        objects = _check_outputs(graph, scene, header, 'base_link',
                                 RigidTransform.parse(EXTRINSICS))
        # Both objects stand on the table ahead of the robot, below the camera.
        assert all(o.pose.position.x > 0.5 for o in objects.objects)
    finally:
        graph.close()


def _start(scene, params):
    """Build the node with ``params`` in a context of its own (shut down after)."""
    context = Context()
    rclpy.init(context=context, domain_id=int(np.random.default_rng().integers(100, 230)))
    try:
        node = PerceptionNode(segmenter=FixedMaskSegmenter(scene['masks']), context=context,
                              parameter_overrides=[Parameter(k, value=v)
                                                   for k, v in params.items()])
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


@pytest.mark.parametrize('params, match', [
    ({'target_transform': EXTRINSICS}, 'target_frame is empty'),
    ({'target_frame': 'base_link', 'target_transform': '1 2 3'}, 'expected 7 numbers'),
    ({'target_frame': 'base_link', 'target_transform': '0 0 0 0 0 0 3'}, 'norm'),
    ({'target_frame': '/base_link'}, 'target_frame'),
])
def test_bad_target_configuration_fails_at_start_up(scene, params, match):
    with pytest.raises(ValueError, match=match):
        _start(scene, {'backend': 'clipseg', **params})


@pytest.mark.skipif(tf2_available(), reason='tf2_ros is installed: the tf2 path is used')
def test_target_frame_without_tf2_says_to_set_target_transform(scene):
    with pytest.raises(ValueError, match='tf2_ros is not installed.*target_transform'):
        _start(scene, {'backend': 'clipseg', 'target_frame': 'base_link'})


@pytest.mark.skipif(not tf2_available(),
                    reason='tf2_ros does not import (it comes with an apt ROS 2 install, '
                           'not as a PyPI wheel)')
def test_tf2_transform_at_the_image_stamp_and_honest_reason_without_it(scene):
    from geometry_msgs.msg import TransformStamped
    import tf2_ros
    graph = Graph(FixedMaskSegmenter(scene['masks']),
                  {'backend': 'clipseg', 'target_frame': 'base_link', 'tf_timeout_s': 0.2})
    try:
        graph.set_goal('box; cylinder')
        # No transform yet: objects come in base_link without poses, saying why.
        header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'],
                                     frame_id=CAMERA)
        objects = graph.wait_for_stamp('objects', header)
        assert objects.header.frame_id == 'base_link'
        assert objects.objects and not any(o.has_pose for o in objects.objects)
        assert all('no transform' in o.pose_status for o in objects.objects)
        transform = RigidTransform.parse(EXTRINSICS)
        msg = TransformStamped()
        msg.header.frame_id, msg.child_frame_id = 'base_link', CAMERA
        msg.header.stamp = graph.now()
        (msg.transform.translation.x, msg.transform.translation.y,
         msg.transform.translation.z) = transform.translation
        (msg.transform.rotation.x, msg.transform.rotation.y, msg.transform.rotation.z,
         msg.transform.rotation.w) = transform.quaternion
        broadcaster = tf2_ros.StaticTransformBroadcaster(graph.peer)
        broadcaster.sendTransform(msg)
        header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'],
                                     frame_id=CAMERA)
        _check_outputs(graph, scene, header, 'base_link', transform)
    finally:
        graph.close()


class _FakeTf2:
    """Stands in for the tf2_ros module where it is not installed: a buffer of fixed transforms.

    It exercises the node's tf2 glue (lookup at the image stamp with the timeout, the reason
    when there is no transform); the real module is tested above where it imports.
    """

    class TransformException(Exception):
        pass

    class LookupException(TransformException):
        pass

    def __init__(self):
        self.transforms = {}
        self.calls = []
        fake = self

        class Buffer:

            def __init__(self, node=None):
                pass

            def lookup_transform(self, target, source, time, timeout):
                fake.calls.append((target, source, time.nanoseconds, timeout.nanoseconds))
                if (target, source) not in fake.transforms:
                    raise fake.LookupException(f'"{target}" passed to lookupTransform '
                                               'argument target_frame does not exist.')
                return fake.transforms[(target, source)]

        class TransformListener:

            def __init__(self, buffer, node):
                pass

        self.Buffer, self.TransformListener = Buffer, TransformListener


def _transform_stamped(transform):
    from geometry_msgs.msg import TransformStamped
    msg = TransformStamped()
    t, q = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = (float(v) for v in transform.translation)
    q.x, q.y, q.z, q.w = (float(v) for v in transform.quaternion)
    return msg


def test_tf2_glue_with_a_stand_in_buffer(scene, monkeypatch):
    import sys
    fake = _FakeTf2()
    monkeypatch.setitem(sys.modules, 'tf2_ros', fake)
    graph = Graph(FixedMaskSegmenter(scene['masks']),
                  {'backend': 'clipseg', 'target_frame': 'base_link', 'tf_timeout_s': 0.07})
    try:
        graph.set_goal('box; cylinder')
        header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'],
                                     frame_id=CAMERA)
        objects = graph.wait_for_stamp('objects', header)
        assert objects.header.frame_id == 'base_link'
        assert objects.objects and not any(o.has_pose for o in objects.objects)
        assert all(o.pose_status.startswith(f'no transform {CAMERA} -> base_link')
                   and 'LookupException' in o.pose_status for o in objects.objects)
        assert graph.wait_for_stamp('poses', header).poses == []
        cloud = graph.wait_for_stamp('points', header)
        assert cloud.header.frame_id == 'base_link' and cloud.width * cloud.height == 0
        assert any('no_transform' in str(w) or 'without poses' in str(w)
                   for w in graph.node.recent_warnings)
        stamp_ns = header.stamp.sec * 10**9 + header.stamp.nanosec
        assert fake.calls[-1] == ('base_link', CAMERA, stamp_ns, 70_000_000)

        transform = RigidTransform.parse(EXTRINSICS)
        fake.transforms[('base_link', CAMERA)] = _transform_stamped(transform)
        header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'],
                                     frame_id=CAMERA)
        _check_outputs(graph, scene, header, 'base_link', transform)
    finally:
        graph.close()
