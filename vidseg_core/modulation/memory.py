"""Memory of masked modulation: free memory, per-run and store estimates, and the reference-mode rule.

The reference run (unmodulated, run 0) supplies the q/k that every modulated
run injects and the latents they are blended with (docs/design/authors_code.md#the-equivalent-design-the-pack-implements).
When the runs do not fit in one chunk, each chunk needs the reference again.
Two ways (:data:`~.settings.REFERENCE_MODES`):

* **repeat** — the reference is one more run of every chunk: costs one run
  through steps t_m..last per chunk, no extra memory;
* **store** — the reference is computed once, alone, and its per-step q/k of
  the injected layers and its blended latents are kept
  (:class:`~.reference.ReferenceStore`): costs one run once plus the store's
  memory, and every chunk holds one more modulated run.

:func:`choose_reference_mode` ("auto") picks, in run-steps of UNet work:

1. a store handed in by the caller (the pipeline's feature pass records it
   while computing the features: the reference trajectory is then computed
   once per batch) -> **store**, it costs nothing more;
2. all runs + the reference fit in one chunk -> **repeat** (one chunk: the
   reference rides along once, same work as storing it, no store memory);
3. otherwise repeating costs ``n_chunks >= 2`` reference runs against one for
   the store -> **store**, kept on the compute device when it fits next to a
   chunk of two runs, else in (pinned) host memory; **repeat** only when the
   store fits nowhere.
"""
from __future__ import annotations

import gc
import math
import os
import warnings
from typing import Optional, Tuple

import torch

from ..errors import OutOfMemoryError


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA / MPS / CPU allocation failures (not our own final :class:`OutOfMemoryError`)."""
    if isinstance(exc, OutOfMemoryError):
        return False
    oom_cls = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_cls is not None and isinstance(exc, oom_cls):
        return True
    if isinstance(exc, MemoryError):
        return True
    if isinstance(exc, RuntimeError):
        msg = str(exc).lower()
        return "out of memory" in msg or "can't allocate memory" in msg or "cannot allocate memory" in msg
    return False


def shrink_after_oom(msg: str, size: int, mode: str, what: str, reference_pass: str) -> Tuple[str, int]:
    """What to try after a chunk of ``size`` runs (or rows, ``what``) ran out of memory in reference ``mode``:
    ``(mode, chunk capacity)`` with a warning, halving the chunk down to 2 (1 in store mode), then, if the
    ``reference_pass`` setting is ``"auto"``, the store mode a run at a time; raises :class:`OutOfMemoryError`
    when nothing smaller is left."""
    if size > 2 or (mode == "store" and size > 1):
        smaller = max(1 if mode == "store" else 2, size // 2)
        warnings.warn(f"Modulation chunk of {size} {what} ran out of memory ({msg}); retrying with {smaller} "
                      f"{what} per chunk.", RuntimeWarning, stacklevel=3)
        return mode, smaller
    if mode == "repeat" and reference_pass == "auto":
        warnings.warn("Even the reference plus one modulated run does not fit in memory; computing the reference "
                      "once and keeping its q/k and latents (store mode).", RuntimeWarning, stacklevel=3)
        return "store", 1
    raise OutOfMemoryError(f"Masked modulation does not fit in memory even one run at a time ({msg}).",
                           "Use fewer frames per batch, smaller frames, precision bf16, or the guided-filter fast mode.")


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def host_available_bytes() -> Optional[int]:
    """Half of the host's available memory (None = unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 2
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")) // 2
    except (OSError, ValueError, AttributeError):
        return None


def available_bytes(device: torch.device) -> Optional[int]:
    """Memory a chunk may use on ``device`` (None = unknown: rely on the OOM retry)."""
    try:
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            return int(free * 0.8)
        if device.type == "cpu":
            return host_available_bytes()
    except (RuntimeError, AttributeError):
        return None
    return None


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def estimate_run_bytes(backbone, frames: int, latent_hw: Tuple[int, int]) -> int:
    """Rough peak activation memory of one run (2 guidance halves × T frames) in a UNet evaluation.

    Skip connections of every level (kept until the decoder consumes them) plus
    a working set of ~16 channel-widths at full latent resolution (transformer
    feed-forward, attention projections), ×1.5 safety.
    """
    ch = list(getattr(getattr(backbone.unet, "config", None), "block_out_channels", (320, 640, 1280, 1280)))
    tokens = latent_hw[0] * latent_hw[1]
    skips = 3 * ch[0]
    for lvl in range(1, len(ch)):
        skips += (ch[lvl - 1] + 2 * ch[lvl]) / 4 ** lvl
    per_row = tokens * (skips + 16 * ch[0])
    return int(1.5 * per_row * _itemsize(backbone.dtype) * 2 * frames)


