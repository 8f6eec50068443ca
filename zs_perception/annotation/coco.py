"""COCO instance segmentation JSON: masks as run-length encoding (RLE) via pycocotools.

The file loads with ``pycocotools.coco.COCO`` and ``annToMask`` gives back each mask bit for
bit. Layout (the standard keys, plus the extras marked *)::

    info, licenses
    images:      id, file_name (relative to the input folder), width, height,
                 *tags (image tags used as prompts, when tagging ran), *depth_file,
                 *intrinsics {fx, fy, cx, cy} (replay directories with depth)
    annotations: id, image_id, category_id, segmentation {size: [h, w], counts: str},
                 area (pixels), bbox [x, y, w, h] (pixels, of the mask), iscrowd 0,
                 *score (the backend's confidence in [0, 1]), *box_3d (with depth, see
                 ``docs/annotation.md``)
    categories:  id (1-based, in vocabulary order), name, supercategory

Ids are assigned when the file is assembled, in input order, so a resumed run writes the same
file as an uninterrupted one.
"""

from typing import Any, Dict, List, Sequence

import numpy as np
from pycocotools import mask as mask_utils


def encode_mask(mask: np.ndarray) -> Dict[str, Any]:
    """Encode an ``(H, W)`` ``bool`` mask as compressed COCO RLE.

    Returns:
        ``{'size': [H, W], 'counts': str}`` (JSON-ready).

    Raises:
        ValueError: the mask is not two-dimensional.

    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f'encode_mask: expected an (H, W) mask, got shape {mask.shape}.')
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {'size': [int(v) for v in rle['size']], 'counts': rle['counts'].decode('ascii')}


def decode_mask(rle: Dict[str, Any]) -> np.ndarray:
    """Decode :func:`encode_mask` output back to an ``(H, W)`` ``bool`` mask."""
    return mask_utils.decode({'size': rle['size'],
                              'counts': rle['counts'].encode('ascii')}).astype(bool)


def mask_area_and_box(rle: Dict[str, Any]):
    """Return the pixel area and the ``[x, y, w, h]`` box (pixels) of an encoded mask."""
    coded = {'size': rle['size'], 'counts': rle['counts'].encode('ascii')}
    return int(mask_utils.area(coded)), [float(v) for v in mask_utils.toBbox(coded)]


def build_coco(records: Sequence[Dict[str, Any]], categories: Sequence[str],
               info: Dict[str, Any]) -> Dict[str, Any]:
    """Assemble the COCO document from per-image records (see ``run.annotate_frame``).

    Args:
        records: one per annotated image, in input order.
        categories: category names; an instance label's category id is its index + 1.
        info: the COCO ``info`` object.

    Raises:
        ValueError: a record holds a label that is not a category.

    """
    ids = {name: i + 1 for i, name in enumerate(categories)}
    images: List[Dict[str, Any]] = []
    annotations: List[Dict[str, Any]] = []
    for image_id, record in enumerate(records, start=1):
        image = {'id': image_id, 'file_name': record['file_name'], 'width': record['width'],
                 'height': record['height']}
        for extra in ('tags', 'depth_file', 'intrinsics'):
            if record.get(extra) is not None:
                image[extra] = record[extra]
        images.append(image)
        for instance in record['instances']:
            if instance['label'] not in ids:
                raise ValueError(f'build_coco: label {instance["label"]!r} of '
                                 f'{record["file_name"]!r} is not one of the categories.')
            annotation = {
                'id': len(annotations) + 1, 'image_id': image_id,
                'category_id': ids[instance['label']],
                'segmentation': instance['segmentation'], 'area': instance['area'],
                'bbox': instance['bbox'], 'iscrowd': 0, 'score': instance['score']}
            if 'box_3d' in instance:
                annotation['box_3d'] = instance['box_3d']
            annotations.append(annotation)
    return {
        'info': info, 'licenses': [], 'images': images, 'annotations': annotations,
        'categories': [{'id': ids[name], 'name': name, 'supercategory': 'object'}
                       for name in categories],
    }
