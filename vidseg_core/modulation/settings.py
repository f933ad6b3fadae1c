"""User settings of masked modulation, resolved against a backbone's config (docs/design/authors_code.md#effective-settings, #masked-modulation-as-published, #difference-maps-to-labels-as-published).

``None`` means "the authors' effective value for this backbone" (SD 2.1:
block 7 spatial cross-attention, t_m = 22, blending after steps 22-23; SVD:
block 8 spatial + temporal self-attention, t_m = 17, blending 17-24; both λ = 50,
s = 0.7, Gaussian blur 5×5 σ = 3).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import FrozenSet, Optional, Tuple

from ..backbones.attention import LAYER_KINDS, LayerId
from ..errors import InputError
from .difference import COMPAT_MODES

REFERENCE_MODES = ("auto", "repeat", "store")
ABSENT_MODES = ("keep", "skip")


@dataclass(frozen=True)
class ModulationSettings:
    """Options of :func:`~vidseg_core.modulation.modulate_batch`."""

    #: λ of Eq 6 (the authors' effective value is 50; 10 without blending)
    lam: float = 50.0
    #: t_m, the step index where the offset is applied (None: config.modulation_step)
    step: Optional[int] = None
    #: modulated decoder block b_m (3..11) and its layer kinds (None: config)
    block: Optional[int] = None
    layers: Optional[Tuple[str, ...]] = None
    #: q/k injection from the reference pass at steps >= t_m
    inject: bool = True
    injection_blocks: Optional[Tuple[int, ...]] = None
    injection_layers: Optional[Tuple[str, ...]] = None
    #: latent blending (paper Eq 7) after each step of an inclusive window (None: the authors' window,
    #: moved with t_m); blend=False turns it off
    blend: bool = True
    blend_steps: Optional[Tuple[int, int]] = None
    #: difference-map filter factor s (1.0 = no filter)
    filter_s: float = 0.7
    #: Gaussian blur of the difference maps (kernel 0 or 1 = off)
    blur_kernel: int = 5
    blur_sigma: float = 3.0
    #: "none" (float L2, the fix), "wrap" (authors' uint8 wrap-around, bug #1),
    #: "wrap+jpeg" (also their JPEG round trip, bug #2)
    compat: str = "none"
    #: labels absent from a frame's coarse map: "keep" (authors: they still compete there) or "skip"
    absent_labels: str = "keep"
    #: the most runs (reference included) in one batched UNet evaluation; None = from free memory
    max_runs_per_chunk: Optional[int] = None
    #: how chunks get the reference: "repeat" it in every chunk, "store" its q/k and latents once,
    #: "auto" = the rule of vidseg_core.modulation.memory (a store from the feature pass is used; else repeat
    #: when everything fits in one chunk, store when repeating would cost >= 2 reference runs)
    reference_pass: str = "auto"
    #: compute the part of step t_m shared by every run once
    share_prefix: bool = True
    #: the injected layers' reference q/k projected once for all runs (exact rewrites, .shared_attention):
    #: "fused" = one fused SDPA call per run on the shared q/k; "probabilities" (or True) = the attention
    #: probabilities computed once in float32 and applied to every run's values (fewer FLOPs); "auto" =
    #: probabilities for chunks of >= 8 runs, fused below (measured faster on the CPU); False = off (every run
    #: projects q/k, then overwritten by copies of the reference's); None = "auto" on the CPU, "fused" elsewhere
    share_attention: Optional[object] = None
    #: SD: denoise only the (label, frame) pairs whose label is present in the frame's coarse map (the others
    #: are exactly the reference: .rows); False = whole runs for every label (the authors' structure)
    skip_absent_rows: bool = True
    #: also return the normalised difference maps [L,T,H,W] (memory grows with L)
    return_difference_maps: bool = False

    def with_(self, **changes) -> "ModulationSettings":
        return replace(self, **changes)

    def check(self) -> None:
        """The checks that need no backbone (run before a model is loaded)."""
        if not math.isfinite(float(self.lam)):
            raise InputError(f"lambda = {self.lam} is not finite.", "The authors use lambda = 50.")
        if self.compat not in COMPAT_MODES:
            raise InputError(f"Unknown compat mode {self.compat!r}.", f"Use one of {', '.join(COMPAT_MODES)}.")
        if self.reference_pass not in REFERENCE_MODES:
            raise InputError(f"Unknown reference mode {self.reference_pass!r}.", f"Use one of {', '.join(REFERENCE_MODES)}.")
        if self.absent_labels not in ABSENT_MODES:
            raise InputError(f"Unknown absent_labels mode {self.absent_labels!r}.", f"Use one of {', '.join(ABSENT_MODES)}.")
        if not 0.0 <= float(self.filter_s) <= 1.0:
            raise InputError(f"Filter factor s = {self.filter_s} is outside 0..1.", "Use s = 0.7 (authors) or 1.0 (off).")
        if self.blur_kernel and self.blur_kernel > 1 and (self.blur_kernel % 2 == 0 or self.blur_sigma < 0):
            raise InputError(f"Blur kernel {self.blur_kernel} / sigma {self.blur_sigma} is invalid.",
                             "Use an odd kernel size (5) and sigma >= 0 (3), or kernel 0 to turn the blur off.")
        if self.share_attention not in (None, True, False, "fused", "probabilities", "auto"):
            raise InputError(f"Unknown share_attention {self.share_attention!r}.",
                             "Use None (automatic), 'fused', 'probabilities', 'auto' or False.")
        if not isinstance(self.skip_absent_rows, bool):
            raise InputError(f"skip_absent_rows = {self.skip_absent_rows!r} must be True or False.",
                             "Use True (skip the rows of absent labels, exact) or False (whole runs).")
        if self.max_runs_per_chunk is not None and int(self.max_runs_per_chunk) < 1:
            raise InputError(f"max_runs_per_chunk = {self.max_runs_per_chunk} must be at least 1.",
                             "Use None (automatic) or a positive number.")

    def resolve(self, backbone) -> "ModulationPlan":
        """Concrete values for ``backbone`` with readable errors for bad options."""
        self.check()
        cfg = backbone.config
        last = int(len(backbone.sigmas()) - 2)
        start = int(cfg.modulation_step)
        t_m = start if self.step is None else int(self.step)
        if not start <= t_m <= last:
            raise InputError(f"Modulation step {t_m} is outside {start}..{last}: the latents start at step {start} "
                             f"(config.modulation_step) and the schedule ends at {last}.",
                             f"Use a step in {start}..{last}, or change the backbone's modulation_step.")
        available = set(backbone.attention_layers())
        block = int(getattr(cfg, "modulation_block") if self.block is None else self.block)
        kinds = tuple(getattr(cfg, "modulation_layers") if self.layers is None else self.layers)
        modulated = frozenset(LayerId(block, k) for k in kinds)
        _check_layers(modulated, available, "modulated", backbone)
        if not modulated:
            raise InputError("No modulated layer was chosen.", "Give at least one layer kind, e.g. 'spatial_cross'.")
        injected: FrozenSet[LayerId] = frozenset()
        if self.inject:
            iblocks = tuple(getattr(cfg, "injection_blocks") if self.injection_blocks is None else self.injection_blocks)
            ikinds = tuple(getattr(cfg, "injection_layers") if self.injection_layers is None else self.injection_layers)
            injected = frozenset(LayerId(int(b), k) for b in iblocks for k in ikinds)
            _check_layers(injected, available, "injected", backbone)
        window = None
        if self.blend:
            if self.blend_steps is not None:
                b0, b1 = (int(v) for v in self.blend_steps)
            else:
                c0, c1 = (int(v) for v in cfg.blend_steps)
                shift = t_m - start
                b0, b1 = c0 + shift, (last if c1 >= last else min(c1 + shift, last))
            if b0 > b1:
                raise InputError(f"Blending window {b0}..{b1} is empty.", "Give (first, last) with first <= last.")
            window = (b0, b1)
        return ModulationPlan(self, start, t_m, last, block, modulated, injected, window)


def _check_layers(layers, available, what: str, backbone) -> None:
    bad = sorted(str(l) for l in layers if l.kind not in LAYER_KINDS or l not in available)
    if bad:
        have = sorted({l.kind for l in available})
        raise InputError(f"The {what} layer(s) {', '.join(bad)} do not exist in {backbone.name} "
                         f"(decoder attention blocks 3..11, kinds {', '.join(have)}).",
                         "Choose a block in 3..11 and a layer kind this backbone has.")


@dataclass(frozen=True)
class ModulationPlan:
    """Resolved settings (see :meth:`ModulationSettings.resolve`)."""

    settings: ModulationSettings
    start: int  # step the batch latents were noised to
    t_m: int
    last: int
    block: int
    modulated: FrozenSet[LayerId]
    injected: FrozenSet[LayerId]
    blend_window: Optional[Tuple[int, int]]

    def blends(self, step: int) -> bool:
        w = self.blend_window
        return w is not None and w[0] <= step <= w[1]
