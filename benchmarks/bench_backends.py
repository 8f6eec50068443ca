"""Benchmark the grounded_sam, zero_guidance and clip_dense backends against naive usage.

For each backend and N = 1, 3, 10 prompts on a 640x480 frame: the median time
per frame of the documented library usage (the reference) and of ours, and
their ratio. Grounded-SAM's reference runs the transformers processor, model
and post-processing on every frame, then ``SamPredictor.predict`` once per box
(both keep the 10 best boxes, so N = 10 means 10 prompts and 10 boxes). The
zero-guidance reference is segment_anything's ``SamAutomaticMaskGenerator`` (same grid,
thresholds and NMS) followed by one CLIP call per segment, image encoder included on both
sides (the table says how many segments each side labelled). The clip_dense reference runs
the same pipeline but encodes the prompts again on every frame.

For Grounded-SAM the SAM image encoder is the same computation on both sides (once per
frame): it is timed once, apart (``sam_encoder_ms``), and both sides then reuse that
frame's embedding, so ``speedup`` compares the detector, prompt and decoder work, and
``speedup_per_frame`` adds the encoder back to both. Calls of the two sides alternate, so
load hits both alike.

Usage (from the repo root, after ``source scripts/env.sh``)::

    python -m benchmarks.bench_backends [--size tiny|full] [--device auto|cpu|cuda]
        [--repeats 5]

Random weights (``zs_perception.testing.random_models``); ``tiny`` models by default,
since full-size SAM ViT-B alone takes tens of seconds per frame on a small CPU.
"""

import argparse
from pathlib import Path
import tempfile

from benchmarks.report import emit, stats_ms, time_calls
import numpy as np
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
import torch
from transformers import GroundingDinoForObjectDetection, GroundingDinoProcessor
from transformers import Owlv2ForObjectDetection, Owlv2Processor
from zs_perception.segmentation.clip_dense import ClipDenseSegmenter
from zs_perception.segmentation.grounded_sam import GroundedSamSegmenter
from zs_perception.segmentation.zero_guidance import TEMPLATE, ZeroGuidanceSegmenter
from zs_perception.testing.random_models import write_backend_models, write_random_models

PHRASES = ['mug', 'bottle', 'keyboard', 'chair', 'book', 'lamp', 'phone', 'bowl', 'box', 'pen']
_HF = {'owlv2': (Owlv2Processor, Owlv2ForObjectDetection),
       'grounding_dino': (GroundingDinoProcessor, GroundingDinoForObjectDetection)}


def reference_detect(processor, model, image, texts, detector, threshold=0.0):
    """Run the documented transformers detector usage on one frame.

    Returns:
        ``(boxes, scores, labels)``: ``(K, 4)`` pixel boxes, ``(K,)`` scores
        and (OWLv2) ``(K,)`` phrase indices or (Grounding DINO) the decoded
        token strings.

    """
    inputs = processor(text=[list(texts)], images=image, return_tensors='pt').to(model.device)
    outputs = model(**inputs)
    size = [image.shape[:2]]
    if detector == 'owlv2':
        out = processor.post_process_grounded_object_detection(
            outputs, threshold=threshold, target_sizes=size, text_labels=[list(texts)])[0]
        return out['boxes'], out['scores'], out['labels']
    out = processor.post_process_grounded_object_detection(
        outputs, inputs['input_ids'], threshold=threshold, text_threshold=0.25,
        target_sizes=size)[0]
    return out['boxes'], out['scores'], out['text_labels']


def reference_sam_masks(predictor, image, boxes, return_logits=False):
    """``SamPredictor`` with one ``predict`` call per box, keeping the best of 3 masks.

    Returns:
        ``(K, H, W)`` bool masks, or with ``return_logits`` their ``float32`` logits.

    """
    predictor.set_image(image)
    masks = [_best_mask(predictor, box, return_logits) for box in boxes]
    return np.stack(masks) if masks else np.zeros((0, *image.shape[:2]), bool)


