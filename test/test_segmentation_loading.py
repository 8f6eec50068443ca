"""Model loading: clear errors for missing, wrong and random weights; the random-model tool."""

import json
from pathlib import Path
import shutil

import pytest
import torch
from transformers import CLIPTokenizer

from zs_perception.segmentation.base import ModelLoadError
from zs_perception.segmentation.factory import create_segmenter
from zs_perception.segmentation.loading import load_clipseg, load_sam, RANDOM_MARKER
from zs_perception.segmentation.loading import sam_random_marker
from zs_perception.testing import random_models

CPU = torch.device('cpu')


def _copy_clipseg(tiny_models, tmp_path):
    target = tmp_path / 'clipseg'
    shutil.copytree(Path(tiny_models) / 'clipseg', target)
    return target


def test_missing_directory_names_it_and_the_fetch_command(tmp_path):
    missing = tmp_path / 'no_such_model'
    with pytest.raises(ModelLoadError) as err:
        load_clipseg(str(missing), CPU, torch.float32)
    assert str(missing) in str(err.value)
    assert 'huggingface-cli download CIDAS/clipseg-rd64-refined' in str(err.value)


def test_uncached_hub_id_offline_names_cache_and_command(monkeypatch):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, 'HF_HUB_OFFLINE', True)
    with pytest.raises(ModelLoadError) as err:
        load_clipseg('nobody-zs/no-such-clipseg', CPU, torch.float32)
    message = str(err.value)
    assert 'nobody-zs/no-such-clipseg' in message and constants.HF_HUB_CACHE in message
    assert 'huggingface-cli download nobody-zs/no-such-clipseg' in message


def test_random_directory_needs_permission_and_warns(tiny_models, caplog):
    with pytest.raises(ModelLoadError, match='RANDOM weights.*allow_random_weights'):
        load_clipseg(str(Path(tiny_models) / 'clipseg'), CPU, torch.float32)
    with caplog.at_level('WARNING'):
        load_clipseg(str(Path(tiny_models) / 'clipseg'), CPU, torch.float32,
                     allow_random_weights=True)
    assert any('RANDOM weights' in r.getMessage() and r.levelname == 'WARNING'
               for r in caplog.records)


def test_damaged_weights_file_is_a_load_error(tiny_models, tmp_path):
    target = _copy_clipseg(tiny_models, tmp_path)
    (target / 'model.safetensors').write_bytes(b'not a safetensors file')
    with pytest.raises(ModelLoadError, match=str(target)):
        load_clipseg(str(target), CPU, torch.float32, allow_random_weights=True)


def test_weights_from_another_configuration_are_a_load_error(tiny_models, tmp_path):
    target = _copy_clipseg(tiny_models, tmp_path)
    config = json.loads((target / 'config.json').read_text())
    config['reduce_dim'] = 24
    (target / 'config.json').write_text(json.dumps(config))
    with pytest.raises(ModelLoadError):
        load_clipseg(str(target), CPU, torch.float32, allow_random_weights=True)


def test_directory_without_processor_is_a_load_error(tiny_models, tmp_path):
    target = _copy_clipseg(tiny_models, tmp_path)
    for name in ('processor_config.json', 'tokenizer.json', 'tokenizer_config.json'):
        (target / name).unlink()
    with pytest.raises(ModelLoadError, match='CLIPSegProcessor'):
        load_clipseg(str(target), CPU, torch.float32, allow_random_weights=True)


def test_sam_checkpoint_not_set_or_missing_gives_the_download_command(tmp_path):
    with pytest.raises(ModelLoadError, match='sam_checkpoint is not set.*wget https://dl'):
        load_sam('', 'vit_b', CPU)
    with pytest.raises(ModelLoadError, match='sam_vit_l_0b3195.pth') as err:
        load_sam(str(tmp_path / 'sam.pth'), 'vit_l', CPU)
    assert str(tmp_path / 'sam.pth') in str(err.value)
    with pytest.raises(ModelLoadError, match='sam_checkpoint'):
        create_segmenter('clipseg_sam', clipseg_model=str(tmp_path), device='cpu')


def test_sam_checkpoint_of_another_type_says_which_type_it_is(tmp_path):
    from segment_anything.modeling import ImageEncoderViT
    checkpoint = tmp_path / 'sam_vit_l.pth'
    encoder = ImageEncoderViT(img_size=64, patch_size=16, embed_dim=1024, depth=1, num_heads=2,
                              out_chans=8)
    torch.save({f'image_encoder.{k}': v for k, v in encoder.state_dict().items()}, checkpoint)
    with pytest.raises(ModelLoadError, match="sam_model_type='vit_b'.*which is vit_l"):
        load_sam(str(checkpoint), 'vit_b', CPU)


