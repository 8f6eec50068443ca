"""Tests of ROS message <-> numpy conversions (zs_perception.ros.conversions)."""

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from zs_perception.ros import conversions
from zs_perception.visualization import label_image

RNG = np.random.default_rng(0)


def make_image(array, encoding, pad=0, bigendian=False):
    rows = array.reshape(array.shape[0], -1).view(np.uint8)
    if pad:
        rows = np.concatenate([rows, np.full((rows.shape[0], pad), 7, np.uint8)], axis=1)
    msg = Image(height=array.shape[0], width=array.shape[1], encoding=encoding,
                step=rows.shape[1], is_bigendian=bigendian)
    msg.data = rows.tobytes()
    return msg


@pytest.mark.parametrize('pad', [0, 5])
def test_color_encodings_give_rgb(pad):
    rgb = RNG.integers(0, 256, (6, 7, 3), dtype=np.uint8)
    rgba = np.concatenate([rgb, np.full((6, 7, 1), 9, np.uint8)], axis=2)
    cases = {
        'rgb8': rgb, 'bgr8': rgb[..., ::-1].copy(), 'rgba8': rgba,
        'bgra8': np.concatenate([rgb[..., ::-1], rgba[..., 3:]], axis=2).copy(),
    }
    for encoding, array in cases.items():
        out = conversions.image_to_rgb(make_image(array, encoding, pad))
        assert out.dtype == np.uint8 and out.flags.c_contiguous, encoding
        np.testing.assert_array_equal(out, rgb, err_msg=encoding)
    mono = rgb[..., 0].copy()
    out = conversions.image_to_rgb(make_image(mono, 'mono8', pad))
    np.testing.assert_array_equal(out, np.repeat(mono[..., None], 3, axis=2))


def test_rgb8_is_a_zero_copy_view():
    msg = make_image(RNG.integers(0, 256, (4, 5, 3), dtype=np.uint8), 'rgb8')
    out = conversions.image_to_rgb(msg)
    assert np.shares_memory(out, np.frombuffer(msg.data, np.uint8))


@pytest.mark.parametrize('msg, message', [
    (Image(height=2, width=2, encoding='yuv422', step=4, data=bytes(8)),
     "unsupported encoding 'yuv422'; expected one of rgb8, bgr8"),
    (Image(height=4, width=4, encoding='rgb8', step=12, data=bytes(47)),
     'data has 47 bytes, expected height * step = 4 * 12 = 48'),
    (Image(height=4, width=4, encoding='rgb8', step=10, data=bytes(40)),
     'step 10 is shorter than one row'),
    (Image(height=0, width=4, encoding='rgb8', step=12), 'empty image'),
])
def test_bad_images_raise_clear_errors(msg, message):
    with pytest.raises(ValueError, match=message.replace('(', r'\(').replace('*', r'\*')):
        conversions.image_to_rgb(msg)


def test_depth_encodings_give_metres_with_nan_for_missing():
    mm = np.array([[0, 1000], [2500, 65535]], dtype=np.uint16)
    out = conversions.depth_image_to_metres(make_image(mm, '16UC1', pad=2))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[np.nan, 1.0], [2.5, 65.535]], rtol=1e-6)
    m = np.array([[np.nan, 1.5], [0.0, np.inf]], dtype=np.float32)
    out = conversions.depth_image_to_metres(make_image(m, '32FC1'))
    np.testing.assert_array_equal(np.isnan(out), [[True, False], [True, True]])
    assert out[0, 1] == pytest.approx(1.5)


def test_big_endian_depth_is_byte_swapped():
    mm = np.array([[1000, 2000]], dtype='>u2')
    out = conversions.depth_image_to_metres(make_image(mm, '16UC1', bigendian=True))
    np.testing.assert_allclose(out, [[1.0, 2.0]])


def test_depth_rejects_color_encoding():
    with pytest.raises(ValueError, match="unsupported encoding 'rgb8'; expected one of 16UC1"):
        conversions.depth_image_to_metres(make_image(np.zeros((2, 2, 3), np.uint8), 'rgb8'))


