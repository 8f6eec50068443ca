"""YOLO segmentation labels: masks to polygons, one text file per image, and the dataset YAML.

Layout (what Ultralytics' ``segment`` task reads; labels are found by replacing ``images`` with
``labels`` in an image's path)::

    yolo/data.yaml              path, train, val, names {0: first category, ...}
    yolo/images/KEY.ext         the input image (hard link, else a copy)
    yolo/labels/KEY.txt         one line per polygon: class x1 y1 x2 y2 ...

Coordinates are pixel indices divided by the image width and height (0 is the first pixel
column, as Ultralytics' own mask converter writes them), six decimals. Rasterising a line with
``cv2.fillPoly`` at the image size gives back the mask's pixels up to one pixel at its border.

A polygon is one 8-connected part of a mask; its holes are joined to its outline by bridges
that run inside the mask (each hole to the nearest point of what is joined already, so a
bridge never crosses a hole or leaves the part), so ``cv2.fillPoly``'s even-odd filling leaves
the holes empty. A mask of several parts gives several lines with the same class, as
Ultralytics' mask converter writes them.
"""

import os
from pathlib import Path
import shutil
from typing import List, Sequence

import cv2
import numpy as np
import yaml

from zs_perception.annotation.storage import atomic_write, write_text

DECIMALS = 6
# Most holes kept per mask part (the longest outlines); smaller ones are covered by the polygon.
# Real masks have a few; this bounds the time a pathological (noise) mask takes.
MAX_HOLES = 64
# Point-to-point distances between holes and outlines are computed this many at a time.
_BLOCK_ELEMENTS = 1 << 21


