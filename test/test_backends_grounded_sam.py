"""grounded_sam: SAM masks equal SamPredictor per box, batching, caching, bad input."""

from pathlib import Path

from benchmarks.bench_backends import clip_boxes, reference_detect
from helpers_masks import assert_mask_matches_logits
import numpy as np
import pytest
from segment_anything import SamPredictor
import torch

from zs_perception.segmentation.base import Prompt
from zs_perception.segmentation.grounded_sam import GroundedSamSegmenter
from zs_perception.segmentation.prompting import prompt_key

TEXTS = ['mug', 'keyboard', 'chair']


def _make(backend_models, tiny_models, detector, **kw):
    return GroundedSamSegmenter.from_settings(
        detector=detector, detector_model=backend_models[detector],
        sam_checkpoint=str(Path(tiny_models) / 'sam_tiny.pth'), sam_model_type='tiny',
        device='cpu', allow_random_weights=True, **kw)


@pytest.fixture(scope='module')
def image():
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    img[120:300, 200:420] = (200, 40, 40)
    return img


@pytest.fixture(scope='module', params=['owlv2', 'grounding_dino'])
def ours_and_reference(request, backend_models, tiny_models, real_rgb):
    """Our grounded_sam result and the reference's inputs for the 5 best boxes of TEXTS.

    On a real frame, where SAM's best candidate is not the same for every box.
    """
    image = real_rgb
    detector = request.param
    seg = _make(backend_models, tiny_models, detector, threshold=0.0, min_area_px=0,
                max_objects=5, nms_iou=1.0)
    seg.set_prompts(TEXTS)
    decoder_calls = []
    handle = seg.refiner.sam.mask_decoder.register_forward_hook(
        lambda *args: decoder_calls.append(1))
    result = seg.segment(image)
    handle.remove()
    assert len(decoder_calls) == 1  # every box in one decoder call
    # Reference: the documented detector usage, the 5 best boxes, SamPredictor per box.
    with torch.inference_mode():
        boxes, scores, labels = reference_detect(
            _processor(detector, backend_models), _model(detector, backend_models), image,
            TEXTS, detector)
    order = torch.argsort(scores, descending=True)[:5]
    predictor = SamPredictor(seg.refiner.sam)
    predictor.set_image(image)
    candidates = [predictor.predict(box=box, multimask_output=True, return_logits=True)[:2]
                  for box in clip_boxes(boxes[order], image)]
    reference = {'scores': scores[order].numpy(), 'candidates': candidates,
                 'labels': labels[order].numpy() if detector == 'owlv2' else None}
    return seg, result, reference


def _assert_equal_to_reference(seg, result, reference, pick=np.argmax,
                               mask_threshold=None, label_shift=0):
    """Our instances against the reference; the keywords mutate the reference."""
    ours = sorted(result.instances, key=lambda i: -i.score)
    assert len(ours) == len(reference['candidates']) == 5
    np.testing.assert_allclose([i.score for i in ours], reference['scores'], atol=1e-4)
    threshold = seg.refiner.sam.mask_threshold if mask_threshold is None else mask_threshold
    for k, (inst, (logits, iou)) in enumerate(zip(ours, reference['candidates'])):
        assert_mask_matches_logits(inst.mask, logits[int(pick(iou))], threshold, f'box {k}')
        assert inst.label in TEXTS and TEXTS[inst.prompt_index] == inst.label
    if reference['labels'] is not None:
        expected = (reference['labels'] + label_shift) % len(TEXTS)
        assert [i.prompt_index for i in ours] == expected.tolist()


def test_masks_equal_reference_grounded_sam(ours_and_reference):
    _assert_equal_to_reference(*ours_and_reference)


@pytest.mark.parametrize('mutation', [
    {'pick': lambda iou: 0},                           # SAM's first candidate, not the best
    {'pick': lambda iou: np.argsort(iou)[-2]},         # the second best candidate
    {'mask_threshold': 0.1},                           # a changed mask threshold
])
def test_a_mutated_reference_fails_the_comparison(ours_and_reference, mutation):
    with pytest.raises(AssertionError):
        _assert_equal_to_reference(*ours_and_reference, **mutation)


# Grounding DINO's reference labels are token strings, not prompt indices: OWLv2 only.
@pytest.mark.parametrize('ours_and_reference', ['owlv2'], indirect=True)
def test_an_off_by_one_prompt_index_fails_the_comparison(ours_and_reference):
    with pytest.raises(AssertionError):
        _assert_equal_to_reference(*ours_and_reference, label_shift=1)


def _processor(detector, backend_models):
    from transformers import GroundingDinoProcessor, Owlv2Processor
    cls = Owlv2Processor if detector == 'owlv2' else GroundingDinoProcessor
    return cls.from_pretrained(backend_models[detector])


def _model(detector, backend_models):
    from transformers import GroundingDinoForObjectDetection, Owlv2ForObjectDetection
    cls = Owlv2ForObjectDetection if detector == 'owlv2' else GroundingDinoForObjectDetection
    return cls.from_pretrained(backend_models[detector]).eval()


def test_prompts_thresholds_and_bad_input(backend_models, tiny_models, image):
    seg = _make(backend_models, tiny_models, 'owlv2', threshold=0.0, min_area_px=0,
                max_objects=3)
    assert seg.segment(image).instances == []  # no prompts: no objects
    report = seg.set_prompts([' mug ', 'MUG', '', Prompt('crop', image=image[:10, :10])])
    assert report.active == ['mug'] and len(report.dropped) == 3
    assert 'not supported by grounded_sam' in report.dropped[-1][1]
    result = seg.segment(image)
    assert 0 < len(result.instances) <= 3
    assert {'detect', 'sam_encode', 'sam_decode'} <= set(result.timings)
    seg.set_thresholds(threshold=1.0)
    assert seg.segment(image).instances == []
    seg.set_prompts([])
    assert seg.prompts == [] and seg.segment(image).instances == []
    with pytest.raises(ValueError, match='threshold must be a number in \\[0, 1\\]'):
        seg.set_thresholds(threshold=1.5)
    with pytest.raises(ValueError, match='no threshold'):
        seg.set_thresholds(bogus=1)
    with pytest.raises(ValueError, match='uint8'):
        seg.segment(image.astype(np.float32))
    with pytest.raises(ValueError, match='shape'):
        seg.segment(image[..., 0])


def test_text_encoded_once_per_goal(backend_models, tiny_models, image):
    seg = _make(backend_models, tiny_models, 'owlv2', threshold=0.0, min_area_px=0)
    calls = []
    handle = seg.detector.model.owlv2.text_model.register_forward_hook(
        lambda *args: calls.append(1))
    seg.set_prompts(TEXTS)
    for k in range(3):
        frame = image.copy()
        frame[0, 0, 0] = k
        seg.segment(frame)
    handle.remove()
    assert len(calls) == 1
    assert prompt_key(Prompt('mug', text='mug')) in seg.detector._cache
