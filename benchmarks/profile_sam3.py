r"""Profile the sam3 backend per submodule: shared (once per frame) vs per-prompt work.

For one 640x480 frame and N prompts, the backend's vision encoder (ViT, FPN neck) runs once
and its DETR encoder, DETR decoder, scoring and mask head run as one batch of N. This
script measures each of those submodules two ways, with random weights (speed only):

- ``gmac``: multiply-accumulates counted by ``torch.utils.flop_counter`` over the frame
  (a machine-independent measure of the work; a pass with the counter on);
- ``ms``: wall-clock time of the submodule (forward hooks), median over ``--repeats``
  frames, for each prompt count.

Rows are per submodule; ``per_prompt`` says whether its work grows with N. The summary
row ``per prompt / shared`` is the ratio P / V of one prompt's work to the shared vision
work, which decides what batching can gain: N prompts cost about V + N P, so ours at N
costs (V + N P) / (V + P) of ours at N = 1 and the documented usage (everything once per
prompt) N (V + P). The mask head runs for every prompt here (``skip_absent_masks`` off),
so the per-prompt figures are those of prompts that are all present, and the N prompts
run as one batch (``prompt_batch`` 0; ``--batches`` compares batch sizes).

Usage (from the repo root, after ``source scripts/env.sh``)::

    python -m benchmarks.profile_sam3 [--size reduced|reduced_vitb|full|tiny]
        [--side PX] [--prompts 1,10] [--repeats 2] [--device cpu] [--no-time]
        [--batches 0,1,2,5]

``--side`` runs the full architecture at another input side (a multiple of 42 px, e.g. 504;
only with ``--size full``); ``--no-time`` only counts the work (one pass per prompt count);
``--batches`` adds a table of the time per frame at the largest prompt count with the
prompts' DETR and mask head run in batches of each size (``0``: all in one batch).
"""

import argparse
import time

from benchmarks.bench_sam3 import build_sam3, PHRASES, THRESHOLD
from benchmarks.report import emit
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from zs_perception.segmentation.device import resolve_device, resolve_dtype
from zs_perception.segmentation.sam3 import Sam3Segmenter
from zs_perception.testing import random_models
from zs_perception.testing.scene import render_scene

# (row name, what runs, runs once per prompt in the backend). What runs is a submodule path
# in Sam3Model or '@' and a method of the backend's mask head (Sam3MaskHead), which calls
# the mask decoder's submodules and convolutions of its own.
PARTS = (
    ('vision: ViT backbone', 'vision_encoder.backbone', False),
    ('vision: FPN neck', 'vision_encoder.neck', False),
    ('DETR encoder', 'detr_encoder', True),
    ('DETR decoder', 'detr_decoder', True),
    ('scoring', 'dot_product_scoring', True),
    ('mask head: skip terms (once)', '@image_terms', False),
    ('mask head: prompt cross-attention', 'mask_decoder.prompt_cross_attn', True),
    ('mask head: pixel embeddings', '@pixel_embeddings', True),
    ('mask head: query masks', '@mask_logits', True),
)
# What the summary adds up (the prompt cross-attention is inside the pixel embeddings).
_TOTALS = ('vision: ViT backbone', 'vision: FPN neck', 'DETR encoder', 'DETR decoder',
           'scoring', 'mask head: skip terms (once)', 'mask head: pixel embeddings',
           'mask head: query masks')


def _wrap_methods(seg, before, after):
    """Call ``before(name)`` / ``after(name)`` around the mask head's methods in :data:`PARTS`.

    Returns a function that restores them.
    """
    head = seg.mask_head
    saved = dict(vars(head))  # wrappers of an enclosing call, if any
    for name, target, _ in PARTS:
        if target.startswith('@'):
            method = getattr(head, target[1:])

            def wrapper(*args, _method=method, _name=name, **kwargs):
                before(_name)
                try:
                    return _method(*args, **kwargs)
                finally:
                    after(_name)
            setattr(head, target[1:], wrapper)

    def restore():
        vars(head).clear()
        vars(head).update(saved)
    return restore


class PartTimer:
    """Wall-clock seconds spent in each of :data:`PARTS` (forward hooks, method wrappers)."""

    def __init__(self, seg, device):
        self.seconds = {name: 0.0 for name, _, _ in PARTS}
        self._device = device
        self._handles = []
        for name, path, _ in PARTS:
            if path.startswith('@'):
                continue
            module = seg.model.get_submodule(path)
            self._handles.append(module.register_forward_pre_hook(
                lambda m, a, name=name: self._start(name)))
            self._handles.append(module.register_forward_hook(
                lambda m, a, o, name=name: self._stop(name)))
        self._restore = _wrap_methods(seg, self._start, self._stop)
        self._started = {}

    def _clock(self):
        if self._device.type == 'cuda':
            torch.cuda.synchronize(self._device)
        return time.perf_counter()

    def _start(self, name):
        self._started[name] = self._clock()

    def _stop(self, name):
        self.seconds[name] += self._clock() - self._started.pop(name)

    def reset(self):
        """Zero the accumulated times."""
        self.seconds = dict.fromkeys(self.seconds, 0.0)

    def remove(self):
        """Remove the hooks and wrappers."""
        for handle in self._handles:
            handle.remove()
        self._restore()


def _cpu_attention_flops(query, key, value, *args, out_shape=None, **kwargs):
    """Count the CPU flash-attention kernel's FLOPs (the counter knows only the CUDA ones)."""
    return sdpa_flop_count(query, key, value)


