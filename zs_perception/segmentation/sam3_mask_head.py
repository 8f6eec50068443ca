"""SAM 3's mask head for N prompts of one image, with the prompt-independent work done once.

``Sam3MaskDecoder`` (transformers) turns each prompt's DETR encoder tokens into pixel
embeddings (prompt cross-attention, then an FPN pixel decoder whose coarsest level is those
tokens) and each query into a mask (``mask_embedder(query) . instance_projection(pixels)``).
This module computes the same logits with the same weights, rearranged by linearity so that
less of it is repeated per prompt:

- each pixel-decoder stage is ``relu(norm(conv(upsample(prev) + skip)))``; the convolution
  is linear, so ``conv(skip)`` (the skip is the image's FPN level, the same for every
  prompt) is computed once per image and only ``conv(upsample(prev))`` per prompt;
- a 3x3 convolution of a 2x nearest upsampling equals, for each of the four output phases
  (row and column parity), a 2x2 convolution of the coarse map with summed taps
  (:func:`phase_kernels`): 16 instead of 36 multiply-adds per coarse pixel and channel pair;
- ``instance_projection`` (a 1x1 convolution) is folded into the query embeddings, so only
  the masks of the queries asked for are computed, each as ``(emb W) . pixels + emb . b``,
  instead of projecting every pixel and all queries' masks.

The logits equal ``Sam3MaskDecoder(...).pred_masks`` up to float rounding
(``test/test_sam3_mask_head.py``). Stages whose fine level is not exactly twice the coarse
one (no SAM 3 configuration has them) fall back to the upsampling and a 3x3 convolution.
"""

from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from transformers.masking_utils import create_bidirectional_mask


def phase_kernels(weight: torch.Tensor) -> torch.Tensor:
    """2x2 kernels that give a 3x3 convolution of a 2x nearest upsampling, per output phase.

    Upsampled row ``2i + a`` reads coarse rows ``i - 1, i`` (``a = 0``: taps ``w0`` and
    ``w1 + w2``) or ``i, i + 1`` (``a = 1``: ``w0 + w1`` and ``w2``); columns alike. A
    convolution of the coarse map with these kernels and padding 1 gives, for phase
    ``(a, b)``, output ``[a:a + H, b:b + W]`` (:func:`upsampled_conv`).

    Args:
        weight: ``(O, I, 3, 3)`` convolution weight.

    Returns:
        ``(4 O, I, 2, 2)`` kernels, phases ``(0, 0), (0, 1), (1, 0), (1, 1)`` in that order,
        summed in at least float32 and returned in ``weight``'s dtype.

    """
    w = weight.to(torch.promote_types(weight.dtype, torch.float32))

    def taps(x: torch.Tensor, dim: int, phase: int) -> torch.Tensor:
        first, middle, last = x.unbind(dim)
        pair = (first, middle + last) if phase == 0 else (first + middle, last)
        return torch.stack(pair, dim)

    kernels = [taps(taps(w, 2, a), 3, b) for a in (0, 1) for b in (0, 1)]
    return torch.cat(kernels).to(weight.dtype)


def upsampled_conv(coarse: torch.Tensor, kernels: torch.Tensor,
                   skip: Optional[torch.Tensor] = None) -> torch.Tensor:
    """3x3 convolution (padding 1, no bias) of ``coarse`` upsampled 2x by nearest neighbour.

    Args:
        coarse: ``(B, I, H, W)`` map.
        kernels: :func:`phase_kernels` of the 3x3 weight, ``(4 O, I, 2, 2)``.
        skip: optional ``(1 or B, O, 2 H, 2 W)`` added to the result (in the same pass that
            interleaves the phases).

    Returns:
        ``(B, O, 2 H, 2 W)``.

    """
    batch, _, height, width = coarse.shape
    out = F.conv2d(coarse, kernels, padding=1)  # (B, 4 O, H + 1, W + 1)
    phases = out.unflatten(1, (2, 2, -1))  # (B, a, b, O, H + 1, W + 1)
    result = out.new_empty((batch, phases.shape[3], 2 * height, 2 * width))
    for a in (0, 1):
        for b in (0, 1):  # each phase written once into its strided place
            phase = phases[:, a, b, :, a:a + height, b:b + width]
            if skip is None:
                result[:, :, a::2, b::2] = phase
            else:
                torch.add(phase, skip[:, :, a::2, b::2], out=result[:, :, a::2, b::2])
    return result


class ImageTerms(NamedTuple):
    """The prompt-independent part of the mask head for one image (``image_terms``).

    Attributes:
        coarse_shape: ``(h, w)`` of the level the prompt's tokens replace.
        skips: each pixel-decoder stage's skip level, ``(1, C, h_i, w_i)``, coarse to fine:
            ``conv(skip) + bias`` when ``convolved``, else the FPN level itself.
        convolved: whether ``skips`` are convolved.

    """

    coarse_shape: Tuple[int, int]
    skips: List[torch.Tensor]
    convolved: bool


