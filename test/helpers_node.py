"""Shared harness of the node tests: an in-process rclpy graph and a test-double segmenter."""

import resource
import threading
import time

from geometry_msgs.msg import PoseArray
import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from zs_perception.msg import SegmentedObjectArray
from zs_perception.ros import conversions
from zs_perception.ros.node import PerceptionNode
from zs_perception.ros.qos import GOAL_QOS
from zs_perception.testing.doubles import FixedMaskSegmenter  # noqa: F401 (the tests' double)


def wait_until(predicate, timeout=10.0) -> bool:
    """Poll ``predicate`` every 10 ms; return whether it became true within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def rss_mb():
    """Peak resident set size of this process, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Graph:
    """A node under test, a peer node that feeds it and records its outputs, one executor."""

    def __init__(self, segmenter, params=None, namespace='/t'):
        self.context = Context()
        rclpy.init(context=self.context,
                   domain_id=int(np.random.default_rng().integers(100, 230)))
        overrides = [Parameter(k, value=v) for k, v in (params or {}).items()]
        self.node = PerceptionNode(segmenter=segmenter, context=self.context,
                                   namespace=namespace, parameter_overrides=overrides)
        self.peer = rclpy.create_node('peer', namespace=namespace, context=self.context)
        self.image_pub = self.peer.create_publisher(Image, 'image', qos_profile_sensor_data)
        self.depth_pub = self.peer.create_publisher(Image, 'depth', qos_profile_sensor_data)
        self.info_pub = self.peer.create_publisher(CameraInfo, 'camera_info',
                                                   qos_profile_sensor_data)
        self.goal_pub = self.peer.create_publisher(String, 'goal', GOAL_QOS)
        self.received = {}
        self._lock = threading.Lock()
        base = f'{namespace.rstrip("/")}/zs_perception/'
        for name, msg_type in (('objects', SegmentedObjectArray), ('masks', Image),
                               ('poses', PoseArray), ('markers', MarkerArray),
                               ('points', PointCloud2), ('debug_image', Image)):
            self.received[name] = []
            self.peer.create_subscription(msg_type, base + name, self._keep(name), 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.peer)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()
        self._wait_until_connected()

    def _wait_until_connected(self, timeout=10.0):
        """Wait for discovery: every publisher has its subscriber and the reverse.

        The node's depth and camera-info subscriptions must see their publishers too:
        discovery is not symmetric (a writer can match its reader before the reader knows the
        writer).
        """
        pubs = [self.image_pub, self.depth_pub, self.info_pub, self.goal_pub,
                self.node._objects_pub, self.node._masks_pub, self.node._poses_pub,
                self.node._markers_pub, self.node._points_pub, self.node._debug_pub]
        subs = [self.node._depth_sub, self.node._info_sub]
        deadline = time.monotonic() + timeout
        while (any(p.get_subscription_count() == 0 for p in pubs)
               or any(s.get_publisher_count() == 0 for s in subs)):
            if time.monotonic() > deadline:
                raise AssertionError('the test graph did not connect within 10 s')
            time.sleep(0.01)

    def _keep(self, name):
        def callback(msg):
            with self._lock:
                self.received[name].append((time.monotonic(), msg))
        return callback

    def now(self):
        return self.peer.get_clock().now().to_msg()

    def publish_frame(self, rgb=None, depth_m=None, intrinsics=None, stamp=None,
                      frame_id='camera_color_optical_frame', image=None, depth=None, info=None):
        """Publish depth and camera info, then the image, all with one stamp; return it."""
        header = Header(stamp=stamp or self.now(), frame_id=frame_id)
        if info is None and intrinsics is not None:
            info = CameraInfo(width=intrinsics.width, height=intrinsics.height,
                              k=intrinsics.k.ravel().tolist())
        if depth is None and depth_m is not None:
            depth = conversions.array_to_image(np.asarray(depth_m, np.float32), '32FC1', header)
        if image is None:
            image = conversions.array_to_image(rgb, 'rgb8', header)
        for msg, pub in ((info, self.info_pub), (depth, self.depth_pub)):
            if msg is not None:
                msg.header = header
                pub.publish(msg)
        image.header = header
        self.image_pub.publish(image)
        return header

    def wait_for(self, name, predicate=lambda msg: True, timeout=10.0):
        """Wait for a received message on output ``name`` matching ``predicate``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                for _, msg in self.received[name]:
                    if predicate(msg):
                        return msg
            time.sleep(0.005)
        raise AssertionError(f'no {name} message matched within {timeout} s; node counters: '
                             f'{self.node.counters}; warnings: {list(self.node.recent_warnings)}')

    def wait_for_stamp(self, name, header, timeout=10.0):
        def same_stamp(msg):
            if isinstance(msg, MarkerArray):  # no header of its own; every marker has one
                return any(m.header.stamp == header.stamp for m in msg.markers)
            return msg.header.stamp == header.stamp
        return self.wait_for(name, same_stamp, timeout)

    def wait_counter(self, name, above, timeout=10.0):
        """Wait until the node's counter ``name`` exceeds ``above``."""
        deadline = time.monotonic() + timeout
        while self.node.counters[name] <= above:
            if time.monotonic() > deadline:
                raise AssertionError(f'counter {name} stayed at {self.node.counters[name]}; '
                                     f'warnings: {list(self.node.recent_warnings)}')
            time.sleep(0.002)

    def set_goal(self, text, timeout=5.0):
        """Publish a goal and wait until the node has received it (it applies next frame)."""
        before = self.node.counters['goals_received']
        self.goal_pub.publish(String(data=text))
        deadline = time.monotonic() + timeout
        while self.node.counters['goals_received'] == before:
            if time.monotonic() > deadline:
                raise AssertionError(f'the node did not receive the goal within {timeout} s')
            time.sleep(0.002)

    def close(self):
        self.executor.shutdown(timeout_sec=5.0)
        self._thread.join(timeout=5.0)  # no callback may run on a node being destroyed
        self.node.destroy_node()
        self.peer.destroy_node()
        rclpy.try_shutdown(context=self.context)
