"""The built package: installed files, and a ROS-free core that never imports rclpy."""

import os
from pathlib import Path
import subprocess
import sys

from ament_index_python.packages import get_package_prefix, get_package_share_directory
import yaml

CORE_MODULES = [
    'zs_perception.config',
    'zs_perception.segmentation.prompting',
    'zs_perception.tracking',
    'zs_perception.geometry',
    'zs_perception.segmentation.base',
    'zs_perception.segmentation.factory',
    'zs_perception.segmentation.torch_backend',
    'zs_perception.segmentation.clipseg',
    'zs_perception.segmentation.clipseg_sam',
    'zs_perception.segmentation.grounded_sam',
    'zs_perception.segmentation.zero_guidance',
    'zs_perception.segmentation.clip_dense',
    'zs_perception.testing.random_models',
]


def test_install_has_executables_launch_and_config():
    prefix = Path(get_package_prefix('zs_perception'))
    share = Path(get_package_share_directory('zs_perception'))
    for exe in ('zs_perception_node', 'zs_perception_replay', 'zs_perception_demo'):
        path = prefix / 'lib' / 'zs_perception' / exe
        assert path.is_file(), f'{path} is not installed'
        assert os.access(path, os.X_OK), f'{path} is not executable'
    assert (share / 'launch' / 'zs_perception.launch.py').is_file()
    params = yaml.safe_load((share / 'config' / 'zs_perception.yaml').read_text())
    assert 'ros__parameters' in params['/**/zs_perception']  # any namespace
    assert (share / 'config' / 'zs_perception.rviz').is_file()
    assert (share / 'package.xml').is_file()


def test_core_imports_without_rclpy(tmp_path):
    # A child interpreter in which any import of ROS Python packages fails loudly.
    blocker = tmp_path / 'sitecustomize.py'
    blocker.write_text(
        'import sys\n'
        'class _Block:\n'
        '    def find_spec(self, name, path=None, target=None):\n'
        '        if name.split(".")[0] in ("rclpy", "rosidl_runtime_py", "cv_bridge",\n'
        '                                  "sensor_msgs", "std_msgs", "geometry_msgs"):\n'
        '            raise ImportError(f"ROS module {name} imported by the core")\n'
        'sys.meta_path.insert(0, _Block())\n')
    env = dict(os.environ, PYTHONPATH=f'{tmp_path}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')
    code = ('import importlib, sys\n'
            f'for m in {CORE_MODULES!r}:\n'
            '    importlib.import_module(m)\n'
            'bad = [m for m in sys.modules if m.split(".")[0] == "rclpy"]\n'
            'assert not bad, bad\n'
            'print("ok")\n')
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith('ok'), out.stderr


def test_core_never_imports_the_testing_package():
    code = ('import importlib, sys\n'
            f'for m in {[m for m in CORE_MODULES if ".testing" not in m]!r}:\n'
            '    importlib.import_module(m)\n'
            'bad = [m for m in sys.modules if m.startswith("zs_perception.testing")]\n'
            'assert not bad, bad\n'
            'print("ok")\n')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip().endswith('ok'), out.stderr