def clip_boxes(boxes, image):
    """``(K, 4)`` pixel boxes clipped to the image, as ``float64`` numpy (SAM's input)."""
    height, width = image.shape[:2]
    limit = torch.tensor([width, height, width, height], dtype=boxes.dtype)
    return torch.minimum(boxes.cpu().clamp(min=0), limit).numpy().astype(np.float64)


def _best_mask(predictor, box, return_logits=False):
    candidates, scores, _ = predictor.predict(box=np.asarray(box, dtype=np.float64),
                                              multimask_output=True,
                                              return_logits=return_logits)
    return candidates[int(scores.argmax())]


def reference_grounded_sam(processor, model, predictor, image, texts, detector, max_boxes):
    """Naive Grounded-SAM on one frame: detector as documented, then SAM box by box.

    Boxes are clipped to the image (as ours). ``predictor`` must hold ``image`` already
    (``set_image``): the SAM image encoder is the same computation on both sides and is timed
    once, apart.
    """
    boxes, scores, _ = reference_detect(processor, model, image, texts, detector)
    order = torch.argsort(scores, descending=True)[:max_boxes]
    return [_best_mask(predictor, box) for box in clip_boxes(boxes[order], image)]


def reference_zero_guidance(generator, seg, image):
    """Naive zero-guidance on one frame: segment everything, then CLIP per segment.

    segment_anything's documented usage (``SamAutomaticMaskGenerator.generate``, image
    encoder included), then one CLIP call per segment (its two views, as ours).

    Returns:
        ``(records, labels)``: the generator's masks and one ``(labels, scores)`` per mask.

    """
    records = generator.generate(image)
    labels = [seg.label(image, record['segmentation'][None]) for record in records]
    return records, labels


def _encoder_ms(predictor, image):
    """Median ms of the SAM image encoder on ``image`` (2 calls after a warm-up)."""
    return stats_ms(time_calls(lambda: predictor.set_image(image), 2))['median_ms']


def _bench_grounded_sam(models, tiny, image, device, repeats, rows):
    sam_path, sam_type = tiny['sam_checkpoint'], tiny['sam_model_type']
    for detector in ('owlv2', 'grounding_dino'):
        processor_cls, model_cls = _HF[detector]
        processor = processor_cls.from_pretrained(models[detector])
        model = model_cls.from_pretrained(models[detector]).to(device).eval()
        seg = GroundedSamSegmenter.from_settings(
            detector=detector, detector_model=models[detector], sam_checkpoint=sam_path,
            sam_model_type=sam_type, device=str(device), precision='fp32', threshold=0.0,
            min_area_px=0, max_objects=10, allow_random_weights=True, nms_iou=1.0)
        predictor = SamPredictor(seg.refiner.sam)
        with torch.inference_mode():
            encoder = _encoder_ms(predictor, image)  # both sides now hold this frame's
            seg.refiner.embed(image)                 # embedding: only the rest is timed
        for n in (1, 3, 10):
            texts = PHRASES[:n]
            seg.set_prompts(texts)
            with torch.inference_mode():
                ref, ours = time_pair(lambda: reference_grounded_sam(
                    processor, model, predictor, image, texts, detector, 10),
                    lambda: seg.segment(image), repeats)
            rows.append(_row(f'grounded_sam/{detector}', n, 10, ref, ours, device, encoder))


def time_pair(reference, ours, repeats):
    """Time two calls alternately (one warm-up each), so load hits both alike."""
    reference()
    ours()
    ref_s, ours_s = np.empty(repeats), np.empty(repeats)
    for i in range(repeats):
        ref_s[i] = time_calls(reference, 1, warmup=0)[0]
        ours_s[i] = time_calls(ours, 1, warmup=0)[0]
    return ref_s, ours_s


def _fresh_frame(seg, image):
    # A new camera frame every call: defeat the per-frame caches as a live stream would.
    image[0, 0, 0] ^= 1
    return seg.segment(image)


