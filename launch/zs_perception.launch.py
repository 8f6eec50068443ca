r"""Launch the zs_perception node, optionally with the replay publisher and rviz2.

Examples::

    # A RealSense camera (realsense2_camera topic names), goal set later on /goal:
    ros2 launch zs_perception zs_perception.launch.py \
        image_topic:=/camera/camera/color/image_raw \
        depth_topic:=/camera/camera/aligned_depth_to_color/image_raw \
        camera_info_topic:=/camera/camera/color/camera_info

    # The demo scene replayed at 2 Hz, with rviz2 (the rviz config expects no namespace):
    python -m zs_perception.tools.make_demo_scene /tmp/scene
    ros2 launch zs_perception zs_perception.launch.py replay_dir:=/tmp/scene rviz:=true

Arguments: ``params_file`` (default: the installed config/zs_perception.yaml),
``namespace`` (default: none), ``image_topic``, ``depth_topic``, ``camera_info_topic``,
``goal_topic`` (what the node's ``image``, ``depth``, ``camera_info`` and ``goal``
subscriptions are remapped to), ``rviz`` (start rviz2 with config/zs_perception.rviz),
``replay_dir`` (non-empty: also start ``zs_perception_replay`` on that directory,
publishing on the same topics) and ``replay_rate_hz``.

With ``rviz:=true`` the launch first checks that rviz2 is installed and stops, starting
nothing, with how to install it when it is not. When the perception node exits (a fatal
start-up error, a crash) the whole launch shuts down, so the replay is never left running
alone. The parameter file's key (``/**/zs_perception``) applies it under any ``namespace``.

The processes it starts load the package's Fast DDS profile (config/fastdds_shm.xml: shared
memory large enough for camera images) unless ``FASTRTPS_DEFAULT_PROFILES_FILE`` is already
set; export the same variable for the camera driver, whose shared memory carries the images.
"""

import shutil

from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler,
                            SetEnvironmentVariable, Shutdown)
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.substitutions import (EnvironmentVariable, LaunchConfiguration,
                                  NotEqualsSubstitution, PathJoinSubstitution)
from launch_ros.actions import Node
from launch_ros.descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

PACKAGE = 'zs_perception'
RVIZ_INSTALL_HINT = ('rviz:=true but rviz2 is not installed (not on PATH). Install it with '
                     '`sudo apt install ros-jazzy-rviz2`, or launch with rviz:=false.')


def _check_rviz(context):
    """Fail the launch before anything starts when rviz2 is asked for but missing."""
    wanted = LaunchConfiguration('rviz').perform(context).strip().lower() in ('true', '1')
    if wanted and shutil.which('rviz2') is None:
        raise RuntimeError(RVIZ_INSTALL_HINT)
    return []


def generate_launch_description():
    """Return the launch description (see the module docstring for the arguments)."""
    share = FindPackageShare(PACKAGE)
    arguments = [
        DeclareLaunchArgument(
            'params_file',
            default_value=PathJoinSubstitution([share, 'config', 'zs_perception.yaml']),
            description='YAML parameter file of the zs_perception node.'),
        DeclareLaunchArgument('namespace', default_value='',
                              description='Namespace of the nodes (and their topics).'),
        DeclareLaunchArgument('image_topic', default_value='image',
                              description='Colour image topic (sensor_msgs/Image).'),
        DeclareLaunchArgument('depth_topic', default_value='depth',
                              description='Depth image registered to the colour image '
                                          '(16UC1 mm or 32FC1 m).'),
        DeclareLaunchArgument('camera_info_topic', default_value='camera_info',
                              description='CameraInfo of the colour image.'),
        DeclareLaunchArgument('goal_topic', default_value='goal',
                              description='Goal phrases (std_msgs/String, comma separated).'),
        DeclareLaunchArgument('rviz', default_value='false',
                              description='Start rviz2 with config/zs_perception.rviz.'),
        DeclareLaunchArgument('replay_dir', default_value='',
                              description='Replay directory to play as the camera; empty: '
                                          'none (use a real camera).'),
        DeclareLaunchArgument('replay_rate_hz', default_value='2.0',
                              description='Frames per second of the replay.'),
    ]
    # Camera-rate images between processes need a larger shared-memory segment than Fast
    # DDS's default (see the profile's comment); a profile the user set wins.
    fastdds_profile = SetEnvironmentVariable(
        'FASTRTPS_DEFAULT_PROFILES_FILE',
        EnvironmentVariable('FASTRTPS_DEFAULT_PROFILES_FILE',
                            default_value=PathJoinSubstitution([share, 'config',
                                                                'fastdds_shm.xml'])))
    camera_remaps = [
        ('image', LaunchConfiguration('image_topic')),
        ('image/compressed', [LaunchConfiguration('image_topic'), '/compressed']),
        ('depth', LaunchConfiguration('depth_topic')),
        ('camera_info', LaunchConfiguration('camera_info_topic')),
    ]
    perception = Node(
        package=PACKAGE,
        executable='zs_perception_node',
        name='zs_perception',
        namespace=LaunchConfiguration('namespace'),
        parameters=[LaunchConfiguration('params_file')],
        remappings=camera_remaps + [('goal', LaunchConfiguration('goal_topic'))],
        output='screen',
        emulate_tty=True,
    )
    replay = Node(
        package=PACKAGE,
        executable='zs_perception_replay',
        name='zs_replay',
        namespace=LaunchConfiguration('namespace'),
        parameters=[{
            'directory': LaunchConfiguration('replay_dir'),
            'rate_hz': ParameterValue(LaunchConfiguration('replay_rate_hz'), value_type=float),
        }],
        remappings=camera_remaps,
        output='screen',
        condition=IfCondition(NotEqualsSubstitution(LaunchConfiguration('replay_dir'), '')),
    )
    rviz = Node(
        package='rviz2',
        executable='rviz2',
        name='rviz2',
        arguments=['-d', PathJoinSubstitution([share, 'config', 'zs_perception.rviz'])],
        condition=IfCondition(LaunchConfiguration('rviz')),
    )
    # Without the perception node there is nothing to show or replay for: stop everything.
    stop_with_node = RegisterEventHandler(OnProcessExit(
        target_action=perception,
        on_exit=[Shutdown(reason='the zs_perception node exited')]))
    return LaunchDescription(arguments + [OpaqueFunction(function=_check_rviz),
                                          fastdds_profile, stop_with_node, perception, replay,
                                          rviz])