def count_gmac(seg, image):
    """Multiply-accumulates (1e9) per part of :data:`PARTS` for one ``seg.segment(image)``.

    The backend calls the model's submodules directly, so the counter names them by their
    class (``Sam3VisionModel.backbone``, ``Sam3DetrEncoder``, ...); the mask head's methods
    are counted as the counter's total while they run.
    """
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_attention_flops}
    found = dict.fromkeys((name for name, _, _ in PARTS), 0.0)
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        started = {}
        restore = _wrap_methods(
            seg, lambda name: started.__setitem__(name, counter.get_total_flops()),
            lambda name: found.__setitem__(
                name, found[name] + (counter.get_total_flops() - started.pop(name)) / 2e9))
        try:
            seg.segment(image)
        finally:
            restore()
    counts = counter.get_flop_counts()
    model = seg.model
    for name, path, _ in PARTS:
        if path.startswith('@'):
            continue
        head, _, rest = path.partition('.')
        key = '.'.join(filter(None, (type(model.get_submodule(head)).__name__, rest)))
        found[name] = sum(counts.get(key, {}).values()) / 2e9
    return found


def profile(seg, image, counts, repeats, timed):
    """Rows: per part, GMAC and median ms at each prompt count, and per prompt at the last."""
    work, times = {}, {}
    timer = PartTimer(seg, seg.device)
    for count in counts:
        seg.set_prompts(PHRASES[:count])
        with torch.inference_mode():
            work[count] = count_gmac(seg, image)
            samples = []
            for _ in range(repeats if timed else 0):
                timer.reset()
                seg.segment(image)
                samples.append(dict(timer.seconds))
        times[count] = {name: float(np.median([s[name] for s in samples])) * 1e3
                        if samples else None for name in timer.seconds}
        print({'prompts': count, 'gmac': work[count], 'ms': times[count]}, flush=True)
    timer.remove()
    top = counts[-1]
    rows = []
    for name, _, per_prompt in PARTS:
        row = {'part': name, 'per_prompt': per_prompt}
        for count in counts:
            row[f'gmac_n{count}'] = round(work[count][name], 2)
        for count in counts:
            ms = times[count][name]
            row[f'ms_n{count}'] = None if ms is None else round(ms, 1)
        rows.append(row)
    rows.append(_summary(work, times, top, counts))
    return rows


def _summary(work, times, top, counts):
    """Return the ratio P / V: one prompt's work (at ``top`` prompts, / ``top``) / shared."""
    row = {'part': f'per prompt / shared (at N = {top})', 'per_prompt': None}
    per_prompt = {name for name, _, p in PARTS if p}

    def ratio(values):
        if values is None or any(values[n] is None for n in _TOTALS):
            return None
        shared = sum(values[n] for n in _TOTALS if n not in per_prompt)
        prompt = sum(values[n] for n in _TOTALS if n in per_prompt) / top
        return round(prompt / shared, 3) if shared else None

    for count in counts:
        row[f'gmac_n{count}'] = ratio(work[top]) if count == top else None
    for count in counts:
        row[f'ms_n{count}'] = ratio(times[top]) if count == top else None
    return row


def batch_rows(seg, image, count, batches, repeats):
    """Rows: ms per frame at ``count`` prompts for each ``prompt_batch``, calls alternating."""
    seg.set_prompts(PHRASES[:count])
    times = {size: [] for size in batches}
    with torch.inference_mode():
        for size in batches:  # warm-up
            seg.prompt_batch = size
            seg.segment(image)
        for _ in range(repeats):
            for size in batches:
                seg.prompt_batch = size
                start = time.perf_counter()
                seg.segment(image)
                if seg.device.type == 'cuda':
                    torch.cuda.synchronize(seg.device)
                times[size].append(time.perf_counter() - start)
    seg.prompt_batch = 0
    base = float(np.median(times[batches[0]]))
    return [{'prompts': count, 'prompt_batch': size,
             'ms': round(float(np.median(times[size])) * 1e3, 1),
             'vs_first': round(float(np.median(times[size])) / base, 3),
             'repeats': repeats} for size in batches]


def main(argv=None):
    """Profile one configuration and print JSON then a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', choices=random_models.SAM3_SIZES, default='reduced')
    parser.add_argument('--side', type=int, default=None,
                        help='input side (px) of the full architecture (with --size full)')
    parser.add_argument('--prompts', default='1,10')
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--precision', default='auto')
    parser.add_argument('--no-time', action='store_true', help='count the work only')
    parser.add_argument('--batches', default='',
                        help='prompt_batch values to compare at the largest prompt count '
                             "(e.g. 0,1,2,5; '' skips it)")
    args = parser.parse_args(argv)
    if args.side is not None and args.size != 'full':
        parser.error(f'--side {args.side} needs --size full (got --size {args.size})')
    device = resolve_device(args.device)
    dtype = resolve_dtype(args.precision, device)
    model, processor = build_sam3(args.size, device, dtype, side=args.side)
    seg = Sam3Segmenter(model, processor, device, dtype, threshold=THRESHOLD, min_area_px=1,
                        max_objects=100, merge_iou=1.0, skip_absent_masks=False,
                        prompt_batch=0)
    image = render_scene(640, 480, seed=2)['rgb']
    counts = [int(c) for c in args.prompts.split(',') if c.strip()]
    rows = profile(seg, image, counts, args.repeats, not args.no_time)
    meta = {'size': args.size, 'model_input_px': processor.image_processor.size['height'],
            'device': str(device), 'dtype': str(dtype), 'threads': torch.get_num_threads(),
            'repeats': 0 if args.no_time else args.repeats,
            'parameters_m': round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
            'weights': 'random (speed only)'}
    emit('sam3_profile', rows, meta=meta)
    batches = [int(b) for b in args.batches.split(',') if b.strip()]
    if batches:
        emit('sam3_prompt_batch', batch_rows(seg, image, counts[-1], batches, args.repeats),
             meta=meta)


if __name__ == '__main__':
    main()
