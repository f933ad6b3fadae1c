"""CPU memory of the diffusion passes: fewer large temporaries, and freed memory reused.

Quality mode on the CPU evaluates the UNet on many runs at once (masked
modulation batches every label and sign).  Two things made it peak at ~7 GB
with hundreds of seconds of system time on 14 frames of 832x448:

* the transformer feed-forward (GEGLU) at full latent resolution makes
  temporaries 8x the width of the hidden states for every row of the batch;
  :func:`feed_forward_by_rows` computes it ``rows`` rows at a time (the same
  per-token operations, with the slicing loop kept out of ``torch.compile``);
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
import weakref
from typing import Iterator

import torch


def release_freed_memory() -> bool:
    """Collect garbage cycles and hand the C heap's free pages back to the system (glibc ``malloc_trim``),
    so that the process's memory after a run drops to what is still in use.  Returns whether the heap
    was trimmed (False where the C library has no ``malloc_trim``, e.g. macOS, Windows, musl)."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim = libc.malloc_trim
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


def use_huge_pages() -> bool:
    """Ask torch's CPU allocator for transparent huge pages on large allocations (``THP_MEM_ALLOC_ENABLE=1``,
    unless the environment already says otherwise).  torch reads the variable once, at its first large
    allocation: call this before loading a model.  Returns whether it is on."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    return os.environ["THP_MEM_ALLOC_ENABLE"] == "1"


@contextlib.contextmanager
def feed_forward_by_rows(unet, rows: int, enabled: bool = True) -> Iterator[None]:
    """Inside the block, every spatial transformer block of ``unet`` runs its feed-forward ``rows`` batch rows
    at a time (the same per-token operations; ``rows`` should divide every batch it sees, e.g. one run's rows,
    2·T, for the modulation, or the last slice is smaller).

    The loop over the slices stays out of ``torch.compile``'s graphs (:func:`_by_rows_forward`): traced, its
    trip count (batch // rows) would be a guarded constant, i.e. one recompilation per batch size, and the
    compacted rows of the modulation change the batch size from chunk to chunk (``vidseg_core/compile.py``)."""
    if not enabled or rows < 1:
        yield
        return
    from .dependencies import check_diffusers

    check_diffusers()  # ComfyUI's own models need no transformers here
    from diffusers.models.attention import BasicTransformerBlock

    ffs = [m.ff for m in unet.modules() if type(m) is BasicTransformerBlock and isinstance(getattr(m, "ff", None),
                                                                                        torch.nn.Module)]
    saved = [(ff.__dict__.get("forward"), ff.__dict__.get(_ROWS)) for ff in ffs]
    for ff in ffs:
        ff.__dict__[_ROWS] = int(rows)
        ff.forward = _by_rows_forward(ff)
    try:
        yield
    finally:
        for ff, (forward, previous) in zip(ffs, saved):
            for key, value in (("forward", forward), (_ROWS, previous)):
                if value is None:
                    ff.__dict__.pop(key, None)
                else:
                    ff.__dict__[key] = value


_ROWS = "_vidseg_ff_rows"  # rows per slice, on the module while the block is open
#: the one slicing forward of each module (compiled callers guard on its identity: it must not change per use)
_FORWARDS: "weakref.WeakKeyDictionary[torch.nn.Module, object]" = weakref.WeakKeyDictionary()


def _by_rows_forward(ff: torch.nn.Module):
    """``ff``'s forward on ``ff.__dict__[_ROWS]`` batch rows at a time, made once per module.  Excluded from
    dynamo (``torch.compiler.disable(recursive=False)``): the loop runs eagerly while each slice's feed-forward
    is still compiled, where its block is."""
    fn = _FORWARDS.get(ff)
    if fn is None:
        plain, module = type(ff).forward, weakref.ref(ff)

        def forward(hidden_states, *args, **kwargs):
            m = module()
            rows = m.__dict__[_ROWS]
            if hidden_states.shape[0] <= rows:
                return plain(m, hidden_states, *args, **kwargs)
            parts = []
            for part in hidden_states.split(rows):  # a plain loop: a comprehension would be a frame of its own
                parts.append(plain(m, part, *args, **kwargs))
            return torch.cat(parts)

        fn = _FORWARDS[ff] = torch.compiler.disable(forward, recursive=False)
    return fn
