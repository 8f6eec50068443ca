"""clip_dense: similarity equals a direct MaskCLIP computation; prompts and bad input."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torchvision.transforms.v2 import functional as tvF  # noqa: N812
from transformers import CLIPProcessor

from zs_perception.segmentation.clip_dense import ClipDenseSegmenter


@pytest.fixture(scope='module')
def seg(backend_models):
    return ClipDenseSegmenter.from_settings(clip_model=backend_models['clip'], device='cpu',
                                            threshold=0.0, min_area_px=0,
                                            allow_random_weights=True)


def _reference_probabilities(seg, backend_models, image, texts):
    """Compute MaskCLIP by hand: the last attention layer replaced by its value path."""
    runner, model = seg.runner, seg.runner.model
    height, width = image.shape[:2]
    scale = seg.short_side / min(height, width)
    p = runner.patch_size
    size = [round(height * scale / p) * p, round(width * scale / p) * p]
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    x = tvF.resize(x, size, interpolation=tvF.InterpolationMode.BILINEAR, antialias=True).float()
    ip = CLIPProcessor.from_pretrained(backend_models['clip']).image_processor
    mean = torch.tensor(ip.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(ip.image_std).view(1, 3, 1, 1)
    pixels = (x / 255.0 - mean) / std
    out = model.vision_model(pixel_values=pixels, interpolate_pos_encoding=True,
                             output_hidden_states=True)
    before_last = out.hidden_states[-2]
    last = model.vision_model.encoder.layers[-1]
    h = before_last + last.self_attn.out_proj(last.self_attn.v_proj(last.layer_norm1(before_last)))
    h = h + last.mlp(last.layer_norm2(h))
    patches = model.visual_projection(model.vision_model.post_layernorm(h[0, 1:]))
    all_texts = list(texts) + list(seg.background)
    tokens = runner.tokenizer(all_texts, padding=True, return_tensors='pt')
    text = model.get_text_features(**tokens).pooler_output
    grid = (size[0] // p, size[1] // p)
    sims = np.zeros((len(all_texts),) + grid, np.float32)
    for k in range(grid[0] * grid[1]):
        for t in range(len(all_texts)):
            sims[t, k // grid[1], k % grid[1]] = F.cosine_similarity(patches[k], text[t], dim=0)
    probs = torch.from_numpy(sims * runner.logit_scale).softmax(dim=0)[:len(texts)]
    return F.interpolate(probs[None], size=(height, width), mode='bilinear',
                         align_corners=False)[0].numpy()


def test_probabilities_equal_direct_computation(seg, backend_models):
    image = np.random.default_rng(7).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    texts = ['mug', 'chair']
    seg.set_prompts(texts)
    result = seg.segment(image)
    with torch.inference_mode():
        ref = _reference_probabilities(seg, backend_models, image, texts)
    assert result.probabilities.shape == (2, 120, 160)
    np.testing.assert_allclose(result.probabilities, ref, atol=1e-4)
    # The comparison sees an off-by-one prompt index: the maps of the two prompts differ.
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(result.probabilities, ref[::-1], atol=1e-4)
    assert all(i.label in texts and i.mask.shape == (120, 160) for i in result.instances)


def test_prompts_and_bad_input(seg):
    image = np.zeros((48, 64, 3), np.uint8)
    seg.set_prompts([])
    result = seg.segment(image)
    assert result.instances == [] and result.probabilities.shape == (0, 48, 64)
    report = seg.set_prompts(['floor', 'floor ', ''])
    assert report.active == ['floor'] and len(report.dropped) == 2
    # A prompt equal to a background phrase is not also a background: one prompt still works.
    assert seg._texts.shape[0] == len(seg.background)
    with pytest.raises(ValueError, match='uint8'):
        seg.segment(image.astype(np.int16))
    with pytest.raises(ValueError, match='must be an integer >= 0'):
        seg.set_thresholds(min_area_px=-1)
