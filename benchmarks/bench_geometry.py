"""Benchmark estimate_object_geometry: 1, 5 and 20 masks at 640x480 and 1280x720 on the CPU.

Run from the repository root: ``python -m benchmarks.bench_geometry``. Masks are the demo
scene's box and cylinder masks, repeated, and elliptical masks of about 2 % of the image.
Wall-clock and CPU (``time.process_time``, this process) medians are both reported: on a
shared machine the wall clock includes time spent waiting for a core.
"""

import platform
import time

from benchmarks.report import emit, stats_ms, time_calls
import cv2
import numba
import numpy as np

from zs_perception.geometry import estimate_object_geometry
from zs_perception.testing.scene import render_scene


def _masks(scene, count):
    h, w = scene['depth_m'].shape
    rng = np.random.default_rng(0)
    masks = [scene['masks']['box'], scene['masks']['cylinder']]
    while len(masks) < count:
        m = np.zeros((h, w), np.uint8)
        centre = (int(rng.integers(w // 8, 7 * w // 8)), int(rng.integers(h // 8, 7 * h // 8)))
        cv2.ellipse(m, centre, (w // 14, h // 10), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        masks.append(m.view(bool))
    return np.stack(masks[:count])


def main():
    rows = []
    for width, height in ((640, 480), (1280, 720)):
        scene = render_scene(width, height)
        for count in (1, 5, 20):
            masks = _masks(scene, count)

            def run(masks=masks):
                return estimate_object_geometry(masks, scene['depth_m'], scene['intrinsics'])

            wall = stats_ms(time_calls(run, repeats=30, warmup=3))
            cpu_ms = float(np.median(time_calls(run, 30, warmup=0, clock=time.process_time))) * 1e3
            rows.append({'resolution': f'{width}x{height}', 'masks': count,
                         'mask_pixels': int(masks.sum()), **wall,
                         'cpu_median_ms': round(cpu_ms, 3),
                         'cpu_ms_per_mask': round(cpu_ms / count, 3)})
    emit('geometry', rows, {'device': 'cpu', 'machine': platform.processor() or 'unknown',
                            'numpy': np.__version__, 'opencv': cv2.__version__,
                            'numba': numba.__version__, 'cv2_threads': cv2.getNumThreads()})


if __name__ == '__main__':
    main()
