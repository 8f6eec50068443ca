"""The sam3 backend against the documented transformers usage, on tiny random-weight models.

The documented usage (transformers' SAM 3 model card) runs ``Sam3Processor`` and ``Sam3Model``
once per prompt and ``post_process_instance_segmentation``; the backend runs the vision
encoder once per frame, encodes text once per goal and decodes all prompts in one batch.
The two must give the same instances (masks, boxes, scores) before the backend's own steps
(``min_area_px``, merging, ``max_objects``), which the parity tests switch off.
"""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from transformers import Sam3Processor

from zs_perception.segmentation.base import ModelLoadError, Prompt
from zs_perception.segmentation.factory import create_segmenter
from zs_perception.segmentation.instances import mask_box
from zs_perception.segmentation.sam3 import CPU_PROMPT_BATCH, Sam3Segmenter
from zs_perception.testing.random_models import output_spread
from zs_perception.testing.scene import render_scene

PHRASES = ['red mug', 'a box', 'the table', 'screwdriver', 'blue bottle', 'chair', 'apple',
           'keyboard', 'a small wooden bowl', 'person']
# A threshold the tiny models' scores (instance x presence, about 0.15..0.35) straddle.
THRESHOLD = 0.24


def _real_image():
    """Load a real 640x480 RGB frame from the shared data when present, else a rendered scene."""
    roots = [os.environ.get('ZS_SHARED_DATA', ''),
             str(Path(__file__).resolve().parents[2] / 'shared' / 'data'), '/work/shared/data']
    for root in filter(None, roots):
        path = Path(root) / 'rgbd' / 'tum_office_desk' / 'color.png'
        if path.exists():
            return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return render_scene(640, 480, seed=2)['rgb']


@pytest.fixture(scope='module')
def image():
    return _real_image()


def _segmenter(directory, **kwargs):
    settings = {'threshold': THRESHOLD, 'min_area_px': 0, 'max_objects': 1000,
                'merge_iou': 1.0}
    settings.update(kwargs)
    return Sam3Segmenter.from_settings(sam3_model=directory, device='cpu',
                                       allow_random_weights=True, **settings)


def _documented(model, processor, image, phrases, threshold):
    """(score, prompt index, mask, box) per instance, the model card's way, best first."""
    found = []
    with torch.inference_mode():
        for index, phrase in enumerate(phrases):
            inputs = processor(images=image, text=phrase, return_tensors='pt')
            outputs = model(**inputs)
            result = processor.post_process_instance_segmentation(
                outputs, threshold=threshold, mask_threshold=0.5,
                target_sizes=inputs.get('original_sizes').tolist())[0]
            for score, box, mask in zip(result['scores'], result['boxes'], result['masks']):
                found.append((float(score), index, mask.bool().numpy(), box.numpy()))
    found.sort(key=lambda f: -f[0])
    return found


@pytest.mark.parametrize('variant', ['sam3', 'sam3_lite_text'])
@pytest.mark.parametrize('count', [1, 3, 10])
def test_equals_the_documented_usage(sam3_models, image, variant, count):
    phrases = PHRASES[:count]
    seg = _segmenter(sam3_models[variant])
    processor = Sam3Processor.from_pretrained(sam3_models[variant])
    # A threshold that keeps about half of the queries (random weights: scores vary by model).
    everything = _documented(seg.model, processor, image, phrases, 0.0)
    threshold = float(np.median([f[0] for f in everything])) + 1e-6
    reference = _documented(seg.model, processor, image, phrases, threshold)
    assert 0 < len(reference) < len(everything)
    seg.set_thresholds(threshold=threshold)
    seg.set_prompts(phrases)
    _assert_same(seg.segment(image).instances, reference, phrases)


