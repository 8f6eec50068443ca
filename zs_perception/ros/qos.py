"""QoS profiles of the package's topics: one definition each, used by the node, tools and tests.

The goal topic: publishers use :data:`GOAL_QOS` (reliable, transient local, keep last 1: a
latched goal reaches subscribers that join later). The node reads it with
:data:`GOAL_READER_QOS` (reliable, volatile), which DDS matches with every reliable
publisher, volatile or transient local, without an incompatible-QoS warning; a
transient-local reader would warn against each volatile publisher (``ros2 topic pub`` without
``--qos-durability transient_local``, most scripts). A goal latched before the node started
is fetched once at start-up by a short-lived :data:`GOAL_QOS` reader created only while every
goal publisher offers transient local (see ``PerceptionNode``).
"""

from rclpy.qos import (DurabilityPolicy, HistoryPolicy, qos_profile_sensor_data, QoSProfile,
                       ReliabilityPolicy)

GOAL_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                      reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)
GOAL_READER_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                             reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.VOLATILE)


def camera_qos(reliability: str) -> QoSProfile:
    """Sensor-data QoS (keep last, volatile) with ``'best_effort'`` or ``'reliable'``."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST, depth=qos_profile_sensor_data.depth,
        durability=DurabilityPolicy.VOLATILE,
        reliability=(ReliabilityPolicy.RELIABLE if reliability == 'reliable'
                     else ReliabilityPolicy.BEST_EFFORT))
