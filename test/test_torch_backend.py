"""Every torch backend keeps the same promises: serialised calls, checks, OOM mapping, loading."""

from pathlib import Path
import threading

import numpy as np
import pytest
import torch

from zs_perception.segmentation.base import DeviceOutOfMemoryError, ModelLoadError
from zs_perception.segmentation.clipseg_sam import ClipSegSamSegmenter
from zs_perception.segmentation.factory import _CLASSES, BACKENDS, create_segmenter
from zs_perception.segmentation.torch_backend import TorchSegmenter

IMAGE = np.random.default_rng(1).integers(0, 256, (96, 128, 3), dtype=np.uint8)


@pytest.fixture(scope='module')
def segmenters(tiny_models, backend_models, sam3_models):
    """Every backend on the tiny random models, by name."""
    built = {}
    for backend in BACKENDS:
        built[backend] = create_segmenter(
            backend, clipseg_model=str(Path(tiny_models) / 'clipseg'),
            sam_checkpoint=str(Path(tiny_models) / 'sam_tiny.pth'), sam_model_type='tiny',
            detector_model=backend_models['owlv2'], clip_model=backend_models['clip'],
            sam3_model=sam3_models['sam3'],
            device='cpu', precision='fp32', threshold=0.0, min_area_px=0,
            allow_random_weights=True)
    built['zero_guidance'].points_per_side = 2
    return built


def test_every_backend_is_built_on_the_skeleton(segmenters):
    assert set(_CLASSES) == set(BACKENDS)
    for name, seg in segmenters.items():
        assert isinstance(seg, TorchSegmenter) and seg.name == name
        assert seg.device == torch.device('cpu')


@pytest.mark.parametrize('backend', sorted(BACKENDS))
def test_calls_run_one_at_a_time(segmenters, backend, monkeypatch):
    seg = segmenters[backend]
    seg.set_prompts(['mug'])
    inside, release = threading.Event(), threading.Event()
    real = seg._segment

    def slow_segment(image, timer):
        inside.set()
        release.wait(10)
        return real(image, timer)

    monkeypatch.setattr(seg, '_segment', slow_segment)
    done = []
    segmenting = threading.Thread(target=seg.segment, args=(IMAGE,))
    segmenting.start()
    assert inside.wait(10)
    others = [threading.Thread(target=lambda: (seg.set_prompts(['chair']), done.append(1))),
              threading.Thread(target=lambda: (seg.set_thresholds(threshold=0.1),
                                               done.append(2)))]
    for thread in others:
        thread.start()
    others[0].join(0.3)
    assert done == [], f'{backend}: set_prompts/set_thresholds ran during segment'
    release.set()
    for thread in [segmenting, *others]:
        thread.join(10)
    assert sorted(done) == [1, 2] and seg.prompts == ['chair'] and seg.threshold == 0.1
    seg.set_thresholds(threshold=0.0)


@pytest.mark.parametrize('backend', sorted(BACKENDS))
def test_bad_input_and_empty_prompts(segmenters, backend):
    seg = segmenters[backend]
    with pytest.raises(ValueError, match='uint8'):
        seg.segment(IMAGE.astype(np.float32))
    with pytest.raises(ValueError, match='shape'):
        seg.segment(IMAGE[..., :2])
    seg.set_prompts([])
    result = seg.segment(IMAGE)
    if seg.needs_prompts:
        assert result.instances == [] and result.timings == {}
        expected = (0, 96, 128) if seg.dense_maps else None
        assert getattr(result.probabilities, 'shape', None) == expected


@pytest.mark.parametrize('backend', sorted(BACKENDS))
def test_out_of_memory_is_typed_and_leaves_the_segmenter_usable(segmenters, backend,
                                                                monkeypatch):
    seg = segmenters[backend]
    seg.set_prompts(['mug'])

    def out_of_memory(*args):
        raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')

    with monkeypatch.context() as patch:
        patch.setattr(seg, '_segment', out_of_memory)
        with pytest.raises(DeviceOutOfMemoryError, match='still usable'):
            seg.segment(IMAGE)
        patch.setattr(seg, '_encode_prompts', out_of_memory)
        with pytest.raises(DeviceOutOfMemoryError, match='encoding 2 prompts'):
            seg.set_prompts(['chair', 'bottle'])
    assert seg.prompts == ['mug']  # the failed set_prompts changed nothing
    assert seg.segment(IMAGE) is not None


def test_thresholds_are_checked_before_any_model_is_loaded(tmp_path):
    with pytest.raises(ValueError, match=r'threshold must be a number in \[0, 1\]'):
        ClipSegSamSegmenter.from_settings(sam_checkpoint=str(tmp_path / 'missing.pth'),
                                          threshold=2.0)
    with pytest.raises(ModelLoadError, match='does not exist'):
        ClipSegSamSegmenter.from_settings(sam_checkpoint=str(tmp_path / 'missing.pth'))
