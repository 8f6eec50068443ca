"""The launch file and the rviz config: checked statically, and launched when launch_ros exists.

``launch``/``launch_ros`` are not on PyPI, so here the launch file is read as source: it
must start the executables the package installs, with a default parameter file whose keys
are all declared parameters. With a ROS installation that has ``launch_ros`` the launch file
is also run for real.
"""

import ast
import os
from pathlib import Path
import threading
import time

import pytest
import yaml

from zs_perception import config

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / 'launch' / 'zs_perception.launch.py'
PARAMS_FILE = ROOT / 'config' / 'zs_perception.yaml'
RVIZ_FILE = ROOT / 'config' / 'zs_perception.rviz'
PACKAGE = 'zs_perception'


def _launch_tree():
    return ast.parse(LAUNCH_FILE.read_text(), filename=str(LAUNCH_FILE))


def _constants(tree):
    """Module-level ``NAME = 'string'`` assignments."""
    out = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node.value.value
    return out


def _value(node, constants):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _calls(tree, name):
    return [n for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == name]


def _keywords(call, constants):
    return {k.arg: _value(k.value, constants) for k in call.keywords}


def _launched_nodes():
    tree = _launch_tree()
    constants = _constants(tree)
    return [_keywords(call, constants) for call in _calls(tree, 'Node')]


def _install_prefix():
    """Return the colcon install prefix of zs_perception, or None when not built/sourced."""
    packages = pytest.importorskip('ament_index_python.packages')
    try:
        return Path(packages.get_package_prefix(PACKAGE))
    except (packages.PackageNotFoundError, OSError):  # OSError: AMENT_PREFIX_PATH unset
        return None


def test_launch_file_starts_the_installed_executables():
    nodes = _launched_nodes()
    ours = {n['executable']: n for n in nodes if n.get('package') == PACKAGE}
    assert set(ours) == {'zs_perception_node', 'zs_perception_replay'}
    assert ours['zs_perception_node']['name'] == 'zs_perception'
    assert ours['zs_perception_replay']['name'] == 'zs_replay'
    prefix = _install_prefix()
    for executable in ours:
        # CMakeLists.txt installs scripts/zs_perception_* to lib/zs_perception.
        assert os.access(ROOT / 'scripts' / executable, os.X_OK), executable
        if prefix is not None:
            assert os.access(prefix / 'lib' / PACKAGE / executable, os.X_OK), executable


def test_launch_arguments_are_declared():
    tree = _launch_tree()
    constants = _constants(tree)
    declared = {_value(call.args[0], constants) for call in _calls(tree, 'DeclareLaunchArgument')}
    assert {'params_file', 'namespace', 'image_topic', 'depth_topic', 'camera_info_topic',
            'goal_topic', 'rviz', 'replay_dir'} <= declared
    used = {_value(call.args[0], constants) for call in _calls(tree, 'LaunchConfiguration')}
    assert used <= declared, f'undeclared launch arguments used: {used - declared}'


def test_default_params_file_exists_in_source_and_install_tree():
    tree = _launch_tree()
    params = [call for call in _calls(tree, 'DeclareLaunchArgument')
              if _value(call.args[0], {}) == 'params_file']
    assert len(params) == 1
    default = next(k.value for k in params[0].keywords if k.arg == 'default_value')
    parts = [_value(e, {}) for e in default.args[0].elts]
    assert parts[1:] == ['config', 'zs_perception.yaml']  # share/zs_perception/config/...
    assert PARAMS_FILE.is_file()
    prefix = _install_prefix()
    if prefix is not None:
        assert (prefix / 'share' / PACKAGE / 'config' / 'zs_perception.yaml').is_file()
        assert (prefix / 'share' / PACKAGE / 'launch' / LAUNCH_FILE.name).is_file()
        assert (prefix / 'share' / PACKAGE / 'config' / RVIZ_FILE.name).is_file()
        assert (prefix / 'share' / PACKAGE / 'config' / 'fastdds_shm.xml').is_file()


def test_launched_processes_get_the_fastdds_profile_unless_one_is_set():
    tree = _launch_tree()
    (call,) = _calls(tree, 'SetEnvironmentVariable')
    assert _value(call.args[0], {}) == 'FASTRTPS_DEFAULT_PROFILES_FILE'
    (fallback,) = _calls(call, 'EnvironmentVariable')  # the user's value wins
    assert _value(fallback.args[0], {}) == 'FASTRTPS_DEFAULT_PROFILES_FILE'
    default = next(k.value for k in fallback.keywords if k.arg == 'default_value')
    parts = [_value(e, {}) for e in default.args[0].elts]
    assert parts[1:] == ['config', 'fastdds_shm.xml']
    assert (ROOT / 'config' / 'fastdds_shm.xml').is_file()


def test_every_params_file_key_is_a_declared_parameter():
    data = yaml.safe_load(PARAMS_FILE.read_text())
    node_name = next(n['name'] for n in _launched_nodes()
                     if n.get('executable') == 'zs_perception_node')
    assert set(data) == {node_name}, 'the params file must be keyed by the node name'
    params = data[node_name]['ros__parameters']
    unknown = set(params) - set(config.SPECS)
    assert not unknown, f'{PARAMS_FILE.name} sets parameters the node does not declare: {unknown}'
    for name, value in params.items():
        assert config.validate(name, value) is None, config.validate(name, value)


def test_rviz_config_shows_our_topics_in_the_optical_frame():
    data = yaml.safe_load(RVIZ_FILE.read_text())
    manager = data['Visualization Manager']
    assert manager['Global Options']['Fixed Frame'] == 'camera_color_optical_frame'
    topics = {d['Class']: d['Topic']['Value'] for d in manager['Displays'] if 'Topic' in d}
    assert topics == {
        'rviz_default_plugins/Image': '/zs_perception/debug_image',
        'rviz_default_plugins/MarkerArray': '/zs_perception/markers',
        'rviz_default_plugins/PointCloud2': '/zs_perception/points',
    }


def test_launch_for_real_with_replay(tmp_path, request):
    """Launch node + replay of the demo scene; objects arrive on /zs_perception/objects."""
    launch = pytest.importorskip('launch')
    pytest.importorskip('launch_ros')
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from zs_perception.msg import SegmentedObjectArray
    from zs_perception.tools.make_demo_scene import make_demo_scene

    if _install_prefix() is None:
        pytest.skip('zs_perception is not built and sourced (make build; source scripts/env.sh)')
    tiny_models = request.getfixturevalue('tiny_models')
    scene = make_demo_scene(tmp_path / 'scene', frames=2, width=160, height=120)
    params = tmp_path / 'params.yaml'
    params.write_text(yaml.safe_dump({'zs_perception': {'ros__parameters': {
        'backend': 'clipseg', 'clipseg_model': str(tiny_models / 'clipseg'),
        'allow_random_weights': True, 'device': 'cpu', 'prompts': 'red box, blue cylinder'}}}))
    service = launch.LaunchService()
    service.include_launch_description(launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={'params_file': str(params), 'replay_dir': str(scene),
                          'replay_rate_hz': '5.0'}.items()))
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node('launch_test_listener', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    received = []
    node.create_subscription(SegmentedObjectArray, '/zs_perception/objects', received.append,
                             10)
    try:
        deadline = time.monotonic() + 90.0
        while not received and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.2)
        assert received, 'no SegmentedObjectArray on /zs_perception/objects within 90 s'
        assert received[0].header.frame_id == 'camera_color_optical_frame'
        assert received[0].prompts == ['red box', 'blue cylinder']
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        service.shutdown()
        thread.join(timeout=30.0)