def _bench_zero_guidance(models, tiny, image, device, repeats, rows):
    seg = ZeroGuidanceSegmenter.from_settings(
        sam_checkpoint=tiny['sam_checkpoint'], sam_model_type=tiny['sam_model_type'],
        clip_model=models['clip'], device=str(device), precision='fp32', threshold=0.0,
        min_area_px=0, allow_random_weights=True)
    # Every candidate kept by quality, on both sides: random weights predict low quality.
    seg.set_thresholds(mask_quality_iou=0.0, stability_iou=0.0)
    generator = SamAutomaticMaskGenerator(
        seg.refiner.sam, points_per_side=seg.points_per_side,
        points_per_batch=seg.points_per_batch, pred_iou_thresh=0.0, stability_score_thresh=0.0,
        stability_score_offset=1.0, box_nms_thresh=seg.nms_iou)
    for n in (1, 3, 10):
        seg.set_prompts(PHRASES[:n])
        with torch.inference_mode():
            # Both sides encode every frame (the generator cannot reuse an embedding).
            ref, ours = time_pair(lambda: reference_zero_guidance(generator, seg, image),
                                  lambda: _fresh_frame(seg, image), repeats)
            labelled = (len(generator.generate(image)), len(seg.masks(image)[0]))
        rows.append(_row('zero_guidance', n, seg.points_per_side ** 2, ref, ours, device,
                         labelled=labelled))


def _bench_clip_dense(models, image, device, repeats, rows):
    seg = ClipDenseSegmenter.from_settings(clip_model=models['clip'], device=str(device),
                                           precision='fp32', allow_random_weights=True)
    runner = seg.runner
    for n in (1, 3, 10):
        texts = PHRASES[:n]
        seg.set_prompts(texts)

        def reference():
            # The same maps and instances, with the prompts encoded again on every frame
            # (what a per-frame processor(text=..., images=...) call does).
            runner.encode_texts([TEMPLATE.format(t) for t in texts])
            return _fresh_frame(seg, image)

        with torch.inference_mode():
            ref, ours = time_pair(reference, lambda: _fresh_frame(seg, image), repeats)
        rows.append(_row('clip_dense', n, 0, ref, ours, device))


def _row(backend, n, boxes, ref, ours, device, encoder_ms=0.0, labelled=None):
    """One table row; ``encoder_ms`` is the SAM image encoder both sides run once per frame.

    ``labelled``: zero-guidance's ``(reference, ours)`` number of segments given to CLIP.
    """
    ref_ms, ours_ms = stats_ms(ref)['median_ms'], stats_ms(ours)['median_ms']
    return {'backend': backend, 'prompts': n, 'boxes_or_points': boxes,
            'device': device.type, 'reference_median_ms': ref_ms, 'ours_median_ms': ours_ms,
            'ours_p90_ms': stats_ms(ours)['p90_ms'],
            'speedup': round(ref_ms / max(ours_ms, 1e-9), 2),
            'sam_encoder_ms': encoder_ms,
            'speedup_per_frame': round((ref_ms + encoder_ms) / max(ours_ms + encoder_ms, 1e-9),
                                       2),
            'segments_labelled_ref_ours': '-' if labelled is None else '%d / %d' % labelled}


def main(argv=None):
    """Run the benchmark and print JSON then a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--size', choices=('tiny', 'full'), default='tiny')
    parser.add_argument('--device', default='auto')
    parser.add_argument('--repeats', type=int, default=5)
    args = parser.parse_args(argv)
    device = torch.device('cuda' if args.device == 'auto' and torch.cuda.is_available()
                          else 'cpu' if args.device == 'auto' else args.device)
    torch.manual_seed(0)
    image = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = write_backend_models(Path(tmp) / 'backends', size=args.size)
        sam = write_random_models(Path(tmp) / 'engine', size=args.size)
        _bench_grounded_sam(models, sam, image, device, args.repeats, rows)
        _bench_zero_guidance(models, sam, image, device, args.repeats, rows)
        _bench_clip_dense(models, image, device, args.repeats, rows)
    emit('segmentation_backends', rows, meta={
        'size': args.size, 'device': str(device), 'image': '640x480',
        'torch': torch.__version__, 'threads': torch.get_num_threads(),
        'weights': 'random (speed only)'})


if __name__ == '__main__':
    main()
