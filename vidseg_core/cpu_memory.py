"""CPU memory of the diffusion passes: fewer large temporaries, and freed memory reused (issue 14).

Quality mode on the CPU evaluates the UNet on many runs at once (masked
modulation batches every label and sign).  Two things made it peak at ~7 GB
with hundreds of seconds of system time on 14 frames of 832x448:

* the transformer feed-forward (GEGLU) at full latent resolution makes
  temporaries 8x the width of the hidden states for every row of the batch;
  :func:`feed_forward_by_rows` computes it ``rows`` rows at a time (diffusers'
  own feed-forward chunking: the same per-token operations);
* glibc hands every allocation above its mmap threshold (at most 32 MB) to a
  fresh ``mmap`` and returns it with ``munmap`` when freed, so each large
  activation of every layer page-faults its memory in again (the kernel zeroes
  every page: the system time).  :func:`reuse_freed_memory` (called by the
  command line, which owns its process) makes glibc keep freed memory in the
  heap for reuse instead.  In a host process such as ComfyUI the same is the
  environment ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1073741824``.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from typing import Iterator

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def reuse_freed_memory(trim_threshold: int = 2 ** 30) -> bool:
    """glibc only: serve large allocations from the heap (no mmap) and keep up to ``trim_threshold`` bytes
    of freed memory at the heap's top.  Returns whether it was applied (False elsewhere)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, int(trim_threshold)))


@contextlib.contextmanager
def feed_forward_by_rows(unet, rows: int, enabled: bool = True) -> Iterator[None]:
    """Inside the block, every spatial transformer block of ``unet`` runs its feed-forward ``rows`` batch rows
    at a time (``rows`` must divide every batch it sees: one run's rows, 2·T, for the modulation)."""
    if not enabled or rows < 1:
        yield
        return
    from diffusers.models.attention import BasicTransformerBlock

    blocks = [m for m in unet.modules() if type(m) is BasicTransformerBlock and hasattr(m, "_chunk_size")]
    saved = [(m._chunk_size, m._chunk_dim) for m in blocks]
    for m in blocks:
        m.set_chunk_feed_forward(int(rows), 0)
    try:
        yield
    finally:
        for m, (size, dim) in zip(blocks, saved):
            m.set_chunk_feed_forward(size, dim)
