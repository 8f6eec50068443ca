"""Conversions between ROS messages and the numpy arrays the ROS-free core works on.

Images are read as zero-copy numpy views of ``msg.data`` (``np.frombuffer``), with the
message's row ``step`` honoured, rather than through cv_bridge: PyPI's ``cv-bridge``
1.13.0.post0 (the only one installable without a ROS distribution) cannot decode
``rgb8``/``bgr8``/``rgba8``/``bgra8`` (its type table reports 9 and 13 channels), reads
``16UC1`` depth as ``uint8``, and cannot encode with NumPy 2 (``ndarray.tostring`` is
gone). ``benchmarks/image_conversion.py`` measures both paths (figures: docs/benchmarks.md).
"""

import sys
from typing import Dict, Optional, Sequence, Tuple

import cv2
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2, PointField
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from zs_perception.geometry import CameraIntrinsics, depth_to_metres
from zs_perception.geometry.depth import DEPTH_ENCODINGS as _DEPTH_ENCODING_UNITS
from zs_perception.segmentation.instances import mask_box
from zs_perception.visualization import track_color

# encoding -> (numpy dtype, channels)
COLOR_ENCODINGS: Dict[str, Tuple[str, int]] = {
    'rgb8': ('uint8', 3), 'bgr8': ('uint8', 3), 'rgba8': ('uint8', 4), 'bgra8': ('uint8', 4),
    'mono8': ('uint8', 1),
}
DEPTH_ENCODINGS: Dict[str, Tuple[str, int]] = {
    encoding: (dtype, 1) for encoding, (dtype, _) in _DEPTH_ENCODING_UNITS.items()}
_ENCODINGS = {**COLOR_ENCODINGS, **DEPTH_ENCODINGS, '8UC1': ('uint8', 1)}

MARKER_NS_BOX = 'objects'
MARKER_NS_TEXT = 'labels'

_CLOUD_DTYPE = np.dtype([('x', '<f4'), ('y', '<f4'), ('z', '<f4'), ('object_index', '<u4')])


def image_to_array(msg: Image, allowed: Dict[str, Tuple[str, int]]) -> np.ndarray:
    """View an Image's pixels as a numpy array without copying them.

    Args:
        msg: the image.
        allowed: ``{encoding: (dtype, channels)}`` accepted here.

    Returns:
        ``(H, W)`` for one channel or ``(H, W, C)``, of the encoding's dtype, a view of
        ``msg.data`` (rows ``msg.step`` bytes apart; a copy only for multi-byte data of the
        other byte order).

    Raises:
        ValueError: unsupported encoding, zero size, a step shorter than a row, or data
            shorter than ``height * step``; the message says what was expected.

    """
    if msg.encoding not in allowed:
        raise ValueError(
            f'unsupported encoding {msg.encoding!r}; expected one of {", ".join(allowed)}')
    dtype_name, channels = allowed[msg.encoding]
    dtype = np.dtype(dtype_name)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height == 0 or width == 0:
        raise ValueError(f'empty image: {width}x{height} pixels')
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ValueError(
            f'step {step} is shorter than one row of {width} {msg.encoding} pixels '
            f'({row_bytes} bytes); set step = width * bytes per pixel')
    if len(msg.data) < height * step:
        raise ValueError(
            f'data has {len(msg.data)} bytes, expected height * step = {height} * {step} = '
            f'{height * step} for a {width}x{height} {msg.encoding} image')
    view_dtype = dtype.newbyteorder('>' if msg.is_bigendian else '<')
    shape = (height, width) if channels == 1 else (height, width, channels)
    strides = (step, channels * dtype.itemsize) + (() if channels == 1 else (dtype.itemsize,))
    array = np.ndarray(shape, dtype=view_dtype, buffer=np.frombuffer(msg.data, np.uint8),
                       strides=strides)
    if not view_dtype.isnative:
        return array.astype(dtype)
    return array


