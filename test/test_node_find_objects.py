"""The FindObjects action end to end in a real rclpy graph (test-double segmenter)."""

import threading
import time

from action_msgs.msg import GoalStatus
from helpers_node import FixedMaskSegmenter, Graph
import numpy as np
import pytest
from rclpy.action import ActionClient
from std_msgs.msg import Header

from zs_perception.action import FindObjects
from zs_perception.msg import Prompt
from zs_perception.ros.conversions import array_to_image
from zs_perception.testing.scene import render_scene

Result = FindObjects.Result


@pytest.fixture(scope='module')
def scene():
    return render_scene(160, 120, seed=8)


class Camera:
    """Publishes the scene at about ``rate_hz`` from a thread (depth optional)."""

    def __init__(self, graph, scene, rate_hz=20.0, depth=True):
        self.graph, self.scene, self.period, self.depth = graph, scene, 1.0 / rate_hz, depth
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            if self.depth:
                self.graph.publish_frame(self.scene['rgb'], self.scene['depth_m'],
                                         self.scene['intrinsics'])
            else:
                self.graph.publish_frame(self.scene['rgb'])
            self._stop.wait(self.period)

    def stop(self):
        self._stop.set()
        self._thread.join(timeout=2.0)


def _wait(future, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not future.done():
        if time.monotonic() > deadline:
            raise AssertionError(f'no answer within {timeout} s')
        time.sleep(0.005)
    return future.result()


class Client:

    def __init__(self, graph):
        self.feedback = []
        self.action = ActionClient(graph.peer, FindObjects, '/t/zs_perception/find_objects')
        assert self.action.wait_for_server(timeout_sec=10.0)

    def send(self, **fields):
        goal = FindObjects.Goal(**fields)
        handle = _wait(self.action.send_goal_async(goal, feedback_callback=self.feedback.append))
        return handle

    def run(self, **fields):
        handle = self.send(**fields)
        assert handle.accepted
        return _wait(handle.get_result_async())


@pytest.fixture
def graph(scene, request):
    params = {'backend': 'clipseg'}
    params.update(getattr(request, 'param', {}))
    graph = Graph(FixedMaskSegmenter(scene['masks']), params)
    yield graph
    graph.close()


def test_found_with_poses_after_consecutive_frames(graph, scene):
    graph.set_goal('cylinder')  # a streaming goal: the query's prompt comes on top of it
    camera = Camera(graph, scene)
    try:
        client = Client(graph)
        started = time.monotonic()
        answer = client.run(phrases='box', timeout_s=15.0, min_score=0.5, pose_required=True,
                            consecutive_frames=3)
        elapsed = time.monotonic() - started
    finally:
        camera.stop()
    result = answer.result
    assert answer.status == GoalStatus.STATUS_SUCCEEDED
    assert result.status == Result.STATUS_FOUND, result.reason
    assert [o.label for o in result.objects.objects] == ['box']
    box = result.objects.objects[0]
    assert box.has_pose and box.score >= 0.5
    assert result.objects.header.frame_id == 'camera_color_optical_frame'
    # The pose is the scene's box (camera optical frame, metres).
    truth, _ = scene['poses']['box']
    p = box.pose.position
    assert np.linalg.norm(np.array([p.x, p.y, p.z]) - np.asarray(truth)) < 0.1
    assert client.feedback and client.feedback[-1].feedback.frames_looked_at >= 2
    assert 'box' in [o.label for o in client.feedback[-1].feedback.best_candidates.objects]
    assert elapsed < 15.0
    # After the goal the segmenter looks for the streaming goal only again.
    deadline = time.monotonic() + 5.0
    while graph.node._segmenter.prompts != ['cylinder'] and time.monotonic() < deadline:
        graph.publish_frame(scene['rgb'])
        time.sleep(0.05)
    assert graph.node._segmenter.prompts == ['cylinder']


def test_not_found_within_the_timeout(graph, scene):
    camera = Camera(graph, scene)
    try:
        answer = Client(graph).run(phrases='giraffe, box', timeout_s=0.8, min_score=0.99)
    finally:
        camera.stop()
    result = answer.result
    assert result.status == Result.STATUS_NOT_FOUND, result.reason
    assert "'giraffe' never seen" in result.reason and 'min_score' in result.reason
    assert not result.objects.objects


def test_no_camera(graph):
    answer = Client(graph).run(phrases='box', timeout_s=0.3)
    assert answer.result.status == Result.STATUS_NO_CAMERA, answer.result.reason


def test_no_depth_with_a_pose_required(graph, scene):
    camera = Camera(graph, scene, depth=False)
    try:
        client = Client(graph)
        answer = client.run(phrases='box', timeout_s=1.0, pose_required=True)
        # Without a pose required the same frames find the box.
        found = client.run(phrases='box', timeout_s=10.0)
    finally:
        camera.stop()
    assert answer.result.status == Result.STATUS_NO_DEPTH, answer.result.reason
    assert 'depth' in answer.result.reason
    assert found.result.status == Result.STATUS_FOUND
    assert not found.result.objects.objects[0].has_pose


def test_cancel_stops_at_once_and_concurrent_goals_are_rejected(graph, scene):
    camera = Camera(graph, scene)
    try:
        client = Client(graph)
        handle = client.send(phrases='giraffe', timeout_s=60.0)
        assert handle.accepted
        deadline = time.monotonic() + 10.0
        while not client.feedback and time.monotonic() < deadline:
            time.sleep(0.01)
        second = client.send(phrases='box', timeout_s=5.0)
        assert not second.accepted  # one goal at a time
        started = time.monotonic()
        _wait(handle.cancel_goal_async())
        answer = _wait(handle.get_result_async())
        cancel_s = time.monotonic() - started
        # The next goal is accepted once the first is over.
        after = client.run(phrases='box', timeout_s=10.0)
    finally:
        camera.stop()
    assert answer.status == GoalStatus.STATUS_CANCELED
    assert answer.result.status == Result.STATUS_CANCELLED
    assert cancel_s < 10.0  # far below the 60 s timeout (no absolute figure asserted)
    assert after.result.status == Result.STATUS_FOUND


@pytest.mark.parametrize('graph', [{'stream': False}], indirect=True)
def test_stream_false_processes_frames_only_for_goals(graph, scene):
    camera = Camera(graph, scene)
    try:
        graph.wait_counter('frames_idle', 2)
        processed = graph.node.counters.get('frames_processed', 0)
        assert not graph.received['objects']
        answer = Client(graph).run(phrases='box', timeout_s=10.0, consecutive_frames=2)
        assert graph.node.counters['frames_processed'] >= processed + 2
    finally:
        camera.stop()
    assert answer.result.status == Result.STATUS_FOUND


def test_invalid_goals(graph, scene):
    client = Client(graph)
    empty = client.run(phrases=' , ', timeout_s=1.0)
    assert empty.status == GoalStatus.STATUS_ABORTED
    assert empty.result.status == Result.STATUS_INVALID and 'no prompt' in empty.result.reason
    unlabelled = Prompt(image=array_to_image(scene['rgb'][:20, :20].copy(), 'rgb8', Header()))
    bad = client.run(prompts=[unlabelled], timeout_s=1.0)
    assert bad.result.status == Result.STATUS_INVALID and 'label' in bad.result.reason
