"""Write the README's parameter table from ``zs_perception.config.PARAMETERS``.

The table between the lines ``<!-- parameters:begin -->`` and ``<!-- parameters:end -->``
of README.md is generated, never edited by hand. Run from the repository root::

    python -m zs_perception.tools.readme_parameters           # print the table
    python -m zs_perception.tools.readme_parameters --write   # rewrite README.md's table
    python -m zs_perception.tools.readme_parameters --check   # exit 1 if README.md differs

``--readme PATH`` names another file. ``test/test_readme.py`` fails when the committed
table is not what this tool generates.
"""

import argparse
from pathlib import Path
import sys
from typing import Iterable

from zs_perception.config import PARAMETERS, ParameterSpec

BEGIN = '<!-- parameters:begin -->'
END = '<!-- parameters:end -->'
# ROS 2 parameter type names (what `ros2 param describe` prints) of the Python types.
ROS_TYPES = {bool: 'bool', int: 'integer', float: 'double', str: 'string'}
HEADER = ('| Name | Type | Default | Changes | Allowed | Description |\n'
          '|---|---|---|---|---|---|')


def _cell(text: str) -> str:
    """Escape ``text`` for one markdown table cell (a ``|`` would end the cell)."""
    return text.replace('|', '\\|')


def default_literal(spec: ParameterSpec) -> str:
    """Return the default as written in a YAML parameter file: ``false``, ``0.4``, ``'x'``."""
    if isinstance(spec.default, bool):
        return str(spec.default).lower()
    return repr(spec.default)


def table_row(spec: ParameterSpec) -> str:
    """Return the markdown table row of one parameter."""
    cells = (f'`{spec.name}`', ROS_TYPES[spec.kind], f'`{default_literal(spec)}`',
             'live' if spec.live else 'read-only', spec.allowed(), spec.description)
    return '| ' + ' | '.join(_cell(c) for c in cells) + ' |'


def parameter_table(parameters: Iterable[ParameterSpec] = PARAMETERS) -> str:
    """Return the whole table (header and one row per parameter), without a final newline."""
    return '\n'.join([HEADER] + [table_row(spec) for spec in parameters])


def replace_table(text: str, table: str) -> str:
    """Return ``text`` with the lines between the two markers replaced by ``table``.

    Raises:
        ValueError: the markers are missing, repeated or out of order.

    """
    lines = text.split('\n')
    begins = [i for i, line in enumerate(lines) if line.strip() == BEGIN]
    ends = [i for i, line in enumerate(lines) if line.strip() == END]
    if len(begins) != 1 or len(ends) != 1 or begins[0] > ends[0]:
        raise ValueError(
            f'expected one line {BEGIN!r} followed by one line {END!r}, found {len(begins)} '
            f'begin and {len(ends)} end marker(s) in the wrong order or number; put the two '
            'markers around the parameter table')
    return '\n'.join(lines[:begins[0] + 1] + [table] + lines[ends[0]:])


def main(argv=None) -> int:
    """Print, write or check the README's parameter table; return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--write', action='store_true', help='rewrite the table in README.md')
    mode.add_argument('--check', action='store_true',
                      help='exit 1 if the table in README.md differs from the generated one')
    parser.add_argument('--readme', type=Path, default=Path('README.md'),
                        help='the file holding the markers (default: README.md)')
    args = parser.parse_args(argv)
    table = parameter_table()
    if not (args.write or args.check):
        print(table)
        return 0
    try:
        text = args.readme.read_text(encoding='utf-8')
        updated = replace_table(text, table)
    except (OSError, ValueError) as error:
        print(f'readme_parameters: {args.readme}: {error}', file=sys.stderr)
        return 2
    if args.check:
        if updated != text:
            print(f'readme_parameters: the parameter table in {args.readme} is not the one '
                  'generated from zs_perception.config.PARAMETERS; run python -m '
                  'zs_perception.tools.readme_parameters --write', file=sys.stderr)
            return 1
        return 0
    if updated != text:
        args.readme.write_text(updated, encoding='utf-8')
        print(f'readme_parameters: rewrote the parameter table in {args.readme}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
