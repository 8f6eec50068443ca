"""Example-image prompts over ROS (goal_prompts, FindObjects prompts) reaching the engine."""

import time

from helpers_node import FixedMaskSegmenter, Graph, wait_until
import numpy as np
import pytest
from rclpy.action import ActionClient
from std_msgs.msg import Header

from zs_perception.action import FindObjects
from zs_perception.msg import Prompt, PromptArray
from zs_perception.ros.conversions import array_to_image
from zs_perception.ros.qos import GOAL_QOS
from zs_perception.segmentation.base import Prompt as EnginePrompt
from zs_perception.testing.scene import render_scene


class PromptRecorder(FixedMaskSegmenter):
    """The fixed-mask double, keeping the prompts exactly as the node gave them."""

    raw_history = ()

    def set_prompts(self, prompts):
        self.raw = list(prompts)
        self.raw_history = list(self.raw_history) + [self.raw]
        labels = [p.label if isinstance(p, EnginePrompt) else p for p in prompts]
        return super().set_prompts(labels)


@pytest.fixture(scope='module')
def scene():
    return render_scene(160, 120, seed=8)


def _crop(scene, label):
    rows, cols = np.nonzero(scene['masks'][label])
    return scene['rgb'][rows.min():rows.max() + 1, cols.min():cols.max() + 1].copy()


def _bgr_prompt(label, rgb):
    return Prompt(label=label, image=array_to_image(np.ascontiguousarray(rgb[..., ::-1]),
                                                    'bgr8', Header()))


def _wait(predicate, timeout=20.0):
    return wait_until(predicate, timeout)


def test_goal_prompts_reach_the_engine_and_label_the_objects(scene):
    segmenter = PromptRecorder(scene['masks'])
    graph = Graph(segmenter, {'backend': 'clipseg'})
    try:
        pub = graph.peer.create_publisher(PromptArray, 'goal_prompts', GOAL_QOS)
        assert _wait(lambda: pub.get_subscription_count() > 0)
        crop = _crop(scene, 'cylinder')
        pub.publish(PromptArray(prompts=[Prompt(text='box'), _bgr_prompt('cylinder', crop)]))
        assert _wait(lambda: graph.node._segmenter.prompts == ['box', 'cylinder'])
        text, image = segmenter.raw
        assert text == EnginePrompt('box', text='box')
        assert image.label == 'cylinder' and image.text is None
        np.testing.assert_array_equal(image.image, crop)  # bgr8 converted to RGB
        header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'])
        objects = graph.wait_for_stamp('objects', header)
        assert [o.label for o in objects.objects] == ['box', 'cylinder']
        # The prompts parameter shows the goal in force.
        assert _wait(lambda: graph.node.get_parameter('prompts').value == 'box, cylinder')
        # A bad prompt is refused with a warning; the goal in force stays.
        pub.publish(PromptArray(prompts=[Prompt(image=array_to_image(crop, 'rgb8',
                                                                     Header()))]))
        assert _wait(lambda: graph.node.counters['goals_bad'] == 1)
        assert any('needs a label' in w for w in graph.node.recent_warnings)
        assert graph.node._segmenter.prompts == ['box', 'cylinder']
    finally:
        graph.close()


def test_find_objects_with_an_example_image(scene):
    segmenter = PromptRecorder(scene['masks'])
    graph = Graph(segmenter, {'backend': 'clipseg'})
    try:
        client = ActionClient(graph.peer, FindObjects, '/t/zs_perception/find_objects')
        assert client.wait_for_server(timeout_sec=10.0)
        goal = FindObjects.Goal(prompts=[_bgr_prompt('cylinder', _crop(scene, 'cylinder'))],
                                timeout_s=10.0, pose_required=True)
        future = client.send_goal_async(goal)
        assert _wait(future.done)
        result_future = future.result().get_result_async()
        while not result_future.done():
            graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'])
            time.sleep(0.05)
        result = result_future.result().result
        assert result.status == FindObjects.Result.STATUS_FOUND, result.reason
        assert [o.label for o in result.objects.objects] == ['cylinder']
        # The engine got the example image while the goal ran, and not after it.
        assert any(isinstance(p, EnginePrompt) and p.image is not None and p.label == 'cylinder'
                   for batch in segmenter.raw_history for p in batch)
        assert _wait(lambda: segmenter.raw == [])
    finally:
        graph.close()


def test_real_clipseg_takes_image_prompts(tiny_models, scene):
    graph = Graph(None, {'backend': 'clipseg', 'clipseg_model': str(tiny_models / 'clipseg'),
                         'allow_random_weights': True, 'device': 'cpu', 'precision': 'fp32',
                         'threshold': 0.0, 'min_area_px': 1})
    try:
        pub = graph.peer.create_publisher(PromptArray, 'goal_prompts', GOAL_QOS)
        assert _wait(lambda: pub.get_subscription_count() > 0)
        pub.publish(PromptArray(prompts=[Prompt(text='a box'),
                                         _bgr_prompt('like this', _crop(scene, 'cylinder'))]))
        assert _wait(lambda: graph.node._segmenter.prompts == ['a box', 'like this'], 60.0), \
            graph.node.recent_warnings
        header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'])
        objects = graph.wait_for_stamp('objects', header, timeout=60.0)
        assert list(objects.prompts) == ['a box', 'like this']
        assert {o.label for o in objects.objects} <= {'a box', 'like this'}
    finally:
        graph.close()


def test_a_text_only_backend_reports_image_prompts_dropped(backend_models, scene):
    graph = Graph(None, {'backend': 'clip_dense', 'clip_model': backend_models['clip'],
                         'allow_random_weights': True, 'device': 'cpu', 'precision': 'fp32'})
    try:
        pub = graph.peer.create_publisher(PromptArray, 'goal_prompts', GOAL_QOS)
        assert _wait(lambda: pub.get_subscription_count() > 0)
        pub.publish(PromptArray(prompts=[Prompt(text='box'),
                                         _bgr_prompt('like this', _crop(scene, 'box'))]))
        assert _wait(lambda: graph.node._segmenter.prompts == ['box'], 60.0)
        assert _wait(lambda: any('image prompts are not supported' in w
                                 for w in graph.node.recent_warnings))
        # A FindObjects goal with an image prompt ends at once, saying why.
        client = ActionClient(graph.peer, FindObjects, '/t/zs_perception/find_objects')
        assert client.wait_for_server(timeout_sec=10.0)
        future = client.send_goal_async(FindObjects.Goal(
            prompts=[_bgr_prompt('like this', _crop(scene, 'box'))], timeout_s=30.0))
        assert _wait(future.done)
        result_future = future.result().get_result_async()
        assert _wait(result_future.done, 30.0)
        result = result_future.result().result
        assert result.status == FindObjects.Result.STATUS_INVALID
        assert "'like this'" in result.reason
    finally:
        graph.close()
