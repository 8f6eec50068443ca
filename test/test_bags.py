"""rosbag2 in and out: bag replay, the output recorder and the demo on a bag.

A bag the test writes plays like the directory of the same frames; the recorder's MCAP of
the node's outputs reads back with rosbags.
"""

import time

from helpers_node import FixedMaskSegmenter, Graph
import numpy as np
import pytest
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from zs_perception.bags import BagError, BagFrames, choose_topics, write_camera_bag
from zs_perception.geometry import CameraIntrinsics
from zs_perception.replay_directory import ReplayDirectory, write_frame, write_intrinsics
from zs_perception.ros.conversions import camera_info_to_intrinsics, depth_image_to_metres
from zs_perception.ros.conversions import image_to_rgb
from zs_perception.ros.record import OutputRecorder
from zs_perception.ros.replay import ReplayPublisher
from zs_perception.testing.scene import render_scene

WIDTH, HEIGHT = 64, 48
INTRINSICS = CameraIntrinsics(fx=60.0, fy=61.0, cx=31.5, cy=23.5, width=WIDTH, height=HEIGHT)
FRAMES = 4
PERIOD_NS = 100_000_000  # recorded at 10 Hz
START_NS = 1_700_000_000_123_000_000


def _frame(i):
    rng = np.random.default_rng(i)
    rgb = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    depth = rng.uniform(0.3, 4.0, (HEIGHT, WIDTH)).astype(np.float32)
    depth[i, :5] = np.nan  # no reading
    return rgb, depth


@pytest.fixture(scope='module')
def recordings(tmp_path_factory):
    """Write the same frames as a replay directory and as a bag (sqlite3 and MCAP)."""
    root = tmp_path_factory.mktemp('rec')
    directory = root / 'dir'
    directory.mkdir()
    write_intrinsics(directory, INTRINSICS)
    for i in range(FRAMES):
        write_frame(directory, i, *_frame(i))
    bags = {}
    for storage in ('mcap', 'sqlite3'):
        bags[storage] = root / f'bag_{storage}'
        frames = [(START_NS + i * PERIOD_NS, *_frame(i), INTRINSICS) for i in range(FRAMES)]
        assert write_camera_bag(bags[storage], frames, storage=storage) == FRAMES
    return directory, bags


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_bag_frames_decode_like_the_directory(recordings, storage):
    directory, bags = recordings
    frames = BagFrames(bags[storage])
    assert frames.topics == {'image': '/camera/color/image_raw',
                             'depth': '/camera/depth/image_raw',
                             'camera_info': '/camera/color/camera_info'}
    replay = ReplayDirectory(directory)
    assert len(frames) == len(replay) == FRAMES
    for i in range(FRAMES):
        rgb, depth_m, intrinsics = frames.decode(i)
        expected = replay.load(i)
        np.testing.assert_array_equal(rgb, expected.rgb)
        np.testing.assert_array_equal(np.isnan(depth_m), np.isnan(expected.depth_m))
        np.testing.assert_allclose(depth_m, expected.depth_m, equal_nan=True)
        assert intrinsics == replay.intrinsics
        assert frames.frames[i].stamp_ns == frames.frames[i].log_time_ns \
            == START_NS + i * PERIOD_NS


def test_topics_chosen_by_name_or_type():
    topics = {'/a/depth': ('sensor_msgs/msg/Image', '16UC1'),
              '/a/rgb': ('sensor_msgs/msg/Image', 'rgb8'),
              '/b/color': ('sensor_msgs/msg/Image', 'bgr8'),
              '/a/info': ('sensor_msgs/msg/CameraInfo', None),
              '/b/info': ('sensor_msgs/msg/CameraInfo', None),
              '/tf': ('tf2_msgs/msg/TFMessage', None)}
    assert choose_topics(topics) == {'image': '/a/rgb', 'depth': '/a/depth',
                                     'camera_info': '/a/info'}
    assert choose_topics(topics, image='/b/color') == {
        'image': '/b/color', 'depth': '/a/depth', 'camera_info': '/b/info'}
    with pytest.raises(BagError, match="no topic '/nope'"):
        choose_topics(topics, depth='/nope')
    with pytest.raises(BagError, match='must hold'):
        choose_topics(topics, camera_info='/tf')
    with pytest.raises(BagError, match='no colour image topic'):
        choose_topics({'/a/depth': ('sensor_msgs/msg/Image', '32FC1')})


