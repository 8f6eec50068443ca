"""Benchmark the perception node in a real ROS 2 graph: 640x480 RGB-D at 30 Hz.

Run from the repository root, with the colcon build sourced (``source scripts/env.sh``)::

    python -m benchmarks.bench_node [--seconds 10] [--clipseg]

The perception node runs in its own process, as deployed; the replay publisher and a
recorder node share a second one (each with its own rclpy context and single-threaded
executor). The rows with the ``shm profile`` transport start both processes with the
package's Fast DDS profile (``config/fastdds_shm.xml``), the others with Fast DDS's
defaults. The replay plays the demo scene (rgb8 image, 16UC1 depth, camera_info, same
stamps) at 30 Hz into the node, and the recorder subscribes to every output (``~/objects``,
``~/masks``, ``~/poses``, ``~/markers``, ``~/points``, ``/diagnostics``, and
``~/debug_image`` in the rows that say so, since the node draws the overlay only while
someone subscribes).

Figures per row:

* end-to-end latency: image stamp to receipt of ``~/objects`` by the recorder (median, p99);
* throughput: ``~/objects`` messages per second; drop rate: images published but never
  answered (the node keeps only the newest image while it works);
* engine: time inside ``Segmenter.segment``; ROS overhead = end-to-end minus the median
  engine time: transport, conversions, sync, geometry, tracking and publishing every output
  (plus the wait for the worker when frames come faster than it processes them);
* the node's own stage medians from ``/diagnostics``: ``arrival`` (the image's age when it
  reached the node: the replay's publish call and transport), ``wait`` (for its depth,
  camera_info and the worker thread), ``convert``, ``geometry``, ``tracking``, ``publish``
  (every output; ``~/objects`` goes first).

The ``scene masks`` rows measure the ROS overhead, so their segmenter is the test double
:class:`zs_perception.testing.doubles.FixedMaskSegmenter` returning 5 precomputed masks of
the rendered scene (the box, the cylinder and three table patches) instantly.

The starvation rows play the same camera with one stream faulty (``--no-starvation``
leaves them out): depth published by a live publisher that never sends (``depth
silent``), camera_info stamped 0, depth stamped 0.5 s ahead. The node must keep the
camera rate (``throughput_hz`` close to ``published_hz``) and publish without poses.
``--clipseg`` adds a row with the real CLIPSeg backend on full-size random weights
(meaningless masks, real compute).
"""

import argparse
import copy
import functools
import multiprocessing
import os
import pathlib
import platform
import tempfile
import threading
import time

from benchmarks.report import emit
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray
import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from zs_perception.msg import SegmentedObjectArray
from zs_perception.ros.node import PerceptionNode
from zs_perception.ros.replay import ReplayPublisher
from zs_perception.segmentation.base import Segmenter
from zs_perception.testing.doubles import FixedMaskSegmenter
from zs_perception.testing.scene import render_scene
from zs_perception.tools.make_demo_scene import make_demo_scene

RATE_HZ = 30.0
WARMUP_S = 2.0
# Stages the node times itself and reports on /diagnostics (medians of its last 100 frames).
NODE_STAGES = ('arrival', 'wait', 'convert', 'geometry', 'tracking', 'publish')
# The Fast DDS profile the package ships for camera-rate images (config/fastdds_shm.xml).
PROFILE_VARIABLE = 'FASTRTPS_DEFAULT_PROFILES_FILE'
SHM_PROFILE = pathlib.Path(__file__).resolve().parents[1] / 'config' / 'fastdds_shm.xml'
LABELS = ('red box', 'blue cylinder', 'table patch a', 'table patch b', 'table patch c')


class TimedSegmenter(Segmenter):
    """Benchmark-only: wraps a real segmenter and records the time of each ``segment``."""

    def __init__(self, inner):
        self._inner = inner
        self.engine_s = []  # (wall-clock end s, seconds) per call

    def set_prompts(self, prompts):
        return self._inner.set_prompts(prompts)

    @property
    def prompts(self):
        return self._inner.prompts

    def set_thresholds(self, **kwargs):
        self._inner.set_thresholds(**kwargs)

    def segment(self, image):
        t0 = time.perf_counter()
        result = self._inner.segment(image)
        self.engine_s.append((time.time(), time.perf_counter() - t0))
        return result


