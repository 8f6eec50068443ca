"""estimate_object_geometry on real RGB-D frames with ground truth (YCB-Video, MIT licence).

test/data/ycbv_video0000 holds three real Asus Xtion frames with visible masks, 6D poses and
object boxes (see its PROVENANCE.md). Position errors are measured to the centre of each
object's box (``center_obj_aabb`` in ``gt.json``) in the camera frame.
"""

import json
import pathlib

import cv2
import numpy as np
import pytest

from zs_perception.geometry import CameraIntrinsics, depth_to_metres, estimate_object_geometry

DATA = pathlib.Path(__file__).resolve().parent / 'data' / 'ycbv_video0000'
FRAMES = ('000001', '000005', '000010')
NOT_OCCLUDED = ('009_gelatin_box', '061_foam_brick')


def _frame(frame, dilate_px):
    gt = json.loads((DATA / frame / 'gt.json').read_text())
    cam = json.loads((DATA / frame / 'camera.json').read_text())
    raw = cv2.imread(str(DATA / frame / 'depth.png'), cv2.IMREAD_UNCHANGED)
    depth = depth_to_metres(raw, float(gt['depth_scale']))
    intr = CameraIntrinsics.from_k(cam['K'], depth.shape[1], depth.shape[0])
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate_px + 1,) * 2)
    masks, centres, names = [], [], []
    for obj in gt['objects']:
        mask = cv2.imread(str(DATA / frame / obj['mask_visib']), cv2.IMREAD_UNCHANGED) > 0
        if dilate_px:
            mask = cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)
        t = np.array(obj['T_cam_from_obj'])
        masks.append(mask)
        centres.append(t[:3, :3] @ np.array(obj['center_obj_aabb']) + t[:3, 3])
        names.append(obj['name'])
    geos = estimate_object_geometry(np.stack(masks), depth, intr)
    return dict(zip(names, zip(geos, centres)))


CASES = [(f, n, d) for f in FRAMES for n in NOT_OCCLUDED for d in (0, 3)]


@pytest.mark.parametrize('frame, name, dilate_px', CASES)
def test_unoccluded_real_objects_within_10_mm(frame, name, dilate_px):
    geo, centre = _frame(frame, dilate_px)[name]
    assert geo.has_pose and geo.status == 'ok'
    assert not geo.occluded and not geo.truncated
    assert np.linalg.norm(geo.position - centre) < 0.010
    assert geo.extents[0] >= geo.extents[1] >= geo.extents[2]
    assert 0.0 < geo.pose_confidence <= 1.0


@pytest.mark.parametrize('frame', FRAMES)
def test_the_mug_behind_the_brick_is_flagged_occluded(frame):
    for dilate_px in (0, 3):
        geo, _ = _frame(frame, dilate_px)['025_mug']
        assert geo.has_pose and geo.occluded


def test_occluded_mug_gets_less_confidence_than_the_free_gelatin_box():
    for frame in FRAMES:
        objects = _frame(frame, 0)
        assert objects['025_mug'][0].pose_confidence < objects['009_gelatin_box'][
            0].pose_confidence
