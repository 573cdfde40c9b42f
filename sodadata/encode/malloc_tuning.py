"""glibc malloc in Dask workers: give heap reuse back to the encoder when ``MALLOC_TRIM_THRESHOLD_`` took it away."""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

_MALLOC_TUNED = False


def undo_fixed_malloc_trim_threshold() -> None:
    """Give glibc back heap reuse for tensor-sized blocks when ``MALLOC_TRIM_THRESHOLD_`` pinned it down.

    Dask's nanny starts every worker with ``MALLOC_TRIM_THRESHOLD_=65536``. Setting any threshold turns off
    glibc's dynamic mmap threshold, so every block over 128 kB (every activation of the encoder) becomes its own
    mmap: freshly faulted, zeroed pages on every allocation, munmapped on every free: bench/encode.py (malloc
    table) measures the encoder at about 0.6x its plain speed under that setting. We set the values glibc's
    dynamic scheme would reach by itself (mmap above 32 MB, trim above 64 MB: at most 64 MB of freed memory kept).
    Only when the variable is set (Dask workers); never elsewhere, and only on glibc.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or "MALLOC_TRIM_THRESHOLD_" not in os.environ or not sys.platform.startswith("linux"):
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        ok = libc.mallopt(m_mmap_threshold, 32 * 2**20) == 1 and libc.mallopt(m_trim_threshold, 64 * 2**20) == 1
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to undo
        return
    log.info("MALLOC_TRIM_THRESHOLD_ is set (a Dask worker?): malloc thresholds set to mmap 32 MB, trim 64 MB (%s)",
             "ok" if ok else "refused")
