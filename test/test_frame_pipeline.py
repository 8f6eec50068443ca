"""FramePipeline and Health without ROS: arrays in, objects with poses or reasons out."""

import numpy as np
import pytest

from zs_perception import config
from zs_perception.pipeline.frame_pipeline import (FrameInput, FramePipeline,
                                                   millimetres_as_metres, stamp_problem)
from zs_perception.pipeline.frame_sync import Miss
from zs_perception.pipeline.health import ERROR, Health, OK, WARN
from zs_perception.testing.doubles import FakeClock, FixedMaskSegmenter
from zs_perception.testing.scene import render_scene

NOW = 1000.0


@pytest.fixture(scope='module')
def scene():
    return render_scene(160, 120, seed=5)


def make(scene, **settings):
    clock = FakeClock()
    health = Health(window_s=5.0, clock=clock)
    logged = []
    pipeline = FramePipeline(FixedMaskSegmenter(scene['masks']), health,
                             log_warning=logged.append)
    values = config.validate_settings({'prompts': 'box, cylinder', **settings})
    return pipeline, health, values, logged, clock


def frame(scene, stamp=NOW - 0.05, depth='ok', info='ok', encoding='32FC1', **kwargs):
    depth_m = scene['depth_m'] if isinstance(depth, str) else depth
    return FrameInput(
        stamp_s=stamp, arrival_s=NOW - 0.04, frame_id='camera_color_optical_frame',
        rgb=kwargs.pop('rgb', lambda: scene['rgb']),
        depth=None if depth is None else lambda: depth_m, depth_encoding=encoding,
        intrinsics=None if info is None else lambda w, h: scene['intrinsics'], **kwargs)


def test_goal_segment_geometry_tracking(scene):
    pipeline, health, settings, _, _ = make(scene)
    result = pipeline.process(frame(scene), settings, NOW, goal=settings['prompts'])
    assert result.prompts == ['box', 'cylinder']
    assert [i.label for i in result.instances] == ['box', 'cylinder']
    for instance, geometry in zip(result.instances, result.geometries):
        truth, _ = scene['poses'][instance.label]
        assert geometry.has_pose and np.linalg.norm(geometry.position - truth) < 0.015
    again = pipeline.process(frame(scene), settings, NOW)
    assert again.ids == result.ids and len(set(result.ids)) == 2
    assert health.counters['frames_processed'] == 2
    assert result.stamp_ok and result.timings['arrival'] == pytest.approx(0.01)
    assert {'convert', 'segment', 'geometry', 'tracking'} <= set(result.timings)


def test_live_settings_reach_every_stage(scene):
    pipeline, _, settings, _, _ = make(scene)
    settings.update(threshold=0.7, max_objects=1, track_iou_threshold=0.5,
                    track_max_distance_m=0.1, track_max_missed_frames=2)
    result = pipeline.process(frame(scene), settings, NOW, goal='box, cylinder')
    assert pipeline.segmenter.threshold == 0.7 and pipeline.segmenter.max_objects == 1
    assert len(result.instances) == 1
    tracker = pipeline.tracker
    assert (tracker.iou_threshold, tracker.max_distance_m, tracker.max_missed_frames) == (
        0.5, 0.1, 2)
    settings['max_depth_m'] = 0.2  # every object is farther: no pose, and says why
    result = pipeline.process(frame(scene), settings, NOW)
    assert not result.geometries[0].has_pose and result.geometries[0].status != 'ok'


@pytest.mark.parametrize('miss, counter', [
    (Miss('depth late', 'no depth within 0.1 s', 'late'), 'no_depth_match'),
    (Miss('depth stamp mismatch', 'stamped +0.500 s', 'mismatch'), 'no_depth_match'),
    (Miss('no depth image', 'the depth stream is silent for 2.0 s', 'absent'),
     'no_depth_match'),
])
def test_sync_misses_give_reasons_and_faults(scene, miss, counter):
    pipeline, health, settings, logged, _ = make(scene)
    result = pipeline.process(frame(scene, depth=None, depth_miss=miss), settings, NOW,
                              goal='box')
    assert [g.status for g in result.geometries] == [miss.reason]
    assert health.counters[counter] == 1
    assert [f.key for f in health.current()] == [counter]
    assert miss.detail in logged[-1]


def test_rgb_only_camera_is_not_a_fault(scene):
    pipeline, health, settings, logged, _ = make(scene)
    miss = Miss('no depth image', 'no depth received and no publisher of it', 'none')
    no_info = Miss('no camera_info', 'no camera_info received and no publisher of it', 'none')
    result = pipeline.process(frame(scene, depth=None, info=None, depth_miss=miss,
                                    info_miss=no_info), settings, NOW, goal='box')
    assert result.geometries[0].status == 'no depth image'
    assert health.current() == [] and not logged
    # Depth without any camera_info publisher is a misconfiguration: named.
    result = pipeline.process(frame(scene, info=None, info_miss=no_info), settings, NOW)
    assert result.geometries[0].status == 'no camera_info'
    assert [f.key for f in health.current()] == ['no_camera_info_match']
    assert 'remapping' in logged[-1]


