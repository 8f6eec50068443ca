"""The linters a ROS 2 Python package ships with, run over the whole source tree.

Each runs in a fresh interpreter: flake8 forks worker processes, and forking this test process
after other tests started threads (torch, the geometry pool, rclpy executors) can crash them.
"""

from pathlib import Path
import subprocess
import sys

ROOT = Path(__file__).resolve().parents[1]
PATHS = [str(ROOT / p) for p in ('zs_perception', 'test', 'benchmarks', 'launch')] + sorted(
    str(p) for p in (ROOT / 'scripts').glob('zs_perception_*'))


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', code, *args], capture_output=True, text=True,
                          timeout=600)


def test_flake8():
    result = _run('import sys; from ament_flake8.main import main; sys.exit(main(sys.argv[1:]))',
                  *PATHS)
    assert result.returncode == 0, f'flake8 errors:\n{result.stdout}{result.stderr}'


def test_pep257():
    # Google-style sections (Args:, Returns:) as in segment-anything; docstrings where present
    # must follow PEP 257, but are not required on every function (the ament default).
    result = _run('import sys; from ament_pep257.main import main; sys.exit(main(sys.argv[1:]))',
                  '--convention', 'google', '--add-ignore',
                  'D100', 'D101', 'D102', 'D103', 'D104', 'D105', 'D106', 'D107', '--', *PATHS)
    assert result.returncode == 0, f'Found docstring style errors:\n{result.stdout}{result.stderr}'
