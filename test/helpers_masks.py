"""Mask comparisons that tolerate float rounding exactly at the mask threshold.

Two computations of the same SAM mask (one decoder call for all prompts, or one per prompt;
ours or ``SamPredictor``'s) run the same arithmetic in a different order, so their logits
differ in the last bits (about 1e-8 here). A pixel whose logit is that close to the
threshold can then fall on either side of it. The masks are compared pixel by pixel
except at pixels whose reference logit lies within :data:`LOGIT_TOLERANCE` of the
threshold, and those pixels must be rare, so the tolerance cannot hide a real difference.
"""

import numpy as np

#: Reference logits this close to the mask threshold may round to either side.
LOGIT_TOLERANCE = 1e-4
#: At most this fraction of a mask's pixels may be that close to the threshold.
MAX_TIED_FRACTION = 1e-3


def assert_mask_matches_logits(mask: np.ndarray, logits: np.ndarray, threshold: float,
                               what: str) -> int:
    """Check a boolean mask against ``logits > threshold`` up to ties at the threshold.

    Args:
        mask: ``(H, W)`` bool, the mask under test.
        logits: ``(H, W)`` float reference logits at the same resolution.
        threshold: the mask threshold (SAM: ``sam.mask_threshold``, 0.0).
        what: names the mask in failure messages.

    Returns:
        The number of pixels that differ (all within the tolerance of the threshold).

    """
    mask = np.asarray(mask, dtype=bool)
    logits = np.asarray(logits, dtype=np.float64)
    assert mask.shape == logits.shape, f'{what}: shape {mask.shape} vs {logits.shape}'
    tied = np.abs(logits - threshold) <= LOGIT_TOLERANCE
    assert tied.mean() <= MAX_TIED_FRACTION, (
        f'{what}: {tied.mean():.2%} of the pixels have logits within {LOGIT_TOLERANCE} of '
        'the threshold; the comparison would say little')
    differ = mask != (logits > threshold)
    real = differ & ~tied
    assert not real.any(), (
        f'{what}: {int(real.sum())} pixels differ whose reference logit is more than '
        f'{LOGIT_TOLERANCE} from the threshold (largest distance '
        f'{np.abs(logits[real] - threshold).max():.3g})')
    return int(differ.sum())
