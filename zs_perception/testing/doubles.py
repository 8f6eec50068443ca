"""Test doubles for the node's tests and benchmarks: segmenters, a clock (no ROS, no model).

Only tests and benchmarks use these: they stand in for a real backend where what is
measured or checked is the node around it.
"""

import time
from typing import Dict, List, Tuple

import numpy as np

from zs_perception.segmentation.base import Instance, PromptReport, SegmentationResult, Segmenter


class FakeClock:
    """A clock that stands still until the test moves it: ``clock.t`` seconds."""

    def __init__(self, t: float = 0.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


class FixedMaskSegmenter(Segmenter):
    """Returns a known mask for each active prompt that names one; optionally slow.

    Args:
        masks: ``{label: (H, W) bool mask}``; a prompt equal to a label gets that mask
            when the image is ``H`` x ``W`` (other prompts and sizes give nothing).
        delay_s: seconds each :meth:`segment` call sleeps (a slow engine).
        score: score of the first instance (each next one 0.01 lower).

    Attributes:
        calls: number of :meth:`segment` calls.
        prompt_history: every prompt list set, in order.
        engine_s: ``(wall-clock end s, seconds)`` of every :meth:`segment` call.

    """

    def __init__(self, masks: Dict[str, np.ndarray], delay_s: float = 0.0, score: float = 0.9):
        self.masks = dict(masks)
        self.delay_s = delay_s
        self.score = score
        self.threshold = 0.4
        self.min_area_px = 100
        self.max_objects = 20
        self._prompts: List[str] = []
        self.calls = 0
        self.prompt_history: List[List[str]] = []
        self.engine_s: List[Tuple[float, float]] = []

    def set_prompts(self, prompts):
        self._prompts = [str(p) for p in prompts]
        self.prompt_history.append(list(self._prompts))
        return PromptReport(active=list(self._prompts))

    @property
    def prompts(self):
        return list(self._prompts)

    def segment(self, image):
        t0 = time.perf_counter()
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        instances = []
        for index, label in enumerate(self._prompts):
            mask = self.masks.get(label)
            if mask is None or mask.shape != image.shape[:2]:
                continue
            rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
            box = np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], np.float32)
            instances.append(Instance(label, index, self.score - 0.01 * index, box, mask))
        self.engine_s.append((time.time(), time.perf_counter() - t0))
        return SegmentationResult(instances, {'fake': self.delay_s})
