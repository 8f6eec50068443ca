"""The demo's weight choice: a local directory, the Hugging Face cache, the hub, else random.

A cache here is a temporary directory laid out like the Hugging Face hub cache
(``models--OWNER--NAME/refs/main`` naming ``snapshots/HASH/``) holding a saved tiny random
CLIPSeg: with its ``RANDOM_WEIGHTS.txt`` marker it stands for a cache of random weights,
without it for a cache of real weights.
"""

import json
import os
from pathlib import Path
import shutil
import socket
import subprocess
import sys

from huggingface_hub import constants
import numpy as np
import pytest

from zs_perception.ros import demo
from zs_perception.segmentation.hub import choose_weights, RANDOM_MARKER

MODEL = 'CIDAS/clipseg-rd64-refined'
SNAPSHOT = '0123456789abcdef0123456789abcdef01234567'
UNREACHABLE = 'http://127.0.0.1:9'  # discard port: nothing listens, connect is refused


def make_cache(root: Path, clipseg_dir: Path, marked: bool, model: str = MODEL) -> Path:
    """Lay ``clipseg_dir`` out as ``model``'s snapshot in a hub cache at ``root``."""
    repo = root / f'models--{model.replace("/", "--")}'
    snapshot = repo / 'snapshots' / SNAPSHOT
    shutil.copytree(clipseg_dir, snapshot)
    if not marked:
        (snapshot / RANDOM_MARKER).unlink()
    (repo / 'refs').mkdir()
    (repo / 'refs' / 'main').write_text(SNAPSHOT)
    return snapshot


@pytest.fixture
def offline_hub(monkeypatch, tmp_path):
    """Give code in this process an empty cache and an unreachable hub."""
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'empty_cache'))
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setenv('HF_ENDPOINT', UNREACHABLE)
    return tmp_path


def _domain():
    return str(int(np.random.default_rng().integers(100, 230)))


@pytest.mark.parametrize('variable', ['HF_HUB_CACHE', 'HF_HOME'])
@pytest.mark.parametrize('marked', [False, True])
def test_cache_found_through_the_environment(tmp_path, tiny_models, variable, marked):
    cache = tmp_path / 'hf' / ('hub' if variable == 'HF_HOME' else '')
    snapshot = make_cache(cache, tiny_models / 'clipseg', marked)
    env = {k: v for k, v in os.environ.items() if not k.startswith('HF_')}
    env.update({variable: str(tmp_path / 'hf'), 'HF_ENDPOINT': UNREACHABLE})
    code = ('import dataclasses, json; from zs_perception.segmentation.hub import '
            f'choose_weights; print(json.dumps(dataclasses.asdict(choose_weights({MODEL!r}))))')
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True,
                         text=True, timeout=120, check=True).stdout
    choice = json.loads(out.strip().splitlines()[-1])
    assert choice['source'] == 'cache' and Path(choice['path']) == snapshot
    assert choice['random'] is marked and choice['download_s'] is None


def test_local_directory_is_used_as_given(tiny_models):
    choice = choose_weights(str(tiny_models / 'clipseg'))
    assert (choice.source, choice.path, choice.random) == (
        'local', str(tiny_models / 'clipseg'), True)


def test_no_cache_and_no_hub_means_random_with_the_reason(offline_hub):
    choice = choose_weights(MODEL, timeout_s=0.5)
    assert choice.source == 'random' and choice.random and choice.path == ''
    assert 'not in the Hugging Face cache' in choice.detail
    assert 'cannot be reached at 127.0.0.1:9' in choice.detail
    constants.HF_HUB_OFFLINE = True  # monkeypatch restores it
    assert 'HF_HUB_OFFLINE' in choose_weights(MODEL).detail
    assert 'downloading is off' in choose_weights(MODEL, allow_download=False).detail


def test_hub_download_when_reachable_is_timed(offline_hub, monkeypatch, tiny_models):
    server = socket.socket()
    server.bind(('127.0.0.1', 0))
    server.listen(4)
    monkeypatch.setenv('HF_ENDPOINT', f'http://127.0.0.1:{server.getsockname()[1]}')
    fetched = []

    def download(model_id):  # stands in for huggingface_hub.snapshot_download
        fetched.append(model_id)
        target = make_cache(offline_hub / 'downloaded', tiny_models / 'clipseg', marked=False)
        return str(target)

    try:
        choice = choose_weights(MODEL, download=download)
        assert fetched == [MODEL]
        assert choice.source == 'download' and not choice.random
        assert choice.download_s is not None and choice.download_s >= 0.0
        assert 'downloaded from 127.0.0.1' in choice.detail

        def failing(model_id):
            raise OSError('connection reset')
        choice = choose_weights(MODEL, download=failing)
        assert choice.source == 'random' and 'connection reset' in choice.detail
    finally:
        server.close()


def _run_demo(tmp_path, *extra):
    out = tmp_path / 'out'
    rc = demo.main(['--output', str(out), '--frames', '1', '--backend', 'clipseg',
                    '--device', 'cpu', '--frame-timeout', '120', '--domain-id', _domain(),
                    *extra])
    summary = json.loads((out / 'summary.json').read_text()) if rc == 0 else None
    return rc, summary


def test_demo_uses_cached_weights_without_warnings(offline_hub, monkeypatch, tiny_models,
                                                   capsys):
    snapshot = make_cache(offline_hub / 'cache', tiny_models / 'clipseg', marked=False)
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(offline_hub / 'cache'))
    rc, summary = _run_demo(offline_hub)
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert 'Weights: CLIPSeg cache' in printed and 'RANDOM WEIGHTS' not in printed
    assert summary['random_weights'] is False and summary['warning'] is None
    assert summary['weights']['source'] == 'cache'
    assert summary['models']['clipseg_model'] == str(snapshot)
    assert not (offline_hub / 'out' / 'models').exists()  # nothing generated


def test_demo_falls_back_to_random_weights_loudly(offline_hub, capsys):
    rc, summary = _run_demo(offline_hub)
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert 'falls back to random weights' in printed and 'MEANINGLESS' in printed
    assert summary['random_weights'] is True and 'MEANINGLESS' in summary['warning']
    assert summary['weights']['source'] == 'random'
    assert 'cannot be reached' in summary['weights']['detail']
    assert Path(summary['models']['clipseg_model']).parent == offline_hub / 'out' / 'models'


def test_demo_real_mode_exits_without_real_weights(offline_hub, monkeypatch, tiny_models,
                                                   capsys):
    rc, _ = _run_demo(offline_hub, '--weights', 'real')
    assert rc == demo.EXIT_NO_WEIGHTS
    assert 'huggingface-cli download' in capsys.readouterr().err
    # A cache of random weights is no real weights either: the node refuses to load them.
    make_cache(offline_hub / 'cache', tiny_models / 'clipseg', marked=True)
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(offline_hub / 'cache'))
    rc, _ = _run_demo(offline_hub, '--weights', 'real')
    assert rc == demo.EXIT_NO_WEIGHTS
    assert 'RANDOM weights' in capsys.readouterr().err
