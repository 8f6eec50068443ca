"""Parameters of the node: declared from the table, validated at start-up and when changed."""

from pathlib import Path
import time

from diagnostic_msgs.msg import DiagnosticArray
from helpers_node import FixedMaskSegmenter, Graph
import pytest
import rclpy
from rclpy.context import Context
from rclpy.parameter import Parameter
import yaml

from zs_perception import config
from zs_perception.ros.node import PerceptionNode
from zs_perception.testing.scene import render_scene

PARAMS_FILE = Path(__file__).resolve().parents[1] / 'config' / 'zs_perception.yaml'


@pytest.fixture(scope='module')
def scene():
    return render_scene(160, 120, seed=4)


@pytest.fixture
def graph(scene):
    g = Graph(FixedMaskSegmenter(scene['masks']), {'backend': 'clipseg'})
    yield g
    g.close()


def test_parameters_are_declared_with_descriptions_ranges_and_read_only(graph):
    node = graph.node
    for spec in config.PARAMETERS:
        assert node.get_parameter(spec.name).value == spec.default or spec.name == 'backend'
        descriptor = node.describe_parameter(spec.name)
        assert descriptor.description == spec.description
        assert descriptor.read_only == (not spec.live)
        if spec.value_range and spec.kind is float:
            assert descriptor.floating_point_range[0].to_value == spec.value_range[1]
        if spec.value_range and spec.kind is int:
            assert descriptor.integer_range[0].from_value == spec.value_range[0]


def test_live_updates_apply_and_invalid_ones_are_rejected_with_a_reason(graph, scene):
    node = graph.node
    ok = node.set_parameters([Parameter('threshold', value=0.7)])[0]
    assert ok.successful
    bad = node.set_parameters([Parameter('threshold', value=1.5)])[0]
    assert not bad.successful and 'threshold' in bad.reason and '1.5' in bad.reason
    bad = node.set_parameters([Parameter('device', value='gpu')])[0]
    assert not bad.successful
    bad = node.set_parameters([Parameter('min_depth_m', value=50.0)])[0]
    assert not bad.successful and 'must be less than max_depth_m' in bad.reason
    bad = node.set_parameters([Parameter('backend', value='clipseg_sam')])[0]
    assert not bad.successful
    assert node.get_parameter('threshold').value == 0.7
    # The new threshold reaches the segmenter before the next frame; prompts change the goal.
    assert node.set_parameters([Parameter('prompts', value='cylinder')])[0].successful
    header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'])
    objects = graph.wait_for_stamp('objects', header)
    assert [o.label for o in objects.objects] == ['cylinder']
    assert node._segmenter.threshold == 0.7


def test_invalid_start_up_parameter_names_the_problem():
    context = Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ValueError, match=r'min_depth_m \(9.0\) must be less than'):
            PerceptionNode(segmenter=FixedMaskSegmenter({}), context=context,
                           parameter_overrides=[Parameter('min_depth_m', value=9.0),
                                                Parameter('max_depth_m', value=2.0)])
        with pytest.raises(ValueError, match="reliability must be one of 'best_effort'"):
            PerceptionNode(segmenter=FixedMaskSegmenter({}), context=context,
                           parameter_overrides=[Parameter('reliability', value='maybe')])
    finally:
        rclpy.try_shutdown(context=context)


def test_diagnostics_report_counts_and_timings(graph, scene):
    received = []
    graph.peer.create_subscription(DiagnosticArray, '/diagnostics', received.append, 10)
    graph.set_goal('box')
    graph.wait_for_stamp('objects', graph.publish_frame(scene['rgb'], scene['depth_m'],
                                                        scene['intrinsics']))
    deadline = time.monotonic() + 5.0
    values = {}
    while time.monotonic() < deadline:
        for array in list(received):
            values = {kv.key: kv.value for kv in array.status[0].values}
            if int(values.get('frames_processed', 0)) >= 1:
                break
        else:
            time.sleep(0.05)
            continue
        break
    assert int(values['frames_processed']) >= 1
    for key in ('frames_received', 'frames_dropped', 'bad_image', 'segment_ms_median',
                'geometry_ms_median', 'publish_ms_max', 'latency_ms_median',
                'arrival_ms_median', 'wait_ms_median'):
        assert key in values, key
    # Every frame's age on arrival and wait come before the end of its publishing.
    assert 0.0 <= float(values['arrival_ms_median']) <= float(values['latency_ms_median'])
    assert 0.0 <= float(values['wait_ms_median']) <= float(values['latency_ms_median'])
    assert values['prompts'] == 'box'


def _node_with(context, **kwargs):
    return PerceptionNode(segmenter=FixedMaskSegmenter({}), context=context, **kwargs)


def test_shipped_params_file_applies_under_any_namespace(tmp_path):
    """The shipped file's key reaches a node named zs_perception in any namespace."""
    data = yaml.safe_load(PARAMS_FILE.read_text())
    (key,) = data
    data[key]['ros__parameters'].update(threshold=0.55, prompts='box', max_objects=7)
    path = tmp_path / 'params.yaml'
    path.write_text(yaml.safe_dump(data))
    context = Context()
    rclpy.init(context=context)
    try:
        for namespace in ('/', '/robot1', '/fleet/robot2'):
            node = _node_with(context, namespace=namespace,
                              cli_args=['--ros-args', '--params-file', str(path)])
            try:
                assert node.get_parameter('threshold').value == 0.55, namespace
                assert node.get_parameter('max_objects').value == 7, namespace
            finally:
                node.destroy_node()
        # The shipped file itself loads under a namespace: every key is valid.
        node = _node_with(context, namespace='/robot1',
                          cli_args=['--ros-args', '--params-file', str(PARAMS_FILE)])
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)


def test_integer_for_a_float_parameter_is_that_float(tmp_path):
    path = tmp_path / 'params.yaml'
    path.write_text('/**/zs_perception:\n  ros__parameters:\n    threshold: 1\n'
                    '    min_depth_m: 0\n')
    context = Context()
    rclpy.init(context=context)
    try:
        node = _node_with(context, cli_args=['--ros-args', '--params-file', str(path)])
        try:
            value = node.get_parameter('threshold').value
            assert value == 1.0 and isinstance(value, float)
            # ... and in range checks: 0 is below min_depth_m's range.
        finally:
            node.destroy_node()
    except ValueError as err:
        assert 'min_depth_m must be a number in [0.001, 1000.0], got 0' in str(err)
    else:
        raise AssertionError('min_depth_m: 0 was accepted')
    finally:
        rclpy.try_shutdown(context=context)


def test_unknown_parameters_are_named_with_the_closest_valid_name():
    context = Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ValueError, match=r"'max_object' \(did you mean 'max_objects'\?\), "
                                             r"'treshold' \(did you mean 'threshold'\?\)"):
            _node_with(context, parameter_overrides=[Parameter('treshold', value=0.5),
                                                     Parameter('max_object', value=3)])
        # rclpy's own parameters are not unknown.
        _node_with(context, parameter_overrides=[Parameter('use_sim_time', value=False)]
                   ).destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
