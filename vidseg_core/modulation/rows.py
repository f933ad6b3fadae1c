"""Compacted rows: SD 2.1 denoises only the present (label, frame) pairs of the modulated runs (an exact saving;
docs/design/authors_code.md#the-equivalent-design-the-pack-implements).

The SD UNet and VAE treat frames independently.  A frame where label ``l``'s
coarse mask is empty gets no offset (Eq 6 adds ``±λ·M_l = 0``), the
reference's q/k (injection) and the reference latent wherever its blending
mask is 0 (Eq 7): its whole trajectory IS the reference's, its difference is
exactly 0 and it is never decoded (:meth:`~.folding.PairFolder.zero_when_absent`).
So instead of whole runs ``x [R,T,4,h,w]`` a chunk denoises a set of *rows*
``x [1,N,4,h,w]`` (one run of ``N`` independent frames), each row a pair
(run r, frame f) whose label is present in f; every input that the run
layout takes from "the reference run" is gathered by the row's frame:

* the offset ``±λ·M_l[f]`` and the blending mask ``M_l[f]`` per row;
* q/k injection and blending from a *source* per row: the stored reference
  (:class:`~.reference.ReferenceStore`, frame f of its q/k and latents) or,
  in the "repeat" mode, one reference row per distinct frame of the chunk
  (placed first; offset 0, blending mask 1, its own q/k);
* the shared prefix of step t_m (:mod:`.unet_split`), computed once per batch
  frame (by the store build's reference run when the store is built in the batch, else by the first chunk
  that needs it) and gathered per row; attention sharing (:mod:`.shared_attention`) per
  source (probabilities) or with the q/k gathered per row (fused).

Finished rows are scattered back into per-run latents ``[T,4,h,w]`` (absent
frames stay zero and are not decoded), so the decode / difference / argmax
code is unchanged.  SVD's temporal layers mix frames: it keeps whole runs.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import torch

from .hooks import ModulationHook
from .masks import resize_nearest

Row = Tuple[int, int]  # (modulated run, frame)


def present_rows(present: Sequence[Sequence[bool]], runs: Sequence[int]) -> List[Row]:
    """Rows ``(r, f)`` of the runs ``runs`` (run ``r`` modulates label ``r // 2``) whose label is present in f."""
    return [(r, f) for r in runs for f, p in enumerate(present[r // 2]) if p]


def take_rows(pending: Sequence[Row], capacity: int, with_reference: bool) -> List[Row]:
    """The next rows of ``pending`` for a chunk of at most ``capacity`` rows (reference rows included:
    one per distinct frame in the "repeat" mode); at least one row."""
    frames, n = set(), 0
    for _, f in pending:
        refs = len(frames | {f}) if with_reference else 0
        if n and n + 1 + refs > capacity:
            break
        frames.add(f)
        n += 1
    return list(pending[:max(1, n)])


class RowChunk:
    """Index tables of one chunk of rows (built on the host from Python lists: no device synchronisation).

    Row order: the reference rows (one per distinct frame, "repeat" mode only), then the modulated rows.
    ``sources``: the q/k / latent source of each distinct frame: its reference row in the chunk, or its frame
    in the store; ``row_source[i]``: the source of row ``i``; ``first``: one row per source (for the prefix).
    """

    def __init__(self, rows: Sequence[Row], with_reference: bool, device: torch.device):
        self.rows = list(rows)
        frames = sorted({f for _, f in self.rows})
        pos = {f: i for i, f in enumerate(frames)}
        self.in_chunk = bool(with_reference)
        self.n_ref = len(frames) if with_reference else 0
        self.frames = (frames if with_reference else []) + [f for _, f in self.rows]
        self.n = len(self.frames)
        row_source = ([pos[f] for f in frames] if with_reference else []) + [pos[f] for _, f in self.rows]
        first: Dict[int, int] = {}
        for i, source in enumerate(row_source):
            first.setdefault(source, i)
        self.n_sources = len(frames)
        self.groups_host = [[i for i, source in enumerate(row_source) if source == src] for src in range(len(frames))]

        def t(v):
            return torch.tensor(v, dtype=torch.long, device=device)
        self.frame = t(self.frames)
        self.first = t([first[source] for source in range(len(frames))])
        self.sources = self.first if with_reference else t(frames)
        self.row_source = t(row_source)
        self.groups = [t(g) for g in self.groups_host]
        n, n_sources = self.n, len(frames)
        self.prefix_first = t([h * n + first[src] for h in range(2) for src in range(n_sources)])  # [2S] in [2N] rows
        self.prefix_expand = t([h * n_sources + src for h in range(2) for src in row_source])  # [2N] in [2S] rows

    # ------------------------------------------------------------ per-row inputs
    def offsets(self, masks: torch.Tensor, lam: float, run_spec) -> torch.Tensor:
        """``[1,N,h,w]``: ``±λ·M_l[f]`` per modulated row, 0 for reference rows."""
        labels = [0] * self.n_ref + [run_spec(r)[0] for r, _ in self.rows]
        signs = [0.0] * self.n_ref + [run_spec(r)[1] * lam for r, _ in self.rows]
        dev = masks.device
        m = masks[torch.tensor(labels, device=dev), self.frame.to(dev)]
        return (m * torch.tensor(signs, dtype=m.dtype, device=dev).view(-1, 1, 1)).unsqueeze(0)

    def latent_masks(self, masks: torch.Tensor, run_spec, latent_hw, dtype) -> torch.Tensor:
        """``[1,N,1,lh,lw]`` blending masks: ``M_l[f]`` per modulated row, 1 for reference rows."""
        dev = masks.device
        labels = [0] * self.n_ref + [run_spec(r)[0] for r, _ in self.rows]
        m = masks[torch.tensor(labels, device=dev), self.frame.to(dev)]
        if self.n_ref:
            m = torch.cat([torch.ones_like(m[:self.n_ref]), m[self.n_ref:]])
        return resize_nearest(m.unsqueeze(0), latent_hw).unsqueeze(2).to(dtype)

    def reference_latents(self, x: torch.Tensor, store, step: int) -> torch.Tensor:
        """``[N,4,h,w]``: each row's reference latent after ``step`` (its reference row, or the store's frame)."""
        if self.in_chunk:
            return x[0].index_select(0, self.sources).index_select(0, self.row_source)
        ref = store.latents[step].to(x.device, x.dtype, non_blocking=True)
        return ref.index_select(0, self.frame.to(x.device))

    def source_rows(self, t: torch.Tensor, halves: int) -> torch.Tensor:
        """``[halves·N, ...]`` rows of this chunk -> ``[halves, S, ...]``: one row per source (its reference row
        in the "repeat" mode)."""
        return t.view(halves, self.n, *t.shape[1:]).index_select(1, self.first)

    def store_rows(self, t: torch.Tensor, halves: int) -> torch.Tensor:
        """A stored ``[halves·T, ...]`` reference tensor -> ``[halves, S, ...]`` of the chunk's frames."""
        return t.view(halves, -1, *t.shape[1:]).index_select(1, self.sources.to(t.device))

    def per_row(self, t: torch.Tensor) -> torch.Tensor:
        """``[halves, S, ...]`` per source -> ``[halves·N, ...]`` per row."""
        out = t.index_select(1, self.row_source.to(t.device))
        return out.reshape(-1, *t.shape[2:])


class RowModulationHook(ModulationHook):
    """:class:`~.hooks.ModulationHook` for a chunk of rows (layout: one run of ``N`` frames)."""

    def __init__(self, chunk: RowChunk, offsets: torch.Tensor, t_m: int, modulated, injected, store=None):
        super().__init__(offsets, t_m, modulated, injected, reference_run=0 if chunk.in_chunk else None,
                         store=None if chunk.in_chunk else store)
        self.rows = chunk

    def source_qk(self, layer, step: int, halves: int, q: Optional[torch.Tensor] = None,
                  k: Optional[torch.Tensor] = None, device=None, dtype=None):
        """The reference q/k of every source ``[halves, S, tokens, C]``: from the chunk's own reference rows
        (``q``/``k`` of the whole chunk) or from the store."""
        if self.rows.in_chunk:
            return self.rows.source_rows(q, halves), self.rows.source_rows(k, halves)
        q_ref, k_ref = self.reference_qk(layer, step, device, dtype)
        return self.rows.store_rows(q_ref, halves), self.rows.store_rows(k_ref, halves)

    def on_qk(self, layer, q, k, ctx):
        if layer not in self.injected:
            return q, k
        q_src, k_src = self.source_qk(layer, ctx.step, ctx.layout.halves, q, k, q.device, q.dtype)
        return self.rows.per_row(q_src).view(q.shape), self.rows.per_row(k_src).view(k.shape)


def run_rows(job, x_tm: torch.Tensor, rows: Sequence[Row], with_reference: bool, driver) -> torch.Tensor:
    """Denoise one chunk of rows from t_m to the end; returns their final latents ``[N,4,h,w]`` in the order
    of ``rows`` (:class:`RowAssembler` puts them back into runs).  ``job``: the
    :class:`~.runner._BatchModulation` (read only; each step is reported to ``job.advance``); ``driver``: the
    prefix driver or None."""
    from ..cpu_memory import feed_forward_by_rows

    plan, dev = job.plan, x_tm.device
    chunk = RowChunk(rows, with_reference, dev)
    hook = RowModulationHook(chunk, chunk.offsets(job.masks, float(job.settings.lam), job.run_spec), plan.t_m,
                             plan.modulated, plan.injected, store=None if with_reference else job.store)
    lm = chunk.latent_masks(job.masks, job.run_spec, job.latent_hw, x_tm.dtype)
    n_mod = len(chunk.rows)

    def callback(step: int, x: torch.Tensor) -> torch.Tensor:
        job.advance(n_mod)
        if plan.blends(step):
            x = x * lm + chunk.reference_latents(x, job.store, step).unsqueeze(0) * (1 - lm)
        return x

    x = x_tm.index_select(0, chunk.frame.to(dev)).unsqueeze(0)
    sources = sorted({f for _, f in chunk.rows})  # the batch frame of each source, in source order
    # the feed-forward row chunk must divide every batch the UNet sees: the chunk's rows, its sources' rows
    # and the prefix rows of the frames no earlier chunk computed
    new = driver.missing_frames(sources) if driver is not None else chunk.n_sources
    ff_rows = _common_divisor_at_most(2 * chunk.n, 2 * chunk.n_sources, 2 * (new or chunk.n_sources), 2 * job.T)
    if driver is not None:
        driver.rows, driver.cache = (chunk.prefix_first, chunk.prefix_expand, sources), None
    try:
        on_cpu = job.backbone.device.type == "cpu"
        with job.backbone.hooks(hook), feed_forward_by_rows(job.backbone.unet, ff_rows, enabled=on_cpu):
            return job.backbone.denoise(x, job.inputs.cond, plan.t_m, None, callback)[0, chunk.n_ref:]
    finally:
        if driver is not None:
            driver.rows, driver.cache = None, None


class RowAssembler:
    """Finished rows scattered back into per-run latents ``[T,4,h,w]`` (absent frames zero); a run is
    handed out once its last row is in."""

    def __init__(self, pending: Sequence[Row]):
        self.rows_left: Dict[int, int] = {}
        for r, _ in pending:
            self.rows_left[r] = self.rows_left.get(r, 0) + 1
        self.partial: Dict[int, torch.Tensor] = {}  # runs with rows still pending

    def add(self, rows: Sequence[Row], out: torch.Tensor, like: torch.Tensor) -> Dict[int, torch.Tensor]:
        """Take the final latents ``out`` of ``rows`` (``like``: a ``[T,4,h,w]`` tensor of the runs' shape);
        returns the runs finished now."""
        dev = like.device
        by_run: Dict[int, List[int]] = {}
        for i, (r, _) in enumerate(rows):
            by_run.setdefault(r, []).append(i)
        finished = {}
        for r, idx in by_run.items():
            buf = self.partial.get(r)
            if buf is None:
                buf = self.partial[r] = torch.zeros_like(like)
            frames = [rows[i][1] for i in idx]
            buf.index_copy_(0, torch.tensor(frames, device=dev), out.index_select(0, torch.tensor(idx, device=dev)))
            self.rows_left[r] -= len(idx)
            if self.rows_left[r] == 0:
                finished[r] = self.partial.pop(r)
        return finished


def _common_divisor_at_most(*values: int) -> int:
    """The largest common divisor of ``values[:-1]`` not above ``values[-1]`` (feed-forward row chunks must
    divide every batch: the chunk's rows and its prefix rows)."""
    import math
    *sizes, bound = values
    g = math.gcd(*sizes)
    return max(d for d in range(1, min(g, bound) + 1) if g % d == 0)
