"""Benchmark the segmentation engine against the naive transformers / segment_anything usage.

Run from the repository root::

    python -m benchmarks.bench_engine [--prompts 1,3,10] [--repeats 5] [--sam-repeats 1]
        [--models DIR] [--size full|tiny] [--no-sam] [--device auto] [--precision auto]

Both sides run in this one process on the same 640x480 frames (the real TUM office-desk
frame shipped in test/data, shifted per repeat so every frame is new and no frame cache
helps), with full-size architectures and random
weights written by ``zs_perception.testing.random_models`` (or ``--models``):

* CLIPSeg reference: ``CLIPSegProcessor(text=prompts, images=[frame] * N)`` then
  ``CLIPSegForImageSegmentation(**inputs)``, i.e. one image copy per prompt.
  Ours: ``Segmenter.segment(frame)`` with the prompts set beforehand (prompt
  encoding is reported separately as ``set_prompts``), including the
  probability maps at 640x480 and the instances the reference does not compute.
* SAM reference: ``SamPredictor.set_image`` then ``predict(box=...)`` once per
  box. Ours: ``SamRefiner.embed`` then one batched ``predict`` for all boxes
  (N boxes for N prompts).

Per stage: median and p90 latency in ms; the ``total`` rows carry the ratio
reference / ours and the peak memory growth of one call (CUDA allocator peak, or
on the CPU the process RSS sampled every 2 ms): for CLIPSeg measured in a fresh
child process per implementation and prompt count, for SAM during the timed
image encoding.
"""

import argparse
import contextlib
import json
import os
from pathlib import Path
import platform
import subprocess
import sys
import tempfile
import threading
import time

from benchmarks.report import emit, stats_ms
import cv2
import numpy as np
from segment_anything import SamPredictor
import torch
import transformers

from zs_perception.segmentation.clipseg import ClipSegSegmenter
from zs_perception.segmentation.factory import create_segmenter
from zs_perception.segmentation.loading import load_sam
from zs_perception.segmentation.sam import SamRefiner
from zs_perception.testing.random_models import write_random_models

DATA_FRAME = Path(__file__).resolve().parents[1] / 'test' / 'data' / 'tum_office_desk' / \
    'color.png'
PROMPT_WORDS = ['mug', 'keyboard', 'chair', 'bottle', 'monitor', 'phone', 'book', 'lamp',
                'pen', 'bag', 'cup', 'globe', 'scissors', 'dice', 'toy airplane', 'table']


class PeakMemory:
    """Peak memory growth over a block: CUDA allocator peak, or sampled process RSS on CPU."""

    def __init__(self, device):
        self.device = device
        self.peak_mb = 0.0

    @contextlib.contextmanager
    def measure(self):
        """Record the peak growth during the block in ``peak_mb`` (max over blocks)."""
        if self.device.type == 'cuda':
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            yield
            torch.cuda.synchronize()
            self.peak_mb = max(self.peak_mb, (torch.cuda.max_memory_allocated() - base) / 2**20)
            return
        base = _rss_bytes()
        peak = [base]
        done = threading.Event()

        def sample():
            while not done.wait(0.002):
                peak[0] = max(peak[0], _rss_bytes())

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            peak[0] = max(peak[0], _rss_bytes())
            self.peak_mb = max(self.peak_mb, (peak[0] - base) / 2**20)


def _rss_bytes():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * os.sysconf('SC_PAGE_SIZE')


def _frame():
    return cv2.cvtColor(cv2.imread(str(DATA_FRAME)), cv2.COLOR_BGR2RGB)


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def _row(pipeline, impl, prompts, stage, seconds, memory=None, ratio=None):
    s = stats_ms(seconds)
    return {'pipeline': pipeline, 'impl': impl, 'prompts': prompts, 'stage': stage,
            'median_ms': s['median_ms'], 'p90_ms': s['p90_ms'], 'n': s['n'],
            'peak_mem_mb': None if memory is None else round(memory, 1),
            'ratio_ref_over_ours': None if ratio is None else round(ratio, 2)}


