"""The README documents every parameter, topic and message field, as the code has them."""

from pathlib import Path
import re

import pytest

from zs_perception import config
from zs_perception.msg import SegmentedObject, SegmentedObjectArray

README = (Path(__file__).resolve().parents[1] / 'README.md').read_text()


def _table_rows(first_cell):
    """Rows of README tables whose first cell is ``first_cell`` (in backquotes)."""
    return [line for line in README.splitlines() if line.startswith(f'| `{first_cell}` |')]


@pytest.mark.parametrize('spec', config.PARAMETERS, ids=lambda s: s.name)
def test_every_parameter_is_in_the_parameter_table_with_its_default(spec):
    rows = [r for r in _table_rows(spec.name) if '| read-only |' in r or '| live |' in r]
    assert rows, f'parameter {spec.name} is missing from the README parameter table'
    default = str(spec.default).lower() if isinstance(spec.default, bool) else repr(spec.default)
    assert f'| `{default}` |' in rows[0], (rows[0], default)
    assert ('| live |' in rows[0]) == spec.live


@pytest.mark.parametrize('msg_type', [SegmentedObject, SegmentedObjectArray])
def test_every_message_field_is_documented(msg_type):
    for field in msg_type.get_fields_and_field_types():
        assert _table_rows(field), f'{msg_type.__name__}.{field} is not in the README'


def test_every_topic_is_documented():
    for topic in ('image', 'image/compressed', 'depth', 'camera_info', 'goal', '~/objects',
                  '~/masks', '~/poses', '~/markers', '~/points', '~/debug_image',
                  '/diagnostics'):
        assert _table_rows(topic), f'topic {topic} is not in the README topic tables'


def test_the_two_commands_are_the_ones_ci_and_make_run():
    assert re.search(r'^make demo ', README, re.M) and re.search(r'^make test ', README, re.M)
    ci = (Path(__file__).resolve().parents[1] / '.ci' / 'run').read_text()
    assert ci.strip().splitlines()[-1] == 'make test'