@pytest.fixture
def context():
    ctx = Context()
    rclpy.init(context=ctx, domain_id=int(np.random.default_rng().integers(100, 200)))
    yield ctx
    rclpy.try_shutdown(context=ctx)


def _play(context, parameters, autostart):
    """Run a replay; return ``{role: [msg, ...]}`` received and the arrival times (s)."""
    replay = ReplayPublisher(context=context, autostart=False, parameter_overrides=[
        Parameter('loop', value=False)] + parameters)
    listener = rclpy.create_node('listener', context=context)
    got = {'image': [], 'depth': [], 'camera_info': []}
    arrivals = []

    def keep(role):
        def callback(msg):
            got[role].append(msg)
            if role == 'image':
                arrivals.append(time.monotonic())
        return callback

    for role, msg_type in (('image', Image), ('depth', Image), ('camera_info', CameraInfo)):
        listener.create_subscription(msg_type, role, keep(role), qos_profile_sensor_data)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(replay)
    executor.add_node(listener)
    try:
        deadline = time.monotonic() + 10.0
        while not all(replay.subscription_counts().values()):
            assert time.monotonic() < deadline, 'the replay did not connect'
            executor.spin_once(timeout_sec=0.01)
        if autostart:
            replay.start()
        deadline = time.monotonic() + 20.0
        while len(got['camera_info']) < FRAMES and time.monotonic() < deadline:
            if not autostart and not replay.finished:
                replay.publish_next()
            executor.spin_once(timeout_sec=0.01)
        for _ in range(20):
            executor.spin_once(timeout_sec=0.01)
    finally:
        executor.shutdown()
        replay.destroy_node()
        listener.destroy_node()
    return got, arrivals


def test_bag_replay_equals_directory_replay(context, recordings):
    directory, bags = recordings
    from_dir, _ = _play(context, [Parameter('directory', value=str(directory))], False)
    from_bag, arrivals = _play(context, [Parameter('bag', value=str(bags['mcap'])),
                                         Parameter('rate_scale', value=2.0)], True)
    for got in (from_dir, from_bag):
        assert [len(v) for v in got.values()] == [FRAMES] * 3
    for i in range(FRAMES):
        d_img, b_img = from_dir['image'][i], from_bag['image'][i]
        np.testing.assert_array_equal(image_to_rgb(b_img), image_to_rgb(d_img))
        np.testing.assert_array_equal(depth_image_to_metres(from_bag['depth'][i]),
                                      depth_image_to_metres(from_dir['depth'][i]))
        assert (camera_info_to_intrinsics(from_bag['camera_info'][i], WIDTH, HEIGHT)
                == camera_info_to_intrinsics(from_dir['camera_info'][i], WIDTH, HEIGHT))
        # The bag keeps its recorded stamps, equal on the three topics.
        stamp = START_NS + i * PERIOD_NS
        for role in from_bag:
            s = from_bag[role][i].header.stamp
            assert s.sec * 1_000_000_000 + s.nanosec == stamp
            assert from_bag[role][i].header.frame_id == 'camera_color_optical_frame'
    # Recorded at 10 Hz, played at twice that: 3 gaps of 0.05 s (loose: a loaded machine).
    span = arrivals[-1] - arrivals[0]
    assert 0.1 < span < 1.5, span


