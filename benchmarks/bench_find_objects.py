"""Benchmark the FindObjects action end to end: time to an answer, cancel, timeout overshoot.

Run from the repository root, with the colcon build sourced (``source scripts/env.sh``)::

    python -m benchmarks.bench_find_objects [--repeats 10] [--rate-hz 30] [--engine-ms 20]

One process, one rclpy context: the perception node (the test double
:class:`zs_perception.testing.doubles.FixedMaskSegmenter` with the rendered scene's masks,
sleeping ``--engine-ms`` per frame as a stand-in for a model), a camera thread publishing
the scene (rgb8, 32FC1 depth, camera_info) at ``--rate-hz``, and an action client. Rows:

* ``found, N frames``: goal sent to result received, for a prompt in view that must be seen
  in N consecutive frames (pose required); the floor is N camera periods;
* ``cancel``: cancel request sent to result received, for a goal still looking;
* ``not found, timeout 0.5 s``: result received minus the 0.5 s timeout (the overshoot).
"""

import argparse
import threading
import time

from benchmarks.report import emit, stats_ms
import numpy as np
import rclpy
from rclpy.action import ActionClient
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from zs_perception.action import FindObjects
from zs_perception.ros.conversions import array_to_image
from zs_perception.ros.node import PerceptionNode
from zs_perception.testing.doubles import FixedMaskSegmenter
from zs_perception.testing.scene import render_scene


def _wait(future, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not future.done():
        if time.monotonic() > deadline:
            raise RuntimeError(f'no answer within {timeout} s')
        time.sleep(0.0005)
    return future.result()


def main(argv=None) -> int:
    """Run the benchmark; print JSON and a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--rate-hz', type=float, default=30.0)
    parser.add_argument('--engine-ms', type=float, default=20.0)
    args = parser.parse_args(argv)
    scene = render_scene(640, 480, seed=8)
    context = Context()
    rclpy.init(context=context, domain_id=int(np.random.default_rng().integers(100, 230)))
    node = PerceptionNode(segmenter=FixedMaskSegmenter(scene['masks'],
                                                       delay_s=args.engine_ms / 1e3),
                          context=context, namespace='/bench',
                          parameter_overrides=[Parameter('backend', value='clipseg')])
    peer = rclpy.create_node('bench_peer', namespace='/bench', context=context)
    pubs = {name: peer.create_publisher(kind, name, qos_profile_sensor_data)
            for name, kind in (('image', Image), ('depth', Image), ('camera_info', CameraInfo))}
    client = ActionClient(peer, FindObjects, '/bench/zs_perception/find_objects')
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(peer)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    stop = threading.Event()
    k = scene['intrinsics']
    depth = scene['depth_m'].astype(np.float32)

    def camera():
        while not stop.is_set():
            header = Header(stamp=peer.get_clock().now().to_msg(),
                            frame_id='camera_color_optical_frame')
            pubs['camera_info'].publish(CameraInfo(header=header, width=k.width,
                                                   height=k.height, k=k.k.ravel().tolist()))
            pubs['depth'].publish(array_to_image(depth, '32FC1', header))
            pubs['image'].publish(array_to_image(scene['rgb'], 'rgb8', header))
            stop.wait(1.0 / args.rate_hz)

    rows = []
    try:
        if not client.wait_for_server(timeout_sec=10.0):
            raise RuntimeError('the action server did not come up')
        threading.Thread(target=camera, daemon=True).start()
        time.sleep(1.0)

        def ask(**fields):
            started = time.monotonic()
            handle = _wait(client.send_goal_async(FindObjects.Goal(**fields)))
            return handle, started

        for frames in (1, 3, 5):
            times, statuses = [], set()
            for _ in range(args.repeats):
                handle, started = ask(phrases='box', timeout_s=10.0, pose_required=True,
                                      consecutive_frames=frames)
                answer = _wait(handle.get_result_async())
                times.append(time.monotonic() - started)
                statuses.add(answer.result.status)
            rows.append({'case': f'found, {frames} frames', 'statuses': str(sorted(statuses)),
                         **stats_ms(times)})
        times = []
        for _ in range(args.repeats):
            handle, _ = ask(phrases='giraffe', timeout_s=30.0)
            time.sleep(0.2)
            started = time.monotonic()
            _wait(handle.cancel_goal_async())
            _wait(handle.get_result_async())
            times.append(time.monotonic() - started)
        rows.append({'case': 'cancel', 'statuses': '[5]', **stats_ms(times)})
        times, statuses = [], set()
        for _ in range(args.repeats):
            handle, started = ask(phrases='giraffe', timeout_s=0.5)
            answer = _wait(handle.get_result_async())
            times.append(time.monotonic() - started - 0.5)
            statuses.add(answer.result.status)
        rows.append({'case': 'not found, timeout 0.5 s (overshoot)',
                     'statuses': str(sorted(statuses)), **stats_ms(times)})
    finally:
        stop.set()
        executor.shutdown(timeout_sec=5.0)
        spinner.join(timeout=5.0)
        node.destroy_node()
        peer.destroy_node()
        rclpy.try_shutdown(context=context)
    emit('find_objects', rows, {'rate_hz': args.rate_hz, 'engine_ms': args.engine_ms,
                                'image': '640x480', 'repeats': args.repeats})
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