def _assert_same(ours, reference, phrases):
    """Check that the backend's instances equal the documented usage's (:func:`_documented`)."""
    # The backend never returns an empty mask (min_area_px is at least 1 pixel).
    reference = [r for r in reference if r[2].any()]
    assert len(ours) == len(reference)
    for instance, (score, index, mask, box) in zip(ours, reference):
        assert instance.prompt_index == index and instance.label == phrases[index]
        assert instance.score == pytest.approx(score, abs=1e-5)
        # Batching changes the float rounding (about 1e-7), which can flip a pixel whose
        # probability is within that of the 0.5 cut.
        assert np.count_nonzero(instance.mask != mask) <= max(2, mask.size // 100_000)
        np.testing.assert_allclose(instance.box, mask_box(mask), atol=1)
        assert instance.track_id == -1


def test_mask_head_only_for_prompts_over_the_threshold(sam3_models, image):
    seg = _segmenter(sam3_models['sam3'])
    seg.prompt_batch = 0  # one batch: the hook sees the mask head's whole batch
    processor = Sam3Processor.from_pretrained(sam3_models['sam3'])
    best = {}  # prompt index -> its best query score
    for score, index, _, _ in _documented(seg.model, processor, image, PHRASES, 0.0):
        best[index] = max(best.get(index, 0.0), score)
    tops = sorted(best.values())
    # Between the prompts' best scores: about half of the prompts have no query over it.
    threshold = (tops[len(tops) // 2 - 1] + tops[len(tops) // 2]) / 2
    present = sorted(i for i, s in best.items() if s >= threshold)
    assert 0 < len(present) < len(PHRASES)
    reference = _documented(seg.model, processor, image, PHRASES, threshold)
    batches = []
    seg.model.mask_decoder.prompt_cross_attn.register_forward_hook(
        lambda m, a, kw, o: batches.append(kw['query'].shape[0]), with_kwargs=True)
    seg.set_thresholds(threshold=threshold)
    seg.set_prompts(PHRASES)
    np.testing.assert_allclose(seg.query_scores(image).max(dim=1).values.numpy(),
                               [best[i] for i in range(len(PHRASES))], atol=1e-5)
    skipped = seg.segment(image).instances
    assert batches == [len(present)]  # the mask head ran for the present prompts only
    assert {i.prompt_index for i in skipped} <= set(present)
    _assert_same(skipped, reference, PHRASES)
    seg.skip_absent_masks = False
    every = seg.segment(image).instances
    assert batches == [len(present), len(PHRASES)]
    assert len(every) == len(skipped)
    for a, b in zip(every, skipped):
        assert (a.label, a.prompt_index, a.score) == (b.label, b.prompt_index, b.score)
        np.testing.assert_array_equal(a.mask, b.mask)
        np.testing.assert_array_equal(a.box, b.box)
    # No query of any prompt over the threshold: no mask head at all, and no instances.
    seg.skip_absent_masks = True
    seg.set_thresholds(threshold=tops[-1] + 1e-3)
    assert seg.segment(image).instances == []
    assert batches == [len(present), len(PHRASES)]
    assert _documented(seg.model, processor, image, PHRASES, tops[-1] + 1e-3) == []
    # In batches of 3 prompts: the same instances.
    seg.set_thresholds(threshold=threshold)
    seg.prompt_batch = 3
    batches.clear()
    chunked = seg.segment(image).instances
    assert batches == [3] * (len(present) // 3) + [len(present) % 3] * (len(present) % 3 > 0)
    _assert_same(chunked, reference, PHRASES)


def test_tiny_model_is_not_saturated(sam3_models, image):
    seg = _segmenter(sam3_models['sam3'])
    processor = Sam3Processor.from_pretrained(sam3_models['sam3'])
    with torch.inference_mode():
        out = seg.model(**processor(images=image, text='red mug', return_tensors='pt'))
        other = seg.model(**processor(images=image, text='chair', return_tensors='pt'))
    for logits in (out.pred_logits, out.pred_masks):
        spread = output_spread(logits)
        assert spread['saturated'] < 0.05 and spread['std'] > 1e-3, spread
    assert (out.pred_logits - other.pred_logits).abs().max() > 1e-3  # the prompt matters


def test_vision_once_per_frame_text_once_per_goal(sam3_models, image):
    seg = _segmenter(sam3_models['sam3'])
    assert seg.prompt_batch == CPU_PROMPT_BATCH  # the CPU default
    seg.prompt_batch = 0  # all prompts in one batch (the default on an accelerator)
    calls = {'vision': 0, 'text': [], 'detr': []}
    seg.model.vision_encoder.register_forward_hook(
        lambda m, a, o: calls.__setitem__('vision', calls['vision'] + 1))
    seg.model.text_encoder.register_forward_hook(
        lambda m, a, kw, o: calls['text'].append(kw['input_ids'].shape[0]), with_kwargs=True)
    seg.model.detr_decoder.register_forward_hook(
        lambda m, a, kw, o: calls['detr'].append(kw['vision_features'].shape[0]),
        with_kwargs=True)
    seg.set_prompts(PHRASES)
    assert calls['text'] == [10]
    for _ in range(3):
        seg.segment(image)
    assert calls['vision'] == 3  # one vision pass per frame for 10 prompts
    assert calls['detr'] == [10, 10, 10]  # one batched decoder call per frame
    assert calls['text'] == [10]  # no text encoding per frame
    seg.set_prompts(PHRASES)  # the same goal: nothing encoded
    seg.set_prompts(PHRASES[:3] + ['a new thing'])  # only the new phrase is encoded
    assert calls['text'] == [10, 1]
    seg.set_prompts([])
    assert seg.segment(image).instances == []
    assert calls['vision'] == 3  # no prompts: no model run
    seg.set_prompts(PHRASES)
    seg.prompt_batch = CPU_PROMPT_BATCH
    calls['detr'].clear()
    seg.segment(image)
    assert calls['vision'] == 4 and calls['detr'] == [CPU_PROMPT_BATCH] * 10


def test_thresholds_and_merging(sam3_models, image):
    seg = _segmenter(sam3_models['sam3'], merge_iou=1.0)
    seg.set_prompts(PHRASES[:3])
    everything = seg.segment(image).instances
    areas = sorted(int(i.mask.sum()) for i in everything)
    seg.set_thresholds(min_area_px=areas[len(areas) // 2])
    big = seg.segment(image).instances
    assert big and all(i.mask.sum() >= areas[len(areas) // 2] for i in big)
    seg.set_thresholds(min_area_px=0, max_objects=2)
    assert [i.score for i in seg.segment(image).instances] == \
        [i.score for i in everything[:2]]
    seg.set_thresholds(max_objects=1000, merge_iou=0.3)
    merged = seg.segment(image).instances
    assert 0 < len(merged) < len(everything)
    for a in merged:
        for b in merged:
            if a is not b and a.prompt_index == b.prompt_index:
                iou = (a.mask & b.mask).sum() / max((a.mask | b.mask).sum(), 1)
                assert iou <= 0.3
    # Every candidate mask is inside the merged instance of its prompt it was merged into.
    for candidate in everything:
        assert any(c.prompt_index == candidate.prompt_index
                   and not np.any(candidate.mask & ~c.mask) for c in merged)
    scores = [i.score for i in merged]
    assert scores == sorted(scores, reverse=True)
    with pytest.raises(ValueError, match='merge_iou'):
        seg.set_thresholds(merge_iou=1.5)


def test_prompts_report_truncation_and_image_prompts(sam3_models, image):
    seg = _segmenter(sam3_models['sam3'])
    long = ' '.join(['wooden'] * 40)
    report = seg.set_prompts(['a box', long, 'a box ', Prompt('crop', image=image[:10, :10])])
    assert report.active == ['a box', long]
    assert [label for label, _ in report.truncated] == [long]
    assert len(report.dropped) == 2
    seg.segment(image)  # a truncated phrase still runs


def test_bad_images_are_rejected(sam3_models):
    seg = _segmenter(sam3_models['sam3'])
    seg.set_prompts(['a box'])
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32),
                np.zeros((10, 10, 4), np.uint8)):
        with pytest.raises(ValueError, match='Expected'):
            seg.segment(bad)
    assert isinstance(seg.segment(np.zeros((37, 53, 3), np.uint8)).instances, list)


def test_loading_rules(sam3_models, tmp_path):
    with pytest.raises(ModelLoadError, match='RANDOM'):
        Sam3Segmenter.from_settings(sam3_model=sam3_models['sam3'], device='cpu')
    with pytest.raises(ModelLoadError, match='sam2_video'):
        Sam3Segmenter.from_settings(sam3_model=sam3_models['sam2_video'], device='cpu',
                                    allow_random_weights=True)
    with pytest.raises(ModelLoadError, match='does not exist'):
        Sam3Segmenter.from_settings(sam3_model=str(tmp_path / 'nothing'), device='cpu')
    with pytest.raises(ValueError, match='threshold'):
        Sam3Segmenter.from_settings(sam3_model=sam3_models['sam3'], threshold=2.0)


def test_factory_builds_it(sam3_models):
    seg = create_segmenter('sam3', sam3_model=sam3_models['sam3_lite_text'], device='cpu',
                           allow_random_weights=True, threshold=0.2)
    assert isinstance(seg, Sam3Segmenter) and type(seg.model).__name__ == 'Sam3LiteTextModel'
