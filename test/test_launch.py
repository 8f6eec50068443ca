"""The launch file and the rviz config: checked statically, and launched when launch_ros exists.

``launch``/``launch_ros`` are not on PyPI, so here the launch file is read as source: it
must start the executables the package installs, with a default parameter file whose keys
are all declared parameters. With a ROS installation that has ``launch_ros`` the launch file
is also run for real, the way ``ros2 launch`` runs it: ``LaunchService.run`` in the main
thread of its own process (launch refuses any other thread).
"""

import ast
import os
from pathlib import Path
import sys
import time

from helpers_process import ChildProcess
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
    # Keyed by the node name under any namespace: `namespace:=robot1` must not drop it
    # (test_node_params loads it under namespaces in a real node).
    assert set(data) == {f'/**/{node_name}'}, 'the params file must be keyed /**/<node name>'
    params = data[f'/**/{node_name}']['ros__parameters']
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


def test_launch_file_stops_everything_with_the_node_and_checks_rviz_first():
    tree = _launch_tree()
    source = LAUNCH_FILE.read_text()
    # Deprecated in Jazzy (a warning on every launch).
    assert 'LaunchConfigurationNotEquals' not in source
    assert 'LaunchConfigurationEquals' not in source
    (handler,) = _calls(tree, 'OnProcessExit')
    target = next(k.value for k in handler.keywords if k.arg == 'target_action')
    assert isinstance(target, ast.Name) and target.id == 'perception'
    assert _calls(handler, 'Shutdown'), 'the node exiting must shut the launch down'
    # rviz2 is looked up before anything starts: the check is the first action.
    (description,) = _calls(tree, 'LaunchDescription')
    first = description.args[0].right.elts[0]
    assert first.func.id == 'OpaqueFunction'
    assert "shutil.which('rviz2')" in source and 'sudo apt install ros-jazzy-rviz2' in source


# Runs a launch file like `ros2 launch`: LaunchService in the main thread of this process.
RUNNER = """
import sys
import launch
from launch.launch_description_sources import PythonLaunchDescriptionSource
service = launch.LaunchService(argv=sys.argv[2:])
arguments = [tuple(a.split(':=', 1)) for a in sys.argv[2:]]
service.include_launch_description(launch.actions.IncludeLaunchDescription(
    PythonLaunchDescriptionSource(sys.argv[1]), launch_arguments=arguments))
sys.exit(service.run())
"""


def _launch(arguments, domain_id, env=None):
    """Run the launch file with ``arguments`` (``name:=value``) as ``ros2 launch`` would."""
    return ChildProcess([sys.executable, '-c', RUNNER, str(LAUNCH_FILE)] + list(arguments),
                        domain_id, env=env, new_session=True)


def _need_launch():
    pytest.importorskip('launch', reason='launch is not installed (a ROS 2 Jazzy install '
                                         'has it; it is not on PyPI)')
    pytest.importorskip('launch_ros', reason='launch_ros is not installed (a ROS 2 Jazzy '
                                             'install has it; it is not on PyPI)')
    if _install_prefix() is None:
        pytest.skip('zs_perception is not built and sourced (make build; source scripts/env.sh)')


def _domain():
    import numpy as np
    return int(np.random.default_rng().integers(100, 230))


def test_launch_for_real_with_replay_under_a_namespace(tmp_path, request):
    """Launch node + replay in namespace robot1; objects arrive; Ctrl-C stops all cleanly."""
    _need_launch()
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor

    from zs_perception.msg import SegmentedObjectArray
    from zs_perception.tools.make_demo_scene import make_demo_scene

    tiny_models = request.getfixturevalue('tiny_models')
    scene = make_demo_scene(tmp_path / 'scene', frames=2, width=160, height=120)
    params = tmp_path / 'params.yaml'
    data = yaml.safe_load(PARAMS_FILE.read_text())
    data['/**/zs_perception']['ros__parameters'].update(
        backend='clipseg', clipseg_model=str(tiny_models / 'clipseg'),
        allow_random_weights=True, device='cpu', prompts='red box, blue cylinder')
    params.write_text(yaml.safe_dump(data))
    domain = _domain()
    run = _launch([f'params_file:={params}', f'replay_dir:={scene}', 'replay_rate_hz:=5.0',
                   'namespace:=robot1'], domain)
    context = Context()
    rclpy.init(context=context, domain_id=domain)
    node = rclpy.create_node('launch_test_listener', context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    received = []
    node.create_subscription(SegmentedObjectArray, '/robot1/zs_perception/objects',
                             received.append, 10)
    try:
        deadline = time.monotonic() + 90.0
        while not received and time.monotonic() < deadline and run.proc.poll() is None:
            executor.spin_once(timeout_sec=0.2)
        assert received, ('no SegmentedObjectArray on /robot1/zs_perception/objects within '
                          f'90 s: {run.output()}')
        assert received[0].header.frame_id == 'camera_color_optical_frame'
        assert received[0].prompts == ['red box', 'blue cylinder']
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
        stop_started = time.monotonic()
        if run.proc.poll() is None:
            run.ctrl_c()
        rc = run.finish(timeout=30.0)
        stop_s = time.monotonic() - stop_started
    out = run.output()
    assert rc == 0, out
    assert 'Traceback' not in out and 'deprecated' not in out.lower(), out
    assert not [line for line in run.lines if '[ERROR]' in line], out
    # Both processes stopped on the SIGINT itself: launch did not need SIGTERM.
    assert 'SIGTERM' not in out and out.count('process has finished cleanly') == 2, out
    assert stop_s < 10.0, (stop_s, out)


def test_launch_stops_when_the_node_exits(tmp_path):
    """A node that cannot start takes the replay down with it: launch exits, none left."""
    _need_launch()
    from zs_perception.tools.make_demo_scene import make_demo_scene

    scene = make_demo_scene(tmp_path / 'scene', frames=2, width=160, height=120)
    params = tmp_path / 'params.yaml'
    params.write_text(yaml.safe_dump({'/**/zs_perception': {'ros__parameters': {
        'max_objects': 1000}}}))
    run = _launch([f'params_file:={params}', f'replay_dir:={scene}'], _domain())
    run.finish(timeout=60.0)
    out = run.output()
    assert 'max_objects must be an integer in [1, 255], got 1000' in out, out
    # The launch file's OnProcessExit -> Shutdown (launch words it 'was required').
    assert 'process[zs_perception_node-1] was required: shutting down' in out, out
    assert 'zs_perception_replay-2]: process has finished cleanly' in out, out
    assert 'Traceback' not in out, out


def test_launch_without_rviz2_fails_before_starting_anything(tmp_path):
    _need_launch()
    bin_dir = Path(sys.executable).parent
    env = {'PATH': os.pathsep.join(p for p in os.environ['PATH'].split(os.pathsep)
                                   if not (Path(p) / 'rviz2').exists()) or str(bin_dir)}
    run = _launch(['rviz:=true'], _domain(), env=env)
    rc = run.finish(timeout=60.0)
    out = run.output()
    assert rc != 0, out
    assert 'sudo apt install ros-jazzy-rviz2' in out, out
    assert 'zs_perception ready' not in out and 'process started' not in out, out
