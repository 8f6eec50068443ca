"""The main-job demo end to end: replay + node in one graph, overlays and summary.json."""

import json

import cv2
import numpy as np
import pytest

from zs_perception.ros import demo


def _domain():
    return str(int(np.random.default_rng().integers(100, 230)))


def test_demo_on_tiny_random_models_writes_overlays_and_summary(tmp_path, tiny_models, capsys):
    out = tmp_path / 'out'
    rc = demo.main(['--output', str(out), '--frames', '2', '--random-weights',
                    '--backend', 'clipseg_sam',
                    '--clipseg-model', str(tiny_models / 'clipseg'),
                    '--sam-checkpoint', str(tiny_models / 'sam_tiny.pth'),
                    '--sam-model-type', 'tiny', '--device', 'cpu',
                    '--frame-timeout', '120', '--domain-id', _domain()])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert 'RANDOM WEIGHTS' in printed and 'MEANINGLESS' in printed
    assert 'frame 0:' in printed and 'frame 1:' in printed

    summary = json.loads((out / 'summary.json').read_text())
    assert summary['random_weights'] is True
    assert 'MEANINGLESS' in summary['warning']
    assert summary['goal'] == demo.DEFAULT_GOAL
    assert summary['models']['clipseg_model'] == str(tiny_models / 'clipseg')
    assert summary['frames_played'] == summary['frames_with_result'] == 2
    stamps = set()
    for index, frame in enumerate(summary['frames']):
        assert frame['index'] == index
        assert frame['name'] == f'{index:06d}-color.png'
        assert frame['prompts'] == ['red box', 'blue cylinder']
        assert frame['backend'] == 'clipseg_sam'
        stamps.add((frame['stamp']['sec'], frame['stamp']['nanosec']))
        for obj in frame['objects']:
            assert obj['label'] in frame['prompts']
            assert 0.0 <= obj['score'] <= 1.0
            x, y, w, h = obj['roi']
            assert 0 <= x and x + w <= 640 and 0 <= y and y + h <= 480 and w > 0 and h > 0
            # The generated scene has depth everywhere, so a pose is missing only for a
            # stated reason.
            assert obj['has_pose'] == (obj['pose'] is not None) == (obj['size'] is not None)
            assert obj['has_pose'] or obj['pose_status'] != 'ok'
            if obj['has_pose']:
                assert len(obj['pose']['position']) == 3
                assert len(obj['pose']['orientation']) == 4
                assert obj['pose']['position'][2] > 0  # in front of the camera
        overlay = cv2.imread(str(out / frame['overlay']))
        assert overlay.shape == (480, 640, 3)
        scene_rgb = cv2.imread(str(out / 'scene' / frame['name']))
        if frame['objects']:
            # The node drew masks and boxes on the frame, not just copied it.
            assert np.any(overlay[30:] != scene_rgb[30:])
        # The random-weights banner is drawn across the top.
        assert overlay[:22].mean() < scene_rgb[:22].mean()
    assert len(stamps) == 2


def test_demo_refuses_random_weights_unless_asked(tmp_path, tiny_models, capsys):
    rc = demo.main(['--output', str(tmp_path / 'out'), '--frames', '1', '--backend', 'clipseg',
                    '--clipseg-model', str(tiny_models / 'clipseg'), '--device', 'cpu',
                    '--domain-id', _domain()])
    err = capsys.readouterr().err
    assert rc == demo.EXIT_NO_WEIGHTS
    assert 'RANDOM weights' in err
    # It says how to fetch real weights and how to rerun.
    assert 'huggingface-cli download CIDAS/clipseg-rd64-refined' in err
    assert 'sam_vit_b_01ec64.pth' in err
    assert 'zs_perception_demo --random-weights' in err
    assert not (tmp_path / 'out' / 'summary.json').exists()


def test_demo_rejects_a_bad_frame_count():
    with pytest.raises(SystemExit):
        demo.parse_args(['--frames', '0'])
