"""Checking and converting label maps shared by every metric.

Label maps are integer arrays of class / object ids (``[H, W]`` per frame or
``[T, H, W]`` per video).  Floating-point arrays are accepted only when every
value is a whole number, so a probability map or a normalised image passed by
mistake is rejected instead of silently truncated.
"""
from __future__ import annotations

import numpy as np

from ..errors import InputError


def as_label_array(x, name: str, ndim: int | tuple = (2, 3)) -> np.ndarray:
    """Return ``x`` as an integer numpy array (never the caller's array modified).

    Accepts numpy arrays, torch tensors and nested lists of integer or bool
    type; float arrays only if all values are integral.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    dims = (ndim,) if isinstance(ndim, int) else tuple(ndim)
    if arr.ndim not in dims:
        want = " or ".join(f"{d}-D" for d in dims)
        raise InputError(
            f"{name} has shape {tuple(arr.shape)}; expected a {want} label map "
            f"({'[H, W]' if 2 in dims else ''}{' / ' if len(dims) > 1 else ''}{'[T, H, W]' if 3 in dims else ''}).",
            "Pass one integer label per pixel (palette indices, not RGB colours).",
        )
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError(
                f"{name} holds non-integer values (dtype {arr.dtype}).",
                "Pass integer label ids (e.g. argmax of the scores), not probabilities or a normalised image.",
            )
        return arr.astype(np.int64)
    raise InputError(f"{name} has dtype {arr.dtype}, which is not a label type.", "Pass an integer array of label ids.")


def check_same_shape(pred: np.ndarray, gt: np.ndarray, what: str = "prediction and ground truth") -> None:
    """Raise :class:`InputError` unless the two label arrays have the same shape."""
    if pred.shape != gt.shape:
        raise InputError(
            f"The {what} differ in shape: {tuple(pred.shape)} vs {tuple(gt.shape)}.",
            "Resize the prediction to the ground-truth resolution with nearest-neighbour "
            "interpolation and give both the same number of frames.",
        )


def vspw_remap(labels, ignore_index: int = 255) -> np.ndarray:
    """VSPW raw label ids -> evaluation ids (docs/design/metrics.md#vspw-miou).

    Raw 0 ("others") and 255 ("void") become ``ignore_index``; 1..124 become
    0..123.  Returns a new int64 array; the input is not modified.
    """
    raw = np.asarray(labels).astype(np.int64)  # copy
    out = raw - 1
    out[(raw == 0) | (raw == 255)] = ignore_index
    return out
