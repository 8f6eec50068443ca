"""Bad input on every topic: the node warns what was wrong and keeps producing output."""

from helpers_node import FixedMaskSegmenter, Graph
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, Image

from zs_perception.ros.conversions import array_to_image
from zs_perception.testing.scene import render_scene


@pytest.fixture(scope='module')
def scene():
    return render_scene(160, 120, seed=1)


@pytest.fixture(scope='module')
def graph(scene):
    g = Graph(FixedMaskSegmenter(scene['masks']), {'backend': 'clipseg', 'prompts': 'box'})
    yield g
    g.close()


def good_frame_works(graph, scene, with_pose=True):
    header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'])
    objects = graph.wait_for_stamp('objects', header)
    assert objects.objects and objects.objects[0].has_pose == with_pose
    return objects


def warned(graph, text):
    return any(text in w for w in graph.node.recent_warnings)


def test_unsupported_encoding(graph, scene):
    good_frame_works(graph, scene)
    before = graph.node.counters['bad_image']
    bad = Image(height=120, width=160, encoding='yuv422', step=320, data=bytes(320 * 120))
    graph.publish_frame(image=bad)
    graph.wait_counter('bad_image', before)
    good_frame_works(graph, scene)
    assert warned(graph, "unsupported encoding 'yuv422'; expected one of rgb8")


def test_data_shorter_than_height_times_step(graph, scene):
    before = graph.node.counters['bad_image']
    bad = Image(height=120, width=160, encoding='rgb8', step=480, data=bytes(480 * 100))
    graph.publish_frame(image=bad)
    graph.wait_counter('bad_image', before)
    good_frame_works(graph, scene)
    assert warned(graph, 'expected height * step = 120 * 480 = 57600')


def test_depth_size_mismatch(graph, scene):
    wrong = np.ones((50, 50), np.float32)
    header = graph.publish_frame(scene['rgb'], wrong, scene['intrinsics'])
    obj = graph.wait_for_stamp('objects', header).objects[0]
    assert not obj.has_pose and obj.pose_status == 'depth size mismatch'
    assert warned(graph, 'Ignored a depth image of 50x50 for a 160x120 image')
    good_frame_works(graph, scene)


def test_all_nan_depth(graph, scene):
    header = graph.publish_frame(scene['rgb'], np.full((120, 160), np.nan, np.float32),
                                 scene['intrinsics'])
    obj = graph.wait_for_stamp('objects', header).objects[0]
    assert not obj.has_pose and 'depth' in obj.pose_status
    assert warned(graph, 'no valid reading')
    good_frame_works(graph, scene)


def test_camera_info_with_zero_k(graph, scene):
    header = graph.publish_frame(scene['rgb'], scene['depth_m'],
                                 info=CameraInfo(width=160, height=120))
    obj = graph.wait_for_stamp('objects', header).objects[0]
    assert not obj.has_pose and obj.pose_status == 'bad camera_info'
    assert warned(graph, 'all-zero K')
    good_frame_works(graph, scene)


def test_bad_depth_encoding(graph, scene):
    header = graph.publish_frame(
        scene['rgb'], intrinsics=scene['intrinsics'],
        depth=array_to_image(np.zeros((120, 160, 3), np.uint8), 'rgb8', None))
    obj = graph.wait_for_stamp('objects', header).objects[0]
    assert not obj.has_pose and obj.pose_status == 'bad depth image'
    assert warned(graph, "unsupported encoding 'rgb8'; expected one of 16UC1")
    good_frame_works(graph, scene)


def test_empty_goal_then_image_publishes_empty_results(graph, scene):
    graph.set_goal('')
    header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'])
    objects = graph.wait_for_stamp('objects', header)
    assert objects.objects == [] and list(objects.prompts) == []
    labels = graph.wait_for_stamp('masks', header)
    assert not any(labels.data)
    assert warned(graph, 'No goal yet')
    graph.set_goal('box')
    good_frame_works(graph, scene)


def test_goal_of_ten_thousand_characters(graph, scene):
    graph.set_goal('y' * 10_000)
    header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'])
    objects = graph.wait_for_stamp('objects', header)
    assert list(objects.prompts) == ['y' * 200]
    assert warned(graph, 'cut 1 phrase (longer than max_prompt_chars=200)')
    graph.set_goal('box')
    good_frame_works(graph, scene)


def test_five_hundred_phrases(graph, scene):
    graph.set_goal(','.join(['box'] + [f'thing {i}' for i in range(499)]))
    header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'])
    objects = graph.wait_for_stamp('objects', header)
    assert len(objects.prompts) == 32 and objects.prompts[0] == 'box'
    assert [o.label for o in objects.objects] == ['box']
    assert warned(graph, 'dropped 468 phrases (over max_prompts=32)')
    graph.set_goal('box')
    good_frame_works(graph, scene)


def test_rapid_goal_changes_end_with_the_last_goal(graph, scene):
    for i in range(50):
        graph.set_goal(f'thing {i}')
    graph.set_goal('cylinder')
    # Goals apply from the next frame; the last one wins.
    for _ in range(50):
        header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'])
        objects = graph.wait_for_stamp('objects', header)
        if list(objects.prompts) == ['cylinder']:
            break
    assert [o.label for o in objects.objects] == ['cylinder']
    graph.set_goal('box')
    good_frame_works(graph, scene)


def test_image_without_frame_id_is_processed_with_a_warning(graph, scene):
    header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'],
                                 frame_id='')
    objects = graph.wait_for_stamp('objects', header)
    assert objects.header.frame_id == '' and objects.objects[0].has_pose
    assert warned(graph, 'empty header.frame_id')
    good_frame_works(graph, scene)


def test_node_is_alive_and_counts(graph):
    counters = graph.node.counters
    assert counters['frames_failed'] == 0
    assert counters['bad_image'] >= 2 and counters['bad_depth'] >= 2
    assert counters['bad_camera_info'] >= 1


def test_one_pixel_image_is_a_bad_image(graph, scene):
    before = dict(graph.node.counters)
    graph.publish_frame(np.zeros((1, 1, 3), np.uint8))
    graph.wait_counter('bad_image', before['bad_image'])
    assert graph.node.counters['segmenter_errors'] == before['segmenter_errors']
    assert warned(graph, 'the image is 1x1 px')
    good_frame_works(graph, scene)


def test_float_depth_in_millimetres_is_warned_and_used(graph, scene):
    header = graph.publish_frame(scene['rgb'], scene['depth_m'] * 1000.0, scene['intrinsics'])
    obj = graph.wait_for_stamp('objects', header).objects[0]
    assert obj.has_pose, obj.pose_status
    assert warned(graph, 'look like millimetres')


def test_zero_and_future_stamps_stay_out_of_the_latency_statistics(graph, scene):
    from builtin_interfaces.msg import Time
    for stamp in (Time(), Time(sec=graph.now().sec + 3600)):
        before = graph.node.counters['bad_stamp']
        header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'],
                                     stamp=stamp)
        graph.wait_for_stamp('objects', header)
        assert graph.node.counters['bad_stamp'] == before + 1
    _, timings = graph.node.health.snapshot()
    assert max(timings['latency']) < 60.0 and min(timings['latency']) > -1.0
    assert max(timings['arrival']) < 60.0
    assert warned(graph, 'the image stamp is 0') or warned(graph, 'The image stamp is 0')
    good_frame_works(graph, scene)
