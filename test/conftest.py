"""Fixtures shared by several test files."""

from pathlib import Path

import pytest

#: Real frames shipped with the tests (licences and attribution in data/PROVENANCE.md).
TEST_DATA = Path(__file__).resolve().parent / 'data'


@pytest.fixture(scope='session')
def tiny_models(tmp_path_factory):
    """Directory of tiny random-weight models, written once per test session.

    Written by ``zs_perception.testing.random_models --size tiny`` (seed 0):

    - ``tiny_models / 'clipseg'``: a CLIPSeg directory (``clipseg_model``),
    - ``tiny_models / 'sam_tiny.pth'``: a SAM checkpoint (``sam_checkpoint``)
      with ``sam_model_type='tiny'``.

    Both are marked random: load them with ``allow_random_weights=True``.
    Returns the directory as a ``pathlib.Path``.
    """
    from zs_perception.testing.random_models import write_random_models

    out = tmp_path_factory.mktemp('tiny_models')
    write_random_models(out, size='tiny', seed=0)
    return out


@pytest.fixture(scope='session')
def backend_models(tmp_path_factory):
    """Tiny random OWLv2, Grounding DINO and CLIP directories, written once per session.

    Returns ``{'owlv2': dir, 'grounding_dino': dir, 'clip': dir}`` from
    ``zs_perception.testing.random_models`` (size tiny, seed 0); load them with
    ``allow_random_weights=True``.
    """
    from zs_perception.testing.random_models import write_backend_models

    return write_backend_models(tmp_path_factory.mktemp('backend_models'), size='tiny', seed=0)


@pytest.fixture(scope='session')
def real_rgb():
    """Load the real 640x480 TUM office-desk frame of test/data: ``(480, 640, 3)`` uint8 RGB."""
    import cv2

    path = TEST_DATA / 'tum_office_desk' / 'color.png'
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope='session')
def sam3_models(tmp_path_factory):
    """Tiny random SAM 3, SAM 3 LiteText and SAM 2 / SAM 3 / EdgeTAM tracker directories.

    Returns ``{'sam3': dir, 'sam3_lite_text': dir, 'sam2_video': dir, 'sam3_tracker': dir,
    'edgetam': dir}`` (``edgetam`` only when timm is installed) from
    ``zs_perception.testing.random_models`` (size tiny, seed 0; a tracker's entry is
    ``TRACKER_MODELS[tracker]``); load them with ``allow_random_weights=True``.
    """
    import importlib.util

    from zs_perception.testing.random_models import write_models

    # EdgeTAM needs timm (in requirements.txt); without it its tests skip.
    only = ['sam3', 'sam3_lite_text', 'sam2_video', 'sam3_tracker']
    if importlib.util.find_spec('timm'):
        only.append('edgetam')
    return write_models(tmp_path_factory.mktemp('sam3_models'), size='tiny', only=only, seed=0)
