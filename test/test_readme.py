"""The README documents every parameter, topic and message field, as the code has them."""

from pathlib import Path
import re

import pytest

from zs_perception import config
from zs_perception.msg import SegmentedObject, SegmentedObjectArray
from zs_perception.tools import readme_parameters

README_PATH = Path(__file__).resolve().parents[1] / 'README.md'
README = README_PATH.read_text()


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


def test_committed_parameter_table_is_the_generated_one():
    generated = readme_parameters.replace_table(README, readme_parameters.parameter_table())
    assert generated == README, (
        'the README parameter table differs from zs_perception.config.PARAMETERS; run '
        'python -m zs_perception.tools.readme_parameters --write')
    assert readme_parameters.main(['--check', '--readme', str(README_PATH)]) == 0


def test_check_fails_on_a_stale_table_and_write_repairs_only_the_block(tmp_path, capsys):
    readme = tmp_path / 'README.md'
    stale = ('# Title\n\nbefore\n' + readme_parameters.BEGIN + '\n| `threshold` | old |\n'
             + readme_parameters.END + '\nafter\n')
    readme.write_text(stale)
    assert readme_parameters.main(['--check', '--readme', str(readme)]) == 1
    assert '--write' in capsys.readouterr().err
    assert readme.read_text() == stale  # --check never writes
    assert readme_parameters.main(['--write', '--readme', str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith('# Title\n\nbefore\n' + readme_parameters.BEGIN + '\n| Name |')
    assert text.endswith(readme_parameters.END + '\nafter\n')
    assert '| old |' not in text
    assert readme_parameters.main(['--check', '--readme', str(readme)]) == 0
    for spec in config.PARAMETERS:
        assert f'| `{spec.name}` |' in text


@pytest.mark.parametrize('text', ['no markers', readme_parameters.END + '\n'
                                  + readme_parameters.BEGIN + '\n',
                                  readme_parameters.BEGIN + '\n' + readme_parameters.BEGIN
                                  + '\n' + readme_parameters.END + '\n'])
def test_missing_or_disordered_markers_are_an_error(tmp_path, text, capsys):
    readme = tmp_path / 'README.md'
    readme.write_text(text)
    assert readme_parameters.main(['--check', '--readme', str(readme)]) == 2
    assert 'marker' in capsys.readouterr().err
    with pytest.raises(ValueError, match='put the two markers around the parameter table'):
        readme_parameters.replace_table(text, '| table |')


def test_table_cells_escape_pipes_and_say_live_or_read_only():
    rows = {spec.name: readme_parameters.table_row(spec) for spec in config.PARAMETERS}
    device = rows['device']
    assert 'auto\\|cpu\\|cuda' in device
    assert device.replace('\\|', '').count('|') == 7  # 6 cells
    assert '| integer | `20` | live | an integer in [1, 255] |' in rows['max_objects']
    assert '| bool | `false` | read-only | a boolean |' in rows['use_compressed']
