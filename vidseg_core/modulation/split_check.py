"""Once per model: the split UNet equals the UNet's own forward (a guard against version drift).

A splitter (:mod:`.unet_split`) follows the forward pass of the host's UNet (diffusers' or ComfyUI's) over
its module tree.  A later diffusers / ComfyUI version whose forward changes (a new embedding term, a new
patch point) would make the split silently compute something else.  So the first time the prefix is computed
at t_m (:class:`~.unet_split.PrefixSharingForward`), the suffix and the UNet's own forward also run on those
prefix rows (one run of rows, with no modulation hook: two more UNet evaluations, once per model and split
block per process) and are compared: within :func:`tolerance` the split is used from then on (the relative
difference is kept in the modulation's ``stats["prefix"]["checked"]``); otherwise prefix sharing is off for
that model, said once (logger ``vidseg``) with the difference, and every call runs the whole UNet.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Union

import torch

#: attribute of the backbone holding ``{split block: relative difference (passed) or reason (failed)}``
ATTR = "_vidseg_split_checks"


def tolerance(dtype: torch.dtype) -> float:
    """Largest max |split - whole| / max |whole| accepted: batch-order rounding, not a different network
    (measured on the same rows: 0 on the CPU in float32; a changed forward gives differences of order 1)."""
    return 1e-3 if dtype in (torch.float32, torch.float64) else 3e-2


def _checks(backbone) -> Dict[int, Union[float, str]]:
    checks = backbone.__dict__.get(ATTR)
    if checks is None:
        checks = backbone.__dict__[ATTR] = {}
    return checks


def known_failure(backbone, block: int) -> Optional[str]:
    """The reason recorded when the split of ``block`` failed its check on this backbone, else None."""
    found = _checks(backbone).get(block)
    return found if isinstance(found, str) else None


def check_split(backbone, block: int, splitter, call, rows, state) -> Optional[Union[float, str]]:
    """Compare ``splitter.suffix(state)`` with the UNet's own forward on ``rows`` (the rows ``state`` was
    computed on), once per backbone and ``block``.  Returns None when already checked (or on meta tensors),
    the relative difference (float) when it passes, the reason (str) when it fails; the result is recorded."""
    checks = _checks(backbone)
    if block in checks or state.hidden.device.type == "meta":  # meta: FLOP counting, nothing to compare
        return None
    sub = splitter.sub_call(call, rows)
    split = splitter.suffix(state, sub)
    whole = sub.original()
    tol = tolerance(whole.dtype)
    if split.shape != whole.shape:
        result: Union[float, str] = (f"the split UNet's output has shape {tuple(split.shape)}, the UNet's own "
                                     f"forward {tuple(whole.shape)}")
    else:
        scale = whole.detach().float().abs().max()
        rel = float(((split.detach().float() - whole.detach().float()).abs().max() / scale.clamp_min(1e-30)))
        if not math.isfinite(rel):
            result = "the split UNet's output could not be compared with the UNet's own forward (not finite)"
        elif rel > tol:
            result = (f"the split UNet differs from the UNet's own forward (max |split - whole| / max |whole| = "
                      f"{rel:.3g} > {tol:g}): this diffusers / ComfyUI version's forward is not the one the split "
                      "follows")
        else:
            result = rel
    checks[block] = result
    return result
