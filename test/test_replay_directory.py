"""Tests for zs_perception.replay_directory: reading, pairing and writing replay directories."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from zs_perception.geometry.camera import CameraIntrinsics
from zs_perception.replay_directory import (depth_to_millimetres, read_depth, read_intrinsics,
                                            ReplayDirectory, write_frame, write_intrinsics)
from zs_perception.testing.scene import render_scene
from zs_perception.tools.make_demo_scene import make_demo_scene

TEST_DATA = Path(__file__).resolve().parent / 'data'


def _intrinsics(width=8, height=6):
    return CameraIntrinsics(fx=10.0, fy=11.0, cx=3.5, cy=2.5, width=width, height=height)


def _rgb(seed, width=8, height=6):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_write_then_read_round_trip(tmp_path):
    write_intrinsics(tmp_path, _intrinsics())
    depth = np.full((6, 8), 1.2346, np.float32)
    depth[0, 0] = np.nan
    for i in range(3):
        frame_depth = depth + i
        frame_depth[1, 1] = 0.0  # no reading
        write_frame(tmp_path, i, _rgb(i), frame_depth)

    replay = ReplayDirectory(tmp_path)
    assert len(replay) == 3
    assert replay.has_depth
    assert replay.intrinsics == _intrinsics()
    assert replay.depth_scale == 1000.0
    frames = list(replay)
    assert [f.name for f in frames] == ['000000-color', '000001-color', '000002-color']
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.rgb, _rgb(i))  # PNG is lossless, RGB order kept
        assert frame.depth_m.dtype == np.float32
        assert np.isnan(frame.depth_m[0, 0]) and np.isnan(frame.depth_m[1, 1])
        np.testing.assert_allclose(frame.depth_m[2:, 2:], 1.235 + i, atol=1e-6)  # whole mm


def test_depth_png_is_uint16_millimetres(tmp_path):
    write_intrinsics(tmp_path, _intrinsics())
    write_frame(tmp_path, 0, _rgb(0), np.full((6, 8), 0.5, np.float32))
    raw = cv2.imread(str(tmp_path / '000000-depth.png'), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16
    assert np.all(raw == 500)


def test_colour_only_directory_has_no_depth(tmp_path):
    write_intrinsics(tmp_path, _intrinsics())
    write_frame(tmp_path, 0, _rgb(0))
    replay = ReplayDirectory(tmp_path)
    assert not replay.has_depth
    assert replay.load(0).depth_m is None


def test_subdirectory_layout_npy_metres_and_jpeg(tmp_path):
    (tmp_path / 'color').mkdir()
    (tmp_path / 'depth').mkdir()
    (tmp_path / 'intrinsics.json').write_text(json.dumps(
        {'K': [10.0, 0, 3.5, 0, 11.0, 2.5, 0, 0, 1], 'width': 8, 'height': 6}))
    cv2.imwrite(str(tmp_path / 'color' / 'b.jpg'), _rgb(1))
    cv2.imwrite(str(tmp_path / 'color' / 'a.png'), _rgb(0))
    np.save(tmp_path / 'depth' / 'a.npy', np.full((6, 8), 2.25, np.float32))
    np.save(tmp_path / 'depth' / 'b.npy', np.full((6, 8), np.nan, np.float32))
    replay = ReplayDirectory(tmp_path)
    assert [p.name for p in replay.color_paths] == ['a.png', 'b.jpg']
    assert replay.intrinsics == _intrinsics()
    first, second = replay.load(0), replay.load(1)
    np.testing.assert_array_equal(first.depth_m, 2.25)
    assert np.all(np.isnan(second.depth_m))
    assert second.rgb.shape == (6, 8, 3) and second.rgb.dtype == np.uint8


def test_depth_scale_applies_to_integer_depth(tmp_path):
    (tmp_path / 'camera_info.json').write_text(json.dumps(
        {'fx': 10, 'fy': 11, 'cx': 3.5, 'cy': 2.5, 'width': 8, 'height': 6,
         'depth_scale': 5000.0}))
    cv2.imwrite(str(tmp_path / 'color.png'), _rgb(0))
    cv2.imwrite(str(tmp_path / 'depth.png'), np.full((6, 8), 5000 * 3, np.uint16))
    replay = ReplayDirectory(tmp_path)
    assert replay.depth_scale == 5000.0
    np.testing.assert_allclose(replay.load(0).depth_m, 3.0)


def test_partial_depth_is_rejected(tmp_path):
    write_intrinsics(tmp_path, _intrinsics())
    write_frame(tmp_path, 0, _rgb(0), np.ones((6, 8), np.float32))
    write_frame(tmp_path, 1, _rgb(1))
    with pytest.raises(ValueError, match='000001-color.png'):
        ReplayDirectory(tmp_path)


def test_size_mismatch_is_reported(tmp_path):
    write_intrinsics(tmp_path, _intrinsics(width=16, height=12))
    write_frame(tmp_path, 0, _rgb(0))
    with pytest.raises(ValueError, match='8x6 pixels but the intrinsics file says 16x12'):
        ReplayDirectory(tmp_path).load(0)


def test_missing_pieces_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        ReplayDirectory(tmp_path / 'nope')
    with pytest.raises(FileNotFoundError, match='no intrinsics file'):
        ReplayDirectory(tmp_path)
    write_intrinsics(tmp_path, _intrinsics())
    with pytest.raises(FileNotFoundError, match='no colour images'):
        ReplayDirectory(tmp_path)


def test_bad_intrinsics_are_reported(tmp_path):
    path = tmp_path / 'camera_info.json'
    path.write_text(json.dumps({'fx': 1.0, 'width': 8}))
    with pytest.raises(ValueError, match='lacks height, fx, fy, cx, cy'):
        read_intrinsics(path)
    path.write_text(json.dumps({'fx': 1, 'fy': 1, 'cx': 1, 'cy': 1, 'width': 8, 'height': 6,
                                'depth_scale': 0}))
    with pytest.raises(ValueError, match='depth_scale'):
        read_intrinsics(path)
    path.write_text('{not json')
    with pytest.raises(ValueError, match='not valid JSON'):
        read_intrinsics(path)


def test_eight_bit_depth_png_is_rejected(tmp_path):
    path = tmp_path / 'depth.png'
    cv2.imwrite(str(path), np.zeros((6, 8), np.uint8))
    with pytest.raises(ValueError, match='uint16'):
        read_depth(path)


def test_depth_to_millimetres_rounds_and_marks_invalid():
    depth = np.array([[0.0004, 0.0016, np.nan, -1.0, np.inf, 70.0, 1.2344]], np.float32)
    mm = depth_to_millimetres(depth)
    assert mm.dtype == np.uint16
    assert mm.tolist() == [[0, 2, 0, 0, 0, 0, 1234]]


@pytest.mark.parametrize('name, scale', [('tum_office_desk', 5000.0),
                                         ('ycbv_000001_drill_mustard_box', 10000.0)])
def test_reads_real_rgbd_frame_with_raw_depth_scale(name, scale):
    frame_dir = TEST_DATA / name
    info = json.loads((frame_dir / 'camera_info.json').read_text())
    replay = ReplayDirectory(frame_dir)
    assert len(replay) == 1 and replay.has_depth
    assert replay.depth_scale == info['depth_scale'] == scale
    frame = replay.load(0)
    assert frame.rgb.shape == (480, 640, 3)
    assert replay.intrinsics.fx == pytest.approx(info['fx'])
    valid = frame.depth_m[np.isfinite(frame.depth_m)]
    # Indoor depth of a desk or a table top: metres, not raw units.
    assert 0.3 < np.median(valid) < 5.0
    mm = cv2.imread(str(frame_dir / 'depth_mm.png'), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(depth_to_millimetres(frame.depth_m), mm)


def test_make_demo_scene_writes_a_replay_directory(tmp_path):
    out = make_demo_scene(tmp_path / 'scene', frames=2, width=64, height=48, seed=3)
    replay = ReplayDirectory(out)
    assert len(replay) == 2 and replay.has_depth
    truth = json.loads((out / 'ground_truth.json').read_text())['frames']
    for i, frame in enumerate(replay):
        scene = render_scene(width=64, height=48, seed=3 + i)
        np.testing.assert_array_equal(frame.rgb, scene['rgb'])
        np.testing.assert_allclose(frame.depth_m, scene['depth_m'], atol=0.0005 + 1e-6)
        assert replay.intrinsics == scene['intrinsics']
        position, _ = scene['poses']['box']
        np.testing.assert_allclose(truth[i]['objects']['box']['position'], position)
        assert truth[i]['objects']['cylinder']['mask_pixels'] == scene['masks']['cylinder'].sum()