class Sam3MaskHead:
    """The mask logits of ``Sam3MaskDecoder`` for chosen queries, shared work done once.

    Args:
        decoder: the model's ``Sam3MaskDecoder`` (``model.mask_decoder``), in eval mode.

    """

    def __init__(self, decoder: torch.nn.Module):
        self.decoder = decoder
        self._kernels: Dict[int, Tuple[Tuple, Optional[torch.Tensor]]] = {}

    def image_terms(self, fpn_hidden_states: Sequence[torch.Tensor],
                    shared: bool = True) -> ImageTerms:
        """Return the stages' skip terms of one image.

        Args:
            fpn_hidden_states: the vision encoder's FPN levels, finest first, batch 1. The
                mask head reads all but the last; the coarsest of those is replaced by each
                prompt's tokens, the others are the stages' skip connections.
            shared: convolve the skips here, once for all the prompts (worth it from two
                prompts on); ``False`` keeps them raw and :meth:`pixel_embeddings` runs the
                stages as the pixel decoder does (for a single prompt).

        """
        levels = list(fpn_hidden_states[:-1])
        skips = list(reversed(levels[:-1]))
        if shared:
            convs = self.decoder.pixel_decoder.conv_layers
            skips = [conv(skip) for conv, skip in zip(convs, skips)]
        return ImageTerms(tuple(levels[-1].shape[-2:]), skips, shared)

    def pixel_embeddings(self, terms: ImageTerms, encoder_states: torch.Tensor,
                         prompt_features: torch.Tensor, prompt_mask: torch.Tensor
                         ) -> torch.Tensor:
        """Return each prompt's pixel embeddings (the pixel decoder's output).

        Args:
            terms: :meth:`image_terms` of the image.
            encoder_states: ``(M, T, C)`` the DETR encoder's prompt-fused tokens.
            prompt_features: ``(M, L, C)`` the prompts' text features.
            prompt_mask: ``(M, L)`` ``bool``, True on real tokens.

        Returns:
            ``(M, C, h, w)`` at the finest level.

        """
        decoder = self.decoder
        # The encoder tokens attend to the prompt (as Sam3MaskDecoder.forward does).
        normed = decoder.prompt_cross_attn_norm(encoder_states)
        attention_mask = create_bidirectional_mask(
            config=decoder.config, inputs_embeds=normed, encoder_hidden_states=prompt_features,
            attention_mask=prompt_mask)
        attended, _ = decoder.prompt_cross_attn(query=normed, key=prompt_features,
                                                value=prompt_features,
                                                attention_mask=attention_mask)
        states = encoder_states + attended
        # The image tokens as the coarsest map, then the stages coarse to fine.
        height, width = terms.coarse_shape
        count, _, channels = states.shape
        previous = states[:, :height * width].transpose(1, 2).reshape(
            count, channels, height, width)
        pixel = decoder.pixel_decoder
        for stage, skip in enumerate(terms.skips):
            conv = pixel.conv_layers[stage]
            if terms.convolved:
                previous = self._upsampled_conv(conv, previous, skip)
            else:  # Sam3PixelDecoder's own steps
                upsampled = F.interpolate(previous, size=skip.shape[-2:], mode='nearest')
                previous = conv(upsampled + skip)
            previous = F.relu(pixel.norms[stage](previous), inplace=True)
        return previous

    def _upsampled_conv(self, conv: torch.nn.Conv2d, previous: torch.Tensor,
                        skip: torch.Tensor) -> torch.Tensor:
        """``conv`` (no bias) of ``previous`` upsampled to ``skip``'s size, plus ``skip``."""
        kernels = self._phase_kernels(conv)
        size = tuple(skip.shape[-2:])
        if kernels is not None and size == (2 * previous.shape[-2], 2 * previous.shape[-1]):
            return upsampled_conv(previous, kernels, skip)
        upsampled = F.interpolate(previous, size=size, mode='nearest')
        return conv._conv_forward(upsampled, conv.weight, None) + skip

    def _phase_kernels(self, conv: torch.nn.Conv2d) -> Optional[torch.Tensor]:
        """:func:`phase_kernels` of ``conv`` (``None`` unless a plain 3x3), kept per weight."""
        weight = conv.weight
        version = (weight.data_ptr(), weight.dtype, weight.device, weight._version)
        cached = self._kernels.get(id(conv))
        if cached is None or cached[0] != version:
            cached = (version, phase_kernels(weight) if _is_plain_3x3(conv) else None)
            self._kernels[id(conv)] = cached
        return cached[1]

    def mask_logits(self, pixel_embeddings: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """Return the mask logits of some queries of one prompt.

        Args:
            pixel_embeddings: ``(C, h, w)`` the prompt's :meth:`pixel_embeddings`.
            queries: ``(K, C)`` those queries' DETR decoder states.

        Returns:
            ``(K, h, w)`` logits, as ``Sam3MaskDecoder``'s ``pred_masks`` for them.

        """
        projection = self.decoder.instance_projection
        embedded = self.decoder.mask_embedder(queries)  # (K, C)
        weights = embedded @ projection.weight[:, :, 0, 0]  # the projection folded in: (K, C)
        offsets = embedded @ projection.bias  # (K,)
        channels, height, width = pixel_embeddings.shape
        logits = weights @ pixel_embeddings.reshape(channels, height * width)
        return (logits + offsets[:, None]).reshape(-1, height, width)


def _is_plain_3x3(conv: torch.nn.Conv2d) -> bool:
    """Return True for a 3x3 convolution with padding 1, stride 1, no dilation or groups."""
    return (tuple(conv.kernel_size) == (3, 3) and tuple(conv.padding) == (1, 1)
            and tuple(conv.stride) == (1, 1) and tuple(conv.dilation) == (1, 1)
            and conv.groups == 1 and conv.padding_mode == 'zeros')
