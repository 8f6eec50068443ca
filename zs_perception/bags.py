"""rosbag2 recordings in and out (sqlite3 and MCAP) with ``rosbags``, without a ROS install.

* :class:`BagFrames` reads a bag's camera topics: the colour image (``sensor_msgs/Image``
  or ``sensor_msgs/CompressedImage``), the depth image and ``sensor_msgs/CameraInfo``,
  each chosen by name or found by type (see :func:`choose_topics`), and pairs every colour
  image with the depth image and camera info of the same header stamp (within a
  tolerance). Frames keep the serialized CDR bytes as recorded, so a ROS publisher sends
  exactly what was recorded, stamps included; :meth:`BagFrames.decode` turns one into
  arrays for ROS-free use.
* :func:`write_camera_bag` writes frames (``rgb8`` + ``16UC1`` millimetres + camera info)
  to a new bag: tests and ``python -m zs_perception.tools.directory_to_bag`` use it.
* :class:`BagWriter` writes serialized messages of any type this package or ROS 2 Jazzy
  defines to a new bag (the output recorder uses it); message definitions of this package
  are registered from its ``msg/*.msg`` (:func:`package_typestore`), so the MCAP files carry
  the schemas Foxglove and ``ros2 bag play`` need.

Units: stamps and log times in integer nanoseconds; depth ``float32`` metres (REP 118).
"""

from dataclasses import dataclass
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from zs_perception.geometry.camera import CameraIntrinsics
from zs_perception.geometry.depth import DEPTH_ENCODINGS, depth_to_metres
from zs_perception.replay_directory import depth_to_millimetres

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
CAMERA_INFO = 'sensor_msgs/msg/CameraInfo'
PACKAGE = 'zs_perception'
STORAGE_FORMATS = ('mcap', 'sqlite3')
# Colour frames whose depth / camera info stamp differs by more than this are left unpaired.
DEFAULT_TOLERANCE_NS = 1_000_000
_TOPIC_ROLES = ('image', 'depth', 'camera_info')


class BagError(ValueError):
    """A bag cannot be read or written as asked (the message says why and how to fix it)."""


def _rosbags():
    try:
        import rosbags  # noqa: F401
    except ImportError as err:
        raise BagError('Reading and writing bags needs the rosbags library: pip install '
                       'rosbags (it is in requirements.txt).') from err


def message_definitions_dir() -> Optional[Path]:
    """Return the directory with this package's ``*.msg`` files, or ``None`` when absent.

    ``ZS_PERCEPTION_MSG_DIR`` overrides; then the installed share directory (ament index);
    then ``msg/`` of the source tree this module lives in.
    """
    candidates = []
    if os.environ.get('ZS_PERCEPTION_MSG_DIR'):
        candidates.append(Path(os.environ['ZS_PERCEPTION_MSG_DIR']))
    try:
        from ament_index_python.packages import get_package_share_directory
        candidates.append(Path(get_package_share_directory(PACKAGE)) / 'msg')
    except (ImportError, LookupError, OSError, ValueError):  # not installed, no ament index
        pass
    candidates.append(Path(__file__).resolve().parents[1] / 'msg')
    for path in candidates:
        if path.is_dir() and any(path.glob('*.msg')):
            return path
    return None


def package_typestore():
    """Return a ROS 2 Jazzy ``rosbags`` typestore with this package's messages registered."""
    _rosbags()
    from rosbags.typesys import get_types_from_msg, get_typestore, Stores
    store = get_typestore(Stores.ROS2_JAZZY)
    folder = message_definitions_dir()
    types = {}
    for path in sorted(folder.glob('*.msg')) if folder is not None else ():
        types.update(get_types_from_msg(path.read_text(), f'{PACKAGE}/msg/{path.stem}'))
    store.register(types)
    return store


