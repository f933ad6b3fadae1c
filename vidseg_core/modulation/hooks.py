"""Attention hooks of masked modulation (paper Eqs 6-7; docs/design/authors_code.md#masked-modulation-as-published, #the-equivalent-design-the-pack-implements).

* :class:`ModulationHook` — one hook for a chunk of runs evaluated together:

  - **offset** (Eq 6): at step t_m only, in the modulated layer(s), the
    attention output (after ``to_out``, before the residual add) of run ``r``
    gets ``s_r·λ·M_r`` — the binary coarse mask of the run's label, at the
    layer's token grid, the same value on every channel, in BOTH guidance
    halves (``s_r`` = +1 / −1, 0 for the reference run);
  - **q/k injection**: at every step ≥ t_m, in the injected decoder layers,
    every run's queries and keys are replaced by the reference run's of the
    same evaluation (in memory: rows of the same UNet batch), or — when the
    reference is not part of the chunk — by those recorded in a
    :class:`ReferenceStore` from an earlier reference pass.

* :func:`repeat_rows` — one run's rows repeated for every run of a chunk.

The recording side lives in :mod:`.reference`: its :class:`ReferenceRecorder`
fills a :class:`ReferenceStore` with the reference pass's q/k (injected layers,
steps ≥ t_m) and latents (blending window); both names are re-exported here.

Row layouts (:class:`~vidseg_core.backbones.attention.RowLayout`): spatial
layers see ``[runs·2·T, tokens, C]``, temporal layers ``[runs·2·tokens, T, C]``;
the run is always the leading factor.
"""
from __future__ import annotations

from typing import Dict, FrozenSet, Optional

import torch

from ..backbones.attention import AttentionHook, HookContext, LayerId
from .masks import resize_nearest
from .reference import ReferenceRecorder, ReferenceStore  # noqa: F401 (re-exported)


def repeat_rows(t: torch.Tensor, runs: int) -> torch.Tensor:
    """``[n, ...]`` -> ``[runs·n, ...]`` (one run's rows repeated for every run)."""
    return t.unsqueeze(0).expand(runs, *t.shape).reshape(runs * t.shape[0], *t.shape[1:])


class ModulationHook(AttentionHook):
    """Offset + q/k injection for one chunk of ``R`` runs (see module docstring).

    ``offsets``: ``[R, T, h, w]`` = ``s_r·λ·M_r`` at the coarse grid (zeros for
    the reference run).  ``reference_run``: index of the reference inside the
    chunk, or ``None`` with a ``store``.
    """

    def __init__(self, offsets: torch.Tensor, t_m: int, modulated: FrozenSet[LayerId],
                 injected: FrozenSet[LayerId], reference_run: Optional[int] = 0,
                 store: Optional[ReferenceStore] = None):
        if reference_run is None and store is None and injected:
            raise ValueError("q/k injection needs the reference run in the chunk or a reference store")
        self.offsets = offsets
        self.t_m = int(t_m)
        self.modulated, self.injected = frozenset(modulated), frozenset(injected)
        self.reference_run, self.store = reference_run, store
        self._grid_cache: Dict[tuple, torch.Tensor] = {}
        self.applied = set()  # (step, layer) where the offset was added (for tests / sanity)

    def wants(self, layer: LayerId, ctx: HookContext) -> bool:
        if ctx.step < self.t_m:
            return False
        return layer in self.injected or (ctx.step == self.t_m and layer in self.modulated)

    # ------------------------------------------------------------ q / k
    def on_qk(self, layer, q, k, ctx):
        if layer not in self.injected:
            return q, k
        runs = ctx.layout.runs
        if self.reference_run is not None:
            if runs == 1:
                return q, k
            r = self.reference_run
            q = repeat_rows(q.view(runs, -1, *q.shape[1:])[r], runs)
            k = repeat_rows(k.view(runs, -1, *k.shape[1:])[r], runs)
            return q, k
        q_ref, k_ref = self.reference_qk(layer, ctx.step, q.device, q.dtype)
        return repeat_rows(q_ref, runs).view(q.shape), repeat_rows(k_ref, runs).view(k.shape)

    def reference_qk(self, layer, step, device, dtype):
        """The stored reference q/k of ``layer`` at ``step`` on ``device`` (non-blocking from pinned host memory)."""
        q_ref, k_ref = self.store.qk[(step, layer)]
        return (q_ref.to(device, dtype, non_blocking=True), k_ref.to(device, dtype, non_blocking=True))

    # ------------------------------------------------------------ offset
    def _offsets_at(self, grid: tuple) -> torch.Tensor:
        key = tuple(int(g) for g in grid)
        if key not in self._grid_cache:
            self._grid_cache[key] = resize_nearest(self.offsets, key)
        return self._grid_cache[key]

    def on_output(self, layer, out, ctx):
        if ctx.step != self.t_m or layer not in self.modulated:
            return out
        lay = ctx.layout
        off = self._offsets_at(ctx.grid)  # [R, T, gh, gw]
        if off.shape[0] != lay.runs or off.shape[1] != lay.frames:
            raise RuntimeError(f"offsets for {off.shape[0]} runs x {off.shape[1]} frames, layout {lay}")
        tokens = off.shape[-2] * off.shape[-1]
        off = off.reshape(lay.runs, 1, lay.frames, tokens).to(out.device, out.dtype)
        c = out.shape[-1]
        if layer.temporal:  # [R·2·tokens, T, C]
            res = out.view(lay.runs, lay.halves, tokens, lay.frames, c) + off.transpose(2, 3).unsqueeze(-1)
        else:  # [R·2·T, tokens, C]
            res = out.view(lay.runs, lay.halves, lay.frames, tokens, c) + off.unsqueeze(-1)
        self.applied.add((ctx.step, layer))
        return res.reshape(out.shape)
