"""The managed (lifecycle) node: transitions through lifecycle_msgs services, memory release."""

import gc
import threading
import time
import weakref

from helpers_node import FixedMaskSegmenter
from lifecycle_msgs.msg import State, Transition
from lifecycle_msgs.srv import ChangeState, GetState
import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from zs_perception.msg import SegmentedObjectArray
from zs_perception.ros.conversions import array_to_image
from zs_perception.ros.lifecycle_node import LifecyclePerceptionNode
from zs_perception.testing.scene import render_scene


class LifecycleGraph:
    """A lifecycle node, a peer that calls its lifecycle services and feeds it, one executor."""

    def __init__(self, params, segmenter_factory=None):
        self.context = Context()
        rclpy.init(context=self.context,
                   domain_id=int(np.random.default_rng().integers(100, 230)))
        self.node = LifecyclePerceptionNode(
            segmenter_factory=segmenter_factory, context=self.context, namespace='/lc',
            parameter_overrides=[Parameter(k, value=v) for k, v in params.items()])
        self.peer = rclpy.create_node('peer', namespace='/lc', context=self.context)
        self.change = self.peer.create_client(ChangeState, '/lc/zs_perception/change_state')
        self.get = self.peer.create_client(GetState, '/lc/zs_perception/get_state')
        self.image_pub = self.peer.create_publisher(Image, 'image', qos_profile_sensor_data)
        self.depth_pub = self.peer.create_publisher(Image, 'depth', qos_profile_sensor_data)
        self.info_pub = self.peer.create_publisher(CameraInfo, 'camera_info',
                                                   qos_profile_sensor_data)
        self.objects = []
        self.peer.create_subscription(SegmentedObjectArray, '/lc/zs_perception/objects',
                                      self.objects.append, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        assert self.change.wait_for_service(timeout_sec=10.0)

    def _call(self, client, request, timeout=60.0):
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done():
            assert time.monotonic() < deadline, 'no answer from the lifecycle service'
            time.sleep(0.005)
        return future.result()

    def transition(self, transition_id):
        return self._call(self.change, ChangeState.Request(
            transition=Transition(id=transition_id))).success

    def state(self):
        return self._call(self.get, GetState.Request()).current_state.id

    def publish_frame(self, scene):
        header = Header(stamp=self.peer.get_clock().now().to_msg(),
                        frame_id='camera_color_optical_frame')
        k = scene['intrinsics']
        self.info_pub.publish(CameraInfo(header=header, width=k.width, height=k.height,
                                         k=k.k.ravel().tolist()))
        self.depth_pub.publish(array_to_image(scene['depth_m'].astype(np.float32), '32FC1',
                                              header))
        self.image_pub.publish(array_to_image(scene['rgb'], 'rgb8', header))
        return header

    def wait_objects(self, scene, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            header = self.publish_frame(scene)
            time.sleep(0.05)
            if any(o.header.stamp == header.stamp for o in self.objects):
                return True
        return False

    def close(self):
        self.executor.shutdown(timeout_sec=5.0)
        self._thread.join(timeout=5.0)
        self.node.destroy_node()
        self.peer.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.fixture(scope='module')
def scene():
    return render_scene(160, 120, seed=8)


def test_transitions_and_the_model_freed_at_cleanup(scene):
    made = []

    def factory():
        segmenter = FixedMaskSegmenter(scene['masks'])
        made.append(weakref.ref(segmenter))
        return segmenter

    graph = LifecycleGraph({'prompts': 'box'}, factory)
    try:
        assert graph.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert not made  # nothing loaded before configure
        assert graph.transition(Transition.TRANSITION_CONFIGURE)
        assert graph.state() == State.PRIMARY_STATE_INACTIVE and len(made) == 1
        # Inactive: nothing subscribed, nothing published.
        assert graph.image_pub.get_subscription_count() == 0
        assert graph.transition(Transition.TRANSITION_ACTIVATE)
        assert graph.state() == State.PRIMARY_STATE_ACTIVE
        assert graph.wait_objects(scene)
        assert [o.label for o in graph.objects[-1].objects] == ['box']
        assert graph.transition(Transition.TRANSITION_DEACTIVATE)
        assert graph.image_pub.get_subscription_count() == 0
        received = len(graph.objects)
        for _ in range(5):
            graph.publish_frame(scene)
            time.sleep(0.02)
        time.sleep(0.2)
        assert len(graph.objects) == received  # deactivated: no processing
        assert made[0]() is not None  # inactive keeps the model
        # Re-activation uses the loaded model again.
        assert graph.transition(Transition.TRANSITION_ACTIVATE)
        assert graph.wait_objects(scene) and len(made) == 1
        assert graph.transition(Transition.TRANSITION_DEACTIVATE)
        assert graph.transition(Transition.TRANSITION_CLEANUP)
        assert graph.state() == State.PRIMARY_STATE_UNCONFIGURED
        gc.collect()
        assert made[0]() is None, gc.get_referrers(made[0]())
        # Configure again loads a fresh model; shutdown from active.
        assert graph.transition(Transition.TRANSITION_CONFIGURE) and len(made) == 2
        assert graph.transition(Transition.TRANSITION_ACTIVATE)
        assert graph.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert graph.state() == State.PRIMARY_STATE_FINALIZED
        gc.collect()
        assert made[1]() is None
    finally:
        graph.close()


def test_shutdown_from_unconfigured_and_inactive(scene):
    for configure in (False, True):
        graph = LifecycleGraph({}, lambda: FixedMaskSegmenter(scene['masks']))
        try:
            if configure:
                assert graph.transition(Transition.TRANSITION_CONFIGURE)
                shutdown = Transition.TRANSITION_INACTIVE_SHUTDOWN
            else:
                shutdown = Transition.TRANSITION_UNCONFIGURED_SHUTDOWN
            assert graph.transition(shutdown)
            assert graph.state() == State.PRIMARY_STATE_FINALIZED
        finally:
            graph.close()


def test_a_model_that_cannot_load_fails_configure(tmp_path):
    graph = LifecycleGraph({'backend': 'clipseg', 'clipseg_model': str(tmp_path / 'missing'),
                            'device': 'cpu'})
    try:
        assert not graph.transition(Transition.TRANSITION_CONFIGURE)
        assert graph.state() == State.PRIMARY_STATE_UNCONFIGURED
    finally:
        graph.close()


def test_real_clipseg_model_released_at_cleanup(tiny_models, scene):
    graph = LifecycleGraph({'backend': 'clipseg', 'clipseg_model': str(tiny_models / 'clipseg'),
                            'allow_random_weights': True, 'device': 'cpu',
                            'precision': 'fp32', 'prompts': 'a box', 'threshold': 0.0,
                            'min_area_px': 1})
    try:
        import torch

        def models():
            return [o for o in gc.get_objects() if type(o).__name__.startswith('CLIPSeg')
                    and issubclass(type(o), torch.nn.Module)]
        before = {id(m) for m in models()}
        assert graph.transition(Transition.TRANSITION_CONFIGURE)
        loaded = [m for m in models() if id(m) not in before]
        assert loaded, 'configure loaded no CLIPSeg model'
        refs = ([weakref.ref(graph.node._pipeline.segmenter)]
                + [weakref.ref(m) for m in loaded]
                + [weakref.ref(next(m.parameters())) for m in loaded])
        del loaded
        assert graph.transition(Transition.TRANSITION_ACTIVATE)
        assert graph.wait_objects(scene, timeout=60.0)
        assert graph.transition(Transition.TRANSITION_DEACTIVATE)
        assert graph.transition(Transition.TRANSITION_CLEANUP)
        gc.collect()
        assert [r() for r in refs] == [None] * len(refs)
    finally:
        graph.close()


def test_deactivate_aborts_a_running_find_objects_goal(scene):
    from rclpy.action import ActionClient

    from zs_perception.action import FindObjects

    graph = LifecycleGraph({}, lambda: FixedMaskSegmenter(scene['masks']))
    try:
        assert graph.transition(Transition.TRANSITION_CONFIGURE)
        assert graph.transition(Transition.TRANSITION_ACTIVATE)
        client = ActionClient(graph.peer, FindObjects, '/lc/zs_perception/find_objects')
        assert client.wait_for_server(timeout_sec=10.0)
        sent = client.send_goal_async(FindObjects.Goal(phrases='giraffe', timeout_s=60.0))
        deadline = time.monotonic() + 10.0
        while not sent.done():
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert sent.result().accepted
        result = sent.result().get_result_async()
        assert graph.transition(Transition.TRANSITION_DEACTIVATE)
        deadline = time.monotonic() + 10.0
        while not result.done():
            assert time.monotonic() < deadline, 'the goal did not end at deactivate'
            time.sleep(0.01)
        answer = result.result().result
        assert answer.status == FindObjects.Result.STATUS_ABORTED, answer.reason
        assert 'stopping' in answer.reason
        # Activated again, the action is back and answers.
        assert graph.transition(Transition.TRANSITION_ACTIVATE)
        assert client.wait_for_server(timeout_sec=10.0)
    finally:
        graph.close()
