"""Benchmark the annotation command: images per second for the default backend (clipseg).

Run from the repository root with the colcon build sourced::

    source scripts/env.sh && python -m benchmarks.bench_annotate [--images 12] [--size tiny,full]
        [--batch-size 1,4] [--width 640] [--height 480] [--device cpu] [--models DIR]

Per model size (random weights written by ``zs_perception.testing.random_models``: ``tiny``
test models or ``full`` CLIPSeg rd64-refined architecture) and ``--batch-size``, one
:func:`zs_perception.annotation.run.annotate` run over a folder of ``--images`` demo-scene
frames (``zs_perception.testing.scene``, a new viewpoint per frame) with three prompts,
writing everything a real run writes (records, overlays, COCO, YOLO, contact sheet).

Columns: ``images_per_s`` (steady state: images finished after the first, over the time
since the first finished, so model loading is left out), ``load_s`` (start of the run to
the first image finished, minus one image's time), ``segment_ms`` (median time in the
segmenter per image, from the records), ``other_ms`` (mean time between two finished images
minus the mean segmenter time: reading, masks to RLE and polygons, overlay PNG and atomic
writes not hidden behind the model; negative when ``--batch-size`` > 1 overlaps them with
more than that), ``instances`` per image, and
``finish_s`` (rebuilding COCO, YOLO and the sheet from the records at the end).
"""

import argparse
import json
import os
from pathlib import Path
import platform
import tempfile
import time

from benchmarks.report import emit
import cv2
import numpy as np
import torch

from zs_perception.annotation.run import annotate, AnnotateConfig, RECORDS
from zs_perception.testing.random_models import write_random_models
from zs_perception.testing.scene import render_scene

PROMPTS = ['box', 'cup', 'table']


def make_images(folder: Path, count: int, width: int, height: int) -> Path:
    """Write ``count`` demo-scene frames as PNG into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rgb = render_scene(width=width, height=height, seed=i)['rgb']
        cv2.imwrite(str(folder / f'{i:04d}.png'), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return folder


def run_once(models: dict, images: Path, out: Path, batch_size: int, device: str) -> dict:
    """Annotate ``images`` into ``out``; return the row's figures."""
    finished = []
    start = time.perf_counter()
    config = AnnotateConfig(
        input_path=str(images), output=str(out), vocabulary=list(PROMPTS),
        engine={'clipseg_model': models['clipseg'], 'device': device,
                'allow_random_weights': True},
        batch_size=batch_size, progress=False)
    summary = annotate(config, on_image=lambda key: finished.append(time.perf_counter()))
    end = time.perf_counter()
    records = [json.loads(p.read_text()) for p in (out / RECORDS).glob('[!.]*.json')]
    segment = float(np.median([r['seconds'] for r in records]))
    steps = np.diff(finished)
    per_image = float(steps.mean()) if steps.size else float(finished[0] - start)
    rate = 1.0 / per_image if steps.size else None
    other = per_image - float(np.mean([r['seconds'] for r in records]))
    return {
        'images': summary.annotated,
        'images_per_s': round(rate, 3) if rate else None,
        'load_s': round(finished[0] - start - per_image, 2),
        'segment_ms': round(1e3 * segment, 1),
        'other_ms': round(1e3 * other, 1),
        'instances': round(summary.instances / max(summary.annotated, 1), 1),
        'finish_s': round(end - finished[-1], 2),
    }


def main(argv=None) -> int:
    """Run the benchmark; print JSON and a table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', type=int, default=12, help='images per run (default 12)')
    parser.add_argument('--size', default='tiny,full', help='model sizes (default tiny,full)')
    parser.add_argument('--batch-size', default='1,4', help='batch sizes (default 1,4)')
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--device', default='cpu', help="'cpu' (default), 'cuda', 'auto'")
    parser.add_argument('--models', type=Path, help='folder for the random models (default: '
                        'a temporary one)')
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix='bench_annotate_') as tmp:
        tmp = Path(tmp)
        images = make_images(tmp / 'images', args.images, args.width, args.height)
        for size in args.size.split(','):
            model_dir = (args.models or tmp / 'models') / size
            if not (model_dir / 'clipseg' / 'config.json').is_file():
                write_random_models(model_dir, size=size, sam_type='none')
            models = {'clipseg': str(model_dir / 'clipseg')}
            for batch in (int(b) for b in args.batch_size.split(',')):
                row = {'size': size, 'batch_size': batch}
                row.update(run_once(models, images, tmp / f'out_{size}_{batch}', batch,
                                    args.device))
                rows.append(row)
    emit('annotate', rows, meta={
        'backend': 'clipseg', 'prompts': PROMPTS, 'image_size': [args.width, args.height],
        'device': args.device, 'cpus': os.cpu_count(), 'torch_threads': torch.get_num_threads(),
        'torch': torch.__version__, 'machine': platform.machine(),
        'weights': 'random (zs_perception.testing.random_models)'})
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
