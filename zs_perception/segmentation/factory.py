"""The one entry point that builds a segmenter from settings (used by the ROS node).

Importing this module is cheap (no torch): each backend's modules are imported when it is
built, so ``BACKENDS`` can be read by the parameter table without loading the ML stack.
"""

import importlib

from zs_perception.segmentation.base import Segmenter

# Backend name -> what it is, for parameter descriptions and error messages.
BACKENDS = {
    'clipseg': 'CLIPSeg probability maps; instances are their connected components',
    'clipseg_sam': 'CLIPSeg instances redrawn by Segment Anything (needs sam_checkpoint)',
    'grounded_sam': 'open-vocabulary detector (OWLv2 or Grounding DINO) boxes -> Segment '
                    'Anything masks (needs sam_checkpoint)',
    'zero_guidance': 'Segment Anything segments everything, CLIP labels each segment from a '
                     'vocabulary; works without a goal (needs sam_checkpoint)',
    'clip_dense': 'CLIP patch features vs the prompts (MaskCLIP); cheapest, coarsest',
}
# Backend name -> (module in zs_perception.segmentation, class), imported when built.
_CLASSES = {
    'clipseg': ('clipseg', 'ClipSegSegmenter'),
    'clipseg_sam': ('clipseg_sam', 'ClipSegSamSegmenter'),
    'grounded_sam': ('grounded_sam', 'GroundedSamSegmenter'),
    'zero_guidance': ('zero_guidance', 'ZeroGuidanceSegmenter'),
    'clip_dense': ('clip_dense', 'ClipDenseSegmenter'),
}


def create_segmenter(backend: str = 'clipseg', *, clipseg_model: str = '',
                     sam_checkpoint: str = '', sam_model_type: str = 'vit_b',
                     device: str = 'auto', precision: str = 'auto', threshold: float = 0.4,
                     min_area_px: int = 100, max_objects: int = 20,
                     allow_random_weights: bool = False, sam_point_prompt: bool = True,
                     detector: str = 'owlv2', detector_model: str = '', clip_model: str = '',
                     vocabulary: str = '') -> Segmenter:
    """Load the models of a backend and return a ready segmenter.

    Args:
        backend: one of :data:`BACKENDS`.
        clipseg_model: CLIPSeg Hugging Face id (cache first, works offline when cached) or
            local directory (``clipseg``, ``clipseg_sam``); empty:
            ``CIDAS/clipseg-rd64-refined``.
        sam_checkpoint: SAM checkpoint path (``clipseg_sam``, ``grounded_sam``,
            ``zero_guidance``).
        sam_model_type: ``'vit_b'``, ``'vit_l'`` or ``'vit_h'``, matching the checkpoint.
        device: ``'auto'``, ``'cuda'``, ``'cuda:N'`` or ``'cpu'``.
        precision: ``'auto'`` (fp16 on CUDA, fp32 on CPU), ``'fp32'``, ``'fp16'`` or
            ``'bf16'``.
        threshold: score threshold in ``[0, 1]`` (pixel probability for CLIPSeg and dense
            CLIP, box score for the detector, label similarity for zero-guidance).
        min_area_px: smallest instance kept, in pixels.
        max_objects: at most this many instances per image, highest score first.
        allow_random_weights: accept models marked as random weights (tests, demos); a loud
            warning is logged.
        sam_point_prompt: ``clipseg_sam`` also prompts SAM with each CLIPSeg component's
            most probable pixel.
        detector: ``'owlv2'`` or ``'grounding_dino'`` (``grounded_sam``).
        detector_model: detector Hugging Face id or directory; empty: the detector's
            default id.
        clip_model: CLIP Hugging Face id or directory (``zero_guidance``, ``clip_dense``);
            empty: ``openai/clip-vit-base-patch32``.
        vocabulary: comma-separated labels for ``zero_guidance``; empty: a default list of
            household objects and obstacles.

    Raises:
        ValueError: unknown backend, device, precision or model type, or a bad threshold.
        ModelLoadError: weights missing, wrong or random (not allowed); the message says
            where they were looked for and how to fetch them.

    """
    if backend not in BACKENDS:
        raise ValueError(f'Unknown segmentation backend {backend!r}; expected one of '
                         f'{", ".join(BACKENDS)}.')
    sam = {'sam_checkpoint': sam_checkpoint, 'sam_model_type': sam_model_type}
    models = {
        'clipseg': {'clipseg_model': clipseg_model},
        'clipseg_sam': {'clipseg_model': clipseg_model, 'sam_point_prompt': sam_point_prompt,
                        **sam},
        'grounded_sam': {'detector': detector, 'detector_model': detector_model, **sam},
        'zero_guidance': {'clip_model': clip_model, **sam, 'vocabulary': [
            w.strip() for w in str(vocabulary).split(',') if w.strip()]},
        'clip_dense': {'clip_model': clip_model},
    }[backend]
    module, name = _CLASSES[backend]
    cls = getattr(importlib.import_module(f'zs_perception.segmentation.{module}'), name)
    return cls.from_settings(device=device, precision=precision, threshold=threshold,
                             min_area_px=min_area_px, max_objects=max_objects,
                             allow_random_weights=allow_random_weights, **models)
