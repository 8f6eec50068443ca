"""Benchmark rosbag2 in and out with rosbags: writing and reading camera frames, per frame.

Run from the repository root: ``python -m benchmarks.bench_bags``. Frames are the demo scene
(``rgb8`` + ``16UC1`` + camera info) at 640x480 and 1280x720, written with
:func:`zs_perception.bags.write_camera_bag` (MCAP and sqlite3) and read back with
:class:`zs_perception.bags.BagFrames` (index and pair every frame) and
:meth:`BagFrames.decode` (to arrays). Wall-clock medians per frame over 3 runs of 20
frames; the machine may be shared, so compare rows, not runs on different days.
"""

from importlib.metadata import version
from pathlib import Path
import platform
import tempfile
import time

from benchmarks.report import emit, stats_ms

from zs_perception.bags import BagFrames, write_camera_bag
from zs_perception.testing.scene import render_scene

FRAMES = 20
RUNS = 3


def main():
    rows = []
    for width, height in ((640, 480), (1280, 720)):
        scene = render_scene(width, height)
        frames = [(1_700_000_000_000_000_000 + i * 33_000_000, scene['rgb'], scene['depth_m'],
                   scene['intrinsics']) for i in range(FRAMES)]
        for storage in ('mcap', 'sqlite3'):
            write_s, read_s, decode_s = [], [], []
            size_mb = 0.0
            for run in range(RUNS):
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / 'bag'
                    t = time.perf_counter()
                    write_camera_bag(path, frames, storage=storage)
                    write_s.append((time.perf_counter() - t) / FRAMES)
                    size_mb = sum(p.stat().st_size for p in path.iterdir()) / 1e6
                    t = time.perf_counter()
                    bag = BagFrames(path)
                    read_s.append((time.perf_counter() - t) / FRAMES)
                    t = time.perf_counter()
                    for i in range(len(bag)):
                        bag.decode(i)
                    decode_s.append((time.perf_counter() - t) / FRAMES)
            rows.append({'size': f'{width}x{height}', 'storage': storage,
                         'write_ms_per_frame': stats_ms(write_s)['median_ms'],
                         'read_ms_per_frame': stats_ms(read_s)['median_ms'],
                         'decode_ms_per_frame': stats_ms(decode_s)['median_ms'],
                         'bag_mb_per_frame': round(size_mb / FRAMES, 3)})
    emit('bags', rows, {'frames': FRAMES, 'runs': RUNS, 'rosbags': version('rosbags'),
                        'python': platform.python_version()})


if __name__ == '__main__':
    main()