def clipseg_segmenter(model_dir):
    """Build the real CLIPSeg backend on ``model_dir`` (random weights), timed."""
    from zs_perception.segmentation.factory import create_segmenter
    return TimedSegmenter(create_segmenter('clipseg', clipseg_model=model_dir, device='cpu',
                                           allow_random_weights=True))


def scene_masks(scene):
    """Return the box and cylinder masks plus three 80x50 px table patches (``(H, W)`` bool)."""
    h, w = scene['depth_m'].shape
    occupied = scene['masks']['box'] | scene['masks']['cylinder']
    masks = [scene['masks']['box'], scene['masks']['cylinder']]
    for x, y in ((40, h - 90), (w // 2 - 40, h - 70), (w - 130, h - 90)):
        patch = np.zeros((h, w), bool)
        patch[y:y + 50, x:x + 80] = True
        masks.append(patch & ~occupied)
    return masks


def _node_process(make_segmenter, prompts, domain_id, ready, stop, results):
    """Child process: the perception node alone, spinning until ``stop`` is set.

    Puts ``[(wall-clock end s, seconds)]`` of every ``segment`` call on ``results``.
    """
    segmenter = make_segmenter()
    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = PerceptionNode(segmenter=segmenter, context=context, parameter_overrides=[
        Parameter('prompts', value=', '.join(prompts))])
    executor = SingleThreadedExecutor(context=context)  # as rclpy.spin in the node's main()
    executor.add_node(node)
    ready.set()
    try:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.1)
    finally:
        results.put(list(segmenter.engine_s))
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)


class _FaultyPublisher:
    """Benchmark-only: a replay publisher that drops or misstamps what it publishes."""

    def __init__(self, publisher, fault):
        self._publisher = publisher
        self._fault = fault

    def __getattr__(self, name):
        return getattr(self._publisher, name)

    def publish(self, msg):
        if self._fault == 'silent':
            return
        header = copy.deepcopy(msg.header)
        if self._fault == 'stamp 0':
            header.stamp.sec, header.stamp.nanosec = 0, 0
        elif self._fault == 'ahead 0.5 s':
            header.stamp.sec, header.stamp.nanosec = divmod(
                header.stamp.sec * 10**9 + header.stamp.nanosec + 500_000_000, 10**9)
        msg.header = header
        self._publisher.publish(msg)


# Starvation rows: (name, replay stream, fault).
STARVATION = (('depth silent', '_depth_pub', 'silent'),
              ('camera_info stamped 0', '_info_pub', 'stamp 0'),
              ('depth 0.5 s ahead', '_depth_pub', 'ahead 0.5 s'))