def test_replay_of_a_missing_or_broken_bag_says_why(context, tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        ReplayPublisher(context=context, parameter_overrides=[
            Parameter('bag', value=str(tmp_path / 'nothing'))])
    (tmp_path / 'broken').mkdir()
    with pytest.raises(ValueError, match='zs_replay'):
        ReplayPublisher(context=context, parameter_overrides=[
            Parameter('bag', value=str(tmp_path / 'broken'))])
    with pytest.raises(ValueError, match='exactly one'):
        ReplayPublisher(context=context, parameter_overrides=[
            Parameter('bag', value='a'), Parameter('directory', value='b')])


def test_recorder_writes_every_output_to_an_mcap_that_rosbags_reads(tmp_path):
    from rosbags.highlevel import AnyReader
    scene = render_scene(160, 120, seed=2)
    graph = Graph(FixedMaskSegmenter(scene['masks']), {'backend': 'clipseg'})
    out = tmp_path / 'outputs'
    recorder = OutputRecorder(context=graph.context, namespace='/t', parameter_overrides=[
        Parameter('output', value=str(out)), Parameter('node', value='/t/zs_perception')])
    graph.executor.add_node(recorder)
    try:
        deadline = time.monotonic() + 15.0
        while len(recorder.recording()) < 7:
            assert time.monotonic() < deadline, recorder.recording()
            time.sleep(0.05)
        time.sleep(0.3)  # the subscriptions match the node's publishers
        graph.set_goal('box; cylinder')
        headers = [graph.publish_frame(scene['rgb'], scene['depth_m'], scene['intrinsics'])]
        time.sleep(0.2)
        headers.append(graph.publish_frame(scene['rgb'], scene['depth_m'],
                                           scene['intrinsics']))
        for header in headers:
            graph.wait_for_stamp('objects', header)
            graph.wait_for_stamp('points', header)
        deadline = time.monotonic() + 10.0
        while recorder.counts.get('/t/zs_perception/points', 0) < 2:
            assert time.monotonic() < deadline, recorder.counts
            time.sleep(0.05)
    finally:
        graph.executor.remove_node(recorder)
        recorder.destroy_node()
        graph.close()
    assert (out / 'metadata.yaml').is_file() and list(out.glob('*.mcap'))
    with AnyReader([out]) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        for name, msgtype in (('objects', 'zs_perception/msg/SegmentedObjectArray'),
                              ('masks', 'sensor_msgs/msg/Image'),
                              ('poses', 'geometry_msgs/msg/PoseArray'),
                              ('markers', 'visualization_msgs/msg/MarkerArray'),
                              ('points', 'sensor_msgs/msg/PointCloud2'),
                              ('debug_image', 'sensor_msgs/msg/Image')):
            assert types[f'/t/zs_perception/{name}'] == msgtype
        assert types['/diagnostics'] == 'diagnostic_msgs/msg/DiagnosticArray'
        conns = [c for c in reader.connections if c.topic == '/t/zs_perception/objects']
        # The schema travels in the bag: rosbags decodes it without this package's types.
        objects = [reader.deserialize(raw, c.msgtype)
                   for c, _, raw in reader.messages(connections=conns)]
    stamps = {(h.stamp.sec, h.stamp.nanosec) for h in headers}
    with_goal = [o for o in objects if (o.header.stamp.sec, o.header.stamp.nanosec) in stamps]
    assert len(with_goal) == 2
    for msg in with_goal:
        assert [o.label for o in msg.objects] == ['box', 'cylinder']
        assert all(o.has_pose for o in msg.objects)
        assert msg.header.frame_id == 'camera_color_optical_frame'


def test_demo_plays_a_bag_and_records_its_outputs(tmp_path, tiny_models, capsys):
    import json

    from rosbags.highlevel import AnyReader

    from zs_perception.ros import demo
    frames = []
    for i in range(2):
        scene = render_scene(160, 120, seed=i)
        frames.append((START_NS + i * PERIOD_NS, scene['rgb'], scene['depth_m'],
                       scene['intrinsics']))
    write_camera_bag(tmp_path / 'scene_bag', frames)
    out, recorded = tmp_path / 'out', tmp_path / 'recorded'
    rc = demo.main(['--output', str(out), '--bag', str(tmp_path / 'scene_bag'),
                    '--record', str(recorded), '--random-weights', '--backend', 'clipseg',
                    '--clipseg-model', str(tiny_models / 'clipseg'), '--device', 'cpu',
                    '--frame-timeout', '120',
                    '--domain-id', str(int(np.random.default_rng().integers(100, 230)))])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    summary = json.loads((out / 'summary.json').read_text())
    assert summary['frames_with_result'] == 2 and summary['recorded'] == str(recorded)
    assert [f['stamp']['sec'] * 10**9 + f['stamp']['nanosec'] for f in summary['frames']] \
        == [f[0] for f in frames]  # the recorded stamps
    with AnyReader([recorded]) as reader:
        conns = [c for c in reader.connections if c.topic == '/zs_perception/objects']
        stamps = [reader.deserialize(raw, c.msgtype).header.stamp
                  for c, _, raw in reader.messages(connections=conns)]
    assert [s.sec * 10**9 + s.nanosec for s in stamps] == [f[0] for f in frames]
