"""The one entry point that builds a segmenter from settings (used by the ROS node)."""

import logging

from zs_perception.segmentation.base import Segmenter
from zs_perception.segmentation.clipseg import check_thresholds, ClipSegRunner
from zs_perception.segmentation.clipseg import ClipSegSegmenter
from zs_perception.segmentation.device import resolve_device, resolve_dtype
from zs_perception.segmentation.loading import DEFAULT_CLIPSEG_MODEL, load_clipseg, load_sam
from zs_perception.segmentation.sam import ClipSegSamSegmenter, SamRefiner

BACKENDS = ('clipseg', 'clipseg_sam')

logger = logging.getLogger(__name__)


def create_segmenter(backend: str = 'clipseg', *, clipseg_model: str = DEFAULT_CLIPSEG_MODEL,
                     sam_checkpoint: str = '', sam_model_type: str = 'vit_b',
                     device: str = 'auto', precision: str = 'auto', threshold: float = 0.4,
                     min_area_px: int = 100, max_objects: int = 20,
                     allow_random_weights: bool = False,
                     sam_point_prompt: bool = True) -> Segmenter:
    """Load the models of a backend and return a ready segmenter.

    Args:
        backend: ``'clipseg'`` (CLIPSeg probability maps, instances are
            connected components) or ``'clipseg_sam'`` (those instances
            re-drawn by Segment Anything).
        clipseg_model: Hugging Face id (cache first, works offline when
            cached) or local directory.
        sam_checkpoint: SAM checkpoint path; needed by ``clipseg_sam``,
            ignored by ``clipseg``.
        sam_model_type: ``'vit_b'``, ``'vit_l'`` or ``'vit_h'``, matching the
            checkpoint.
        device: ``'auto'``, ``'cuda'`` or ``'cpu'``.
        precision: ``'auto'`` (fp16 on CUDA, fp32 on CPU), ``'fp32'``,
            ``'fp16'`` or ``'bf16'``.
        threshold: pixel probability threshold in ``[0, 1]``.
        min_area_px: smallest instance kept, in pixels.
        max_objects: at most this many instances per image, highest score
            first.
        allow_random_weights: accept models marked as random weights (tests,
            demos); a loud warning is logged.
        sam_point_prompt: ``clipseg_sam`` also prompts SAM with each CLIPSeg
            component's most probable pixel.

    Raises:
        ValueError: unknown backend, device, precision or model type, or a bad
            threshold.
        ModelLoadError: weights missing, wrong or random (not allowed); the
            message says where they were looked for and how to fetch them.

    """
    if backend not in BACKENDS:
        raise ValueError(f'Unknown segmentation backend {backend!r}; expected one of {BACKENDS}.')
    torch_device = resolve_device(device)
    dtype = resolve_dtype(precision, torch_device)
    thresholds = {'threshold': threshold, 'min_area_px': min_area_px, 'max_objects': max_objects}
    check_thresholds(**thresholds)  # before the slow model loading
    sam = None
    if backend == 'clipseg_sam':
        # SAM first: its checkpoint is the setting most often missing; fail before the slow part.
        sam = load_sam(sam_checkpoint, sam_model_type, torch_device, allow_random_weights)
    model, processor = load_clipseg(clipseg_model, torch_device, dtype, allow_random_weights)
    runner = ClipSegRunner(model, processor, torch_device, dtype)
    logger.info('Segmentation backend %s on %s in %s (CLIPSeg %s%s).', backend, torch_device,
                dtype, clipseg_model, f', SAM {sam_model_type} {sam_checkpoint}' if sam else '')
    if sam is None:
        return ClipSegSegmenter(runner, **thresholds)
    return ClipSegSamSegmenter(runner, SamRefiner(sam, torch_device, dtype),
                               sam_point_prompt=sam_point_prompt, **thresholds)