def initial_capacity(backbone, frames: int, latent_hw: Tuple[int, int], total: int,
                     max_runs_per_chunk: Optional[int] = None) -> int:
    """Runs of a first chunk (``total`` at most): ``max_runs_per_chunk`` when set, else as many as free memory
    holds by :func:`estimate_run_bytes`, at least 2 (all of them when free memory is unknown)."""
    if max_runs_per_chunk is not None:
        return max(1, min(int(max_runs_per_chunk), total))
    budget = available_bytes(backbone.device)
    if budget is None:
        return total
    per_run = max(1, estimate_run_bytes(backbone, frames, latent_hw))
    return max(2, min(total, budget // per_run))


def estimate_decode_frame_bytes(backbone, latent_hw: Tuple[int, int]) -> int:
    """Rough peak memory of decoding one frame: ~6 full-resolution tensors of the VAE's widest last level."""
    ch = list(getattr(getattr(backbone.vae, "config", None), "block_out_channels", (128, 256, 512, 512)))
    pixels = 64 * latent_hw[0] * latent_hw[1]
    itemsize = _itemsize(next(backbone.vae.parameters()).dtype)
    return int(6 * max(ch[0], ch[-1] / 4) * pixels * itemsize)


def _attention_width(backbone, layer, module) -> int:
    """Channels of a layer's q/k projections: from the module when it is one, else from the UNet's block widths
    (backbones hooked through someone else's patch points, e.g. ComfyUI's, name their layers by path)."""
    to_q = getattr(module, "to_q", None)
    if to_q is not None:
        return int(to_q.out_features)
    ch = list(getattr(getattr(backbone.unet, "config", None), "block_out_channels", (320, 640, 1280, 1280)))
    return int(ch[::-1][min(layer.block // 3, len(ch) - 1)])


def estimate_store_bytes(backbone, plan, frames: int, latent_hw: Tuple[int, int], context_tokens: int = 77) -> int:
    """Bytes of a :class:`~.reference.ReferenceStore`: q/k of every injected layer at every step t_m..last
    (2 guidance halves × T frames), plus the latents of the blended steps.

    Self-attention keys have one row per token; cross-attention keys one per
    context token (``context_tokens``: SD's 77 text tokens, SVD's single image token).
    """
    modules = backbone.attention_layers()
    lh, lw = latent_hw
    per_step = 0
    for layer in plan.injected:
        shift = max(0, 3 - layer.block // 3)
        tokens = (lh >> shift) * (lw >> shift)
        if layer.temporal:  # rows [halves·tokens, T, C]: the same element count as the spatial layout
            q_rows, k_rows = tokens * frames, tokens * frames
        else:
            q_rows = tokens * frames
            k_rows = tokens * frames if layer.kind.endswith("self") else context_tokens * frames
        width = _attention_width(backbone, layer, modules[layer])
        per_step += 2 * (q_rows + k_rows) * width
    steps = plan.last - plan.t_m + 1
    blended = 0 if plan.blend_window is None else plan.blend_window[1] - plan.blend_window[0] + 1
    latents = blended * frames * 4 * lh * lw
    return int((steps * per_step + latents) * _itemsize(backbone.dtype))


def choose_reference_mode(setting: str, have_store: bool, runs: int, max_runs: int,
                          store_bytes: int, device_budget: Optional[int], run_bytes: int,
                          host_budget: Optional[int]) -> Tuple[str, Optional[str]]:
    """``(mode, store location)`` by the rule of the module docstring.

    ``runs``: modulated runs to compute; ``max_runs``: runs (reference included)
    one chunk holds; location ``"device"`` / ``"host"`` (None for repeat).
    """
    if setting == "repeat":
        return "repeat", None
    if setting == "store" or have_store:
        where = "device"
        if not have_store and device_budget is not None and store_bytes + 2 * run_bytes > device_budget:
            where = "host"
        return "store", where
    chunks_repeat = math.ceil(runs / max(1, max_runs - 1))
    if max_runs >= 2 and chunks_repeat <= 1:
        return "repeat", None
    if device_budget is None or store_bytes + 2 * run_bytes <= device_budget:
        return "store", "device"
    if host_budget is None or store_bytes <= host_budget:
        return "store", "host"
    return "repeat", None