class NotWeights:
    """An object a weights-only load must refuse to unpickle."""


def test_sam_checkpoint_with_pickled_code_is_refused(tmp_path):
    checkpoint = tmp_path / 'sam_vit_b.pth'
    torch.save({'image_encoder.patch_embed.proj.weight': NotWeights()}, checkpoint)
    with pytest.raises(ModelLoadError, match='Could not read SAM checkpoint'):
        load_sam(str(checkpoint), 'vit_b', CPU)
    checkpoint.write_text('hello')
    with pytest.raises(ModelLoadError, match='Could not read'):
        load_sam(str(checkpoint), 'vit_b', CPU)


def test_random_sam_needs_permission_and_tiny_only_for_random(tiny_models, tmp_path):
    checkpoint = Path(tiny_models) / 'sam_tiny.pth'
    with pytest.raises(ModelLoadError, match='RANDOM weights'):
        load_sam(str(checkpoint), 'tiny', CPU)
    unmarked = tmp_path / 'sam_tiny.pth'
    shutil.copy(checkpoint, unmarked)
    with pytest.raises(ValueError, match="'tiny' exists only for random test checkpoints"):
        load_sam(str(unmarked), 'tiny', CPU)
    with pytest.raises(ValueError, match='Unknown sam_model_type'):
        load_sam(str(unmarked), 'vit_x', CPU)


@pytest.mark.parametrize('settings, message', [
    ({'device': 'tpu'}, 'Unknown device'),
    ({'precision': 'fp8'}, 'Unknown precision'),
    ({'device': 'cpu', 'precision': 'fp16'}, "'fp16' is not supported on the CPU"),
    ({'threshold': 1.5}, r'threshold must be a number in \[0, 1\]'),
    ({'max_objects': -1}, 'max_objects must be an integer >= 0'),
])
def test_bad_device_or_precision_settings(tiny_models, settings, message):
    with pytest.raises(ValueError, match=message):
        create_segmenter('clipseg', clipseg_model=str(Path(tiny_models) / 'clipseg'),
                         allow_random_weights=True, **settings)


def test_tool_writes_marked_models_and_prints_paths(tmp_path, capsys):
    assert random_models.main([str(tmp_path), '--size', 'tiny', '--only', 'clipseg']) == 0
    written = json.loads(capsys.readouterr().out)
    assert written == {'clipseg': str(tmp_path / 'clipseg')}
    assert (tmp_path / 'clipseg' / RANDOM_MARKER).exists()
    seg = create_segmenter('clipseg', clipseg_model=written['clipseg'], device='cpu',
                           allow_random_weights=True)
    assert seg.set_prompts(['mug']).active == ['mug']
    assert random_models.main([str(tmp_path / 'b'), '--only', 'sam,clip', '--sam-type',
                               'none']) == 0
    assert json.loads(capsys.readouterr().out) == {'clip': str(tmp_path / 'b' / 'clip')}
    with pytest.raises(SystemExit):
        random_models.main([str(tmp_path), '--only', 'clipseg,yolo'])
    assert 'yolo' in capsys.readouterr().err


def test_tiny_models_fixture_layout(tiny_models):
    assert (Path(tiny_models) / 'clipseg' / 'config.json').exists()
    assert sam_random_marker(Path(tiny_models) / 'sam_tiny.pth').exists()


def test_generated_tokenizer_is_a_real_clip_bpe_tokenizer(tiny_models):
    tokenizer = CLIPTokenizer.from_pretrained(str(Path(tiny_models) / 'clipseg'))
    ids = tokenizer('Red  MUG')['input_ids']
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    assert tokenizer.convert_ids_to_tokens(ids[1:-1]) == ['red</w>', 'mug</w>']
    assert tokenizer.decode(tokenizer('a zebra!')['input_ids'], skip_special_tokens=True) \
        == 'a zebra !'


def test_full_size_config_is_the_clipseg_rd64_refined_architecture():
    config = random_models.clipseg_config('full', random_models.make_clip_tokenizer())
    vision, text = config.vision_config, config.text_config
    assert (vision.hidden_size, vision.num_hidden_layers, vision.patch_size) == (768, 12, 16)
    assert (text.hidden_size, text.num_hidden_layers, text.vocab_size) == (512, 12, 49408)
    assert (config.reduce_dim, tuple(config.extract_layers)) == (64, (3, 6, 9))
    assert config.use_complex_transposed_convolution and config.projection_dim == 512
