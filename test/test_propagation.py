"""Mask propagation between frames (Propagator + VideoTracker) on tiny random trackers.

The keyframe detector here is a test double that reports the true masks of a rendered
scene panning across the image; the trackers are real transformers video models with
random weights, so their masks mean nothing, but they must equal the documented streaming
usage frame for frame, keep the ids the propagator gives them, and hold flat memory.
"""

import sys

from helpers_node import FixedMaskSegmenter
import numpy as np
import pytest
import torch
from transformers import EdgeTamVideoModel, Sam2VideoModel, Sam2VideoProcessor
from transformers import Sam3TrackerVideoModel, Sam3TrackerVideoProcessor

from zs_perception.segmentation.factory import create_segmenter
from zs_perception.segmentation.instances import mask_box
from zs_perception.segmentation.propagation import load_tracker, Propagator
from zs_perception.testing.random_models import TRACKER_MODELS
from zs_perception.testing.scene import render_scene

TRACKERS = {'sam2': (Sam2VideoModel, Sam2VideoProcessor),
            'sam3_tracker': (Sam3TrackerVideoModel, Sam3TrackerVideoProcessor),
            'edgetam': (EdgeTamVideoModel, Sam2VideoProcessor)}
WIDTH, HEIGHT, STEP = 96, 72, 1  # frame size, pixels panned per frame


class PanningScene:
    """A rendered scene seen through a window that moves ``STEP`` pixels right per frame."""

    def __init__(self, frames, seed=3):
        self.scene = render_scene(WIDTH + STEP * frames + 8, HEIGHT + 8, seed=seed)

    def frame(self, i):
        x = STEP * i
        rgb = self.scene['rgb'][4:4 + HEIGHT, x:x + WIDTH].copy()
        masks = {name: m[4:4 + HEIGHT, x:x + WIDTH].copy()
                 for name, m in self.scene['masks'].items()}
        return rgb, masks


class TruthSegmenter(FixedMaskSegmenter):
    """Reports the true mask of each prompt naming a rendered object, at frame ``index``."""

    def __init__(self, scene):
        super().__init__({})
        self.scene = scene
        self.index = 0
        self.min_area_px = 5

    def segment(self, image):
        self.masks = {name: m for name, m in self.scene.frame(self.index)[1].items() if m.any()}
        return super().segment(image)


def _tracker(sam3_models, name):
    if TRACKER_MODELS[name] not in sam3_models:
        pytest.skip(f'no {name} test model (EdgeTAM needs timm)')
    return load_tracker(name, sam3_models[TRACKER_MODELS[name]], torch.device('cpu'),
                        torch.float32, allow_random_weights=True)


def _stream(propagator, detector, scene, frames):
    out = []
    for i in range(frames):
        detector.index = i
        rgb, _ = scene.frame(i)
        out.append((propagator.segment(rgb).instances, propagator.last_was_keyframe))
    return out


@pytest.mark.parametrize('name', list(TRACKERS))
def test_equals_the_documented_streaming_usage(sam3_models, name):
    frames = 20  # more than the tracker's memory window (16): pruning is exercised
    scene = PanningScene(frames)
    detector = TruthSegmenter(scene)
    propagator = Propagator(detector, _tracker(sam3_models, name),
                            detect_every_n_frames=1000)
    propagator.set_prompts(['box', 'cylinder'])
    ours = _stream(propagator, detector, scene, frames)
    assert [keyframe for _, keyframe in ours] == [True] + [False] * (frames - 1)

    model_cls, processor_cls = TRACKERS[name]
    model = model_cls.from_pretrained(sam3_models[TRACKER_MODELS[name]]).eval()
    processor = processor_cls.from_pretrained(sam3_models[TRACKER_MODELS[name]])
    session = processor.init_video_session(inference_device='cpu', dtype=torch.float32)
    with torch.inference_mode():
        for i in range(frames):
            rgb, truth = scene.frame(i)
            inputs = processor(images=rgb, device='cpu', return_tensors='pt')
            if i == 0:
                processor.add_inputs_to_inference_session(
                    session, frame_idx=0, obj_ids=[1, 2],
                    input_masks=[truth['box'], truth['cylinder']])
            output = model(inference_session=session, frame=inputs.pixel_values[0])
            if i == 0:
                continue  # the propagator returns the detections on a keyframe
            masks = processor.post_process_masks([output.pred_masks],
                                                 original_sizes=inputs.original_sizes)[0]
            present = output.object_score_logits.reshape(-1) > 0
            expected = {obj: masks[k, 0].numpy() for k, obj in enumerate(output.object_ids)
                        if present[k]}
            got = {inst.track_id: inst.mask for inst in ours[i][0]}
            assert set(got) == set(expected), i
            for obj, mask in expected.items():
                np.testing.assert_array_equal(got[obj], mask)
    # The documented session keeps every frame; the propagator's stays bounded.
    assert len(session.processed_frames) == frames
    assert len(propagator.tracker.session.processed_frames) == 1
    kept = propagator.tracker.session.output_dict_per_obj[0]['non_cond_frame_outputs']
    assert len(kept) == propagator.tracker.window


