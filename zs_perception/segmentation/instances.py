"""Per-prompt probability maps to instances: threshold, connected components, minimum area."""

from typing import List, Sequence, Tuple

import cv2
import numpy as np

from zs_perception.segmentation.base import Instance


def find_instances(probabilities: np.ndarray, labels: Sequence[str], threshold: float,
                   min_area_px: int, max_objects: int) -> Tuple[List[Instance], np.ndarray]:
    """Split each prompt's probability map into instances.

    An instance is an 8-connected component of pixels with probability
    ``>= threshold`` covering at least ``min_area_px`` pixels. Its score is the
    mean probability over the component's pixels (robust to single hot
    pixels, unlike the maximum).

    Args:
        probabilities: ``(N, H, W)`` ``float32`` in ``[0, 1]``, one map per
            prompt at the input image's resolution.
        labels: ``N`` prompt labels.
        threshold: pixel probability threshold in ``[0, 1]``.
        min_area_px: smallest component kept, in pixels.
        max_objects: at most this many instances over all prompts.

    Returns:
        ``(instances, peaks)``: instances sorted by score, highest first, each
        with an ``(H, W)`` bool mask and its exclusive ``[x0, y0, x1, y1]`` box;
        and ``(K, 2)`` ``float32`` pixel ``(x, y)`` of each instance's most
        probable pixel.

    """
    candidates = []
    components = []
    for index, prob in enumerate(probabilities):
        binary = (prob >= threshold).view(np.uint8)
        count, label_img, stats, _ = cv2.connectedComponentsWithStats(binary, connectivity=8)
        if count <= 1:
            continue
        areas = stats[:, cv2.CC_STAT_AREA]
        sums = np.bincount(label_img.ravel(), weights=prob.ravel(), minlength=count)
        components.append((label_img, stats))
        keep = np.flatnonzero(areas[1:] >= max(min_area_px, 1)) + 1
        scores = sums[keep] / areas[keep]
        candidates.extend((float(score), index, len(components) - 1, int(k))
                          for score, k in zip(scores, keep))
    candidates.sort(key=lambda c: -c[0])
    height, width = probabilities.shape[1:]
    instances, peaks = [], []
    for score, index, comp, k in candidates[:max(int(max_objects), 0)]:
        label_img, stats = components[comp]
        x, y, w, h = (int(v) for v in stats[k, :4])
        inside = label_img[y:y + h, x:x + w] == k
        mask = np.zeros((height, width), dtype=bool)
        mask[y:y + h, x:x + w] = inside
        peak = np.where(inside, probabilities[index, y:y + h, x:x + w], -1.0).argmax()
        py, px = divmod(int(peak), w)
        peaks.append((x + px, y + py))
        instances.append(Instance(
            label=labels[index], prompt_index=index, score=min(max(score, 0.0), 1.0),
            box=np.array([x, y, x + w, y + h], dtype=np.float32), mask=mask))
    return instances, np.asarray(peaks, dtype=np.float32).reshape(-1, 2)


def mask_box(mask: np.ndarray) -> np.ndarray:
    """Exclusive ``[x0, y0, x1, y1]`` ``float32`` box of an ``(H, W)`` bool mask's true pixels.

    Returns all zeros for an empty mask.
    """
    ys = np.flatnonzero(mask.any(axis=1))
    xs = np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return np.zeros(4, dtype=np.float32)
    return np.array([xs[0], ys[0], xs[-1] + 1, ys[-1] + 1], dtype=np.float32)