def test_camera_info_miss(scene):
    pipeline, health, settings, _, _ = make(scene)
    miss = Miss('camera_info stamp mismatch', 'stamped -1000.000 s', 'mismatch')
    result = pipeline.process(frame(scene, info=None, info_miss=miss), settings, NOW,
                              goal='box')
    assert result.geometries[0].status == 'camera_info stamp mismatch'
    assert health.counters['no_camera_info_match'] == 1


def test_bad_depth_and_camera_info(scene):
    pipeline, health, settings, _, _ = make(scene)

    def bad():
        raise ValueError("unsupported encoding 'rgb8'")

    result = pipeline.process(FrameInput(NOW, NOW, 'cam', lambda: scene['rgb'], bad, '32FC1',
                                         lambda w, h: scene['intrinsics']),
                              settings, NOW, goal='box')
    assert result.geometries[0].status == 'bad depth image'
    result = pipeline.process(frame(scene, depth=np.ones((50, 50), np.float32)), settings,
                              NOW)
    assert result.geometries[0].status == 'depth size mismatch'
    assert health.counters['bad_depth'] == 2


def test_float_depth_in_millimetres_is_warned_and_used_as_millimetres(scene):
    pipeline, health, settings, logged, _ = make(scene)
    depth_mm = scene['depth_m'] * 1000.0
    assert millimetres_as_metres(depth_mm, '32FC1', 0.1, 10.0)
    assert not millimetres_as_metres(scene['depth_m'], '32FC1', 0.1, 10.0)
    assert not millimetres_as_metres(depth_mm, '16UC1', 0.1, 10.0)  # converted already
    # A far outdoor scene in metres (median 25 m) is not millimetres.
    assert not millimetres_as_metres(np.full((4, 4), 25.0, np.float32), '32FC1', 0.1, 10.0)
    result = pipeline.process(frame(scene, depth=depth_mm), settings, NOW, goal='box')
    truth, _ = scene['poses']['box']
    assert result.geometries[0].has_pose
    assert np.linalg.norm(result.geometries[0].position - truth) < 0.015
    assert any('look like millimetres' in text for text in logged)
    assert [f.key for f in health.current()] == ['depth_units']


@pytest.mark.parametrize('size', [(1, 1), (4, 200)])
def test_tiny_image_is_a_bad_image(scene, size):
    pipeline, health, settings, logged, _ = make(scene)
    tiny = np.zeros(size + (3,), np.uint8)
    assert pipeline.process(frame(scene, rgb=lambda: tiny), settings, NOW, 'box') is None
    assert health.counters['bad_image'] == 1 and health.counters['segmenter_errors'] == 0
    assert f'{size[1]}x{size[0]} px' in logged[-1]


@pytest.mark.parametrize('stamp', [0.0, NOW + 5.0])
def test_zero_and_future_stamps_are_kept_out_of_latency(scene, stamp):
    pipeline, health, settings, logged, _ = make(scene)
    result = pipeline.process(frame(scene, stamp=stamp), settings, NOW, goal='box')
    assert not result.stamp_ok and 'arrival' not in result.timings
    assert health.counters['bad_stamp'] == 1 and 'statistics' in logged[-1]
    assert stamp_problem(NOW - 0.1, NOW) is None
    assert stamp_problem(NOW, 0.0) is None  # a clock with no time yet (sim time)


def test_stamps_reset_restarts_tracks(scene):
    pipeline, _, settings, _, _ = make(scene)
    first = pipeline.process(frame(scene), settings, NOW, goal='box')
    same = pipeline.process(frame(scene), settings, NOW)
    reset = pipeline.process(frame(scene, stamps_reset=True), settings, NOW)
    assert same.ids == first.ids and reset.ids != first.ids


def test_no_goal_publishes_empty_results(scene):
    pipeline, health, settings, logged, _ = make(scene)
    result = pipeline.process(frame(scene), settings, NOW)
    assert result.instances == [] and pipeline.segmenter.calls == 0
    assert 'No goal yet' in logged[-1]


def test_health_returns_to_ok_when_the_fault_is_gone():
    clock = FakeClock()
    health = Health(window_s=5.0, log_period_s=5.0, clock=clock)
    assert health.level() == (WARN, 'no frame processed yet')
    health.count('frames_processed')
    assert health.level() == (OK, 'ok')
    assert health.report('no_depth_match', 'depth late', 'no_depth_match')
    clock.t = 1.0
    assert not health.report('no_depth_match', 'depth late again')  # logged once per 5 s
    level, message = health.level()
    assert level == WARN and message.startswith('no_depth_match: depth late again')
    health.report('frames_failed', 'boom')
    assert health.level() == (ERROR, 'frames_failed: boom (also: no_depth_match)')
    clock.t = 3.0
    health.report('no_depth_match', 'still late')
    clock.t = 6.5  # the frame failure is over 5 s old, the depth fault is not
    assert health.level() == (WARN, 'no_depth_match: still late')
    clock.t = 8.5
    assert health.level() == (OK, 'ok')
    assert health.counters['no_depth_match'] == 1
    clock.t = 11.0
    assert health.report('no_depth_match', 'depth late')  # logged again after the period
