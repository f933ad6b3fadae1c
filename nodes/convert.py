"""Conversions between ComfyUI tensors and the core's types.

IMAGE is ``[T,H,W,3]`` float in 0..1, MASK is ``[T,H,W]`` float in 0..1 (1 =
selected).  Label maps are integer ``[T,H,W]`` tensors.
"""
from __future__ import annotations

import logging
from typing import List, Optional

import numpy as np
import torch

from ..vidseg_core.errors import InputError
from ..vidseg_core.labels import LabelTable, label_ids_from_rgb
from ..vidseg_core.naming.selection import select_values

log = logging.getLogger("vidseg")


def image_batch(image: torch.Tensor, what: str = "frames") -> torch.Tensor:
    """Validate an IMAGE batch; returns float32 ``[T,H,W,3]`` on the CPU."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise InputError(f"{what} must be an IMAGE batch [T,H,W,3]; got {shape}.",
                         "Connect a video (IMAGE batch), e.g. from Load Video / Get Video Components.")
    if image.shape[0] == 0:
        raise InputError(f"{what} is an empty batch.", "Connect at least one frame.")
    return image[..., :3].detach().float().cpu()


def mask_batch(mask: torch.Tensor, what: str = "mask") -> torch.Tensor:
    """Validate a MASK (``[T,H,W]`` or ``[H,W]``); returns float32 ``[T,H,W]`` on the CPU."""
    if not isinstance(mask, torch.Tensor) or mask.ndim not in (2, 3):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise InputError(f"{what} must be a MASK [T,H,W]; got {shape}.", "Connect a MASK output.")
    mask = mask[None] if mask.ndim == 2 else mask
    if mask.shape[0] == 0:
        raise InputError(f"{what} is an empty batch.", "Connect a mask with at least one frame.")
    return mask.detach().float().cpu()


def labels_to_masks(labels: torch.Tensor, ids, device=None) -> torch.Tensor:
    """Union of the chosen label ids as a MASK ``[T,H,W]`` float (1 inside)."""
    ids = list(ids)
    if not labels.is_floating_point():  # compact label maps (uint8): ids they cannot hold select nothing
        info = torch.iinfo(labels.dtype)
        ids = [i for i in ids if info.min <= int(i) <= info.max]
    out = torch.isin(labels, torch.as_tensor(ids, dtype=labels.dtype)).float()
    return out.to(device) if device is not None else out


def _pick_frame(batch: torch.Tensor, frame: int, what: str) -> torch.Tensor:
    if batch.shape[0] == 1:
        return batch[0]
    if not 0 <= frame < batch.shape[0]:
        raise InputError(f"The {what} has {batch.shape[0]} frames; frame {frame} is outside it.",
                         "Give a single-frame reference, or a batch with one entry per video frame.")
    return batch[frame]


def reference_from_mask(mask: torch.Tensor, frame: int) -> np.ndarray:
    """A MASK (one frame, or one per video frame: frame ``frame`` is used) -> label ids ``[H,W]``:
    1 where the mask is >= 0.5, else 0.  An empty or full mask is refused (it names nothing)."""
    m = _pick_frame(mask_batch(mask, "reference mask"), frame, "reference mask")
    ref = (m >= 0.5).to(torch.int64).numpy()
    if not ref.any():
        raise InputError("The reference mask is empty (no pixel >= 0.5), so it names no object.",
                         "Paint the object in the mask editor (right-click the Load Image node > Open in "
                         "MaskEditor), or disconnect the mask to get cluster ids as labels.")
    if ref.all():
        raise InputError("The reference mask covers the whole frame, so it separates nothing.",
                         "Paint only the object to track, or disconnect the mask.")
    return ref


def reference_from_label_image(image: torch.Tensor, frame: int) -> np.ndarray:
    """A label IMAGE (palette colours or grey ids; one frame or one per video frame) -> ids ``[H,W]``."""
    img = _pick_frame(image_batch(image, "reference label image"), frame, "reference label image")
    return label_ids_from_rgb(img)


def ground_truth_ids(mask: Optional[torch.Tensor], image: Optional[torch.Tensor]) -> np.ndarray:
    """Ground truth of every frame ``[T,H,W]`` int64 from a binary MASK batch or a label IMAGE batch."""
    if (mask is None) == (image is None):
        raise InputError("Give the ground truth either as a MASK or as a label IMAGE (exactly one of them).",
                         "Connect ground_truth_mask (binary objects) or ground_truth_labels (palette / grey ids).")
    if mask is not None:
        return (mask_batch(mask, "ground-truth mask") >= 0.5).to(torch.int64).numpy()
    img = image_batch(image, "ground-truth label image")
    return np.stack([label_ids_from_rgb(f) for f in img])


def parse_selection(text: str, table: LabelTable) -> List[int]:
    """Label values named by ``text``: comma / newline separated values or names (case-insensitive; a name
    shared by several labels selects all of them: :func:`~vidseg_core.naming.selection.select_values`).

    Empty text selects nothing.  A value missing from the table selects nothing (with a
    warning: e.g. a reference label that won no cluster); an unknown name is an error.
    """
    chosen = select_values(text, table)
    values = set(table.values)
    for v in chosen:
        if v not in values:  # e.g. a reference label that won no cluster: no pixel has it
            log.warning("[VidSeg] label %d is not in the label table (%s): its mask is empty.", v,
                        describe_table(table))
    return chosen


def parse_names(text: str) -> dict:
    """``"1: swan, 0: background"`` (or one ``value: name`` / ``value=name`` per line) -> {value: name}."""
    names = {}
    for raw in str(text or "").replace("\n", ",").split(","):
        item = raw.strip()
        if not item:
            continue
        sep = ":" if ":" in item else "=" if "=" in item else None
        key, name = (item.split(sep, 1) if sep else (None, None))
        if key is None or not key.strip().isdigit() or not name.strip():
            raise InputError(f"Cannot read the label name {item!r}.", "Write 'value: name' pairs, e.g. '1: swan, 0: water'.")
        names[int(key)] = name.strip()
    return names


def describe_table(table: LabelTable) -> str:
    return ", ".join(f"{e.value} ({e.name})" for e in table) or "(no labels)"


def table_lines(table: LabelTable) -> str:
    """One line per label: ``value: name  rgb(r, g, b)``, with ``  score 0.xxx`` when a vocabulary named it."""
    return "\n".join(f"{e.value}: {e.name}  rgb{tuple(e.color)}" + ("" if e.score is None else f"  score {e.score:.3f}")
                     for e in table)
