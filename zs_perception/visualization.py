"""Instance label images, per-track colours and a debug overlay drawn on the source image.

ROS-free (numpy and OpenCV); the node publishes what these functions return.
"""

from typing import Sequence

import cv2
import numpy as np

# Well-separated colours (RGB) for track ids; id k uses entry k % len.
_PALETTE = np.array([
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
], dtype=np.uint8)


def track_color(track_id: int) -> np.ndarray:
    """Return the ``(3,)`` ``uint8`` RGB colour of a track id (the same id, the same colour)."""
    return _PALETTE[int(track_id) % len(_PALETTE)]


def label_image(masks: Sequence[np.ndarray], shape) -> np.ndarray:
    """Combine instance masks into one label image.

    Args:
        masks: ``N`` ``(H, W)`` ``bool`` masks, highest score first, ``N <= 255``.
        shape: ``(H, W)`` of the image (used when ``N == 0``).

    Returns:
        ``(H, W)`` ``uint8``: 0 background, ``k`` where ``masks[k - 1]`` is True. Where
        masks overlap the higher-scoring (earlier) object wins.

    Raises:
        ValueError: more than 255 masks, or a mask of another size.

    """
    if len(masks) > 255:
        raise ValueError(f'label_image: at most 255 objects fit a uint8 label image, got '
                         f'{len(masks)}; lower max_objects.')
    labels = np.zeros(tuple(shape), dtype=np.uint8)
    for k in range(len(masks), 0, -1):
        mask = masks[k - 1]
        if mask.shape != labels.shape:
            raise ValueError(f'label_image: mask {k - 1} is {mask.shape}, expected '
                             f'{labels.shape} (the source image size).')
        np.copyto(labels, np.uint8(k), where=mask)
    return labels


def draw_overlay(rgb: np.ndarray, labels: np.ndarray, boxes: Sequence[np.ndarray],
                 captions: Sequence[str], track_ids: Sequence[int],
                 alpha: float = 0.45) -> np.ndarray:
    """Draw tinted masks, boxes and captions on a copy of an image.

    Args:
        rgb: ``(H, W, 3)`` ``uint8`` RGB source image.
        labels: ``(H, W)`` ``uint8`` label image from :func:`label_image`.
        boxes: per object ``(4,)`` ``[x0, y0, x1, y1]`` pixels, x1/y1 exclusive, enclosing
            the object's label pixels.
        captions: per object text drawn above its box (ASCII).
        track_ids: per object track id, which picks its colour.
        alpha: mask tint opacity in ``[0, 1]``.

    Returns:
        ``(H, W, 3)`` ``uint8`` RGB, a new array.

    """
    out = rgb.copy()
    height, width = labels.shape
    for k, (box, track_id) in enumerate(zip(boxes, track_ids), start=1):
        # Tint object k's pixels, working on its box only.
        x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
        x1, y1 = min(width, int(np.ceil(box[2]))), min(height, int(np.ceil(box[3])))
        if x1 <= x0 or y1 <= y0:
            continue
        region = out[y0:y1, x0:x1]
        solid = np.empty_like(region)
        solid[:] = track_color(track_id)
        blended = cv2.addWeighted(region, 1.0 - alpha, solid, alpha, 0.0)
        cv2.copyTo(blended, (labels[y0:y1, x0:x1] == k).view(np.uint8), region)
    for box, caption, track_id in zip(boxes, captions, track_ids):
        color = tuple(int(c) for c in track_color(track_id))
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        cv2.rectangle(out, (x0, y0), (max(x0, x1 - 1), max(y0, y1 - 1)), color, 2)
        text = caption.encode('ascii', 'replace').decode('ascii')
        cv2.putText(out, text, (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, color, 1,
                    cv2.LINE_AA)
    return out