def _driver_process(scene_dir, seconds, debug_image, domain_id, stop, results, fault=None):
    """Child process: the replay publisher and the recorder, for one row.

    Waits for the node to subscribe, plays the scene for ``WARMUP_S + seconds`` and puts the
    measured window on ``results``: ``{'received': [(stamp s, receipt s, objects, poses)],
    ...}``. ``fault``: ``(replay publisher attribute, fault)`` from :data:`STARVATION`.
    """
    context = Context()
    rclpy.init(context=context, domain_id=domain_id)
    replay = ReplayPublisher(context=context, autostart=False, parameter_overrides=[
        Parameter('directory', value=str(scene_dir)), Parameter('rate_hz', value=RATE_HZ)])
    if fault is not None:
        attribute, kind = fault
        setattr(replay, attribute, _FaultyPublisher(getattr(replay, attribute), kind))
    recorder = rclpy.create_node('bench_recorder', context=context)
    base = '/zs_perception'
    lock = threading.Lock()
    received = []  # (stamp s, receipt s, number of objects)
    counts = {}

    def count(topic):
        def callback(_msg):
            with lock:
                counts[topic] = counts.get(topic, 0) + 1
        return callback

    def on_objects(msg):
        now = recorder.get_clock().now().nanoseconds * 1e-9
        with lock:
            received.append((msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9, now,
                             len(msg.objects), sum(o.has_pose for o in msg.objects)))
            counts['objects'] = counts.get('objects', 0) + 1

    recorder.create_subscription(SegmentedObjectArray, f'{base}/objects', on_objects, 10)
    outputs = [(Image, 'masks'), (PoseArray, 'poses'), (MarkerArray, 'markers'),
               (PointCloud2, 'points')] + ([(Image, 'debug_image')] if debug_image else [])
    for msg_type, name in outputs:
        recorder.create_subscription(msg_type, f'{base}/{name}', count(name), 10)
    diagnostics = {}

    def on_diagnostics(msg):
        for status in msg.status:
            if status.hardware_id == base:
                with lock:
                    diagnostics.update((kv.key, kv.value) for kv in status.values)

    recorder.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, 10)
    # Single-threaded: rclpy's MultiThreadedExecutor polls its futures in a busy loop that
    # takes a whole core of this 2-core machine away from the node.
    executor = SingleThreadedExecutor(context=context)
    for n in (replay, recorder):
        executor.add_node(n)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        deadline = time.monotonic() + 30.0
        while not all(replay.subscription_counts().values()):
            if time.monotonic() > deadline:
                raise RuntimeError('the node did not subscribe to the replay within 30 s')
            time.sleep(0.05)
        replay.start()
        time.sleep(WARMUP_S)
        with lock:
            first_received = len(received)
            counts.clear()
        first_published = replay.frames_published
        t_start, wall_start = time.monotonic(), time.time()
        time.sleep(seconds)
        with lock:
            window = list(received[first_received:])
            window_counts = dict(counts)
            node_diagnostics = dict(diagnostics)
        results.put({'received': window, 'counts': window_counts,
                     'diagnostics': node_diagnostics, 'outputs': [n for _, n in outputs],
                     'published': replay.frames_published - first_published,
                     'elapsed': time.monotonic() - t_start, 'wall_start': wall_start,
                     'wall_end': time.time()})
    finally:
        stop.set()
        executor.shutdown()
        spinner.join(timeout=5.0)  # no callback may run on a node being destroyed
        for n in (recorder, replay):
            n.destroy_node()
        rclpy.try_shutdown(context=context)