def image_to_rgb(msg: Image) -> np.ndarray:
    """Convert a colour or mono Image to RGB.

    Returns:
        ``(H, W, 3)`` ``uint8`` RGB, C-contiguous: the message's own buffer for a packed
        ``rgb8`` image, a converted copy otherwise.

    Raises:
        ValueError: as :func:`image_to_array`, for encodings other than
            ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8`` and ``mono8``.

    """
    array = image_to_array(msg, COLOR_ENCODINGS)
    if msg.encoding == 'rgb8':
        return np.ascontiguousarray(array)
    code = {'bgr8': cv2.COLOR_BGR2RGB, 'rgba8': cv2.COLOR_RGBA2RGB,
            'bgra8': cv2.COLOR_BGRA2RGB, 'mono8': cv2.COLOR_GRAY2RGB}[msg.encoding]
    return cv2.cvtColor(np.ascontiguousarray(array), code)


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """Decode a CompressedImage (JPEG or PNG) to ``(H, W, 3)`` ``uint8`` RGB.

    Raises:
        ValueError: the data could not be decoded.

    """
    data = np.frombuffer(msg.data, np.uint8)
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if bgr is None:
        raise ValueError(
            f'could not decode {len(msg.data)} bytes of compressed image data (format '
            f'{msg.format!r}); expected a JPEG or PNG as published by the compressed '
            'image_transport plugin')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def depth_image_to_metres(msg: Image) -> np.ndarray:
    """Convert a depth Image (``16UC1``/``mono16`` mm or ``32FC1`` m) to metres.

    Returns:
        ``(H, W)`` ``float32`` metres along the optical axis, NaN where missing.

    Raises:
        ValueError: as :func:`image_to_array`.

    """
    return depth_to_metres(image_to_array(msg, DEPTH_ENCODINGS), msg.encoding)


def camera_info_to_intrinsics(msg: CameraInfo, width: int, height: int) -> CameraIntrinsics:
    """Build the intrinsics of a ``width`` x ``height`` image from a CameraInfo.

    A CameraInfo for another resolution with the same aspect ratio (e.g. a binned or
    resized stream) is rescaled; ``width``/``height`` of 0 in the message mean "the
    image's size".

    Raises:
        ValueError: a zero or invalid ``K``, or a CameraInfo for a different aspect ratio.

    """
    if not np.any(np.asarray(msg.k, dtype=np.float64)):
        raise ValueError(
            'camera_info has an all-zero K (no calibration); expected [fx, 0, cx, 0, fy, cy, '
            '0, 0, 1] with focal lengths > 0: calibrate the camera or publish its factory '
            'intrinsics')
    info_w, info_h = int(msg.width) or width, int(msg.height) or height
    intrinsics = CameraIntrinsics.from_k(np.asarray(msg.k, dtype=np.float64), info_w, info_h)
    if (info_w, info_h) == (width, height):
        return intrinsics
    if abs(info_w * height - info_h * width) > 0.01 * info_w * height:
        raise ValueError(
            f'camera_info is for a {info_w}x{info_h} image but the image is {width}x{height}; '
            'publish the camera_info of the image stream itself')
    return intrinsics.scaled_to(width, height)


def array_to_image(array: np.ndarray, encoding: str, header: Header) -> Image:
    """Wrap a ``(H, W)`` or ``(H, W, C)`` array as an Image with the given encoding and header.

    Raises:
        ValueError: an encoding this package does not write, or the array's dtype or
            channel count does not match ``encoding``.

    """
    if encoding not in _ENCODINGS:
        raise ValueError(f'array_to_image: cannot write encoding {encoding!r}; expected one '
                         f'of {", ".join(_ENCODINGS)}')
    dtype_name, channels = _ENCODINGS[encoding]
    array_channels = 1 if array.ndim == 2 else array.shape[2]
    if array.dtype != np.dtype(dtype_name) or array_channels != channels:
        raise ValueError(
            f'array_to_image: {encoding} needs {channels} channel(s) of {dtype_name}, got '
            f'shape {array.shape} of {array.dtype}')
    array = np.ascontiguousarray(array)
    msg = Image()
    msg.header = header
    msg.height, msg.width = int(array.shape[0]), int(array.shape[1])
    msg.encoding = encoding
    msg.is_bigendian = sys.byteorder == 'big'
    msg.step = int(array.strides[0])
    msg.data = array.tobytes()
    return msg


def mask_roi(mask: np.ndarray) -> Optional[Tuple[int, int, int, int]]:
    """Return ``(x_offset, y_offset, width, height)`` of a bool mask's True pixels, or None."""
    x0, y0, x1, y1 = (int(v) for v in mask_box(mask))
    if x1 <= x0:
        return None
    return x0, y0, x1 - x0, y1 - y0


def mask_to_image(mask: np.ndarray, roi: Tuple[int, int, int, int], header: Header) -> Image:
    """Crop a ``(H, W)`` bool mask to ``roi`` and encode it as mono8 (255 object, 0 not)."""
    x, y, w, h = roi
    crop = mask[y:y + h, x:x + w].astype(np.uint8) * np.uint8(255)
    return array_to_image(crop, 'mono8', header)


