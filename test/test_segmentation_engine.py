"""Behaviour of the segmentation engine: prompts, caching, bad input, errors (tiny models)."""

from pathlib import Path

from helpers_masks import assert_mask_matches_logits
import numpy as np
import pytest
import torch

from zs_perception.segmentation import sam as sam_module
from zs_perception.segmentation.base import DeviceOutOfMemoryError, Prompt, SegmentationResult
from zs_perception.segmentation.factory import BACKENDS, create_segmenter
from zs_perception.segmentation.instances import find_instances, mask_box

PROMPTS = ['mug', 'keyboard', 'chair', 'bottle', 'monitor', 'phone', 'book', 'lamp', 'pen',
           'bag']


def _make(tiny_models, backend='clipseg', **settings):
    settings.setdefault('threshold', 0.5)
    settings.setdefault('min_area_px', 30)
    return create_segmenter(
        backend, clipseg_model=str(Path(tiny_models) / 'clipseg'),
        sam_checkpoint=str(Path(tiny_models) / 'sam_tiny.pth'), sam_model_type='tiny',
        device='cpu', precision='fp32', allow_random_weights=True, **settings)


@pytest.fixture(scope='module')
def clipseg(tiny_models):
    return _make(tiny_models)


@pytest.fixture(scope='module')
def clipseg_sam(tiny_models):
    return _make(tiny_models, 'clipseg_sam')


class CallCounter:
    """Counts forward calls of a module and the batch rows it saw."""

    def __init__(self, module):
        self.calls = 0
        self.rows = 0
        self._handle = module.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.calls += 1
        self.rows += (output[0] if isinstance(output, tuple) else output).shape[0]

    def remove(self):
        self._handle.remove()


def _frames(rgb, n, seed):
    """``n`` distinct frames made from ``rgb``, different for each ``seed`` and from ``rgb``."""
    return [np.roll(rgb, 7 * (i + 1) + 50 * seed, axis=1) for i in range(n)]


def test_unknown_backend_lists_valid_names(tiny_models):
    with pytest.raises(ValueError) as err:
        _make(tiny_models, 'segformer')
    assert set(BACKENDS) == {'clipseg', 'clipseg_sam', 'grounded_sam', 'zero_guidance',
                             'clip_dense', 'sam3'}
    for name in BACKENDS:
        assert name in str(err.value)


@pytest.mark.parametrize('bad', [
    np.zeros((480, 640, 3), np.float32),
    np.zeros((480, 640), np.uint8),
    np.zeros((480, 640, 4), np.uint8),
    np.zeros((1, 640, 3), np.uint8),
    [[0, 0, 0]],
])
def test_bad_images_raise_value_error_saying_what_was_expected(clipseg, bad):
    clipseg.set_prompts(['mug'])
    with pytest.raises(ValueError, match=r'Expected .*\(H, W, 3\)|at least 2x2'):
        clipseg.segment(bad)


def test_bad_prompt_image_or_type_raises(clipseg):
    with pytest.raises(ValueError, match='Image prompt 0'):
        clipseg.set_prompts([Prompt(label='crop', image=np.zeros((8, 8), np.uint8))])
    with pytest.raises(ValueError, match='expected a str or a Prompt'):
        clipseg.set_prompts([42])


def test_empty_prompt_list_returns_no_objects(clipseg, real_rgb):
    report = clipseg.set_prompts([])
    assert report.active == [] and clipseg.prompts == []
    result = clipseg.segment(real_rgb)
    assert isinstance(result, SegmentationResult)
    assert result.instances == [] and result.probabilities.shape == (0, 480, 640)


def test_prompt_report_strips_drops_and_truncates(clipseg, real_rgb):
    long_text = ' '.join(['red mug'] * 60)
    report = clipseg.set_prompts(['  mug ', 'MUG', '', '   ', 'chair', long_text, 'Chair'])
    assert report.active == ['mug', 'chair', long_text]
    assert clipseg.prompts == report.active
    reasons = dict(report.dropped)
    assert set(reasons) == {'MUG', '', '   ', 'Chair'}
    assert 'duplicate' in reasons['MUG'] and 'empty' in reasons['']
    assert len(report.truncated) == 1 and report.truncated[0][0] == long_text
    assert '77' in report.truncated[0][1]
    result = clipseg.segment(real_rgb)
    assert result.probabilities.shape == (3, 480, 640)


