"""The ROS-free frame logic of the node: synchronising, processing, health."""
