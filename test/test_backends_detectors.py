"""OWLv2 / Grounding DINO detectors: parity with the transformers usage, caching, loading."""

from benchmarks.bench_backends import reference_detect
import numpy as np
import pytest
import torch
from transformers import GroundingDinoForObjectDetection, GroundingDinoProcessor
from transformers import Owlv2ForObjectDetection, Owlv2Processor

from zs_perception.segmentation.base import ModelLoadError
from zs_perception.segmentation.detectors import GroundingDinoDetector, load_detector

CPU = torch.device('cpu')
TEXTS = ['mug', 'a red cup', 'keyboard']
_HF = {'owlv2': (Owlv2Processor, Owlv2ForObjectDetection),
       'grounding_dino': (GroundingDinoProcessor, GroundingDinoForObjectDetection)}


@pytest.fixture(scope='module')
def image():
    return np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8)


@pytest.mark.parametrize('name', ['owlv2', 'grounding_dino'])
def test_detections_equal_transformers_post_processing(name, backend_models, image):
    detector = load_detector(name, backend_models[name], CPU, torch.float32,
                             allow_random_weights=True)
    processor_cls, model_cls = _HF[name]
    processor = processor_cls.from_pretrained(backend_models[name])
    model = model_cls.from_pretrained(backend_models[name]).eval()
    with torch.inference_mode():
        detector.set_texts(TEXTS, TEXTS)
        ours = detector.detect(image)
        boxes, scores, labels = reference_detect(processor, model, image, TEXTS, name)
    assert ours.boxes.shape == boxes.shape and boxes.shape[0] > 0
    torch.testing.assert_close(ours.boxes, boxes, atol=1e-4, rtol=0)
    torch.testing.assert_close(ours.scores, scores, atol=1e-4, rtol=0)
    if name == 'owlv2':
        assert torch.equal(ours.prompt_indices, labels)
    assert ours.prompt_indices.min() >= 0 and ours.prompt_indices.max() < len(TEXTS)


def test_owlv2_encodes_each_phrase_once(backend_models, image):
    detector = load_detector('owlv2', backend_models['owlv2'], CPU, torch.float32, True)
    calls = []
    handle = detector.model.owlv2.text_model.register_forward_hook(
        lambda module, args, out: calls.append(args[0].shape[0] if args else 1))
    with torch.inference_mode():
        detector.set_texts(['mug', 'pen'], ['mug', 'pen'])
        first = detector.detect(image)
        detector.detect(image)
        detector.set_texts(['pen', 'mug', 'cup'], ['pen', 'mug', 'cup'])
        second = detector.detect(image)
    handle.remove()
    assert len(calls) == 2  # once for the first goal, once for the one new phrase
    assert first.prompt_indices.max() <= 1 and second.prompt_indices.max() <= 2


def test_grounding_dino_reuses_text_backbone(backend_models, image):
    detector = load_detector('grounding_dino', backend_models['grounding_dino'], CPU,
                             torch.float32, True)
    calls = []
    handle = detector.model.model.text_backbone.backbone.register_forward_hook(
        lambda *args: calls.append(1))
    with torch.inference_mode():
        detector.set_texts(TEXTS, TEXTS)
        a = detector.detect(image)
        b = detector.detect(image)
        detector.set_texts(TEXTS[:1], TEXTS[:1])
        detector.detect(image)
    handle.remove()
    assert len(calls) == 2
    assert torch.equal(a.scores, b.scores)


def test_grounding_dino_phrase_of_each_token(backend_models):
    detector = load_detector('grounding_dino', backend_models['grounding_dino'], CPU,
                             torch.float32, True)
    assert GroundingDinoDetector.caption(['Red Mug ', 'drill']) == 'red mug. drill.'
    detector.set_texts(['red mug', 'drill'], ['red mug', 'drill'])
    tokens = detector.tokenizer.convert_ids_to_tokens(detector._tokens['input_ids'][0])
    phrase = detector._token_phrase[:len(tokens)].tolist()
    assert list(zip(tokens, phrase)) == [('[CLS]', -1), ('red', 0), ('mug', 0), ('.', -1),
                                         ('drill', 1), ('.', -1), ('[SEP]', -1)]


def test_loading_errors_say_what_and_how(backend_models, tmp_path):
    with pytest.raises(ModelLoadError, match='RANDOM'):
        load_detector('owlv2', backend_models['owlv2'], CPU, torch.float32)
    with pytest.raises(ModelLoadError, match="'clip' model, not the 'owlv2'"):
        load_detector('owlv2', backend_models['clip'], CPU, torch.float32, True)
    with pytest.raises(ModelLoadError, match='does not exist.*huggingface-cli download'):
        load_detector('grounding_dino', str(tmp_path / 'missing'), CPU, torch.float32)
    with pytest.raises(ValueError, match="expected one of \\('owlv2', 'grounding_dino'\\)"):
        load_detector('yolo', '', CPU, torch.float32)
