"""zero_guidance: one SAM encoder pass, batched points, duplicates removed, goal filter."""

from pathlib import Path

import numpy as np
import pytest

from zs_perception.segmentation.zero_guidance import _touching_groups, ZeroGuidanceSegmenter


@pytest.fixture(scope='module')
def seg(backend_models, tiny_models):
    seg = ZeroGuidanceSegmenter.from_settings(
        sam_checkpoint=str(Path(tiny_models) / 'sam_tiny.pth'), sam_model_type='tiny',
        clip_model=backend_models['clip'], vocabulary=['mug', 'chair', 'floor'], device='cpu',
        threshold=0.0, min_area_px=0, allow_random_weights=True)
    seg.points_per_side = 4
    seg.points_per_batch = 6
    seg.set_thresholds(mask_quality_iou=0.0, stability_iou=0.0)
    return seg


@pytest.fixture(scope='module')
def image():
    img = np.full((120, 160, 3), 90, np.uint8)
    img[20:70, 30:90] = (220, 30, 30)
    return img


def test_encoder_once_points_batched_duplicates_removed(seg, image):
    sam = seg.refiner.sam
    encoder_calls, decoder_batches = [], []
    hooks = [sam.image_encoder.register_forward_hook(lambda *a: encoder_calls.append(1)),
             sam.mask_decoder.register_forward_hook(
                 lambda module, args, kwargs, out: decoder_batches.append(
                     kwargs['sparse_prompt_embeddings'].shape[0]), with_kwargs=True)]
    result = seg.segment(image)
    for hook in hooks:
        hook.remove()
    assert len(encoder_calls) == 1
    assert decoder_batches == [6, 6, 4]  # 16 grid points in batches of 6
    assert result.instances and all(i.prompt_index == -1 for i in result.instances)
    assert all(i.label in seg.vocabulary for i in result.instances)
    # Duplicates removed: no two kept segments of the same label overlap by more than nms_iou.
    seg.set_thresholds(nms_iou=0.3)
    masks, _ = seg.masks(image)
    seg.set_thresholds(nms_iou=1.0)
    all_masks, _ = seg.masks(image)
    seg.set_thresholds(nms_iou=0.7)
    assert 0 < len(masks) < len(all_masks) <= 3 * 16


def test_goal_keeps_only_matching_labels(seg, image):
    seg.set_prompts([])
    masks, _ = seg.masks(image)
    labels, _ = seg.label(image, masks)
    top = seg.vocabulary[int(np.bincount(labels).argmax())]
    report = seg.set_prompts([top])
    assert report.active == [top] and seg.vocabulary[0] == top
    result = seg.segment(image)
    assert result.instances and {i.label for i in result.instances} == {top}
    assert {i.prompt_index for i in result.instances} == {0}
    seg.set_prompts(['zebra'])  # a goal outside the vocabulary joins it
    assert seg.vocabulary[0] == 'zebra'
    assert all(i.label == 'zebra' for i in seg.segment(image).instances)
    seg.set_prompts([])


def test_neighbours_with_same_label_merge():
    masks = np.zeros((4, 20, 20), bool)
    masks[0, 2:8, 2:8] = True
    masks[1, 2:8, 9:14] = True     # 1 px from mask 0, same label: merged
    masks[2, 12:18, 2:8] = True    # same label, far away: separate
    masks[3, 2:8, 15:19] = True    # touches mask 1 but another label: separate
    groups = _touching_groups(masks, np.array([0, 0, 0, 1]))
    assert sorted(map(sorted, groups)) == [[0, 1], [2], [3]]


def test_bad_settings_and_input(seg, image):
    with pytest.raises(ValueError, match='vocabulary must be a list'):
        ZeroGuidanceSegmenter(seg.refiner, seg.clip, vocabulary='mug')
    with pytest.raises(ValueError, match='vocabulary is empty'):
        ZeroGuidanceSegmenter(seg.refiner, seg.clip, vocabulary=['  '])
    with pytest.raises(ValueError, match='context_weight must be a number'):
        seg.set_thresholds(context_weight=2)
    with pytest.raises(ValueError, match='uint8'):
        seg.segment(image.astype(float))