def point_cloud(points: np.ndarray, object_index: np.ndarray, header: Header) -> PointCloud2:
    """Build an unorganised PointCloud2 with fields x, y, z (float32 m) and object_index.

    Args:
        points: ``(M, 3)`` ``float32`` metres in ``header.frame_id``.
        object_index: ``(M,)`` ``uint32``; point ``i`` belongs to ``objects[object_index[i]]``
            of the SegmentedObjectArray with the same stamp.
        header: the source image's header.

    """
    cloud = np.empty(len(points), dtype=_CLOUD_DTYPE)
    if len(points):
        cloud['x'], cloud['y'], cloud['z'] = points[:, 0], points[:, 1], points[:, 2]
        cloud['object_index'] = object_index
    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = 1, len(points)
    msg.fields = [
        PointField(name='x', offset=0, datatype=PointField.FLOAT32, count=1),
        PointField(name='y', offset=4, datatype=PointField.FLOAT32, count=1),
        PointField(name='z', offset=8, datatype=PointField.FLOAT32, count=1),
        PointField(name='object_index', offset=12, datatype=PointField.UINT32, count=1),
    ]
    msg.is_bigendian = False
    msg.point_step = _CLOUD_DTYPE.itemsize
    msg.row_step = msg.point_step * len(points)
    msg.is_dense = bool(np.isfinite(points).all()) if len(points) else True
    msg.data = cloud.tobytes()
    return msg


def cloud_to_arrays(msg: PointCloud2) -> Tuple[np.ndarray, np.ndarray]:
    """Read a cloud made by :func:`point_cloud` back: ``(M, 3)`` float32 and ``(M,)`` uint32."""
    cloud = np.frombuffer(msg.data, dtype=_CLOUD_DTYPE, count=msg.width * msg.height)
    return np.stack([cloud['x'], cloud['y'], cloud['z']], axis=1), cloud['object_index'].copy()


def make_pose(position: Sequence[float], quaternion: Sequence[float]) -> Pose:
    """Build a Pose from ``(3,)`` metres and an ``(4,)`` ``x, y, z, w`` quaternion."""
    x, y, z = (float(v) for v in position)
    qx, qy, qz, qw = (float(v) for v in quaternion)
    return Pose(position=Point(x=x, y=y, z=z), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw))


def object_markers(header: Header, objects: Sequence[Tuple[int, str, Pose, Vector3]],
                   previous_ids: Sequence[int]) -> MarkerArray:
    """Build rviz markers: an oriented box and a text label per object with a pose.

    Marker ids are the track ids (namespace ``objects`` for boxes, ``labels`` for texts),
    so a tracked object keeps its markers; ids in ``previous_ids`` that are not drawn
    now get DELETE markers.

    Args:
        header: the source image's header (stamp and camera optical frame).
        objects: ``(track_id, caption, pose, size)`` per object with a pose.
        previous_ids: track ids drawn in the previous MarkerArray.

    """
    markers = MarkerArray()
    current = set()
    for track_id, caption, pose, size in objects:
        current.add(track_id)
        r, g, b = (float(c) / 255.0 for c in track_color(track_id))
        box = Marker(header=header, ns=MARKER_NS_BOX, id=int(track_id), type=Marker.CUBE,
                     action=Marker.ADD, pose=pose,
                     color=ColorRGBA(r=r, g=g, b=b, a=0.5))
        box.scale = Vector3(x=max(size.x, 1e-3), y=max(size.y, 1e-3), z=max(size.z, 1e-3))
        text_pose = Pose(orientation=Quaternion(w=1.0))
        # Above the box: image "up" is -y in the optical frame.
        lift = 0.5 * max(size.x, size.y, size.z) + 0.03
        text_pose.position = Point(x=pose.position.x, y=pose.position.y - lift,
                                   z=pose.position.z)
        text = Marker(header=header, ns=MARKER_NS_TEXT, id=int(track_id),
                      type=Marker.TEXT_VIEW_FACING, action=Marker.ADD, pose=text_pose,
                      text=caption, color=ColorRGBA(r=r, g=g, b=b, a=1.0))
        text.scale.z = 0.04
        markers.markers.extend([box, text])
    for track_id in sorted(set(previous_ids) - current):
        for ns in (MARKER_NS_BOX, MARKER_NS_TEXT):
            markers.markers.append(Marker(header=header, ns=ns, id=int(track_id),
                                          action=Marker.DELETE))
    return markers
