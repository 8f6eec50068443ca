"""Where estimate_object_geometry spends its time: CPU time per step, one mask at a time.

Run from the repository root: ``python -m benchmarks.profile_geometry [--resolution 640x480]
[--masks 5] [--repeats 20]``. The masks are bench_geometry's (the demo scene's box and
cylinder, then ellipses). The steps of one object run as one kernel
(``_object_steps.object_geometry``); here its ``py_func`` runs instead, the same steps with
each kernel called from Python, so that each step (the ``_points`` kernels, the fit
``measure`` and the final ``settle``, and in ``pose`` the mask's bounding box and the
distance transforms) can be wrapped with a timer of this thread's CPU time
(``time.thread_time``, so time spent waiting for a core on a shared machine is not counted).
The masks are measured one per call, so nothing runs on the pool's threads. ``rest`` is
the time of a whole call not inside a timed step: the Python of ``pose`` plus the glue
between the steps, which in the kernel in use costs next to nothing (so ``rest`` and
``total`` overstate the compiled path; ``benchmarks.bench_geometry`` times that).
"""

import argparse
import collections
import time
import types

from benchmarks.bench_geometry import _masks
from benchmarks.report import emit
import cv2
import numpy as np

from zs_perception.geometry import _object_steps, _points, estimate_object_geometry, pose
from zs_perception.testing.scene import render_scene

KERNELS = ('mask_roi_in_depth', 'window_regions', 'depth_noise', 'support_planes', 'denoise',
           'background', 'link_surface', 'outline_of', 'peel_flying', 'window_points',
           'outline')


def _timed(totals, name, fn):
    def wrapper(*args, **kwargs):
        start = time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[name] += time.thread_time() - start
    return wrapper


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--resolution', default='640x480')
    parser.add_argument('--masks', type=int, default=5)
    parser.add_argument('--repeats', type=int, default=20)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.resolution.split('x'))
    scene = render_scene(width, height)
    masks = _masks(scene, args.masks)
    totals = collections.defaultdict(float)
    saved = {name: getattr(_points, name) for name in KERNELS}
    saved_steps = {'measure': _object_steps.measure, 'settle': _object_steps.settle,
                   'object_geometry': _object_steps.object_geometry}
    saved_cv2 = pose.cv2
    # pose uses cv2 for its distance transforms only
    cv2_timed = types.SimpleNamespace(
        DIST_L2=cv2.DIST_L2,
        distanceTransform=_timed(totals, 'distance_transforms', cv2.distanceTransform))
    try:
        for name, fn in saved.items():
            setattr(_points, name, _timed(totals, name, fn))
        for name in ('measure', 'settle'):
            setattr(_object_steps, name, _timed(totals, name, saved_steps[name]))
        _object_steps.object_geometry = saved_steps['object_geometry'].py_func
        pose.cv2 = cv2_timed
        for mask in masks:  # compile nothing and warm the caches before timing
            estimate_object_geometry(mask[None], scene['depth_m'], scene['intrinsics'])
        totals.clear()
        start = time.thread_time()
        for _ in range(args.repeats):
            for mask in masks:
                estimate_object_geometry(mask[None], scene['depth_m'], scene['intrinsics'])
        whole = (time.thread_time() - start) / args.repeats
    finally:
        for name, fn in saved.items():
            setattr(_points, name, fn)
        for name, fn in saved_steps.items():
            setattr(_object_steps, name, fn)
        pose.cv2 = saved_cv2
    steps = {name: total / args.repeats for name, total in totals.items()}
    steps['rest'] = whole - sum(steps.values())
    rows = [{'step': name, 'cpu_ms': round(seconds * 1e3, 3),
             'share': round(seconds / whole, 3)}
            for name, seconds in sorted(steps.items(), key=lambda kv: -kv[1])]
    rows.append({'step': 'total', 'cpu_ms': round(whole * 1e3, 3), 'share': 1.0})
    emit('geometry_profile', rows, {'resolution': args.resolution, 'masks': args.masks,
                                    'mask_pixels': int(np.count_nonzero(masks)),
                                    'repeats': args.repeats, 'clock': 'thread_time'})


if __name__ == '__main__':
    main()
