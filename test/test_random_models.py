"""The tiny random models are not saturated, so parity tests can see what they claim to."""

from pathlib import Path

import numpy as np
import pytest
from segment_anything import SamPredictor
import torch

from zs_perception.segmentation.detectors import load_detector
from zs_perception.segmentation.factory import create_segmenter
from zs_perception.segmentation.loading import load_sam
from zs_perception.testing import random_models

CPU = torch.device('cpu')


def test_clipseg_probabilities_lie_mostly_strictly_between_0_05_and_0_95(tiny_models, real_rgb):
    seg = create_segmenter('clipseg', clipseg_model=str(Path(tiny_models) / 'clipseg'),
                           device='cpu', allow_random_weights=True)
    seg.set_prompts(['mug', 'keyboard', 'chair'])
    probs = seg.segment(real_rgb).probabilities
    assert ((probs > 0.05) & (probs < 0.95)).mean() > 0.9
    assert probs.std() > 0.05  # not flat at 0.5 either
    for a in range(3):
        for b in range(a):
            assert np.abs(probs[a] - probs[b]).mean() > 1e-3, 'the prompt hardly matters'


def test_owlv2_boxes_vary_in_size_and_place(backend_models, real_rgb):
    detector = load_detector('owlv2', backend_models['owlv2'], CPU, torch.float32, True)
    with torch.inference_mode():
        detector.set_texts(['mug', 'chair'], ['mug', 'chair'])
        detections = detector.detect(real_rgb)
    boxes = detections.boxes.numpy()
    sizes = boxes[:, 2:] - boxes[:, :2]
    assert sizes.min() > 1 and sizes.max() < 640  # neither collapsed nor the whole image
    assert sizes.std(axis=0).min() > 5
    # OWLv2 pads the frame to a square with grey: patches there are alike, so their boxes too.
    in_frame = (boxes[:, 1] + boxes[:, 3]) / 2 < real_rgb.shape[0]
    assert len(np.unique(sizes[in_frame].round(), axis=0)) > 0.9 * in_frame.sum()
    # Centres are not stuck on the patch grid (8 x 8 patches over the 640 px padded square).
    cell = 640 / 8
    offsets = (boxes[:, :2] + boxes[:, 2:]) / 2 % cell
    assert offsets.std(axis=0).min() > 3
    scores = detections.scores.numpy()
    assert 0.05 < scores.min() and scores.max() < 0.95 and scores.std() > 0.02


def test_sam_candidates_differ_and_box_prompts_choose_different_ones(tiny_models, real_rgb):
    sam = load_sam(str(Path(tiny_models) / 'sam_tiny.pth'), 'tiny', CPU,
                   allow_random_weights=True)
    predictor = SamPredictor(sam)
    predictor.set_image(real_rgb)
    rng = np.random.default_rng(0)
    picks = []
    for _ in range(12):
        x0, y0 = rng.uniform(0, 500), rng.uniform(0, 350)
        box = np.array([x0, y0, x0 + rng.uniform(40, 640 - x0), y0 + rng.uniform(40, 480 - y0)])
        masks, iou, logits = predictor.predict(box=box, multimask_output=True)
        for a in range(3):
            for b in range(a):
                assert (masks[a] != masks[b]).mean() > 0.01, 'two candidates nearly equal'
        assert 0.05 < masks.mean(axis=(1, 2)).min() and masks.mean(axis=(1, 2)).max() < 0.95
        picks.append(int(iou.argmax()))
    assert len(set(picks)) > 1, f'the predicted IoU always chose candidate {picks[0]}'


def test_sam3_sizes_keep_the_full_architecture_at_lower_sides():
    full = random_models.sam3_config('full', random_models.sam3_processor('full').tokenizer)
    for size, side in (('reduced', 336), ('full', 504)):
        processor = random_models.sam3_processor(size, None if size == 'reduced' else side)
        config = random_models.sam3_config(size, processor.tokenizer,
                                           side=None if size == 'reduced' else side)
        vit, grid = config.vision_config.backbone_config, side // 14
        assert processor.image_processor.size['height'] == vit.image_size == side
        # The published ViT-L/14 (1024 wide, 32 layers) with its 3 x 3 attention windows.
        assert (vit.hidden_size, vit.num_hidden_layers, vit.window_size) == (1024, 32, grid // 3)
        assert vit.global_attn_indexes == full.vision_config.backbone_config.global_attn_indexes
        assert config.vision_config.backbone_feature_sizes == [[4 * grid] * 2, [2 * grid] * 2,
                                                               [grid] * 2]
        for part in ('detr_encoder_config', 'detr_decoder_config', 'mask_decoder_config'):
            assert getattr(config, part).to_dict() == getattr(full, part).to_dict()
        assert config.text_config.to_dict() == full.text_config.to_dict()
    vitb = random_models.sam3_config('reduced_vitb',
                                     random_models.sam3_processor('reduced_vitb').tokenizer)
    assert vitb.vision_config.backbone_config.hidden_size == 768
    with pytest.raises(ValueError, match='multiple of 42'):
        random_models.sam3_full_vision(500)