# ---------------------------------------------------------------------- reading
@dataclass
class BagFrame:
    """One colour image of a bag with the depth image and camera info of its stamp.

    Attributes:
        stamp_ns: the colour image's header stamp (ns).
        log_time_ns: when the colour image was recorded (ns, the bag's clock).
        image: serialized (CDR) colour message, as recorded.
        image_type: ``'sensor_msgs/msg/Image'`` or ``'sensor_msgs/msg/CompressedImage'``.
        depth: serialized depth ``Image`` of the same stamp, or ``None``.
        info: serialized ``CameraInfo`` of the same stamp, or ``None``.

    """

    stamp_ns: int
    log_time_ns: int
    image: bytes
    image_type: str
    depth: Optional[bytes]
    info: Optional[bytes]


def _stamp_ns(msg) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def choose_topics(topics: Dict[str, Tuple[str, Optional[str]]], *, image: str = '',
                  depth: str = '', camera_info: str = '') -> Dict[str, Optional[str]]:
    """Pick the colour, depth and camera-info topics of a bag.

    Args:
        topics: ``{topic: (message type, encoding of its first message or None)}``.
        image, depth, camera_info: topic names to use; empty: found by type. A colour
            topic is an ``Image`` whose encoding is not a depth encoding (or a
            ``CompressedImage``), a depth topic an ``Image`` with a depth encoding
            (``16UC1``, ``32FC1``...); when several fit, the one whose name says
            ``color``/``rgb`` (``depth``) wins, then the first in name order; camera info
            next to the chosen image (same namespace) wins.

    Returns:
        ``{'image': topic, 'depth': topic or None, 'camera_info': topic or None}``.

    Raises:
        BagError: a named topic is missing or of the wrong type, or no colour topic exists.

    """
    wanted = {'image': image, 'depth': depth, 'camera_info': camera_info}
    types = {'image': (IMAGE, COMPRESSED_IMAGE), 'depth': (IMAGE,), 'camera_info': (CAMERA_INFO,)}
    listing = ', '.join(f'{t} ({m})' for t, (m, _) in sorted(topics.items())) or 'none'
    chosen: Dict[str, Optional[str]] = {}
    for role in _TOPIC_ROLES:
        name = wanted[role]
        if not name:
            continue
        if name not in topics:
            raise BagError(f'The bag has no topic {name!r} (asked for as the {role} topic); '
                           f'its topics: {listing}.')
        if topics[name][0] not in types[role]:
            raise BagError(f'Topic {name!r} holds {topics[name][0]}, but the {role} topic must '
                           f'hold {" or ".join(types[role])}.')
        chosen[role] = name

    def is_depth(topic: str) -> bool:
        msgtype, encoding = topics[topic]
        return msgtype == IMAGE and encoding in DEPTH_ENCODINGS

    def best(candidates: List[str], words: Sequence[str]) -> Optional[str]:
        named = [t for t in candidates if any(w in t.lower() for w in words)]
        return (named or candidates or [None])[0]

    names = sorted(topics)
    if 'image' not in chosen:
        chosen['image'] = best([t for t in names if topics[t][0] in types['image']
                                and not is_depth(t) and t != chosen.get('depth')],
                               ('color', 'rgb'))
    if chosen['image'] is None:
        raise BagError(f'The bag has no colour image topic (sensor_msgs/msg/Image with a colour '
                       f'encoding, or CompressedImage); its topics: {listing}. Name one with '
                       'the image_topic parameter.')
    if 'depth' not in chosen:
        chosen['depth'] = best([t for t in names if is_depth(t) and t != chosen['image']],
                               ('depth',))
    if 'camera_info' not in chosen:
        infos = [t for t in names if topics[t][0] == CAMERA_INFO]
        namespace = chosen['image'].rsplit('/', 1)[0] + '/'
        near = [t for t in infos if t.startswith(namespace)]
        chosen['camera_info'] = (near or infos or [None])[0]
    return chosen


