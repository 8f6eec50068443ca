"""Fixtures for the grounded_sam, zero_guidance and clip_dense backend tests."""

import pytest


@pytest.fixture(scope='session')
def backend_models(tmp_path_factory):
    """Tiny random OWLv2, Grounding DINO and CLIP directories, written once per session.

    Returns ``{'owlv2': dir, 'grounding_dino': dir, 'clip': dir}`` from
    ``zs_perception.tools.random_backend_models`` (size tiny, seed 0); load
    them with ``allow_random_weights=True``.
    """
    from zs_perception.tools.random_backend_models import write_backend_models

    return write_backend_models(tmp_path_factory.mktemp('backend_models'), size='tiny', seed=0)
