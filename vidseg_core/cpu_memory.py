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
  activation of every layer page-faults its memory in again, 4 KiB at a time
  (the system time).  :func:`use_huge_pages` (called by the command line before
  it loads the model) turns on torch's own remedy, ``THP_MEM_ALLOC_ENABLE``:
  allocations of 2 MB and more are aligned and advised as transparent huge
  pages, 512x fewer faults, and freed memory still goes back to the system (the
  peak stays that of the live tensors).  In a host process such as ComfyUI set
  ``THP_MEM_ALLOC_ENABLE=1`` in the environment before it starts.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator


def use_huge_pages() -> bool:
    """Ask torch's CPU allocator for transparent huge pages on large allocations (``THP_MEM_ALLOC_ENABLE=1``,
    unless the environment already says otherwise).  torch reads the variable once, at its first large
    allocation: call this before loading a model.  Returns whether it is on."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    return os.environ["THP_MEM_ALLOC_ENABLE"] == "1"


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
