"""The node in a real rclpy graph with a test-double segmenter on a rendered RGB-D scene.

The published pose, extents, label image, markers and points must agree with the scene's
ground truth and with each other, and carry the source image's stamp and frame.
"""

import time

from helpers_node import FixedMaskSegmenter, Graph
import numpy as np
import pytest
from visualization_msgs.msg import Marker

from zs_perception.ros.conversions import cloud_to_arrays, image_to_array
from zs_perception.testing.scene import render_scene

FRAME = 'camera_color_optical_frame'


@pytest.fixture(scope='module')
def scene():
    return render_scene(320, 240, seed=3)


@pytest.fixture
def graph(scene):
    g = Graph(FixedMaskSegmenter(scene['masks']), {'backend': 'clipseg'})
    yield g
    g.close()


def _quat_to_matrix(q):
    x, y, z, w = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def test_outputs_match_ground_truth_and_each_other(graph, scene):
    graph.set_goal('box; cylinder')
    header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'],
                                 frame_id=FRAME)
    objects = graph.wait_for_stamp('objects', header)
    assert objects.header.frame_id == FRAME
    assert list(objects.prompts) == ['box', 'cylinder'] and objects.backend == 'clipseg'
    assert [o.label for o in objects.objects] == ['box', 'cylinder']

    labels_msg = graph.wait_for_stamp('masks', header)
    poses = graph.wait_for_stamp('poses', header)
    markers = graph.wait_for_stamp('markers', header)
    cloud = graph.wait_for_stamp('points', header)
    for msg in (labels_msg, poses, cloud, *markers.markers):
        assert msg.header.frame_id == FRAME and msg.header.stamp == header.stamp
    labels = image_to_array(labels_msg, {'mono8': ('uint8', 1)})
    assert labels.shape == (240, 320) and labels.max() == 2
    points, index = cloud_to_arrays(cloud)

    for k, obj in enumerate(objects.objects):
        name = obj.label
        mask = scene['masks'][name]
        # Mask and roi agree with the rendered mask and the label image.
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert (obj.roi.x_offset, obj.roi.y_offset, obj.roi.width, obj.roi.height) == (
            cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1)
        crop = image_to_array(obj.mask, {'mono8': ('uint8', 1)})
        assert crop.shape == (obj.roi.height, obj.roi.width)
        np.testing.assert_array_equal(
            crop == 255, mask[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1])
        np.testing.assert_array_equal(labels == k + 1, mask)
        # Pose and extents agree with the ground truth.
        assert obj.has_pose and obj.pose_status == 'ok'
        position = np.array([obj.pose.position.x, obj.pose.position.y, obj.pose.position.z])
        truth_position, _ = scene['poses'][name]
        assert np.linalg.norm(position - truth_position) < 0.015, name
        size = np.array([obj.size.x, obj.size.y, obj.size.z])
        np.testing.assert_allclose(np.sort(size), np.sort(scene['extents'][name]),
                                   rtol=0.2, atol=0.01, err_msg=name)
        assert 0.5 < obj.depth_valid_fraction <= 1.0
        # PoseArray carries the same pose.
        assert poses.poses[k] == obj.pose
        # A box marker with the object's id, pose and size, and a text label.
        box = [m for m in markers.markers if m.ns == 'objects' and m.id == obj.id]
        text = [m for m in markers.markers if m.ns == 'labels' and m.id == obj.id]
        assert len(box) == 1 and len(text) == 1
        assert box[0].type == Marker.CUBE and box[0].pose == obj.pose
        scale = box[0].scale
        assert (scale.x, scale.y, scale.z) == (obj.size.x, obj.size.y, obj.size.z)
        assert name in text[0].text
        # The object's points lie inside its box (in the object frame).
        mine = points[index == k].astype(np.float64)
        assert len(mine) == obj.num_points > 50
        q = [obj.pose.orientation.x, obj.pose.orientation.y, obj.pose.orientation.z,
             obj.pose.orientation.w]
        local = (mine - position) @ _quat_to_matrix(q)
        inside = np.all(np.abs(local) <= size / 2 + 0.01, axis=1)
        assert inside.mean() > 0.9, name
    assert len(points) == sum(o.num_points for o in objects.objects)


def test_ids_persist_and_stale_markers_are_deleted(graph, scene):
    graph.set_goal('box, cylinder')
    first = graph.wait_for_stamp('objects', graph.publish_frame(
        scene['rgb'], scene['depth_m'], scene['intrinsics']))
    ids = {o.label: o.id for o in first.objects}
    second = graph.wait_for_stamp('objects', graph.publish_frame(
        scene['rgb'], scene['depth_m'], scene['intrinsics']))
    assert {o.label: o.id for o in second.objects} == ids
    graph.set_goal('cylinder')
    header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'])
    third = graph.wait_for_stamp('objects', header)
    assert [(o.label, o.id) for o in third.objects] == [('cylinder', ids['cylinder'])]
    markers = graph.wait_for_stamp('markers', header)
    deleted = {(m.ns, m.id) for m in markers.markers if m.action == Marker.DELETE}
    assert deleted == {('objects', ids['box']), ('labels', ids['box'])}


def test_without_depth_masks_are_published_without_pose(graph, scene):
    # An RGB-only camera: no depth publisher at all, so no wait for depth and no pose. (With
    # a depth publisher that has sent nothing yet, the first images wait sync_wait_s and say
    # 'depth late'; test_node_sync covers the stream timeouts.)
    graph.peer.destroy_publisher(graph.depth_pub)
    deadline = time.monotonic() + 10.0
    while graph.node._depth_sub.get_publisher_count() and time.monotonic() < deadline:
        time.sleep(0.01)
    graph.set_goal('box')
    header = graph.publish_frame(scene['rgb'])
    objects = graph.wait_for_stamp('objects', header)
    assert len(objects.objects) == 1
    obj = objects.objects[0]
    assert not obj.has_pose and obj.pose_status == 'no depth image'
    assert obj.pose.orientation.w == 1.0
    assert graph.wait_for_stamp('poses', header).poses == []
    assert graph.wait_for_stamp('points', header).width == 0


def test_debug_image_only_while_subscribed(graph, scene):
    graph.set_goal('box')
    header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'])
    graph.wait_for_stamp('objects', header)
    # The harness subscribes to ~/debug_image, so it is drawn: same size as the source.
    debug = graph.wait_for_stamp('debug_image', header)
    assert (debug.width, debug.height, debug.encoding) == (320, 240, 'rgb8')
    overlay = image_to_array(debug, {'rgb8': ('uint8', 3)})
    assert not np.array_equal(overlay[scene['masks']['box']], scene['rgb'][scene['masks']['box']])


class _SegmentEverything(FixedMaskSegmenter):
    """A goal-free backend double (like zero_guidance): every known mask, goal or not."""

    needs_prompts = False

    def segment(self, image):
        prompts = self._prompts
        self._prompts = prompts or sorted(self.masks)
        try:
            return super().segment(image)
        finally:
            self._prompts = prompts


def test_goal_free_backend_publishes_objects_without_a_goal(scene):
    graph = Graph(_SegmentEverything(scene['masks']), {'backend': 'zero_guidance'})
    try:
        header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'])
        objects = graph.wait_for_stamp('objects', header)
        assert sorted(o.label for o in objects.objects) == ['box', 'cylinder']
        assert list(objects.prompts) == []
        assert not any('No goal yet' in w for w in graph.node.recent_warnings)
    finally:
        graph.close()
