"""Checks of :func:`~.runner.modulate_batch`'s inputs: the coarse map, the label ids and the frame size."""
from __future__ import annotations

import torch

from ..errors import InputError


def check_inputs(backbone, inputs, coarse, label_ids, frame_size):
    """``(coarse as long, sorted label ids [L] on the CPU, (H, W))`` or an :class:`InputError` naming the fix."""
    x = inputs.x_start
    if not torch.is_tensor(coarse) or coarse.ndim != 3:
        raise InputError(f"The coarse label map must be a tensor [T,h,w]; got {getattr(coarse, 'shape', type(coarse))}.",
                         "Pass one coarse map per frame of the batch at the feature grid.")
    if coarse.dtype.is_floating_point or coarse.dtype == torch.bool:
        raise InputError(f"The coarse label map must hold integer label ids; got {coarse.dtype}.",
                         "Convert it with .long().")
    T, lh, lw = x.shape[0], x.shape[-2], x.shape[-1]
    if coarse.shape[0] != T:
        raise InputError(f"The coarse map has {coarse.shape[0]} frames but the batch has {T}.",
                         "Give one coarse map per frame of the batch.")
    if tuple(coarse.shape[1:]) != (lh // 2, lw // 2):
        raise InputError(f"The coarse map grid is {tuple(coarse.shape[1:])}, expected the feature grid "
                         f"{(lh // 2, lw // 2)} (1/16 of the working frame size).",
                         "Pass the coarse segmentation at the feature resolution.")
    coarse = coarse.to(torch.long)
    present = torch.unique(coarse.cpu())
    if label_ids is None:
        ids = present
    else:
        ids = torch.as_tensor(label_ids).reshape(-1).cpu()
        if ids.dtype.is_floating_point:
            raise InputError("label_ids must be integers.", "Pass the label ids as ints.")
        ids = ids.long()
        if ids.numel() == 0:
            raise InputError("label_ids is empty.", "Pass at least one label (or None for all coarse labels).")
        if torch.unique(ids).numel() != ids.numel():
            raise InputError(f"label_ids has duplicates: {ids.tolist()}.", "Give each label once.")
        ids = torch.sort(ids).values
        missing = sorted(set(present.tolist()) - set(ids.tolist()))
        if missing:
            raise InputError(f"The coarse map contains labels {missing} that are not in label_ids.",
                             "Include every coarse label in label_ids (or pass None).")
    if frame_size is None:
        frame_size = tuple(int(v) for v in inputs.prepared.shape[-2:])
    try:
        H, W = (int(v) for v in frame_size)
    except (TypeError, ValueError):
        raise InputError(f"frame_size must be (height, width); got {frame_size!r}.", "Pass the original frame size.")
    if H < 1 or W < 1:
        raise InputError(f"frame_size {frame_size} must be positive.", "Pass the original frame size (H, W).")
    return coarse, ids, (H, W)
