"""Our engine against the reference usage of transformers and segment_anything (tiny models)."""

from pathlib import Path

from helpers_masks import assert_mask_matches_logits
import numpy as np
import pytest
from segment_anything import SamPredictor
import torch
import torch.nn.functional as F  # noqa: N812

from zs_perception.segmentation.base import Prompt
from zs_perception.segmentation.clipseg import ClipSegRunner, ClipSegSegmenter
from zs_perception.segmentation.instances import find_instances
from zs_perception.segmentation.loading import load_clipseg, load_sam
from zs_perception.segmentation.sam import SamRefiner

CPU = torch.device('cpu')
TEXTS = ['mug', 'a red cup on the desk', 'keyboard', 'chair']


@pytest.fixture(scope='module')
def clipseg(tiny_models):
    model, processor = load_clipseg(str(Path(tiny_models) / 'clipseg'), CPU, torch.float32,
                                    allow_random_weights=True)
    return model, processor, ClipSegRunner(model, processor, CPU, torch.float32)


def _reference_logits(model, processor, image, texts=None, visual=None):
    n = len(texts if texts is not None else visual)
    if texts is not None:
        inputs = processor(text=texts, images=[image] * n, padding=True, return_tensors='pt')
    else:
        inputs = processor(images=[image] * n, visual_prompt=visual, return_tensors='pt')
    with torch.inference_mode():
        return model(**inputs).logits


def test_text_prompt_logits_equal_reference(clipseg, real_rgb):
    model, processor, runner = clipseg
    ref = _reference_logits(model, processor, real_rgb, texts=TEXTS)
    with torch.inference_mode():
        ours = runner.decode(runner.image_activations(runner.preprocess(real_rgb)),
                             runner.encode_texts(TEXTS))
    assert ours.shape == ref.shape == (len(TEXTS), 352, 352)
    assert torch.allclose(ours, ref, atol=1e-4, rtol=0), (ours - ref).abs().max()
    # Not a comparison between flat maps: logits spread, and prompts give different maps.
    assert ref.std() > 0.5
    assert min((ref[i] - ref[j]).abs().mean() for i in range(4) for j in range(i)) > 1e-3


def test_image_prompt_logits_equal_reference(clipseg, real_rgb):
    model, processor, runner = clipseg
    crops = [real_rgb[100:220, 200:330].copy(), real_rgb[300:480, 0:160].copy()]
    ref = _reference_logits(model, processor, real_rgb, visual=crops)
    with torch.inference_mode():
        ours = runner.decode(runner.image_activations(runner.preprocess(real_rgb)),
                             runner.encode_images(crops))
    assert torch.allclose(ours, ref, atol=1e-4, rtol=0), (ours - ref).abs().max()


def test_preprocessing_on_device_equals_processor(clipseg, real_rgb):
    _, processor, runner = clipseg
    ref = processor(images=real_rgb, return_tensors='pt')['pixel_values']
    assert torch.equal(runner.preprocess(real_rgb), ref)


@pytest.fixture(scope='module')
def segmenter_and_reference(clipseg, real_rgb):
    """Our segmenter's result for TEXTS reversed (two embeddings cached) and the reference maps."""
    model, processor, runner = clipseg
    seg = ClipSegSegmenter(runner, threshold=0.5, min_area_px=50, max_objects=100)
    seg.set_prompts(TEXTS[:2])
    seg.set_prompts(TEXTS[::-1])  # reuses two cached embeddings, encodes two new ones
    result = seg.segment(real_rgb)
    ref = _reference_logits(model, processor, real_rgb, texts=TEXTS[::-1])
    ref_prob = F.interpolate(ref[:, None], size=real_rgb.shape[:2], mode='bilinear',
                             align_corners=False)[:, 0].sigmoid().numpy()
    return seg, result, ref_prob


def _assert_instances_equal_reference(seg, result, ref_prob, threshold=None, prompt_shift=0):
    """Our instances against find_instances on the reference maps; keywords mutate the reference.

    Pixels whose reference probability is within 1e-4 of the threshold may differ (ours and
    the reference agree to 2.5e-5).
    """
    threshold = seg.threshold if threshold is None else threshold
    ref_prob = np.roll(ref_prob, prompt_shift, axis=0)
    expected, _ = find_instances(ref_prob, seg.prompts, threshold, seg.min_area_px,
                                 seg.max_objects)

    def order(instances):
        return sorted(instances, key=lambda i: (i.prompt_index, *i.box.tolist()))

    ours, expected = order(result.instances), order(expected)
    assert [(i.label, i.prompt_index) for i in ours] == \
        [(i.label, i.prompt_index) for i in expected]
    for inst, ref in zip(ours, expected):
        tied = np.abs(ref_prob[ref.prompt_index] - threshold) <= 1e-4
        assert not ((inst.mask != ref.mask) & ~tied).any(), inst.label
        assert abs(inst.score - ref.score) < 1e-4


def test_segmenter_with_cached_embeddings_equals_reference(segmenter_and_reference):
    seg, result, ref_prob = segmenter_and_reference
    assert result.probabilities.shape == (4, 480, 640)
    assert np.abs(result.probabilities - ref_prob).max() < 2.5e-5
    assert len(result.instances) > 3, 'random weights on a real image should give components'
    assert {i.prompt_index for i in result.instances} == {0, 1, 2, 3}
    for inst in result.instances:
        assert inst.mask.shape == (480, 640) and inst.mask.dtype == bool
        assert inst.label == TEXTS[::-1][inst.prompt_index]
    _assert_instances_equal_reference(seg, result, ref_prob)


