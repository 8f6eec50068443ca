"""End to end with the real CLIPSeg backend on a tiny random-weight model.

The masks mean nothing (random weights); the messages must still be well formed and
consistent: mask sizes match rois, label image values match the object count, poses finite.
"""

import math

from helpers_node import Graph
import numpy as np
import pytest

from zs_perception.ros.conversions import cloud_to_arrays, image_to_array
from zs_perception.testing.scene import render_scene


@pytest.mark.parametrize('threshold', [0.45, 0.0])
def test_real_clipseg_messages_are_consistent(tiny_models, threshold):
    scene = render_scene(160, 120, seed=5)
    graph = Graph(None, {'backend': 'clipseg', 'clipseg_model': str(tiny_models / 'clipseg'),
                         'allow_random_weights': True, 'device': 'cpu', 'precision': 'fp32',
                         'threshold': threshold, 'min_area_px': 20,
                         'prompts': 'a box, a cylinder; the table'})
    try:
        frames = []
        for _ in range(3):
            header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'])
            frames.append((header, graph.wait_for_stamp('objects', header, timeout=60.0)))
        counts = []
        for header, objects in frames:
            assert list(objects.prompts) == ['a box', 'a cylinder', 'the table']
            assert objects.backend == 'clipseg'
            labels = image_to_array(graph.wait_for_stamp('masks', header),
                                    {'mono8': ('uint8', 1)})
            assert labels.shape == (120, 160)
            n = len(objects.objects)
            counts.append(n)
            assert set(np.unique(labels)) <= set(range(n + 1))
            union = np.zeros(labels.shape, bool)
            for k, obj in enumerate(objects.objects):
                assert obj.label in objects.prompts and 0.0 <= obj.score <= 1.0
                assert (obj.mask.width, obj.mask.height) == (obj.roi.width, obj.roi.height)
                assert obj.mask.encoding == 'mono8' and obj.mask.header.stamp == header.stamp
                assert obj.roi.x_offset + obj.roi.width <= 160
                assert obj.roi.y_offset + obj.roi.height <= 120
                crop = image_to_array(obj.mask, {'mono8': ('uint8', 1)})
                assert set(np.unique(crop)) <= {0, 255} and crop.any()
                full = np.zeros(labels.shape, bool)
                full[obj.roi.y_offset:obj.roi.y_offset + obj.roi.height,
                     obj.roi.x_offset:obj.roi.x_offset + obj.roi.width] = crop == 255
                # Label k + 1 only on object k's mask (higher scores win overlaps).
                assert not np.any((labels == k + 1) & ~full)
                union |= full
                if obj.has_pose:
                    values = [obj.pose.position.x, obj.pose.position.y, obj.pose.position.z,
                              obj.pose.orientation.x, obj.pose.orientation.y,
                              obj.pose.orientation.z, obj.pose.orientation.w,
                              obj.size.x, obj.size.y, obj.size.z]
                    assert all(math.isfinite(v) for v in values)
                    q = np.array(values[3:7])
                    assert abs(np.linalg.norm(q) - 1.0) < 1e-6
            np.testing.assert_array_equal(labels > 0, union)
            poses = graph.wait_for_stamp('poses', header)
            assert len(poses.poses) == sum(o.has_pose for o in objects.objects)
            points, index = cloud_to_arrays(graph.wait_for_stamp('points', header))
            assert np.isfinite(points).all()
            assert len(points) == sum(o.num_points for o in objects.objects)
            assert (index < max(n, 1)).all()
        if threshold == 0.0:
            assert min(counts) >= 1  # every pixel passes: at least one object per frame
        assert graph.node.counters['segmenter_errors'] == 0
    finally:
        graph.close()