def run_row(scene_dir, make_segmenter, seconds, debug_image, prompts, fastdds_profile=None,
            fault=None):
    """Run one graph for ``seconds`` after warm-up; return the row's figures.

    The node runs in its own process, as it does when deployed; the replay publisher and
    the recorder share a second one. ``fastdds_profile``: a Fast DDS XML profile both
    processes load (``FASTRTPS_DEFAULT_PROFILES_FILE``), or None for Fast DDS's defaults.
    """
    domain_id = int(np.random.default_rng().integers(100, 230))
    spawn = multiprocessing.get_context('spawn')
    ready, stop, engine_q, driver_q = spawn.Event(), spawn.Event(), spawn.Queue(), spawn.Queue()
    saved = os.environ.pop(PROFILE_VARIABLE, None)
    if fastdds_profile is not None:
        os.environ[PROFILE_VARIABLE] = str(fastdds_profile)
    try:  # spawned children inherit this process's environment at start
        node = spawn.Process(target=_node_process, args=(make_segmenter, prompts, domain_id,
                                                         ready, stop, engine_q), daemon=True)
        node.start()
        if not ready.wait(timeout=300.0):
            node.kill()
            raise RuntimeError('the node process did not start within 300 s')
        driver = spawn.Process(target=_driver_process, args=(scene_dir, seconds, debug_image,
                                                             domain_id, stop, driver_q, fault),
                               daemon=True)
        driver.start()
    finally:
        os.environ.pop(PROFILE_VARIABLE, None)
        if saved is not None:
            os.environ[PROFILE_VARIABLE] = saved
    try:
        result = driver_q.get(timeout=WARMUP_S + seconds + 120.0)
    finally:
        stop.set()
    engine = engine_q.get(timeout=60.0)
    for child in (driver, node):
        child.join(timeout=30.0)

    window, window_counts = result['received'], result['counts']
    diagnostics = result['diagnostics']
    published, elapsed = result['published'], result['elapsed']
    e2e = np.array([r[1] - r[0] for r in window]) * 1e3
    engine_ms = np.array([s for end, s in engine
                          if result['wall_start'] <= end <= result['wall_end']]) * 1e3
    # Per frame: end-to-end minus the window's median engine time (the node process does
    # not tell which segment call served which stamp).
    overhead = e2e - np.median(engine_ms)
    # Every output once per frame; a message or two may straddle the window's edges.
    missing = [name for name in result['outputs']
               if window_counts.get(name, 0) < len(window) - 2]
    stages = {stage: float(diagnostics.get(f'{stage}_ms_median', 'nan'))
              for stage in NODE_STAGES}
    return {
        'e2e_median_ms': round(float(np.median(e2e)), 2),
        'e2e_p99_ms': round(float(np.percentile(e2e, 99)), 2),
        'engine_median_ms': round(float(np.median(engine_ms)), 2),
        'overhead_median_ms': round(float(np.median(overhead)), 2),
        'overhead_p99_ms': round(float(np.percentile(overhead, 99)), 2),
        'published_hz': round(published / elapsed, 1),
        'throughput_hz': round(len(window) / elapsed, 1),
        'drop_rate': round(max(0.0, 1.0 - len(window) / max(published, 1)), 3),
        'objects_per_frame': round(float(np.mean([r[2] for r in window])), 1),
        'poses_per_frame': round(float(np.mean([r[3] for r in window])), 1),
        **{f'node_{stage}_ms': round(ms, 2) for stage, ms in stages.items()},
        'all_outputs_published': not missing,
        **{f'node_{k}': int(diagnostics.get(k, -1)) for k in
           ('frames_received', 'frames_processed', 'frames_dropped')},
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seconds', type=float, default=10.0,
                        help='measured seconds per row, after 2 s of warm-up (default 10)')
    parser.add_argument('--clipseg', action='store_true',
                        help='add a row with CLIPSeg on full-size random weights')
    parser.add_argument('--no-starvation', action='store_true',
                        help='leave out the rows with a faulty depth or camera_info stream')
    args = parser.parse_args(argv)
    scene = render_scene(640, 480, seed=0)
    masks = dict(zip(LABELS, scene_masks(scene)))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scene_dir = make_demo_scene(tmp, frames=1)
        for transport, profile, debug_images in (('shm profile', SHM_PROFILE, (True, False)),
                                                 ('fast dds defaults', None, (False,))):
            for debug_image in debug_images:
                row = run_row(scene_dir, functools.partial(FixedMaskSegmenter, masks),
                              args.seconds, debug_image, LABELS, profile)
                rows.append({'segmenter': 'scene masks (5 objects)', 'transport': transport,
                             'fault': 'none', 'debug_image': debug_image, **row})
        for name, attribute, kind in () if args.no_starvation else STARVATION:
            row = run_row(scene_dir, functools.partial(FixedMaskSegmenter, masks),
                          args.seconds, False, LABELS, SHM_PROFILE, (attribute, kind))
            rows.append({'segmenter': 'scene masks (5 objects)', 'transport': 'shm profile',
                         'fault': name, 'debug_image': False, **row})
        if args.clipseg:
            from zs_perception.testing.random_models import write_random_models
            made = write_random_models(f'{tmp}/models', size='full', sam_type='none')
            row = run_row(scene_dir, functools.partial(clipseg_segmenter, made['clipseg']),
                          max(args.seconds, 20.0), True, LABELS[:2], SHM_PROFILE)
            rows.append({'segmenter': 'CLIPSeg rd64 (random weights)',
                         'transport': 'shm profile', 'fault': 'none',
                         'debug_image': True, **row})
    emit('node', rows, {
        'input': f'640x480 rgb8 + 16UC1 depth + camera_info at {RATE_HZ:.0f} Hz',
        'graph': 'node in its own process; replay + recorder in another; '
                 'SingleThreadedExecutor, Fast DDS', 'measured_s': args.seconds,
        'machine': platform.processor() or platform.machine(),
        'overhead': 'end-to-end minus the median engine (segment) time of the window'})


if __name__ == '__main__':
    main()
