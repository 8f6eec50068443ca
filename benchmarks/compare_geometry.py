"""Side by side in one process: estimate_object_geometry of a past revision against this tree.

Run from the repository root: ``python -m benchmarks.compare_geometry [--base REV]
[--rounds 100]`` (``REV`` defaults to ``HEAD~1``). On a shared VM the speed drifts by a third
from one minute to the next, so two benchmark runs minutes apart cannot show a change of a
few percent; here both versions are imported at once and their calls alternate. The base's
``zs_perception/geometry`` files are read with ``git show`` into a package of another name
(``zs_geometry_base``, its kernels cached under ``~/.cache/zs_perception/compare_geometry``),
so its numba kernels and thread pool are its own. Masks: bench_geometry's. Reported per
resolution and mask count: median wall clock of one call with all the masks (the pool's
threads at work) and median CPU time of the masks measured one per call on this thread
(``time.thread_time``), for each version, their ratios (new / base), and whether the two
give the same results bit for bit.
"""

import argparse
import importlib
import pathlib
import platform
import subprocess
import sys
import time

from benchmarks.bench_geometry import _masks
from benchmarks.report import emit
import numpy as np

from zs_perception import geometry as new_geometry
from zs_perception.testing.scene import render_scene

_PACKAGE = 'zs_geometry_base'
_CACHE = pathlib.Path.home() / '.cache' / 'zs_perception' / 'compare_geometry'


def _git(*args):
    return subprocess.run(['git', *args], check=True, capture_output=True, text=True).stdout


def import_base(rev):
    """Import ``zs_perception/geometry`` of git revision ``rev`` as package ``zs_geometry_base``.

    Returns:
        ``(module, commit)``: the imported package and the revision's full commit id.

    """
    commit = _git('rev-parse', '--verify', f'{rev}^{{commit}}').strip()
    root = _CACHE / commit
    package = root / _PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    for name in _git('ls-tree', '--name-only', commit, 'zs_perception/geometry/').split():
        if name.endswith('.py'):
            source = _git('show', f'{commit}:{name}')
            target = package / pathlib.Path(name).name
            text = source.replace('zs_perception.geometry', _PACKAGE)
            if not target.exists() or target.read_text() != text:
                target.write_text(text)
    sys.path.insert(0, str(root))
    return importlib.import_module(_PACKAGE), commit


def _same(a, b):
    return all(x.has_pose == y.has_pose and x.shape == y.shape
               and np.array_equal(x.position, y.position)
               and np.array_equal(x.extents, y.extents)
               and np.array_equal(x.rotation, y.rotation) for x, y in zip(a, b))


def compare(base, rounds, resolutions=((640, 480), (1280, 720)), counts=(1, 5, 20)):
    """Rows of the side-by-side comparison (see the module docstring)."""
    rows = []
    for width, height in resolutions:
        scene = render_scene(width, height)
        k = scene['intrinsics']
        depth = scene['depth_m']
        versions = []
        for module in (base, new_geometry):
            intr = module.CameraIntrinsics(k.fx, k.fy, k.cx, k.cy, k.width, k.height)
            versions.append((module.estimate_object_geometry, intr))
        for count in counts:
            masks = _masks(scene, count)
            for estimate, intr in versions:  # compile nothing and warm the caches
                for _ in range(3):
                    estimate(masks, depth, intr)
            same = _same(*(estimate(masks, depth, intr) for estimate, intr in versions))
            wall = [[], []]
            cpu = [[], []]
            for i in range(rounds):
                order = (0, 1) if i % 2 == 0 else (1, 0)
                for v in order:
                    estimate, intr = versions[v]
                    start = time.perf_counter()
                    estimate(masks, depth, intr)
                    wall[v].append(time.perf_counter() - start)
                for v in order:
                    estimate, intr = versions[v]
                    start = time.thread_time()
                    for mask in masks:
                        estimate(mask[None], depth, intr)
                    cpu[v].append(time.thread_time() - start)
            w = [float(np.median(x)) * 1e3 for x in wall]
            c = [float(np.median(x)) * 1e3 for x in cpu]
            rows.append({'resolution': f'{width}x{height}', 'masks': count,
                         'base_wall_ms': round(w[0], 3), 'new_wall_ms': round(w[1], 3),
                         'wall_ratio': round(w[1] / w[0], 3),
                         'base_cpu_ms': round(c[0], 3), 'new_cpu_ms': round(c[1], 3),
                         'cpu_ratio': round(c[1] / c[0], 3), 'same_results': same})
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--base', default='HEAD~1', help='git revision to compare against')
    parser.add_argument('--rounds', type=int, default=100,
                        help='alternating calls of each version per row')
    args = parser.parse_args(argv)
    base, commit = import_base(args.base)
    rows = compare(base, args.rounds)
    emit('geometry_side_by_side', rows,
         {'base': commit, 'new': 'working tree', 'rounds': args.rounds,
          'machine': platform.processor() or 'unknown'})


if __name__ == '__main__':
    main()
