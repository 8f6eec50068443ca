"""The sam3 backend's mask head (shared skip terms, phase convolutions) against Sam3MaskDecoder."""

import pytest
import torch
import torch.nn.functional as F
from transformers import Sam3Model

from zs_perception.segmentation.sam3_mask_head import phase_kernels, Sam3MaskHead
from zs_perception.segmentation.sam3_mask_head import upsampled_conv
from zs_perception.testing import random_models


@pytest.mark.parametrize('height, width', [(1, 1), (3, 5), (8, 8), (7, 2)])
def test_phase_convolution_equals_a_convolution_of_the_upsampling(height, width):
    generator = torch.Generator().manual_seed(height * 10 + width)
    coarse = torch.randn(2, 5, height, width, generator=generator, dtype=torch.float64)
    weight = torch.randn(6, 5, 3, 3, generator=generator, dtype=torch.float64)
    expected = F.conv2d(F.interpolate(coarse, scale_factor=2, mode='nearest'), weight,
                        padding=1)
    got = upsampled_conv(coarse, phase_kernels(weight))
    assert got.shape == (2, 6, 2 * height, 2 * width)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)
    # A skip of one image added to every row, in the pass that interleaves the phases.
    skip = torch.randn(1, 6, 2 * height, 2 * width, generator=generator, dtype=torch.float64)
    torch.testing.assert_close(upsampled_conv(coarse, phase_kernels(weight), skip),
                               expected + skip, rtol=1e-12, atol=1e-12)


@pytest.fixture(scope='module')
def model():
    torch.manual_seed(0)
    processor = random_models.sam3_processor('tiny')
    model = Sam3Model(random_models.sam3_config('tiny', processor.tokenizer)).eval()
    random_models.small_init_(model, seed=0)
    return model


def _inputs(model, shapes, prompts, seed=0):
    """Random FPN levels of ``shapes`` (finest first, plus a coarser unused one) and prompts."""
    generator = torch.Generator().manual_seed(seed)
    channels = model.mask_decoder.config.hidden_size
    fpn = [torch.randn(1, channels, h, w, generator=generator) for h, w in shapes]
    coarse = shapes[-2]
    queries = torch.randn(prompts, 7, channels, generator=generator)
    states = torch.randn(prompts, coarse[0] * coarse[1] + 3, channels, generator=generator)
    text = torch.randn(prompts, 6, channels, generator=generator)
    mask = torch.ones(prompts, 6, dtype=torch.bool)
    mask[:, 4:] = False
    mask[0, 2:] = False
    return fpn, queries, states, text, mask


# A SAM 3 pyramid (each level twice the next), and one whose last stage is not 2x.
@pytest.mark.parametrize('shapes', [[(16, 16), (8, 8), (4, 4), (2, 2)],
                                    [(11, 9), (5, 4), (3, 2), (1, 1)]])
@pytest.mark.parametrize('prompts', [1, 3])
def test_masks_equal_the_mask_decoder(model, shapes, prompts):
    fpn, queries, states, text, mask = _inputs(model, shapes, prompts)
    decoder = model.mask_decoder
    head = Sam3MaskHead(decoder)
    with torch.inference_mode():
        expected = decoder(decoder_queries=queries,
                           backbone_features=[x.expand(prompts, -1, -1, -1) for x in fpn[:-1]],
                           encoder_hidden_states=states, prompt_features=text,
                           prompt_mask=mask).pred_masks
        for shared in (True, False):
            pixels = head.pixel_embeddings(head.image_terms(fpn, shared=shared), states, text,
                                           mask)
            assert pixels.shape == (prompts, decoder.config.hidden_size, *shapes[0])
            for row in range(prompts):
                picked = torch.tensor([5, 0, 2])
                got = head.mask_logits(pixels[row], queries[row, picked])
                torch.testing.assert_close(got, expected[row, picked], rtol=1e-4, atol=1e-5)


def test_kernels_follow_the_weights(model):
    fpn, queries, states, text, mask = _inputs(model, [(8, 8), (4, 4), (2, 2), (1, 1)], 2)
    decoder = model.mask_decoder
    head = Sam3MaskHead(decoder)
    conv = decoder.pixel_decoder.conv_layers[0]
    saved = conv.weight.detach().clone()
    try:
        with torch.inference_mode():
            before = head.pixel_embeddings(head.image_terms(fpn), states, text, mask)
            conv.weight.mul_(2.0)  # changed in place: the cached phase kernels must follow
            after = head.pixel_embeddings(head.image_terms(fpn), states, text, mask)
            reference = head.pixel_embeddings(head.image_terms(fpn, shared=False), states,
                                              text, mask)
    finally:
        with torch.no_grad():
            conv.weight.copy_(saved)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, reference, rtol=1e-4, atol=1e-5)