@pytest.mark.parametrize('mutation', [{'threshold': 0.45}, {'prompt_shift': 1}])
def test_a_mutated_clipseg_reference_fails_the_comparison(segmenter_and_reference, mutation):
    with pytest.raises(AssertionError):
        _assert_instances_equal_reference(*segmenter_and_reference, **mutation)


def test_mixed_text_and_image_prompts_match_their_references(clipseg, real_rgb):
    model, processor, runner = clipseg
    crop = real_rgb[100:220, 200:330].copy()
    seg = ClipSegSegmenter(runner)
    seg.set_prompts(['mug', Prompt(label='thing like crop', image=crop), 'chair'])
    probs = seg.segment(real_rgb).probabilities
    ref_text = _reference_logits(model, processor, real_rgb, texts=['mug', 'chair'])
    ref_image = _reference_logits(model, processor, real_rgb, visual=[crop])
    ref = torch.cat([ref_text[:1], ref_image, ref_text[1:]])
    ref_prob = F.interpolate(ref[:, None], size=real_rgb.shape[:2], mode='bilinear',
                             align_corners=False)[:, 0].sigmoid().numpy()
    # Logits within 1e-4, times the sigmoid's largest slope (0.25).
    assert np.abs(probs - ref_prob).max() < 2.5e-5


def _boxes_and_points():
    boxes = np.array([[40, 60, 300, 400], [350, 20, 630, 250], [0, 0, 640, 480],
                      [200.5, 180.25, 260.75, 240]], dtype=np.float32)
    points = np.array([[150, 200], [500, 100], [320, 240], [230, 210]], dtype=np.float32)
    return boxes, points


@pytest.fixture(scope='module', params=[False, True], ids=['boxes', 'boxes+points'])
def sam_and_predictor(request, tiny_models, real_rgb):
    """Our batched SAM masks and SamPredictor's candidates, one predict call per box."""
    sam = load_sam(str(Path(tiny_models) / 'sam_tiny.pth'), 'tiny', CPU,
                   allow_random_weights=True)
    boxes, points = _boxes_and_points()
    with_points = request.param
    predictor = SamPredictor(sam)
    predictor.set_image(real_rgb)
    refiner = SamRefiner(sam, CPU, torch.float32)
    with torch.inference_mode():
        masks, scores = refiner.predict(real_rgb, boxes, points if with_points else None)
    candidates = []
    for k, box in enumerate(boxes):
        kwargs = {'point_coords': points[k:k + 1], 'point_labels': np.ones(1)} \
            if with_points else {}
        candidates.append(predictor.predict(box=box, multimask_output=True,
                                            return_logits=True, **kwargs)[:2])
    return sam, masks.numpy(), scores.numpy(), candidates


def _assert_sam_equals_predictor(sam, masks, scores, candidates, pick=np.argmax):
    """One decoder call for all boxes against one per box: equal up to ties at the threshold."""
    assert masks.shape == (len(candidates), 480, 640) and masks.dtype == bool
    for k, (logits, iou) in enumerate(candidates):
        best = int(pick(iou))
        assert_mask_matches_logits(masks[k], logits[best], sam.mask_threshold, f'box {k}')
        assert abs(float(scores[k]) - float(iou[best])) < 1e-5
    assert 0 < masks.sum() < masks.size  # not a trivially empty or full comparison


def test_sam_masks_equal_sam_predictor(sam_and_predictor):
    _assert_sam_equals_predictor(*sam_and_predictor)


@pytest.mark.parametrize('pick', [lambda iou: 0, lambda iou: np.argsort(iou)[-2]],
                         ids=['first candidate', 'second best'])
def test_wrong_candidate_selection_fails_the_sam_comparison(sam_and_predictor, pick):
    with pytest.raises(AssertionError):
        _assert_sam_equals_predictor(*sam_and_predictor, pick=pick)


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def test_half_precision_masks_agree_with_fp32(tiny_models, real_rgb):
    """bf16 on the CPU (fp16 too where CUDA is available): masks agree with fp32.

    SAM masks: IoU >= 0.98. CLIPSeg masks: IoU >= 0.98 in fp16 and 0.96 in bf16, whose 8-bit
    mantissa moves probabilities by up to about 0.1 and the tiny model's maps have many
    pixels near the 0.5 threshold.
    """
    precisions = [torch.bfloat16] + ([torch.float16] if torch.cuda.is_available() else [])
    device = torch.device('cuda') if torch.cuda.is_available() else CPU
    boxes, points = _boxes_and_points()

    def run(dtype, dev):
        model, processor = load_clipseg(str(Path(tiny_models) / 'clipseg'), dev, dtype,
                                        allow_random_weights=True)
        seg = ClipSegSegmenter(ClipSegRunner(model, processor, dev, dtype), threshold=0.5)
        seg.set_prompts(TEXTS)
        probs = seg.segment(real_rgb).probabilities
        sam = load_sam(str(Path(tiny_models) / 'sam_tiny.pth'), 'tiny', dev,
                       allow_random_weights=True)
        with torch.inference_mode():
            sam_masks = SamRefiner(sam, dev, dtype).predict(real_rgb, boxes, points)[0]
        return probs >= 0.5, sam_masks.cpu().numpy()

    ref_clip, ref_sam = run(torch.float32, CPU)
    for dtype in precisions:
        dev = CPU if dtype == torch.bfloat16 else device
        clip_masks, sam_masks = run(dtype, dev)
        for a, b in zip(clip_masks, ref_clip):
            assert _iou(a, b) >= (0.96 if dtype == torch.bfloat16 else 0.98), dtype
        for a, b in zip(sam_masks, ref_sam):
            assert _iou(a, b) >= 0.98, dtype
