"""Keep numba's on-disk kernel cache consistent across the geometry modules.

numba's ``cache=True`` checks only the source file of the cached function itself, so a kernel
compiled with a helper from another module (``_measure`` calls ``_box_fit``) would keep the
old helper after that module changed. Before any kernel module is imported, the digest of
all kernel sources is compared with the one the cache was built from; on a change, this
package's cached kernels (``__pycache__/*.nbi``, ``*.nbc``) are removed and rebuilt on import.
"""

import hashlib
import pathlib

_KERNEL_MODULES = ('_linalg.py', '_points.py', '_box_fit.py', '_cylinder_fit.py',
                   '_measure.py', '_object_steps.py')


def invalidate_stale_kernels() -> None:
    """Remove the cached kernels when any kernel module's source changed since they were built.

    Best effort: a read-only install (no write access to ``__pycache__``) is left as it is.
    """
    here = pathlib.Path(__file__).parent  # numba caches beside the path imported
    digest = hashlib.sha256()
    for name in _KERNEL_MODULES:
        digest.update((here / name).read_bytes())
    cache = here / '__pycache__'
    stamp = cache / 'zs_geometry_kernels.sha256'
    try:
        if stamp.read_text() == digest.hexdigest():
            return
    except OSError:
        pass
    try:
        cache.mkdir(exist_ok=True)
        for path in list(cache.glob('*.nbi')) + list(cache.glob('*.nbc')):
            path.unlink()
        stamp.write_text(digest.hexdigest())
    except OSError:
        pass
