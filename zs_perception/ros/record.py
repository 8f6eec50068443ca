"""Record every output of a perception node to an MCAP (or sqlite3) rosbag2.

The recorder watches the graph and subscribes to every topic the perception node
publishes (``~/objects``, ``~/masks``, ``~/poses``, ``~/markers``, ``~/points``,
``~/debug_image``, ``/diagnostics`` and whatever else it offers; not ``/rosout``,
``/parameter_events`` nor hidden topics such as an action's ``_action/*``), as serialized
messages (no conversion: the bag holds the CDR bytes the node sent), logged at their arrival on
this node's clock, like ``ros2 bag record``. The schemas come from the ROS 2 Jazzy
definitions and this package's ``msg/*.msg`` (:func:`zs_perception.bags.package_typestore`),
so Foxglove and ``ros2 bag play`` open the file. A topic of a type without a definition is
named in one warning and skipped. Subscribing to ``~/debug_image`` makes the node draw it,
as with any subscriber; ``record_debug_image:=false`` leaves it out.

Run: ``ros2 run zs_perception zs_perception_record --ros-args -p output:=out_bag``
(``-p node:=/ns/zs_perception`` for a node elsewhere). The bag is finished at shutdown.
"""

import threading
from typing import Dict, List, Optional

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy

from zs_perception.bags import BagError, BagWriter, STORAGE_FORMATS
from zs_perception.ros.process import run_node

DEFAULT_NODE = '/zs_perception'
# How often the graph is checked for new output topics (s).
_DISCOVERY_PERIOD_S = 0.2
# Deep enough that a burst of outputs (one frame publishes about seven topics) is kept.
_RECORD_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
_DEBUG_IMAGE = 'debug_image'
# Every node publishes on these; they carry all nodes' logs and parameter changes, not this
# node's outputs (``ros2 bag record`` topics can add them).
_INFRASTRUCTURE = ('/rosout', '/parameter_events')


class OutputRecorder(Node):
    """Subscribe to every topic a node publishes and write the messages to a new bag.

    Parameters (read-only): ``output`` (str, required: the bag directory to create),
    ``node`` (str, the perception node's fully qualified name, default ``/zs_perception``),
    ``storage`` (``mcap``, the default, or ``sqlite3``), ``record_debug_image`` (bool,
    default true).

    Raises:
        ValueError: ``output`` empty or existing, or an unknown storage format.

    """

    def __init__(self, **kwargs):
        super().__init__('zs_record', **kwargs)
        read_only = {'read_only': True}
        output = self.declare_parameter('output', '', ParameterDescriptor(
            description='The bag directory to create (must not exist).', **read_only)).value
        self._target = self.declare_parameter('node', DEFAULT_NODE, ParameterDescriptor(
            description='Fully qualified name of the perception node whose outputs are '
                        'recorded.', **read_only)).value
        storage = self.declare_parameter('storage', STORAGE_FORMATS[0], ParameterDescriptor(
            description='Bag storage: mcap or sqlite3.', **read_only)).value
        self._debug = self.declare_parameter('record_debug_image', True, ParameterDescriptor(
            description='Also record ~/debug_image (subscribing makes the node draw it).',
            **read_only)).value
        if not output:
            raise ValueError('zs_record: parameter output is empty; pass the bag to create '
                             'with --ros-args -p output:=DIR.')
        namespace, _, name = self._target.rstrip('/').rpartition('/')
        self._node_name, self._node_namespace = name, namespace or '/'
        try:
            self.writer = BagWriter(output, storage)
        except BagError as err:
            raise ValueError(f'zs_record: {err}') from None
        self._lock = threading.Lock()
        self._recorded: Dict[str, object] = {}
        self._skipped: List[str] = []
        self._closed = False
        self.create_timer(_DISCOVERY_PERIOD_S, self._discover)
        self.get_logger().info(f'Recording the outputs of {self._target} to '
                               f'{str(self.writer.path)!r} ({storage}).')

    @property
    def counts(self) -> Dict[str, int]:
        """Return ``{topic: messages written}``."""
        with self._lock:
            return dict(self.writer.counts)

    def recording(self) -> List[str]:
        """Return the topics subscribed to so far."""
        return sorted(self._recorded)

    def _discover(self) -> None:
        if (self._node_name, self._node_namespace) not in self.get_node_names_and_namespaces():
            return  # not (yet) in the graph
        found = self.get_publisher_names_and_types_by_node(self._node_name,
                                                           self._node_namespace)
        for topic, types in found:
            if (topic in self._recorded or topic in self._skipped or topic in _INFRASTRUCTURE
                    or '/_' in topic):  # hidden topics (actions' internals), as ros2 bag
                continue
            if topic.rsplit('/', 1)[-1] == _DEBUG_IMAGE and not self._debug:
                continue
            self._subscribe(topic, types[0])

    def _subscribe(self, topic: str, msgtype: str) -> None:
        try:
            message_class = _message_class(msgtype)
            with self._lock:
                self.writer.add_topic(topic, msgtype)
        except (BagError, ImportError, AttributeError) as err:
            self._skipped.append(topic)
            self.get_logger().warning(f'Not recording {topic}: {err}')
            return
        self._recorded[topic] = self.create_subscription(
            message_class, topic, lambda data, t=topic: self._write(t, data), _RECORD_QOS,
            raw=True)
        self.get_logger().info(f'Recording {topic} ({msgtype}).')

    def _write(self, topic: str, data: bytes) -> None:
        with self._lock:
            if not self._closed:
                self.writer.write(topic, self.get_clock().now().nanoseconds, data)

    def close(self) -> None:
        """Finish the bag (idempotent); later messages are dropped."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self.writer.close()
                total = sum(self.writer.counts.values())
                self.get_logger().info(f'Wrote {total} messages on {len(self.writer.counts)} '
                                       f'topics to {str(self.writer.path)!r}.')

    def destroy_node(self) -> None:
        """Finish the bag, then destroy the node."""
        self.close()
        super().destroy_node()


def _message_class(msgtype: str):
    """Return the rclpy message class of ``'pkg/msg/Name'``."""
    package, kind, name = msgtype.split('/')
    module = __import__(f'{package}.{kind}', fromlist=[name])
    return getattr(module, name)


def main(args: Optional[List[str]] = None) -> int:
    """Run the recorder until SIGINT or SIGTERM; return the process exit status."""
    return run_node(OutputRecorder, 'zs_record', fatal=(ValueError,), args=args)