def test_keyframes_and_ids_over_a_moving_object(sam3_models):
    frames = 30
    scene = PanningScene(frames)
    detector = TruthSegmenter(scene)
    propagator = Propagator(detector, _tracker(sam3_models, 'sam2'), detect_every_n_frames=3)
    propagator.set_prompts(['box', 'cylinder'])
    out = _stream(propagator, detector, scene, frames)
    assert [k for _, k in out] == [i % 3 == 0 for i in range(frames)]
    assert detector.calls == 10
    ids = [{inst.label: inst.track_id for inst in instances} for instances, _ in out]
    assert all(frame == {'box': 1, 'cylinder': 2} for frame in ids), ids
    for instances, keyframe in out:
        for inst in instances:
            assert inst.mask.shape == (HEIGHT, WIDTH) and inst.mask.dtype == bool
            np.testing.assert_array_equal(inst.box, mask_box(inst.mask))
            assert inst.score == pytest.approx(0.9 if inst.label == 'box' else 0.89)
    # A new goal ends the tracks: a keyframe, and the same objects get new ids.
    propagator.set_prompts(['cylinder'])
    detector.index = frames - 1
    result = propagator.segment(scene.frame(frames - 1)[0])
    assert propagator.last_was_keyframe
    assert [(i.label, i.track_id) for i in result.instances] == [('cylinder', 3)]


def test_an_object_that_fades_triggers_a_keyframe(sam3_models):
    scene = PanningScene(6)
    detector = TruthSegmenter(scene)
    tracker = _tracker(sam3_models, 'sam3_tracker')
    with torch.no_grad():  # the tracker now calls every object absent
        tracker.model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(-20.0)
    propagator = Propagator(detector, tracker, detect_every_n_frames=100)
    propagator.set_prompts(['box'])
    out = _stream(propagator, detector, scene, 6)
    assert [k for _, k in out] == [True] * 6
    assert all([i.track_id for i in instances] == [1] for instances, _ in out)


def test_an_object_that_leaves_ends_and_a_new_one_gets_a_new_id(sam3_models):
    scene = PanningScene(8)
    detector = TruthSegmenter(scene)
    propagator = Propagator(detector, _tracker(sam3_models, 'sam2'), detect_every_n_frames=2)
    propagator.set_prompts(['box'])
    _stream(propagator, detector, scene, 2)
    empty = np.zeros((HEIGHT, WIDTH), bool)
    original = detector.scene.frame
    detector.scene.frame = lambda i: (original(i)[0], {'box': empty, 'cylinder': empty})
    detector.index = 2
    assert propagator.segment(original(2)[0]).instances == []  # keyframe: nothing found
    assert propagator.tracker.session is None
    detector.scene.frame = original
    detector.index = 3
    assert [i.track_id for i in propagator.segment(original(3)[0]).instances] == [2]


def test_session_memory_is_flat_over_a_long_stream(sam3_models):
    # 150 frames: over 9 times the memory window (16), a keyframe in the first and in the
    # last third (0, 47, 94, 141).
    frames = 150
    scene = PanningScene(20)
    detector = TruthSegmenter(scene)
    propagator = Propagator(detector, _tracker(sam3_models, 'sam2'), detect_every_n_frames=47)
    propagator.set_prompts(['box'])  # one object: the session's growth is per object
    counts, sizes, rss = [], [], []
    for i in range(frames):
        detector.index = i % 20
        propagator.segment(scene.frame(i % 20)[0])
        count, size = propagator.tracker.session_tensors()
        counts.append(count)
        sizes.append(size)
        rss.append(_rss_bytes())
    window = propagator.tracker.window
    # After the memory window fills, the session holds a bounded number of tensors: the
    # same maximum in the first and the last third of the stream.
    first, last = slice(window + 2, frames // 3), slice(2 * frames // 3, frames)
    assert max(counts[last]) == max(counts[first])
    assert max(sizes[last]) == max(sizes[first])
    # Without pruning the session would hold every frame (about 15 tensors per frame here).
    assert max(counts) < 2 * counts[window + 2]
    growth = np.median(rss[last]) - np.median(rss[first])
    assert growth < 16 * 2 ** 20, f'RSS grew by {growth / 2 ** 20:.1f} MiB'


def _rss_bytes():
    with open('/proc/self/statm') as f:
        return int(f.read().split()[1]) * 4096


def test_factory_wraps_any_backend(sam3_models, tiny_models, monkeypatch):
    seg = create_segmenter('clipseg', clipseg_model=str(tiny_models / 'clipseg'), device='cpu',
                           allow_random_weights=True, threshold=0.0, min_area_px=1,
                           tracker='sam3_tracker', tracker_model=sam3_models['sam3_tracker'],
                           detect_every_n_frames=2)
    assert isinstance(seg, Propagator) and seg.detect_every_n_frames == 2
    seg.set_prompts(['a box'])
    rgb = render_scene(80, 60, seed=1)['rgb']
    first, second = seg.segment(rgb), seg.segment(rgb)
    assert first.instances and all(i.track_id >= 1 for i in first.instances)
    assert {i.track_id for i in second.instances} <= {i.track_id for i in first.instances}
    assert 'track' in second.timings
    seg.set_thresholds(threshold=0.5)
    assert seg.segmenter.threshold == 0.5
    with pytest.raises(ValueError, match='tracker'):
        create_segmenter('clipseg', tracker='cotracker')
    with pytest.raises(ValueError, match='detect_every_n_frames'):
        create_segmenter('clipseg', tracker='sam2', detect_every_n_frames=0)
    monkeypatch.setitem(sys.modules, 'timm', None)  # as if timm were not installed
    with pytest.raises(ValueError, match='timm'):
        create_segmenter('clipseg', clipseg_model=str(tiny_models / 'clipseg'), device='cpu',
                         allow_random_weights=True, tracker='edgetam')
