"""End to end with the sam3 backend on tiny random weights, without and with propagation.

The masks mean nothing (random weights); the messages must be well formed and consistent.
"""

from dataclasses import replace

from helpers_node import Graph
import numpy as np
import pytest

from zs_perception.ros.conversions import image_to_array
from zs_perception.testing.random_models import TRACKER_MODELS
from zs_perception.testing.scene import render_scene


@pytest.mark.parametrize('tracker', ['none', 'sam2'])
def test_sam3_node_messages_are_consistent(sam3_models, tracker):
    scene = render_scene(160, 120, seed=5)
    params = {'backend': 'sam3', 'sam3_model': sam3_models['sam3'],
              'allow_random_weights': True, 'device': 'cpu', 'precision': 'fp32',
              'threshold': 0.05, 'min_area_px': 20, 'max_objects': 6,
              'prompts': 'a box, a cylinder', 'tracker': tracker,
              'detect_every_n_frames': 2}
    if tracker != 'none':
        params['tracker_model'] = sam3_models[TRACKER_MODELS[tracker]]
    graph = Graph(None, params)
    try:
        track_ids = []
        if tracker != 'none':
            propagator = graph.node._segmenter
            assert type(propagator).__name__ == 'Propagator'
            segment = propagator.segment

            def shifted(image):
                # The video tracker's ids, moved clear of the mask matcher's 1, 2, ...: the
                # published ids can only equal them if the node takes Instance.track_id.
                result = segment(image)
                result.instances = [replace(i, track_id=i.track_id + 100)
                                    for i in result.instances]
                track_ids.append([i.track_id for i in result.instances if i.mask.any()][:6])
                return result

            propagator.segment = shifted
        for _ in range(4):
            header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'])
            objects = graph.wait_for_stamp('objects', header, timeout=120.0)
            assert list(objects.prompts) == ['a box', 'a cylinder']
            assert objects.backend == 'sam3'
            labels = image_to_array(graph.wait_for_stamp('masks', header),
                                    {'mono8': ('uint8', 1)})
            assert labels.shape == (120, 160)
            n = len(objects.objects)
            assert 1 <= n <= 6  # threshold 0.05: every query passes, max_objects caps
            assert set(np.unique(labels)) <= set(range(n + 1))
            for obj in objects.objects:
                assert obj.label in objects.prompts and 0.0 <= obj.score <= 1.0
                assert (obj.mask.width, obj.mask.height) == (obj.roi.width, obj.roi.height)
                assert obj.roi.x_offset + obj.roi.width <= 160
                assert obj.roi.y_offset + obj.roi.height <= 120
                crop = image_to_array(obj.mask, {'mono8': ('uint8', 1)})
                assert set(np.unique(crop)) <= {0, 255} and crop.any()
            assert len({obj.id for obj in objects.objects}) == n
            if tracker != 'none':
                assert min(track_ids[-1]) >= 101
                assert sorted(obj.id for obj in objects.objects) == sorted(track_ids[-1])
        assert graph.node.counters['segmenter_errors'] == 0
    finally:
        graph.close()