def test_vision_encoder_runs_once_per_frame_for_any_number_of_prompts(clipseg, real_rgb):
    vision = clipseg.runner.model.clip.vision_model
    embeddings = CallCounter(vision.embeddings)
    last_layer = CallCounter(vision.encoder.layers[-1])  # never read by the decoder
    decoder_layer = CallCounter(clipseg.runner.model.decoder.layers[0])
    try:
        for n in (1, 10):
            clipseg.set_prompts(PROMPTS[:n])
            before = embeddings.calls, decoder_layer.calls
            for frame in _frames(real_rgb, 2, seed=n):
                clipseg.segment(frame)
            assert embeddings.calls - before[0] == 2, f'{n} prompts'
            assert decoder_layer.calls - before[1] == 2  # one batched decoder pass per frame
            assert decoder_layer.rows >= n
        before = embeddings.calls
        clipseg.segment(real_rgb.copy())
        clipseg.segment(real_rgb.copy())  # same pixels as the previous frame: not re-encoded
        assert embeddings.calls - before == 1
        assert last_layer.calls == 0
    finally:
        embeddings.remove()
        last_layer.remove()
        decoder_layer.remove()


def test_same_frame_with_new_prompts_reuses_the_image_encoding(clipseg, real_rgb):
    frame = _frames(real_rgb, 1, seed=99)[0]
    embeddings = CallCounter(clipseg.runner.model.clip.vision_model.embeddings)
    try:
        clipseg.set_prompts(['mug'])
        clipseg.segment(frame)
        clipseg.set_prompts(['mug', 'chair'])
        result = clipseg.segment(frame)
        assert embeddings.calls == 1
        assert 'encode' not in result.timings and 'decode' in result.timings
    finally:
        embeddings.remove()


def test_prompt_embeddings_are_computed_once_and_cached(clipseg, real_rgb):
    text_model = CallCounter(clipseg.runner.model.clip.text_model.embeddings)
    try:
        clipseg.set_prompts(['red apple', 'green pen'])
        assert (text_model.calls, text_model.rows) == (1, 2)
        for frame in _frames(real_rgb, 2, seed=0):
            clipseg.segment(frame)
        assert text_model.calls == 1
        clipseg.set_prompts(['green pen', 'red apple', 'blue lamp'])  # only 'blue lamp' is new
        assert (text_model.calls, text_model.rows) == (2, 3)
        clipseg.set_prompts(['Red  Apple'])
        assert text_model.calls == 2
    finally:
        text_model.remove()


def test_image_prompt_is_encoded_once(clipseg, real_rgb):
    crop = real_rgb[100:200, 200:300].copy()
    vision = CallCounter(clipseg.runner.model.clip.vision_model.embeddings)
    try:
        report = clipseg.set_prompts([Prompt(label='like this', image=crop), 'mug',
                                      Prompt(label='again', image=crop.copy())])
        assert report.active == ['like this', 'mug'] and report.dropped[0][1].startswith('dup')
        clipseg.set_prompts(['mug', Prompt(label='like this', image=crop)])
        assert vision.calls == 1
        result = clipseg.segment(real_rgb)
        assert {inst.label for inst in result.instances} <= {'mug', 'like this'}
    finally:
        vision.remove()


def test_instances_sorted_capped_and_thresholds_change_live(clipseg, real_rgb):
    clipseg.set_prompts(PROMPTS[:5])
    clipseg.set_thresholds(threshold=0.5, min_area_px=30, max_objects=100)
    many = clipseg.segment(real_rgb).instances
    assert len(many) > 3
    scores = [inst.score for inst in many]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    for inst in many:
        assert np.array_equal(inst.box, mask_box(inst.mask)) and inst.mask.sum() >= 30
    clipseg.set_thresholds(max_objects=3)
    capped = clipseg.segment(real_rgb).instances
    assert [i.score for i in capped] == scores[:3]
    clipseg.set_thresholds(min_area_px=10 ** 7, max_objects=100)
    assert clipseg.segment(real_rgb).instances == []
    clipseg.set_thresholds(min_area_px=30)


