"""The linters a ROS 2 Python package ships with, run over the whole source tree."""

from pathlib import Path

from ament_flake8.main import main_with_errors as flake8_main
from ament_pep257.main import main as pep257_main

ROOT = Path(__file__).resolve().parents[1]
PATHS = [str(ROOT / p) for p in ('zs_perception', 'test', 'benchmarks', 'launch')] + sorted(
    str(p) for p in (ROOT / 'scripts').glob('zs_perception_*'))


def test_flake8():
    rc, errors = flake8_main(argv=PATHS)
    assert rc == 0, f'Found {len(errors)} code style errors / warnings:\n' + '\n'.join(errors)


def test_pep257():
    # Google-style sections (Args:, Returns:) as in segment-anything; docstrings where present
    # must follow PEP 257, but are not required on every function (the ament default).
    rc = pep257_main(argv=['--convention', 'google', '--add-ignore',
                           'D100', 'D101', 'D102', 'D103', 'D104', 'D105', 'D106', 'D107',
                           '--', *PATHS])
    assert rc == 0, 'Found docstring style errors (see the output above)'
