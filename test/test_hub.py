"""The start-up hub check: cached or local models need no network; else fail fast offline."""

import os

import pytest

from zs_perception import config
from zs_perception.segmentation import hub
from zs_perception.segmentation.base import ModelLoadError

REFUSED = 'http://127.0.0.1:9'  # nothing listens on the discard port here


@pytest.fixture
def online(monkeypatch, tmp_path):
    """Give the test an empty Hugging Face cache with offline mode off (restored after)."""
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', False)
    monkeypatch.setattr(constants, 'HF_HUB_CACHE', str(tmp_path / 'hub'))
    monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path / 'hub'))
    monkeypatch.delenv('HF_HUB_OFFLINE', raising=False)
    return constants


def test_hub_models_of_each_backend(tmp_path):
    settings = config.defaults()
    assert hub.hub_models(settings) == {'clipseg_model': 'CIDAS/clipseg-rd64-refined'}
    assert hub.hub_models({**settings, 'clipseg_model': str(tmp_path)}) == {}
    assert hub.hub_models({**settings, 'clipseg_model': './models/x'}) == {}
    assert hub.hub_models({**settings, 'backend': 'grounded_sam'}) == {
        'detector_model': 'google/owlv2-base-patch16-ensemble'}
    assert hub.hub_models({**settings, 'backend': 'clip_dense', 'clip_model': 'a/b'}) == {
        'clip_model': 'a/b'}
    assert hub.hub_models({**settings, 'backend': 'sam3'}) == {'sam3_model': 'facebook/sam3'}
    assert hub.hub_models({**settings, 'backend': 'sam3', 'sam3_model': '',
                           'tracker': 'sam2'}) == {
        'sam3_model': 'facebook/sam3', 'tracker_model': 'facebook/sam2.1-hiera-tiny'}
    assert hub.hub_models({**settings, 'tracker': 'edgetam',
                           'tracker_model': str(tmp_path)}) == {
        'clipseg_model': 'CIDAS/clipseg-rd64-refined'}


def test_unreachable_hub_fails_fast_and_sets_offline(online, monkeypatch):
    monkeypatch.setenv('HF_ENDPOINT', REFUSED)
    assert hub.hub_reachable(1.0)[0] is False
    with pytest.raises(ModelLoadError, match=r"clipseg_model='CIDAS/clipseg-rd64-refined' is "
                                             r'not in the Hugging Face cache .* cannot be '
                                             r'reached at 127\.0\.0\.1:9'):
        hub.check_hub_models(config.defaults(), timeout_s=1.0)
    assert online.HF_HUB_OFFLINE
    assert os.environ['HF_HUB_OFFLINE'] == '1'


def test_local_models_and_user_offline_mode_need_no_network(online, monkeypatch, tmp_path):
    monkeypatch.setenv('HF_ENDPOINT', REFUSED)
    assert hub.check_hub_models({**config.defaults(), 'clipseg_model': str(tmp_path)}) is None
    monkeypatch.setattr(online, 'HF_HUB_OFFLINE', True)
    assert hub.check_hub_models(config.defaults()) is None  # the loaders say what is missing
