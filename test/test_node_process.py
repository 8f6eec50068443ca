"""The installed node and replay as their own processes: start-up errors, signals, stopping.

Runs ``zs_perception_node`` / ``zs_perception_replay`` from the colcon install (on PATH
after ``source scripts/env.sh``) as a user or ``ros2 launch`` would, and checks what they
print and how they exit: one FATAL line and exit 1 for a bad configuration, exit 0 with no
ERROR line and no traceback for SIGINT, SIGTERM and a double SIGINT, while frames flow.
"""

import shutil
import signal
import threading
import time

from helpers_process import ChildProcess
import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header, String

from zs_perception.msg import SegmentedObjectArray
from zs_perception.ros.conversions import array_to_image
from zs_perception.ros.qos import GOAL_QOS
from zs_perception.testing.scene import render_scene

NODE = 'zs_perception_node'
REPLAY = 'zs_perception_replay'
# What the requirement allows for a stop (not a performance figure).
STOP_LIMIT_S = 5.0


def _executable(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip(f'{name} is not installed on PATH (make setup; source scripts/env.sh)')
    return path


def _domain():
    return int(np.random.default_rng().integers(100, 230))


@pytest.fixture
def bad_params(tmp_path):
    def write(text):
        path = tmp_path / 'params.yaml'
        path.write_text(text)
        return str(path)
    return write


START_UP_ERRORS = {
    'out of range': (['-p', 'max_objects:=1000'], 'max_objects must be an integer in [1, 255], '
                     'got 1000'),
    'bad choice': (['-p', 'reliability:=maybe'], "reliability must be one of 'best_effort'"),
    'string for a float': (['-p', 'threshold:=high'], 'threshold must be a number'),
    'typo in params file': ('/**/zs_perception:\n  ros__parameters:\n    treshold: 0.5\n',
                            "'treshold' (did you mean 'threshold'?)"),
    'missing model': (['-p', 'clipseg_model:=/no/such/model/dir'], '/no/such/model/dir'),
    'missing params file': (['--params-file', '/no/such/params.yaml'],
                            'cannot read the params file'),
    'params file not YAML': ('key: [unclosed\n', 'is not valid YAML'),
    'params file without ros__parameters': ('zs_perception:\n  threshold: 0.5\n',
                                            "'zs_perception' has no ros__parameters"),
}


@pytest.mark.parametrize('case', sorted(START_UP_ERRORS))
def test_start_up_errors_are_one_line_and_exit_non_zero(case, bad_params):
    args, expected = START_UP_ERRORS[case]
    if isinstance(args, str):
        args = ['--params-file', bad_params(args)]
    process = ChildProcess([_executable(NODE), '--ros-args'] + args, _domain())
    rc = process.finish(timeout=120.0)
    out = process.output()
    assert rc == 1, out
    assert 'Traceback' not in out, out
    fatal = [line for line in process.lines if 'FATAL' in line]
    assert len(fatal) == 1 and expected in fatal[0], out
    assert [line for line in process.lines if line.strip()] == fatal, out


def test_offline_default_model_fails_fast_saying_why(tmp_path):
    # An empty Hugging Face cache and a hub address that refuses connections.
    env = {'HF_HOME': str(tmp_path / 'hf'), 'HF_ENDPOINT': 'http://127.0.0.1:9',
           'HF_HUB_OFFLINE': '0'}
    process = ChildProcess([_executable(NODE), '--ros-args', '-p', 'device:=cpu'], _domain(),
                           env=env)
    start = time.monotonic()
    rc = process.finish(timeout=120.0)
    elapsed = time.monotonic() - start
    out = process.output()
    assert rc == 1 and 'Traceback' not in out, out
    (fatal,) = [line for line in process.lines if 'FATAL' in line]
    assert "clipseg_model='CIDAS/clipseg-rd64-refined' is not in the Hugging Face cache" in fatal
    assert 'cannot be reached at 127.0.0.1:9' in fatal
    # No hub retries: well under the half minute they take (generous for a loaded machine).
    assert elapsed < 15.0, (elapsed, out)  # before torch is imported: seconds, not 26+


class Camera:
    """A peer in this process that publishes frames to the node and counts its answers."""

    def __init__(self, domain_id):
        self.context = Context()
        rclpy.init(context=self.context, domain_id=domain_id)
        self.node = rclpy.create_node('camera_peer', context=self.context)
        self.scene = render_scene(160, 120, seed=7)
        self.image_pub = self.node.create_publisher(Image, 'image', qos_profile_sensor_data)
        self.depth_pub = self.node.create_publisher(Image, 'depth', qos_profile_sensor_data)
        self.info_pub = self.node.create_publisher(CameraInfo, 'camera_info',
                                                   qos_profile_sensor_data)
        self.goal_pub = self.node.create_publisher(String, 'goal', GOAL_QOS)
        self.answers = 0
        self.node.create_subscription(SegmentedObjectArray, '/zs_perception/objects',
                                      self._on_objects, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()
        self.running = True
        self._publisher = threading.Thread(target=self._publish, daemon=True)

    def _on_objects(self, msg):
        self.answers += 1

    def _publish(self):
        rgb = array_to_image(self.scene['rgb'], 'rgb8', None)
        depth = array_to_image(self.scene['depth_m'].astype(np.float32), '32FC1', None)
        info = CameraInfo(width=160, height=120, k=self.scene['intrinsics'].k.ravel().tolist())
        while self.running:
            header = Header(stamp=self.node.get_clock().now().to_msg(), frame_id='camera')
            for msg, pub in ((info, self.info_pub), (depth, self.depth_pub),
                             (rgb, self.image_pub)):
                msg.header = header
                pub.publish(msg)
            time.sleep(1.0 / 30.0)

    def start(self):
        self.goal_pub.publish(String(data='box, cylinder'))
        self._publisher.start()

    def close(self):
        self.running = False
        if self._publisher.is_alive():
            self._publisher.join(timeout=2.0)
        self.executor.shutdown(timeout_sec=2.0)
        self._spinner.join(timeout=5.0)
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


@pytest.mark.parametrize('signals', [(signal.SIGINT,), (signal.SIGTERM,),
                                     (signal.SIGINT, signal.SIGINT)],
                         ids=['SIGINT', 'SIGTERM', 'double SIGINT'])
def test_node_stops_cleanly_while_frames_flow(signals, tiny_models):
    domain = _domain()
    process = ChildProcess([_executable(NODE), '--ros-args', '-p', 'device:=cpu',
                            '-p', f'clipseg_model:={tiny_models / "clipseg"}',
                            '-p', 'allow_random_weights:=true', '-p', 'threshold:=0'], domain)
    camera = None
    try:
        process.wait_for_line('zs_perception ready', timeout=120.0)
        camera = Camera(domain)
        camera.start()
        deadline = time.monotonic() + 30.0
        while camera.answers < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert camera.answers >= 5, process.output()
        start = time.monotonic()
        for sig in signals:
            process.proc.send_signal(sig)
            time.sleep(0.05)
        rc = process.finish(timeout=30.0)
        elapsed = time.monotonic() - start
    finally:
        if camera is not None:
            camera.close()
        if process.proc.poll() is None:
            process.proc.kill()
    out = process.output()
    assert rc == 0, out
    assert 'Traceback' not in out and 'KeyboardInterrupt' not in out, out
    assert not [line for line in process.lines if 'ERROR' in line], out
    assert elapsed < STOP_LIMIT_S, (elapsed, out)


@pytest.mark.parametrize('signals', [(signal.SIGINT, signal.SIGINT), (signal.SIGTERM,)],
                         ids=['double SIGINT', 'SIGTERM'])
def test_replay_stops_cleanly(signals, tmp_path):
    from zs_perception.tools.make_demo_scene import make_demo_scene

    scene = make_demo_scene(tmp_path / 'scene', frames=2, width=160, height=120)
    process = ChildProcess([_executable(REPLAY), '--ros-args', '-p', f'directory:={scene}',
                            '-p', 'rate_hz:=30.0'], _domain())
    process.wait_for_line('Replaying 2 frames', timeout=60.0)
    time.sleep(0.5)
    start = time.monotonic()
    for sig in signals:
        process.proc.send_signal(sig)
        time.sleep(0.05)
    rc = process.finish(timeout=30.0)
    out = process.output()
    assert rc == 0 and 'Traceback' not in out and 'ERROR' not in out, out
    assert time.monotonic() - start < STOP_LIMIT_S, out


def test_replay_start_up_error_is_one_line():
    process = ChildProcess([_executable(REPLAY), '--ros-args', '-p', 'directory:=/no/such/dir'],
                           _domain())
    rc = process.finish(timeout=60.0)
    out = process.output()
    assert rc == 1 and 'Traceback' not in out, out
    (line,) = [line for line in process.lines if line.strip()]
    assert 'FATAL' in line and '/no/such/dir' in line, out


@pytest.mark.parametrize('delay_s', [0.3, 1.5, 4.0])
def test_signal_while_starting_exits_quietly(delay_s, tiny_models):
    # Early enough to hit the imports, the model loading or the first spins.
    process = ChildProcess([_executable(NODE), '--ros-args', '-p', 'device:=cpu',
                            '-p', f'clipseg_model:={tiny_models / "clipseg"}',
                            '-p', 'allow_random_weights:=true'], _domain())
    time.sleep(delay_s)
    process.proc.send_signal(signal.SIGINT)
    rc = process.finish(timeout=30.0)
    out = process.output()
    assert rc == 0, out
    assert 'Traceback' not in out and 'KeyboardInterrupt' not in out, out
    assert not [line for line in process.lines if 'ERROR' in line], out