def test_compressed_round_trip_and_garbage():
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[:, :4] = (200, 30, 10)
    ok, png = cv2.imencode('.png', cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    msg = CompressedImage(format='png', data=png.tobytes())
    np.testing.assert_array_equal(conversions.compressed_to_rgb(msg), rgb)
    with pytest.raises(ValueError, match='could not decode 3 bytes'):
        conversions.compressed_to_rgb(CompressedImage(format='jpeg', data=b'abc'))


def test_camera_info_to_intrinsics():
    info = CameraInfo(width=640, height=480, k=[500.0, 0, 320, 0, 510.0, 240, 0, 0, 1])
    intr = conversions.camera_info_to_intrinsics(info, 640, 480)
    assert (intr.fx, intr.fy, intr.cx, intr.cy) == (500.0, 510.0, 320.0, 240.0)
    half = conversions.camera_info_to_intrinsics(info, 320, 240)
    assert half.fx == pytest.approx(250.0) and half.width == 320
    with pytest.raises(ValueError, match='all-zero K'):
        conversions.camera_info_to_intrinsics(CameraInfo(width=640, height=480), 640, 480)
    with pytest.raises(ValueError, match='camera_info is for a 640x480 image but the image'):
        conversions.camera_info_to_intrinsics(info, 640, 640)
    # Width/height 0 in the message mean the image's own size.
    info0 = CameraInfo(k=[500.0, 0, 320, 0, 510.0, 240, 0, 0, 1])
    assert conversions.camera_info_to_intrinsics(info0, 64, 48).width == 64


def test_array_to_image_round_trip_and_checks():
    header = Header(frame_id='cam')
    labels = RNG.integers(0, 5, (5, 9), dtype=np.uint8)
    msg = conversions.array_to_image(labels, 'mono8', header)
    assert (msg.height, msg.width, msg.step, msg.header.frame_id) == (5, 9, 9, 'cam')
    np.testing.assert_array_equal(conversions.image_to_array(msg, {'mono8': ('uint8', 1)}),
                                  labels)
    with pytest.raises(ValueError, match='mono8 needs 1 channel'):
        conversions.array_to_image(np.zeros((2, 2), np.uint16), 'mono8', header)
    with pytest.raises(ValueError, match="cannot write encoding '64FC1'; expected one of"):
        conversions.array_to_image(np.zeros((2, 2)), '64FC1', header)


def test_mask_roi_and_mask_image():
    mask = np.zeros((10, 12), bool)
    mask[2:5, 3:9] = True
    mask[4, 10] = True
    roi = conversions.mask_roi(mask)
    assert roi == (3, 2, 8, 3)
    msg = conversions.mask_to_image(mask, roi, Header())
    crop = np.frombuffer(msg.data, np.uint8).reshape(3, 8)
    np.testing.assert_array_equal(crop == 255, mask[2:5, 3:11])
    assert set(np.unique(crop)) <= {0, 255}
    assert conversions.mask_roi(np.zeros((3, 3), bool)) is None


def test_point_cloud_layout_and_round_trip():
    points = RNG.normal(size=(50, 3)).astype(np.float32)
    index = np.repeat(np.arange(5, dtype=np.uint32), 10)
    msg = conversions.point_cloud(points, index, Header(frame_id='cam'))
    assert [f.name for f in msg.fields] == ['x', 'y', 'z', 'object_index']
    assert (msg.point_step, msg.width, msg.height, msg.row_step) == (16, 50, 1, 800)
    assert len(msg.data) == 800 and msg.is_dense
    back_points, back_index = conversions.cloud_to_arrays(msg)
    np.testing.assert_array_equal(back_points, points)
    np.testing.assert_array_equal(back_index, index)
    empty = conversions.point_cloud(np.zeros((0, 3), np.float32), np.zeros(0, np.uint32),
                                    Header())
    assert empty.width == 0 and len(empty.data) == 0


def test_markers_have_stable_ids_and_delete_stale_ones():
    header = Header(frame_id='cam')
    pose = conversions.make_pose([0.1, 0.2, 1.0], [0.0, 0.0, 0.0, 1.0])
    size = conversions.Vector3(x=0.2, y=0.1, z=0.05)
    first = conversions.object_markers(header, [(4, 'mug #4', pose, size)], previous_ids=[])
    assert [(m.ns, m.id, m.type, m.action) for m in first.markers] == [
        ('objects', 4, Marker.CUBE, Marker.ADD),
        ('labels', 4, Marker.TEXT_VIEW_FACING, Marker.ADD)]
    box, text = first.markers
    assert (box.scale.x, box.scale.y, box.scale.z) == (0.2, 0.1, 0.05)
    assert box.pose.position.z == 1.0 and text.text == 'mug #4'
    assert text.pose.position.y < box.pose.position.y  # above the box in the image
    second = conversions.object_markers(header, [(5, 'box #5', pose, size)], previous_ids=[4])
    assert [(m.ns, m.id, m.action) for m in second.markers] == [
        ('objects', 5, Marker.ADD), ('labels', 5, Marker.ADD),
        ('objects', 4, Marker.DELETE), ('labels', 4, Marker.DELETE)]


def test_label_image_orders_by_score():
    a = np.zeros((4, 4), bool)
    a[:2] = True
    b = np.zeros((4, 4), bool)
    b[1:3] = True
    labels = label_image([a, b], (4, 4))
    np.testing.assert_array_equal(labels[:, 0], [1, 1, 2, 0])
    assert label_image([], (2, 3)).shape == (2, 3)
    with pytest.raises(ValueError, match='expected'):
        label_image([np.zeros((3, 3), bool)], (4, 4))