def clipseg_calls(seg, processor, prompts):
    """Return the two CLIPSeg usages compared, as ``call(image) -> {stage: seconds}``.

    ``seg`` must have ``prompts`` set already (ours encodes them once, outside the calls).
    """
    model, device, n = seg.runner.model, seg.device, len(prompts)

    def reference(img):
        t0 = time.perf_counter()
        inputs = processor(text=prompts, images=[img] * n, padding=True,
                           return_tensors='pt').to(device)
        t1 = time.perf_counter()
        with torch.inference_mode():
            model(**inputs)
        _sync(device)
        t2 = time.perf_counter()
        return {'preprocess': t1 - t0, 'model': t2 - t1, 'total': t2 - t0}

    def ours(img):
        t0 = time.perf_counter()
        result = seg.segment(img)
        return {**result.timings, 'total': time.perf_counter() - t0}

    return {'reference': reference, 'ours': ours}


def bench_clipseg(seg, frame, counts, repeats, probe_args):
    """Rows comparing the reference CLIPSeg usage with ``seg`` for each prompt count.

    The calls are interleaved (for each repeat, for each prompt count: reference, then
    ours) so that load from other processes on a shared machine hits both sides alike.
    Peak memory comes from one call in a fresh child process per implementation and
    prompt count (``--memory-probe``), so neither side reuses the other's freed heap.
    """
    processor = transformers.CLIPSegProcessor.from_pretrained(seg.runner.model.name_or_path)
    calls, set_prompts_s = {}, {}
    for n in counts:
        # One segmenter per prompt set, sharing the loaded model.
        seg_n = ClipSegSegmenter(seg.runner, threshold=seg.threshold,
                                 min_area_px=seg.min_area_px, max_objects=seg.max_objects)
        t0 = time.perf_counter()
        seg_n.set_prompts(PROMPT_WORDS[:n])
        set_prompts_s[n] = time.perf_counter() - t0
        calls[n] = clipseg_calls(seg_n, processor, PROMPT_WORDS[:n])
    times = {(n, impl): {} for n in counts for impl in ('reference', 'ours')}
    for i in range(repeats + 1):  # i == 0 is the warm-up
        for n in counts:
            img = np.ascontiguousarray(np.roll(frame, 13 * (i + 1) + 100 * n, axis=1))
            for impl, call in calls[n].items():
                for stage, sec in call(img).items():
                    if i:
                        times[n, impl].setdefault(stage, []).append(sec)
    rows = []
    for n in counts:
        ratio = (np.median(times[n, 'reference']['total'])
                 / np.median(times[n, 'ours']['total']))
        for impl in ('reference', 'ours'):
            memory = _memory_probe(impl, n, probe_args)
            if impl == 'ours':
                rows.append(_row('clipseg', 'ours', n, 'set_prompts', [set_prompts_s[n]]))
            for stage, values in times[n, impl].items():
                total = stage == 'total'
                rows.append(_row('clipseg', impl, n, stage, values,
                                 memory if total else None, ratio if total else None))
    return rows


def _memory_probe(impl, n, probe_args):
    command = [sys.executable, '-m', 'benchmarks.bench_engine', '--memory-probe', impl,
               '--prompts', str(n), *probe_args]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])['peak_mem_mb']


def memory_probe(impl, n, models, device, precision):
    """Print the peak memory growth of one CLIPSeg call of ``impl`` in this fresh process."""
    seg = create_segmenter('clipseg', clipseg_model=str(Path(models) / 'clipseg'),
                           device=device, precision=precision, allow_random_weights=True)
    processor = transformers.CLIPSegProcessor.from_pretrained(seg.runner.model.name_or_path)
    prompts = PROMPT_WORDS[:n]
    seg.set_prompts(prompts)
    call = clipseg_calls(seg, processor, prompts)[impl]
    memory = PeakMemory(seg.device)
    with memory.measure():
        call(_frame())
    print(json.dumps({'impl': impl, 'prompts': n, 'peak_mem_mb': round(memory.peak_mb, 1)}))