def mask_to_polygons(mask: np.ndarray) -> List[np.ndarray]:
    """Trace the parts of a mask as closed polygons, holes bridged in.

    Holes in which every pixel touches the mask (one or two pixels wide) are filled first:
    the polygon then covers them, which is within the one-pixel border tolerance, and a noisy
    mask does not become thousands of bridges. Of the other holes, the :data:`MAX_HOLES` with
    the longest outlines are kept per part.

    Args:
        mask: ``(H, W)`` ``bool``.

    Returns:
        One ``(K, 2)`` ``float64`` array of pixel ``(x, y)`` vertices per 8-connected part
        (``K >= 3``; a one- or two-pixel part repeats its points), largest part first.

    """
    binary = _fill_thin_holes(np.asarray(mask, dtype=bool))
    contours, hierarchy = cv2.findContours(binary, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return []
    hierarchy = hierarchy[0]
    parts = []
    for index, contour in enumerate(contours):
        if hierarchy[index][3] != -1:
            continue  # a hole; joined to its outline below
        holes = []
        child = hierarchy[index][2]
        while child != -1:
            holes.append(contours[child][:, 0, :].astype(np.float64))
            child = hierarchy[child][0]
        holes.sort(key=len, reverse=True)
        outline = _bridge_holes(contour[:, 0, :].astype(np.float64), holes[:MAX_HOLES])
        parts.append((float(cv2.contourArea(contour)), len(contour), _drop_collinear(outline)))
    parts.sort(key=lambda p: (-p[0], -p[1]))
    return [_at_least_three(poly) for _, _, poly in parts]


def _fill_thin_holes(mask: np.ndarray) -> np.ndarray:
    """``uint8`` mask with every background region that has no pixel away from the mask filled."""
    background = (~mask).view(np.uint8)
    count, regions = cv2.connectedComponents(background, connectivity=4)
    away = cv2.erode(background, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT,
                     borderValue=1)
    keep = np.zeros(count, bool)
    keep[np.unique(regions[away > 0])] = True
    keep[0] = True  # label 0: the mask's own pixels
    return np.ascontiguousarray(mask | ~keep[regions], dtype=np.uint8)


def _bridge_holes(outline: np.ndarray, holes: List[np.ndarray]) -> np.ndarray:
    """Join holes to the outline as ``p -> hole loop -> p`` detours, nearest hole first.

    Each hole is joined at its point nearest to what is joined already (Prim's order), so a
    bridge never crosses another hole or leaves the part. The even-odd fill of the result does
    not depend on where a detour is inserted: a bridge is traversed twice and cancels.
    """
    polygon = outline
    best = _nearest_to_outline(holes, outline)  # per hole: (distance², index in hole, point)
    boxes = [(hole.min(axis=0), hole.max(axis=0)) for hole in holes]
    remaining = set(range(len(holes)))
    while remaining:
        pick = min(remaining, key=lambda h: (best[h][0], h))
        remaining.discard(pick)
        _, j, point = best[pick]
        hole = holes[pick]
        i = int(np.flatnonzero((polygon == point).all(axis=1))[0])
        polygon = np.concatenate([polygon[:i + 1], hole[j:], hole[:j + 1], polygon[i:]])
        for h in remaining:  # what is joined grew by this hole: maybe nearer to it now
            gap = np.maximum(np.maximum(boxes[pick][0] - boxes[h][1],
                                        boxes[h][0] - boxes[pick][1]), 0.0)
            if float(gap @ gap) < best[h][0]:  # the boxes' gap bounds the distance from below
                candidate = _nearest(holes[h], hole)
                if candidate[0] < best[h][0]:
                    best[h] = candidate
    return polygon


def _nearest(points: np.ndarray, targets: np.ndarray):
    """Return ``(distance², index in points, target point)`` of the closest pair."""
    best = (np.inf, 0, targets[0])
    block = max(1, _BLOCK_ELEMENTS // len(points))
    for start in range(0, len(targets), block):
        chunk = targets[start:start + block]
        d = ((points[:, None, :] - chunk[None, :, :]) ** 2).sum(axis=2)
        i, j = divmod(int(d.argmin()), d.shape[1])
        if d[i, j] < best[0]:
            best = (float(d[i, j]), i, chunk[j])
    return best


def _nearest_to_outline(holes: List[np.ndarray], outline: np.ndarray) -> list:
    """Per hole, :func:`_nearest` to the outline, from one exact distance transform.

    The outline's integer points are the zeros of a canvas over its box; the exact Euclidean
    distance transform gives every hole point's distance to the outline, the closest hole
    point is the pair's hole end, and the outline point nearest to it the other end.
    """
    if not holes:
        return []
    origin = outline.min(axis=0).astype(np.int64)
    size = outline.max(axis=0).astype(np.int64) - origin + 1
    canvas = np.full((int(size[1]), int(size[0])), 255, np.uint8)
    local = outline.astype(np.int64) - origin
    canvas[local[:, 1], local[:, 0]] = 0
    distance = cv2.distanceTransform(canvas, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    out = []
    for hole in holes:
        cells = hole.astype(np.int64) - origin
        j = int(distance[cells[:, 1], cells[:, 0]].argmin())
        gaps = ((outline - hole[j]) ** 2).sum(axis=1)
        k = int(gaps.argmin())
        out.append((float(gaps[k]), j, outline[k]))
    return out


def _drop_collinear(polygon: np.ndarray) -> np.ndarray:
    """Remove vertices in the middle of straight runs (what CHAIN_APPROX_SIMPLE does)."""
    if len(polygon) < 3:
        return polygon
    before = polygon - np.roll(polygon, 1, axis=0)
    after = np.roll(polygon, -1, axis=0) - polygon
    keep = (before != after).any(axis=1) | (before == 0).all(axis=1)
    return polygon[keep] if keep.sum() >= 3 else polygon


def _at_least_three(polygon: np.ndarray) -> np.ndarray:
    if len(polygon) >= 3:
        return polygon
    return np.concatenate([polygon, polygon[::-1], polygon])[:3]


def normalize_polygons(polygons: Sequence[np.ndarray], width: int, height: int) -> List[list]:
    """Pixel polygons to flat ``[x1, y1, x2, y2, ...]`` lists divided by the image size."""
    scale = np.array([width, height], dtype=np.float64)
    return [[round(float(v), DECIMALS) for v in (poly / scale).ravel()] for poly in polygons]


def polygon_to_mask(coords: Sequence[float], width: int, height: int) -> np.ndarray:
    """Rasterise one normalised polygon (a label line's coordinates) to an ``(H, W)`` bool mask."""
    points = np.asarray(coords, dtype=np.float64).reshape(-1, 2) * [width, height]
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [np.round(points).astype(np.int32)], 1)
    return mask.astype(bool)


def label_lines(instances: Sequence[dict], class_ids: dict) -> str:
    """Return the label file text of one image: ``class x1 y1 ...`` per polygon of each part."""
    lines = []
    for instance in instances:
        cls = class_ids[instance['label']]
        for poly in instance['polygons']:
            lines.append(' '.join([str(cls)] + [f'{v:.{DECIMALS}f}' for v in poly]))
    return ''.join(line + '\n' for line in lines)


def place_image(source: Path, target: Path) -> None:
    """Put the input image at ``target``: a hard link, else a copy (atomic either way)."""
    def write(tmp: Path) -> None:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)

    if target.exists() and target.stat().st_size == source.stat().st_size \
            and target.stat().st_mtime >= source.stat().st_mtime:
        return
    atomic_write(target, write)


def write_dataset_yaml(yolo_dir: Path, categories: Sequence[str]) -> Path:
    """Write ``data.yaml``: the image folder for train and val, and the class names."""
    data = {'path': str(Path(yolo_dir).resolve()), 'train': 'images', 'val': 'images',
            'names': dict(enumerate(categories))}
    header = ('# Written by zs_perception_annotate. train and val are the same images: split\n'
              '# them before training a model you want to evaluate.\n')
    return write_text(Path(yolo_dir) / 'data.yaml',
                      header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
