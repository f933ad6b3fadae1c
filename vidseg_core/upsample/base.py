"""One interface for turning coarse label maps into full-resolution label maps.

Two implementations: :class:`~.modulation.MaskedModulationUpsampler` (the
paper's quality mode, §4.3) and :class:`~.guided.GuidedFilterUpsampler` (a fast
edge-aware mode for previews and long videos).  Every implementation returns
exactly one label per pixel, taken from ``label_ids``, at the frames' size, and
never modifies its inputs.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import torch

from ..errors import InputError


@dataclass
class UpsampleContext:
    """What an upsampler may need besides the frames (all optional for the fast mode).

    ``backbone`` and ``inputs`` (the batch's :class:`~vidseg_core.features.BatchInputs`,
    the same noisy latents as the feature pass) are used by masked modulation;
    ``progress(done, total)`` / ``cancel() -> bool`` are forwarded; ``reference_store``
    (a :class:`~vidseg_core.modulation.reference.ReferenceStore` recorded by the
    feature pass) spares masked modulation the reference trajectory.
    """

    backbone: Any = None
    inputs: Any = None
    reference_store: Any = None
    seed: Optional[int] = None
    progress: Optional[Callable[[int, int], None]] = None
    cancel: Optional[Callable[[], bool]] = None


class Upsampler(ABC):
    """``upsample(frames [T,H,W,3] in 0..1, coarse [T,h,w] long, label_ids [L], context) -> labels [T,H,W] long``."""

    name: str = "upsampler"

    @abstractmethod
    def upsample(self, frames: torch.Tensor, coarse: torch.Tensor, label_ids=None,
                 context: Optional[UpsampleContext] = None) -> torch.Tensor:
        """Full-resolution label map; values are label ids from ``label_ids`` (default: the coarse labels)."""


def check_upsample_inputs(frames: torch.Tensor, coarse: torch.Tensor, label_ids=None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Validate shapes / types; returns ``(coarse as long, sorted label ids [L] long on the CPU)``."""
    if not torch.is_tensor(frames) or frames.ndim != 4 or frames.shape[-1] != 3:
        raise InputError(f"Frames must be a tensor [T,H,W,3] in 0..1; got {getattr(frames, 'shape', type(frames))}.",
                         "Pass RGB frames with channels last.")
    if not frames.dtype.is_floating_point:
        raise InputError(f"Frames must be float in 0..1; got {frames.dtype}.", "Divide uint8 frames by 255.")
    if not torch.is_tensor(coarse) or coarse.ndim != 3 or coarse.shape[0] != frames.shape[0]:
        raise InputError(f"The coarse map must be [T,h,w] with T = {frames.shape[0]}; got "
                         f"{getattr(coarse, 'shape', type(coarse))}.", "Give one coarse label map per frame.")
    if coarse.dtype.is_floating_point or coarse.dtype == torch.bool:
        raise InputError(f"The coarse map must hold integer label ids; got {coarse.dtype}.", "Convert it with .long().")
    if coarse.shape[1] > frames.shape[1] or coarse.shape[2] > frames.shape[2]:
        raise InputError(f"The coarse map {tuple(coarse.shape[1:])} is larger than the frames {tuple(frames.shape[1:3])}.",
                         "Pass the coarse map at the feature grid.")
    coarse = coarse.long()
    present = torch.unique(coarse.cpu())
    if label_ids is None:
        return coarse, present
    ids = torch.as_tensor(label_ids).reshape(-1).cpu()
    if ids.numel() == 0 or ids.dtype.is_floating_point:
        raise InputError("label_ids must be a non-empty list of integer ids.", "Pass None to use the coarse labels.")
    ids = torch.unique(ids.long())  # sorted, unique
    missing = sorted(set(present.tolist()) - set(ids.tolist()))
    if missing:
        raise InputError(f"The coarse map contains labels {missing} that are not in label_ids.",
                         "Include every coarse label in label_ids (or pass None).")
    return coarse, ids