def bench_sam(sam, device, dtype, frame, counts, repeats):
    """Rows comparing SamPredictor (one predict per box) with SamRefiner (one batched call)."""
    rng = np.random.default_rng(0)
    predictor = SamPredictor(sam)
    refiner = SamRefiner(sam, device, dtype)
    rows = []
    enc_ref, enc_ours = [], []
    mem_ref, mem_ours = PeakMemory(device), PeakMemory(device)
    for i in range(repeats):
        img = np.ascontiguousarray(np.roll(frame, 17 * (i + 1), axis=0))
        with torch.inference_mode():
            with mem_ref.measure():
                t0 = time.perf_counter()
                predictor.set_image(img)
                _sync(device)
                enc_ref.append(time.perf_counter() - t0)
            with mem_ours.measure():
                t0 = time.perf_counter()
                refiner.embed(img)
                _sync(device)
                enc_ours.append(time.perf_counter() - t0)
    rows.append(_row('sam', 'reference', 1, 'set_image', enc_ref, mem_ref.peak_mb))
    rows.append(_row('sam', 'ours', 1, 'embed', enc_ours, mem_ours.peak_mb,
                     np.median(enc_ref) / np.median(enc_ours)))
    for n in counts:
        x0 = rng.uniform(0, 400, n)
        y0 = rng.uniform(0, 300, n)
        boxes = np.stack([x0, y0, x0 + rng.uniform(40, 240, n), y0 + rng.uniform(40, 180, n)],
                         axis=1).astype(np.float32)
        dec_ref, dec_ours = [], []
        with torch.inference_mode():
            for i in range(3):
                t0 = time.perf_counter()
                for box in boxes:
                    predictor.predict(box=box, multimask_output=True)
                _sync(device)
                t1 = time.perf_counter()
                masks, _ = refiner.predict(img, boxes)
                masks.cpu()
                t2 = time.perf_counter()
                if i:
                    dec_ref.append(t1 - t0)
                    dec_ours.append(t2 - t1)
        rows.append(_row('sam', 'reference', n, 'predict_all_boxes', dec_ref))
        rows.append(_row('sam', 'ours', n, 'predict_all_boxes', dec_ours, None,
                         np.median(dec_ref) / np.median(dec_ours)))
    return rows


def main(argv=None):
    """Parse the options, run both benchmarks and print JSON and a table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--prompts', default='1,3,10', help='prompt counts (default 1,3,10)')
    parser.add_argument('--repeats', type=int, default=5,
                        help='timed CLIPSeg frames per prompt count (default 5)')
    parser.add_argument('--sam-repeats', type=int, default=1,
                        help='timed SAM image encodings per implementation (default 1)')
    parser.add_argument('--models', type=Path, default=None,
                        help='directory from zs_perception.testing.random_models (default: '
                             'write full-size random models to a temporary directory)')
    parser.add_argument('--size', choices=('full', 'tiny'), default='full',
                        help='model size when writing models (default full)')
    parser.add_argument('--no-sam', action='store_true', help='skip the SAM comparison')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--precision', default='auto')
    parser.add_argument('--memory-probe', choices=('reference', 'ours'), default=None,
                        help=argparse.SUPPRESS)  # internal: one call in a fresh process
    args = parser.parse_args(argv)
    counts = [int(c) for c in args.prompts.split(',')]
    if args.memory_probe:
        memory_probe(args.memory_probe, counts[0], args.models, args.device, args.precision)
        return 0
    frame = _frame()
    with tempfile.TemporaryDirectory() as tmp:
        models = args.models
        if models is None:
            models = Path(tmp)
            write_random_models(models, size=args.size,
                                sam_type='none' if args.no_sam else None)
        checkpoints = sorted(Path(models).glob('sam_*.pth'))
        seg = create_segmenter(
            'clipseg', clipseg_model=str(Path(models) / 'clipseg'), device=args.device,
            precision=args.precision, allow_random_weights=True, max_objects=20)
        probe_args = ['--models', str(models), '--device', args.device,
                      '--precision', args.precision]
        rows = bench_clipseg(seg, frame, counts, args.repeats, probe_args)
        if not args.no_sam and checkpoints:
            sam_type = checkpoints[0].stem[len('sam_'):]
            sam = load_sam(str(checkpoints[0]), sam_type, seg.device, allow_random_weights=True)
            rows += bench_sam(sam, seg.device, seg.runner.dtype, frame, counts,
                              args.sam_repeats)
    device = seg.device
    meta = {
        'device': torch.cuda.get_device_name(device) if device.type == 'cuda'
        else f'{platform.processor() or platform.machine()} ({os.cpu_count()} cores)',
        'torch_threads': torch.get_num_threads(),
        'dtype': str(seg.runner.dtype), 'size': args.size, 'frame': list(frame.shape),
        'torch': torch.__version__, 'transformers': transformers.__version__,
        'load_average_1_5_15min': [round(x, 2) for x in os.getloadavg()],
    }
    emit('segmentation engine vs reference usage', rows, meta)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
