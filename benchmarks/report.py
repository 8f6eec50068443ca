"""Shared helpers for the benchmark scripts: timing statistics and JSON + table output."""

import json
import time

import numpy as np


def time_calls(fn, repeats, warmup=1, clock=time.perf_counter):
    """Call ``fn()`` ``warmup`` times untimed, then ``repeats`` times timed.

    Args:
        fn: the call to time.
        repeats: timed calls.
        warmup: untimed calls first.
        clock: ``time.perf_counter`` (wall clock) or ``time.process_time`` (this process's
            CPU time, less sensitive to other jobs on a shared machine).

    Returns:
        ``(repeats,)`` ``float64`` seconds per call.

    """
    for _ in range(warmup):
        fn()
    out = np.empty(repeats)
    for i in range(repeats):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out


def stats_ms(seconds):
    """Median, p90 and p99 of a sample of durations in seconds, as milliseconds."""
    s = np.asarray(seconds, dtype=np.float64) * 1e3
    return {
        'median_ms': round(float(np.median(s)), 3),
        'p90_ms': round(float(np.percentile(s, 90)), 3),
        'p99_ms': round(float(np.percentile(s, 99)), 3),
        'n': int(s.size),
    }


def emit(name, rows, meta=None):
    """Print one benchmark's rows as a JSON document and then as a table.

    Args:
        name: benchmark name.
        rows: list of flat dicts, all with the same keys.
        meta: extra facts for the JSON (device, versions, settings).

    """
    print(json.dumps({'benchmark': name, 'meta': meta or {}, 'rows': rows}, indent=2))
    if not rows:
        return
    cols = list(rows[0].keys())
    cells = [[_fmt(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print()
    print(f'## {name}')
    print('| ' + ' | '.join(c.ljust(w) for c, w in zip(cols, widths)) + ' |')
    print('|' + '|'.join('-' * (w + 2) for w in widths) + '|')
    for row in cells:
        print('| ' + ' | '.join(v.ljust(w) for v, w in zip(row, widths)) + ' |')


def _fmt(v):
    if isinstance(v, float):
        return f'{v:.3g}' if abs(v) < 1000 else f'{v:.0f}'
    return str(v)