@pytest.mark.parametrize('kwargs', [{'threshold': 1.5}, {'min_area_px': -1},
                                    {'max_objects': 2.5}, {'segment': 3}])
def test_bad_thresholds_raise(clipseg, kwargs):
    with pytest.raises(ValueError):
        clipseg.set_thresholds(**kwargs)


def test_out_of_memory_is_typed_and_the_segmenter_stays_usable(clipseg, real_rgb, monkeypatch):
    clipseg.set_prompts(['mug', 'chair'])
    frame = np.ascontiguousarray(real_rgb[::-1])
    real = clipseg.runner.image_activations

    def fail_once(pixels):
        monkeypatch.setattr(clipseg.runner, 'image_activations', real)
        raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')

    monkeypatch.setattr(clipseg.runner, 'image_activations', fail_once)
    with pytest.raises(DeviceOutOfMemoryError, match='still usable'):
        clipseg.segment(frame)
    result = clipseg.segment(frame)
    assert result.probabilities.shape == (2, 480, 640)


def test_clipseg_sam_encodes_once_and_decodes_all_boxes_in_one_call(clipseg_sam, real_rgb):
    sam = clipseg_sam.refiner.sam
    encoder = CallCounter(sam.image_encoder)
    decoder = CallCounter(sam.mask_decoder)
    try:
        clipseg_sam.set_prompts(PROMPTS[:3])
        clipseg_sam.set_thresholds(threshold=0.5, min_area_px=30, max_objects=8)
        result = clipseg_sam.segment(real_rgb)
        clipseg_sam.segment(real_rgb)
        assert encoder.calls == 1 and decoder.calls == 2
        assert 'sam_encode' in result.timings and 'sam_decode' in result.timings
    finally:
        encoder.remove()
        decoder.remove()
    assert 0 < len(result.instances) <= 8
    for inst in result.instances:
        assert inst.mask.shape == (480, 640) and inst.mask.dtype == bool
        assert inst.mask.sum() >= 30 and np.array_equal(inst.box, mask_box(inst.mask))
    scores = [inst.score for inst in result.instances]
    assert scores == sorted(scores, reverse=True)


def test_clipseg_sam_masks_are_sams_for_the_clipseg_boxes(tiny_models, real_rgb):
    plain = _make(tiny_models, max_objects=5)
    refined = _make(tiny_models, 'clipseg_sam', max_objects=5)
    for seg in (plain, refined):
        seg.set_prompts(['mug', 'chair'])
    coarse = plain.segment(real_rgb).instances
    _, peaks = find_instances(plain.segment(real_rgb).probabilities, plain.prompts, 0.5, 30, 5)
    with torch.inference_mode():
        expected, _ = refined.refiner.predict(real_rgb, np.stack([i.box for i in coarse]), peaks)
    expected = [m for m in expected.numpy() if m.sum() >= 30]
    got = refined.segment(real_rgb).instances
    assert len(got) == len(expected) > 0
    for inst, mask in zip(got, expected):
        assert np.array_equal(inst.mask, mask)


def test_find_instances_components_area_and_mean_score():
    probs = np.zeros((2, 40, 60), np.float32)
    probs[0, 5:15, 5:25] = 0.9    # 200 px
    probs[0, 10, 10] = 1.0        # peak inside the first blob
    probs[0, 30:33, 40:43] = 0.8  # 9 px, below min area
    probs[1, 20:40, 30:60] = 0.6  # 600 px
    instances, peaks = find_instances(probs, ['a', 'b'], threshold=0.5, min_area_px=10,
                                      max_objects=10)
    assert [(i.label, i.prompt_index) for i in instances] == [('a', 0), ('b', 1)]
    assert instances[0].score == pytest.approx((199 * 0.9 + 1.0) / 200)
    assert instances[1].score == pytest.approx(0.6)
    assert np.array_equal(instances[0].box, [5, 5, 25, 15])
    assert np.array_equal(instances[1].box, [30, 20, 60, 40])
    assert instances[0].mask.sum() == 200 and instances[1].mask.sum() == 600
    assert np.array_equal(peaks[0], [10, 10])
    assert len(find_instances(probs, ['a', 'b'], 0.5, 10, 1)[0]) == 1
    assert find_instances(probs, ['a', 'b'], 0.95, 1, 10)[0][0].mask.sum() == 1


