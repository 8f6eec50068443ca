"""Tests of the parameter table and its validation (zs_perception.config)."""

import pathlib

import pytest
import yaml

from zs_perception import config

CONFIG_FILE = pathlib.Path(__file__).resolve().parents[1] / 'config' / 'zs_perception.yaml'


def test_every_default_is_valid():
    for spec in config.PARAMETERS:
        assert config.validate(spec.name, spec.default) is None, spec.name
    assert config.validate_settings({}) == config.defaults()


def test_specs_are_complete_and_unique():
    names = [spec.name for spec in config.PARAMETERS]
    assert len(names) == len(set(names))
    for required in ('backend', 'clipseg_model', 'sam_checkpoint', 'sam_model_type', 'device',
                     'precision', 'prompts', 'threshold', 'min_area_px', 'max_objects',
                     'min_depth_m', 'max_depth_m', 'sync_tolerance_s', 'reliability',
                     'use_compressed', 'allow_random_weights'):
        assert required in config.SPECS
    for spec in config.PARAMETERS:
        assert spec.description.endswith('.'), spec.name
        assert isinstance(spec.default, spec.kind), spec.name
        assert (spec.value_range is None) or spec.kind in (int, float), spec.name
    assert set(config.ENGINE_SETTINGS) <= set(config.SPECS)
    assert set(config.LIVE_ENGINE_SETTINGS) <= set(config.ENGINE_SETTINGS)
    assert config.SPECS['clipseg_model'].default == 'CIDAS/clipseg-rd64-refined'
    assert config.SPECS['sam_model_type'].default == 'vit_b'
    assert config.SPECS['device'].default == 'auto'
    assert config.SPECS['precision'].default == 'auto'
    assert config.SPECS['allow_random_weights'].default is False


def test_shipped_yaml_matches_the_table():
    data = yaml.safe_load(CONFIG_FILE.read_text())
    params = data['/**/zs_perception']['ros__parameters']
    assert set(params) == set(config.SPECS)
    config.validate_settings(params)
    for name, value in params.items():
        assert type(value) is config.SPECS[name].kind, name


@pytest.mark.parametrize('name, value, expected', [
    ('threshold', 1.5, 'in [0.0, 1.0]'),
    ('threshold', float('nan'), 'finite'),
    ('threshold', 'high', 'type str'),
    ('threshold', True, 'type bool'),
    ('min_area_px', 0, 'in [1,'),
    ('min_area_px', 2.5, 'type float'),
    ('max_objects', 256, '255'),
    ('reliability', 'sometimes', "'best_effort', 'reliable'"),
    ('device', 'gpu', 'cuda'),
    ('precision', 'fp8', "'fp16'"),
    ('backend', 'no_such_backend', 'backend must be one of'),
    ('use_compressed', 1, 'type int'),
    ('nonsense', 1, 'unknown parameter'),
])
def test_invalid_values_are_explained(name, value, expected):
    reason = config.validate(name, value)
    assert reason is not None and expected in reason
    assert repr(value) in reason or name == 'nonsense'


def test_valid_values_pass():
    assert config.validate('threshold', 1) is None  # an int is a valid float
    assert config.validate('device', 'cuda:1') is None
    assert config.validate('device', 'cpu') is None
    assert config.validate('reliability', 'reliable') is None
    for backend in ('clipseg', 'clipseg_sam', 'grounded_sam', 'zero_guidance', 'clip_dense'):
        assert config.validate('backend', backend) is None


def test_validate_settings_names_parameter_value_and_fix():
    with pytest.raises(ValueError) as err:
        config.validate_settings({'max_objects': 1000})
    text = str(err.value)
    assert 'max_objects' in text and '1000' in text and '[1, 255]' in text
    assert 'zs_perception.yaml' in text
    with pytest.raises(ValueError, match='min_depth_m .* must be less than max_depth_m'):
        config.validate_settings({'min_depth_m': 5.0, 'max_depth_m': 2.0})


def test_check_update_rejects_read_only_and_inconsistent_changes():
    current = config.defaults()
    assert config.check_update(current, {'threshold': 0.7, 'prompts': 'mug'}) is None
    assert 'read-only' in config.check_update(current, {'backend': 'clipseg_sam'})
    # Re-setting a read-only parameter to its current value is harmless.
    assert config.check_update(current, {'backend': current['backend']}) is None
    assert 'must be less than' in config.check_update(current, {'min_depth_m': 20.0})
    assert config.check_update(current, {'min_depth_m': 20.0, 'max_depth_m': 30.0}) is None
    assert 'in [0.0, 1.0]' in config.check_update(current, {'threshold': -0.1})


def test_engine_settings():
    settings = config.validate_settings({'threshold': 0.6})
    engine = config.engine_settings(settings)
    assert set(engine) == set(config.ENGINE_SETTINGS)
    assert engine['threshold'] == 0.6
    assert 'backend' not in engine
