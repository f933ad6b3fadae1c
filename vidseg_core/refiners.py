"""The pluggable refinement step of the scene-context batch loop (paper §4.1-4.2).

After the KNN context model labels a batch, a :class:`Refiner` cleans the
labels using the correspondence features; the refined labels are both the
batch's output and the next batch's KNN training labels (docs/design/authors_code.md#label-assignment-and-the-scene-context-model).

Contract (tested for every implementation in ``tests/test_refiner_contract.py``):
``refine(labels [T, h, w] int64, corr_features [T, h, w, C]) -> labels [T, h, w] int64``
returns a *new* tensor with the same shape, values only from the input label
set, deterministic, works for ``T = 1`` and tiny grids, leaves single-label
input unchanged and never modifies its inputs.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Dict, Optional

import torch

from . import cbr
from .errors import InputError


class Refiner(ABC):
    """A refinement step: ``refine(labels, corr_features) -> labels``."""

    name: str = "refiner"

    @abstractmethod
    def refine(self, labels: torch.Tensor, corr_features: torch.Tensor) -> torch.Tensor:
        ...

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoRefiner(Refiner):
    """Identity: the KNN labels are kept as they are (the "KNN only" ablation)."""

    name = "none"

    def refine(self, labels, corr_features):
        if not isinstance(labels, torch.Tensor) or labels.ndim != 3:
            raise InputError(f"Labels must be a [T, h, w] tensor; got {getattr(labels, 'shape', type(labels))}.",
                             "Pass the KNN label maps of one batch.")
        return labels.to(torch.long).clone()


class CBRRefiner(Refiner):
    """Correspondence-based refinement.

    ``compat=False`` (default): paper Eqs 3-5 with a local search of squared
    radius ``radius_sq`` cells (2 = 3x3, the authors' 1-cell threshold).
    ``compat=True``: the authors' published variant, bugs included (docs/design/authors_code.md#correspondence-based-refinement-cbr-as-published);
    ``signed=False`` there fixes only the signed jump test (bug #3); ``start`` is the arithmetic of their
    start cells (:func:`~vidseg_core.cbr.compat_start_index`: "device", the default, as their code on the
    device the tracking runs on; "cuda", as their GPU runs; "cpu"; "exact" = every cell starts a track).
    """

    def __init__(self, compat: bool = False, radius_sq: Optional[float] = 2, jump_threshold: int = 1,
                 signed: bool = True, dtype: torch.dtype = torch.float32, start: str = "device"):
        if start not in cbr.START_ARITHMETIC:
            raise InputError(f"Unknown start-cell arithmetic {start!r}.",
                             f"Use one of {', '.join(cbr.START_ARITHMETIC)}.")
        self.compat = bool(compat)
        self.radius_sq = radius_sq
        self.jump_threshold = int(jump_threshold)
        self.signed = bool(signed)
        self.dtype = dtype
        self.start = start
        self.name = "cbr_compat" if self.compat else "cbr"

    def refine(self, labels, corr_features):
        if self.compat:
            return cbr.cbr_refine_compat(labels, corr_features, self.jump_threshold, self.signed, self.dtype,
                                         self.start)
        return cbr.cbr_refine(labels, corr_features, self.radius_sq, "auto", self.dtype)

    def __repr__(self) -> str:
        if self.compat:
            return (f"CBRRefiner(compat=True, jump_threshold={self.jump_threshold}, signed={self.signed}, "
                    f"start={self.start!r})")
        return f"CBRRefiner(radius_sq={self.radius_sq})"


#: name -> factory, for the CLI and the ComfyUI nodes.
REFINERS: Dict[str, type] = {"cbr": CBRRefiner, "cbr_compat": CBRRefiner, "none": NoRefiner}


def get_refiner(name_or_refiner="cbr") -> Refiner:
    """``"cbr"`` (paper), ``"cbr_compat"`` (authors' code), ``"none"``, or a :class:`Refiner` instance."""
    if isinstance(name_or_refiner, Refiner):
        return name_or_refiner
    if name_or_refiner is None:
        return CBRRefiner()
    if name_or_refiner == "cbr":
        return CBRRefiner()
    if name_or_refiner == "cbr_compat":
        return CBRRefiner(compat=True)
    if name_or_refiner == "none":
        return NoRefiner()
    if hasattr(name_or_refiner, "refine"):
        raise InputError(f"{type(name_or_refiner).__name__} is not a vidseg_core.refiners.Refiner.",
                         "Subclass Refiner and implement refine(labels, corr_features).")
    raise InputError(f"Unknown refiner {name_or_refiner!r}.", f"Use one of {', '.join(REFINERS)}.")