@pytest.mark.parametrize('backend, settings', [
    ('grounded_sam', {'detector': 'owlv2'}),
    ('grounded_sam', {'detector': 'grounding_dino'}),
    ('zero_guidance', {'vocabulary': 'mug, chair, floor'}),
    ('clip_dense', {}),
])
def test_factory_builds_every_backend_from_node_settings(tiny_models, backend_models, backend,
                                                         settings):
    from zs_perception.segmentation.base import SegmentationResult

    if backend == 'grounded_sam':
        settings['detector_model'] = str(backend_models[settings['detector']])
    else:
        settings['clip_model'] = str(backend_models['clip'])
    seg = _make(tiny_models, backend, threshold=0.0, min_area_px=0, **settings)
    assert seg.needs_prompts == (backend != 'zero_guidance')
    image = np.full((96, 128, 3), 90, np.uint8)
    image[20:60, 30:90] = (220, 30, 30)
    if backend == 'zero_guidance':
        seg.points_per_side = 2  # keep the tiny model fast; random SAM masks are low quality
        seg.set_thresholds(mask_quality_iou=0.0, stability_iou=0.0)
        assert seg.segment(image).instances, 'zero_guidance found nothing without a goal'
    seg.set_prompts(['mug', 'chair'])
    result = seg.segment(image)
    assert isinstance(result, SegmentationResult)
    for inst in result.instances:
        assert inst.mask.shape == image.shape[:2] and inst.mask.dtype == bool
        assert inst.label in ('mug', 'chair') and 0.0 <= inst.score <= 1.0


def test_sam_decoder_calls_on_cpu_are_cache_sized_and_give_the_same_masks(clipseg_sam, real_rgb,
                                                                          monkeypatch):
    refiner = clipseg_sam.refiner
    sam = refiner.sam
    features, input_size = refiner.embed(real_rgb)
    boxes = np.array([[10, 20, 200, 220], [300, 100, 500, 400], [50, 300, 250, 470],
                      [400, 10, 630, 200], [0, 0, 640, 480]], dtype=np.float64)
    outputs = []
    decoder = CallCounter(sam.mask_decoder)
    keep = sam.mask_decoder.register_forward_hook(lambda module, args, out: outputs.append(out))
    try:
        with torch.inference_mode():
            one_call = refiner.predict(real_rgb, boxes)  # tiny model: all five fit one call
            assert decoder.calls == 1
            per_prompt = features[0].numel() * 4
            monkeypatch.setattr(sam_module, '_CPU_DECODER_CALL_BYTES', 2 * per_prompt)
            chunked = refiner.predict(real_rgb, boxes)
            assert decoder.calls == 1 + 3  # 2 + 2 + 1 boxes
    finally:
        decoder.remove()
        keep.remove()
    # The same logits up to float rounding, so the same IoU choices and scores ...
    batched_logits, batched_iou = outputs[0]
    torch.testing.assert_close(torch.cat([o[0] for o in outputs[1:]]), batched_logits,
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat([o[1] for o in outputs[1:]]), batched_iou,
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(one_call[1], chunked[1])
    # ... and the same masks except at pixels whose logit ties with the threshold.
    best = batched_iou.argmax(dim=1)
    assert len(set(best.tolist())) > 1, 'every box picked the same candidate'
    with torch.inference_mode():
        logits = sam.postprocess_masks(batched_logits[torch.arange(len(boxes)), best][:, None],
                                       input_size, real_rgb.shape[:2])[:, 0].numpy()
    for k in range(len(boxes)):
        assert_mask_matches_logits(one_call[0][k].numpy(), logits[k], sam.mask_threshold,
                                   f'one call, box {k}')
        assert_mask_matches_logits(chunked[0][k].numpy(), logits[k], sam.mask_threshold,
                                   f'cache-sized calls, box {k}')
