"""The goal topic with volatile and latched publishers, the prompts parameter, diagnostics."""

import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from helpers_node import FixedMaskSegmenter, Graph, wait_until as _wait
import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header, String

from zs_perception.ros import node as node_module
from zs_perception.ros.conversions import array_to_image
from zs_perception.ros.node import PerceptionNode
from zs_perception.ros.qos import GOAL_QOS
from zs_perception.testing.scene import render_scene


@pytest.fixture(scope='module')
def scene():
    return render_scene(160, 120, seed=8)


def test_volatile_goal_publisher_without_qos_warning_and_prompts_parameter(scene, capfd):
    graph = Graph(FixedMaskSegmenter(scene['masks']), {'backend': 'clipseg'})
    try:
        volatile = graph.peer.create_publisher(
            String, 'goal', QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE))
        assert _wait(lambda: volatile.get_subscription_count() > 0)
        volatile.publish(String(data='box;cylinder'))
        # The goal applies at once, and the prompts parameter shows the goal in force.
        assert _wait(lambda: graph.node.get_parameter('prompts').value == 'box, cylinder'), \
            graph.node.get_parameter('prompts').value
        header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'])
        objects = graph.wait_for_stamp('objects', header)
        assert [o.label for o in objects.objects] == ['box', 'cylinder']
        # A transient-local publisher (the harness's) works too.
        graph.set_goal('cylinder')
        assert _wait(lambda: graph.node.get_parameter('prompts').value == 'cylinder')
        # A parameter update still sets the goal.
        graph.node.set_parameters([rclpy.parameter.Parameter('prompts', value='box')])
        header = graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'])
        graph.wait_for(
            'objects', lambda m: m.header.stamp == header.stamp and list(m.prompts) == ['box'])
    finally:
        graph.close()
    err = capfd.readouterr().err
    assert 'incompatible QoS' not in err, err
    # The ready line names the resolved topics.
    assert 'subscribing to /t/image, /t/depth, /t/camera_info, /t/goal' in err, err


def test_goal_latched_before_the_node_started_is_applied(scene, capfd):
    context = Context()
    rclpy.init(context=context, domain_id=int(np.random.default_rng().integers(100, 230)))
    peer = rclpy.create_node('goal_source', namespace='/t', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(peer)
    node = None
    try:
        peer.create_publisher(String, 'goal', GOAL_QOS).publish(String(data='cylinder'))
        node = PerceptionNode(segmenter=FixedMaskSegmenter(scene['masks']), context=context,
                              namespace='/t')
        executor.add_node(node)
        deadline = time.monotonic() + 10.0
        while node.counters['goals_received'] == 0 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert node.counters['goals_received'] == 1
        while node.get_parameter('prompts').value != 'cylinder' and \
                time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        assert node.get_parameter('prompts').value == 'cylinder'
    finally:
        executor.shutdown()
        if node is not None:
            node.destroy_node()
        peer.destroy_node()
        rclpy.try_shutdown(context=context)
    assert 'incompatible QoS' not in capfd.readouterr().err


def test_diagnostics_name_the_fault_and_return_to_ok(scene, monkeypatch):
    monkeypatch.setattr(node_module, '_FAULT_WINDOW_S', 1.0)
    graph = Graph(FixedMaskSegmenter(scene['masks']), {'backend': 'clipseg', 'prompts': 'box'})
    statuses = []
    graph.peer.create_subscription(DiagnosticArray, '/diagnostics',
                                   lambda m: statuses.append(m.status[0]), 10)
    k = scene['intrinsics'].k.ravel().tolist()
    depth = array_to_image(scene['depth_m'].astype(np.float32), '32FC1', None)
    image = array_to_image(scene['rgb'], 'rgb8', None)
    try:
        # camera_info stamped 0: frames without poses, and the fault is named while it lasts.
        for _ in range(45):
            header = Header(stamp=graph.now(), frame_id='camera')
            graph.info_pub.publish(CameraInfo(header=Header(frame_id='camera'), k=k))
            depth.header = image.header = header
            graph.depth_pub.publish(depth)
            graph.image_pub.publish(image)
            time.sleep(1 / 30)
        obj = graph.wait_for_stamp('objects', header).objects[0]
        assert obj.pose_status == 'camera_info stamp mismatch'
        assert _wait(lambda: statuses and statuses[-1].level == DiagnosticStatus.WARN
                     and statuses[-1].message.startswith('no_camera_info_match'), 5.0), \
            [s.message for s in statuses]
        # Good frames again: one fault window later the status is OK.
        for _ in range(75):
            graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'])
            time.sleep(1 / 30)
        assert _wait(lambda: statuses[-1].level == DiagnosticStatus.OK, 5.0), \
            [s.message for s in statuses[-3:]]
        values = {kv.key: kv.value for kv in statuses[-1].values}
        assert values['faults'] == '' and int(values['no_camera_info_match']) >= 1
        assert statuses[-1].message == 'ok'
    finally:
        graph.close()
