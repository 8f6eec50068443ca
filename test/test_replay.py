"""The replay publisher in a real rclpy graph: frames arrive as synchronised camera topics."""

import time

import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from zs_perception.geometry import CameraIntrinsics
from zs_perception.replay_directory import write_frame, write_intrinsics
from zs_perception.ros.conversions import image_to_array
from zs_perception.ros.replay import ReplayPublisher

WIDTH, HEIGHT = 16, 12
INTRINSICS = CameraIntrinsics(fx=20.0, fy=21.0, cx=7.5, cy=5.5, width=WIDTH, height=HEIGHT)


def _frame(i):
    rgb = np.full((HEIGHT, WIDTH, 3), (10 * i, 100, 200), np.uint8)
    rgb[0, 0] = (1, 2, 3)
    depth = np.full((HEIGHT, WIDTH), 0.5 + 0.25 * i, np.float32)
    depth[1, 1] = np.nan
    return rgb, depth


@pytest.fixture
def replay_dir(tmp_path):
    write_intrinsics(tmp_path, INTRINSICS)
    for i in range(3):
        write_frame(tmp_path, i, *_frame(i))
    return tmp_path


@pytest.fixture
def context():
    ctx = Context()
    # A domain of our own, so parallel test runs do not hear each other.
    rclpy.init(context=ctx, domain_id=int(np.random.default_rng().integers(100, 200)))
    yield ctx
    rclpy.try_shutdown(context=ctx)


def _collect(context, replay_dir, depth_encoding, wanted):
    """Publish frames one at a time until ``wanted`` complete frames arrived; return them."""
    replay = ReplayPublisher(
        context=context, autostart=False,
        parameter_overrides=[Parameter('directory', value=str(replay_dir)),
                             Parameter('loop', value=True),
                             Parameter('depth_encoding', value=depth_encoding),
                             Parameter('frame_id', value='test_optical_frame')])
    listener = rclpy.create_node('listener', context=context)
    received = {'image': {}, 'depth': {}, 'camera_info': {}}

    def keep(topic):
        def callback(msg):
            received[topic][(msg.header.stamp.sec, msg.header.stamp.nanosec)] = msg
        return callback

    for topic, msg_type in (('image', Image), ('depth', Image), ('camera_info', CameraInfo)):
        listener.create_subscription(msg_type, topic, keep(topic), qos_profile_sensor_data)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(replay)
    executor.add_node(listener)
    published = {}
    deadline = time.monotonic() + 20.0
    try:
        while time.monotonic() < deadline:
            complete = [s for s in published
                        if all(s in received[t] for t in received)]
            if len(complete) >= wanted:
                return [(published[s], {t: received[t][s] for t in received})
                        for s in sorted(complete)]
            header = replay.publish_next()
            stamp = (header.stamp.sec, header.stamp.nanosec)
            published[stamp] = (replay.frames_published - 1) % len(replay.replay)
            executor.spin_once(timeout_sec=0.05)
            executor.spin_once(timeout_sec=0.05)
        pytest.fail(f'replay: fewer than {wanted} complete frames arrived in 20 s')
    finally:
        executor.shutdown()
        replay.destroy_node()
        listener.destroy_node()


@pytest.mark.parametrize('depth_encoding', ['16UC1', '32FC1'])
def test_replay_publishes_synchronised_frames(context, replay_dir, depth_encoding):
    # Publication n shows frame n % 3 (file order, looping); the pixel checks below hold
    # each message to the frame it should be.
    frames = _collect(context, replay_dir, depth_encoding, wanted=4)
    for index, msgs in frames:
        image, depth, info = msgs['image'], msgs['depth'], msgs['camera_info']
        assert image.header.frame_id == depth.header.frame_id == info.header.frame_id \
            == 'test_optical_frame'
        assert image.header.stamp == depth.header.stamp == info.header.stamp
        rgb_expected, depth_expected = _frame(index)
        assert image.encoding == 'rgb8'
        assert (image.width, image.height) == (WIDTH, HEIGHT)
        np.testing.assert_array_equal(image_to_array(image, {'rgb8': ('uint8', 3)}),
                                      rgb_expected)
        assert depth.encoding == depth_encoding
        if depth_encoding == '16UC1':
            raw = image_to_array(depth, {'16UC1': ('uint16', 1)})
            assert raw[1, 1] == 0  # no reading
            assert raw[0, 0] == round(depth_expected[0, 0] * 1000)
        else:
            raw = image_to_array(depth, {'32FC1': ('float32', 1)})
            assert np.isnan(raw[1, 1])
            assert raw[0, 0] == pytest.approx(depth_expected[0, 0], abs=1e-6)
        assert (info.width, info.height) == (WIDTH, HEIGHT)
        np.testing.assert_allclose(info.k, [20.0, 0, 7.5, 0, 21.0, 5.5, 0, 0, 1])
        np.testing.assert_allclose(info.p, [20.0, 0, 7.5, 0, 0, 21.0, 5.5, 0, 0, 0, 1, 0])


def test_replay_without_loop_finishes(context, replay_dir):
    replay = ReplayPublisher(
        context=context, autostart=False,
        parameter_overrides=[Parameter('directory', value=str(replay_dir)),
                             Parameter('loop', value=False)])
    try:
        headers = [replay.publish_next() for _ in range(3)]
        assert all(h is not None for h in headers)
        assert replay.finished
        assert replay.publish_next() is None
        assert replay.frames_published == 3
    finally:
        replay.destroy_node()


def test_replay_without_directory_says_how_to_fix(context):
    with pytest.raises(ValueError, match='directory:=DIR'):
        ReplayPublisher(context=context)
