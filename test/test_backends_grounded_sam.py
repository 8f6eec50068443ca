"""grounded_sam: SAM masks equal SamPredictor per box, batching, caching, bad input."""

from pathlib import Path

from benchmarks.bench_backends import clip_boxes, reference_detect, reference_sam_masks
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


@pytest.mark.parametrize('detector', ['owlv2', 'grounding_dino'])
def test_masks_equal_reference_grounded_sam(detector, backend_models, tiny_models,
                                            image):
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
        boxes, scores, _ = reference_detect(
            _processor(detector, backend_models), _model(detector, backend_models), image,
            TEXTS, detector)
    order = torch.argsort(scores, descending=True)[:5]
    ref_logits = reference_sam_masks(SamPredictor(seg.refiner.sam), image,
                                     clip_boxes(boxes[order], image), return_logits=True)
    assert len(result.instances) == 5
    ours = sorted(result.instances, key=lambda i: -i.score)
    np.testing.assert_allclose([i.score for i in ours], scores[order].numpy(), atol=1e-4)
    for k, (inst, ref) in enumerate(zip(ours, ref_logits)):
        assert_mask_matches_logits(inst.mask, ref, seg.refiner.sam.mask_threshold, f'box {k}')
        assert inst.label in TEXTS and TEXTS[inst.prompt_index] == inst.label


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