class BagFrames:
    """The camera frames of a rosbag2 recording (sqlite3 or MCAP), read into memory.

    Args:
        path: the bag directory (with ``metadata.yaml``) or a single ``.mcap`` / ``.db3``.
        image_topic, depth_topic, camera_info_topic: topics to play; empty: found by type
            (:func:`choose_topics`).
        tolerance_ns: largest stamp difference of a depth image or camera info paired
            with a colour image.

    Attributes:
        topics: the chosen ``{'image': ..., 'depth': ..., 'camera_info': ...}``.
        frames: one :class:`BagFrame` per colour image, in recording order.
        typestore: the typestore messages are decoded with.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        BagError: the bag cannot be read, or has no colour image topic.

    """

    def __init__(self, path: Union[str, Path], *, image_topic: str = '', depth_topic: str = '',
                 camera_info_topic: str = '', tolerance_ns: int = DEFAULT_TOLERANCE_NS):
        _rosbags()
        from rosbags.highlevel import AnyReader, AnyReaderError
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise FileNotFoundError(f'Bag {str(self.path)!r} does not exist; expected a rosbag2 '
                                    'directory (with metadata.yaml) or an .mcap / .db3 file.')
        self.typestore = package_typestore()
        try:
            with AnyReader([self.path], default_typestore=self.typestore) as reader:
                self._read(reader, image_topic, depth_topic, camera_info_topic, tolerance_ns)
        except (AnyReaderError, KeyError, OSError) as err:  # OSError: no metadata.yaml
            raise BagError(f'Cannot read bag {str(self.path)!r}: {err}. Expected a rosbag2 '
                           'recording (sqlite3 or MCAP, CDR serialization).') from err

    def _read(self, reader, image_topic, depth_topic, info_topic, tolerance_ns) -> None:
        firsts: Dict[str, Tuple[str, Optional[str]]] = {}
        for conn in reader.connections:
            if conn.topic in firsts:
                continue
            encoding = None
            if conn.msgtype == IMAGE:
                for _, _, raw in reader.messages(connections=[conn]):
                    encoding = reader.deserialize(raw, conn.msgtype).encoding
                    break
            firsts[conn.topic] = (conn.msgtype, encoding)
        self.topics = choose_topics(firsts, image=image_topic, depth=depth_topic,
                                    camera_info=info_topic)
        roles = {topic: role for role, topic in self.topics.items() if topic}
        conns = [c for c in reader.connections if c.topic in roles]
        images: List[Tuple[int, int, bytes, str]] = []
        by_stamp: Dict[str, Dict[int, bytes]] = {'depth': {}, 'camera_info': {}}
        for conn, log_time, raw in reader.messages(connections=conns):
            role = roles[conn.topic]
            stamp = _stamp_ns(reader.deserialize(raw, conn.msgtype))
            if role == 'image':
                images.append((stamp, log_time, bytes(raw), conn.msgtype))
            else:
                by_stamp[role].setdefault(stamp, bytes(raw))
        self.frames = [BagFrame(stamp, log_time, raw, msgtype,
                                _nearest(by_stamp['depth'], stamp, tolerance_ns),
                                _nearest(by_stamp['camera_info'], stamp, tolerance_ns))
                       for stamp, log_time, raw, msgtype in images]

    def __len__(self) -> int:
        """Return the number of colour frames."""
        return len(self.frames)

    @property
    def has_depth(self) -> bool:
        """Whether a depth topic was found (some frames may still lack a match)."""
        return self.topics['depth'] is not None

    def decode(self, index: int):
        """Decode frame ``index`` without ROS.

        Returns:
            ``(rgb, depth_m, intrinsics)``: ``(H, W, 3)`` ``uint8`` RGB; ``(h, w)``
            ``float32`` metres (NaN = no reading) or ``None``; :class:`CameraIntrinsics`
            or ``None``.

        Raises:
            BagError: an encoding this package cannot decode.

        """
        frame = self.frames[index]
        msg = self.typestore.deserialize_cdr(frame.image, frame.image_type)
        if frame.image_type == COMPRESSED_IMAGE:
            import cv2
            bgr = cv2.imdecode(np.frombuffer(msg.data, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None:
                raise BagError(f'Frame {index}: cannot decode the {msg.format!r} image.')
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        else:
            rgb = _image_array(msg)
            if msg.encoding == 'bgr8':
                rgb = rgb[..., ::-1]
            elif msg.encoding != 'rgb8':
                raise BagError(f'Frame {index}: colour encoding {msg.encoding!r}; decode() '
                               'handles rgb8 and bgr8.')
        depth_m = None
        if frame.depth is not None:
            dmsg = self.typestore.deserialize_cdr(frame.depth, IMAGE)
            if dmsg.encoding not in DEPTH_ENCODINGS:
                raise BagError(f'Frame {index}: depth encoding {dmsg.encoding!r}, expected '
                               f'one of {", ".join(DEPTH_ENCODINGS)}.')
            depth_m = depth_to_metres(_image_array(dmsg), dmsg.encoding)
        intrinsics = None
        if frame.info is not None:
            info = self.typestore.deserialize_cdr(frame.info, CAMERA_INFO)
            intrinsics = CameraIntrinsics.from_k(list(info.k), int(info.width), int(info.height))
        return np.ascontiguousarray(rgb), depth_m, intrinsics


def _nearest(by_stamp: Dict[int, bytes], stamp: int, tolerance_ns: int) -> Optional[bytes]:
    if stamp in by_stamp:
        return by_stamp[stamp]
    if not by_stamp:
        return None
    best = min(by_stamp, key=lambda s: abs(s - stamp))
    return by_stamp[best] if abs(best - stamp) <= tolerance_ns else None


def _image_array(msg) -> np.ndarray:
    """View a rosbags ``Image`` as ``(H, W)`` or ``(H, W, C)`` (row padding dropped)."""
    dtypes = {'rgb8': ('u1', 3), 'bgr8': ('u1', 3), 'mono8': ('u1', 1), '8UC1': ('u1', 1),
              '16UC1': ('u2', 1), 'mono16': ('u2', 1), '32FC1': ('f4', 1)}
    if msg.encoding not in dtypes:
        raise BagError(f'Image encoding {msg.encoding!r} is not one of {", ".join(dtypes)}.')
    kind, channels = dtypes[msg.encoding]
    dtype = np.dtype(kind).newbyteorder('>' if msg.is_bigendian else '<')
    rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(msg.height, msg.step)
    pixels = rows[:, :msg.width * channels * dtype.itemsize].copy().view(dtype)
    pixels = pixels.astype(dtype.newbyteorder('='))
    return pixels.reshape(msg.height, msg.width, channels) if channels > 1 else pixels


# ---------------------------------------------------------------------- writing
class BagWriter:
    """Write serialized messages to a new rosbag2 (MCAP by default) with their schemas.

    Args:
        path: the bag directory to create (must not exist).
        storage: ``'mcap'`` or ``'sqlite3'``.

    Raises:
        BagError: ``path`` exists or the storage format is unknown.

    """

    def __init__(self, path: Union[str, Path], storage: str = 'mcap'):
        _rosbags()
        from rosbags.rosbag2 import StoragePlugin, Writer
        if storage not in STORAGE_FORMATS:
            raise BagError(f'Bag storage must be one of {", ".join(STORAGE_FORMATS)}, got '
                           f'{storage!r}.')
        self.path = Path(path).expanduser()
        if self.path.exists():
            raise BagError(f'{str(self.path)!r} exists already: rosbag2 bags are new '
                           'directories; choose another path or remove it.')
        self.typestore = package_typestore()
        plugin = StoragePlugin.MCAP if storage == 'mcap' else StoragePlugin.SQLITE3
        self._writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        self._writer.open()
        self._connections: Dict[str, object] = {}
        self.counts: Dict[str, int] = {}

    def knows(self, msgtype: str) -> bool:
        """Tell whether a message type (``pkg/msg/Name``) has a definition to record with."""
        return msgtype in self.typestore.fielddefs

    def add_topic(self, topic: str, msgtype: str) -> None:
        """Declare a topic and its type (no-op when already declared).

        Raises:
            BagError: the type is unknown to the typestore.

        """
        if topic in self._connections:
            return
        if not self.knows(msgtype):
            raise BagError(f'No message definition for {msgtype} (topic {topic}); only ROS 2 '
                           "Jazzy types and this package's msg/*.msg can be recorded.")
        self._connections[topic] = self._writer.add_connection(topic, msgtype,
                                                               typestore=self.typestore)
        self.counts[topic] = 0

    def write(self, topic: str, log_time_ns: int, data: bytes) -> None:
        """Write one serialized (CDR) message of a declared topic at ``log_time_ns``."""
        self._writer.write(self._connections[topic], int(log_time_ns), data)
        self.counts[topic] += 1

    def write_message(self, topic: str, msgtype: str, log_time_ns: int, message) -> None:
        """Serialize a ``rosbags`` message of ``msgtype`` and write it (declaring the topic)."""
        self.add_topic(topic, msgtype)
        self.write(topic, log_time_ns, bytes(self.typestore.serialize_cdr(message, msgtype)))

    def close(self) -> None:
        """Finish the bag (writes metadata.yaml); idempotent."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> 'BagWriter':
        """Return the writer."""
        return self

    def __exit__(self, *exc) -> None:
        """Close the bag."""
        self.close()


def write_camera_bag(path: Union[str, Path],
                     frames: Iterable[Tuple[int, np.ndarray, Optional[np.ndarray],
                                            CameraIntrinsics]], *,
                     frame_id: str = 'camera_color_optical_frame', storage: str = 'mcap',
                     image_topic: str = '/camera/color/image_raw',
                     depth_topic: str = '/camera/depth/image_raw',
                     camera_info_topic: str = '/camera/color/camera_info') -> int:
    """Write camera frames to a new bag: ``rgb8`` image, ``16UC1`` depth (mm), camera info.

    Args:
        path: the bag directory to create.
        frames: ``(stamp_ns, rgb (H, W, 3) uint8, depth_m (H, W) float32 metres or None,
            intrinsics)``; each message is stamped and logged at ``stamp_ns``.
        frame_id: ``header.frame_id`` of every message (the camera optical frame).
        storage: ``'mcap'`` or ``'sqlite3'``.
        image_topic, depth_topic, camera_info_topic: topic names.

    Returns:
        The number of frames written.

    """
    with BagWriter(path, storage) as writer:
        store = writer.typestore
        types = store.types
        count = 0
        for stamp_ns, rgb, depth_m, intrinsics in frames:
            sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
            header = types['std_msgs/msg/Header'](
                stamp=types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec),
                frame_id=frame_id)
            rgb = np.ascontiguousarray(rgb, np.uint8)
            writer.write_message(image_topic, IMAGE, stamp_ns, types[IMAGE](
                header=header, height=rgb.shape[0], width=rgb.shape[1], encoding='rgb8',
                is_bigendian=0, step=rgb.shape[1] * 3, data=rgb.reshape(-1)))
            if depth_m is not None:
                mm = depth_to_millimetres(depth_m)
                writer.write_message(depth_topic, IMAGE, stamp_ns, types[IMAGE](
                    header=header, height=mm.shape[0], width=mm.shape[1], encoding='16UC1',
                    is_bigendian=0, step=mm.shape[1] * 2,
                    data=np.frombuffer(mm.astype('<u2').tobytes(), np.uint8)))
            writer.write_message(camera_info_topic, CAMERA_INFO, stamp_ns,
                                 _camera_info(types, header, intrinsics))
            count += 1
    return count


def _camera_info(types, header, intr: CameraIntrinsics):
    """Build a rosbags CameraInfo of an undistorted pinhole camera."""
    roi = types['sensor_msgs/msg/RegionOfInterest'](x_offset=0, y_offset=0, height=0, width=0,
                                                    do_rectify=False)
    return types[CAMERA_INFO](
        header=header, height=int(intr.height), width=int(intr.width),
        distortion_model='plumb_bob', d=np.zeros(5),
        k=np.array([intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0]),
        r=np.eye(3).reshape(-1),
        p=np.array([intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]),
        binning_x=0, binning_y=0, roi=roi)
