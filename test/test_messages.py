"""Our generated messages round-trip through a real rclpy publisher and subscriber."""

import time

from geometry_msgs.msg import Pose, Vector3
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image, RegionOfInterest
from std_msgs.msg import Header

from zs_perception.msg import SegmentedObject, SegmentedObjectArray


def _full_message():
    header = Header(frame_id='camera_color_optical_frame')
    header.stamp.sec, header.stamp.nanosec = 1700000000, 123456789
    mask = np.zeros((3, 4), np.uint8)
    mask[1:, 1:3] = 255
    obj = SegmentedObject(
        id=42, label='red mug', score=0.875, has_pose=True, pose_status='ok',
        roi=RegionOfInterest(x_offset=10, y_offset=20, width=4, height=3, do_rectify=False),
        mask=Image(header=header, height=3, width=4, encoding='mono8', is_bigendian=0, step=4,
                   data=mask.tobytes()),
        pose=Pose(), size=Vector3(x=0.1, y=0.05, z=0.02), num_points=1234,
        depth_valid_fraction=0.75)
    obj.pose.position.x, obj.pose.position.y, obj.pose.position.z = 0.1, -0.2, 0.9
    obj.pose.orientation.x, obj.pose.orientation.w = 0.6, 0.8
    other = SegmentedObject(id=7, label='screwdriver', score=0.5, has_pose=False,
                            pose_status='no depth image')
    return SegmentedObjectArray(header=header, prompts=['red mug', 'screwdriver'],
                                backend='clipseg_sam', objects=[obj, other])


@pytest.fixture
def context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


def test_segmented_object_array_round_trip(context):
    sent = _full_message()
    received = []
    pub_node = rclpy.create_node('msg_pub', context=context)
    sub_node = rclpy.create_node('msg_sub', context=context)
    executor = SingleThreadedExecutor(context=context)
    try:
        pub = pub_node.create_publisher(SegmentedObjectArray, 'zs_msg_round_trip', 10)
        sub_node.create_subscription(SegmentedObjectArray, 'zs_msg_round_trip',
                                     received.append, 10)
        executor.add_node(pub_node)
        executor.add_node(sub_node)
        deadline = time.monotonic() + 10.0
        while not received and time.monotonic() < deadline:
            pub.publish(sent)
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.shutdown()
        pub_node.destroy_node()
        sub_node.destroy_node()
    assert received, 'no message received within 10 s'
    got = received[0]
    assert got == sent
    # Spot-check through the Python API, not only __eq__.
    assert got.objects[0].mask.data.tobytes() == sent.objects[0].mask.data.tobytes()
    assert got.objects[0].score == pytest.approx(0.875)
    assert got.objects[1].pose_status == 'no depth image'
    assert list(got.prompts) == ['red mug', 'screwdriver']
