"""Attention of the injected layers with the reference's q/k computed once for all runs (an exact rewrite;
docs/design/authors_code.md#the-equivalent-design-the-pack-implements).

With q/k injection every run of a chunk uses the reference run's queries and
keys in the injected decoder layers.  :class:`SharedAttentionProcessor`
projects q and k for the reference rows only (or takes them from the
reference store) instead of projecting them for every run and overwriting
them with copies, then, by ``mode``:

* ``"fused"`` — one fused ``scaled_dot_product_attention`` call per run on the
  shared q/k and that run's values (no probability matrix is materialised:
  the GPU path);
* ``"probabilities"`` — ``P = softmax(q kᵀ/√d)`` computed once (in float32,
  query chunks bound the memory) and multiplied with the values of all runs
  stacked along the channel axis (``P·[V₀ … V_R]``): fewer FLOPs, pays off on
  the CPU from :data:`CPU_MIN_RUNS` runs;
* both: cross-attention whose context is the same for every run (SD's text
  context; the backbones tile one conditioning over the runs, announced by
  ``controller.runs_share_context``) is computed once and repeated.

* compacted rows (:mod:`.rows`: one run of rows from different frames): the
  reference q/k of each distinct frame (a *source*) once; ``"fused"``: one SDPA
  call with the q/k gathered per row; ``"probabilities"``: one matrix per
  source applied to the values of all its rows (``"auto"`` counts the rows per
  source as runs).

The offset hook still runs on the output.  Anything else (other hooks, masks,
q/k norms, a single run) falls back to the normal hooked processor.  Installed
on the injected layers only for the duration of :func:`sharing_attention`.
No step of it reads a tensor value on the host (no device synchronisation).
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch

from ..backbones.attention import HookedAttnProcessor
from .hooks import ModulationHook, repeat_rows

#: elements of one probability chunk (queries × keys × rows × heads); 32 M floats = 128 MiB in fp32
PROBABILITY_CHUNK = 32 * 2 ** 20
#: fewest runs for which sharing pays off on the CPU: materialising P costs about as much as 3-4 fused SDPA
#: calls, after which every run only costs P·V (measured: 11 runs 1.6x faster per layer, 4 runs slower)
CPU_MIN_RUNS = 8


MODES = ("fused", "probabilities", "auto")


def resolve_mode(setting, device: torch.device) -> Optional[str]:
    """``share_attention`` setting -> processor mode (None = off).

    None: ``"auto"`` on the CPU (probabilities from :data:`CPU_MIN_RUNS` runs, fused below), ``"fused"``
    elsewhere; True: ``"probabilities"``; False: off; or a mode name.
    """
    if setting is None:
        return "auto" if device.type == "cpu" else "fused"
    if setting is True:
        return "probabilities"
    if setting is False:
        return None
    if setting not in MODES:
        raise ValueError(f"unknown attention sharing mode {setting!r}")
    return setting


class SharedAttentionProcessor(HookedAttnProcessor):
    """Hooked processor that computes the reference q/k once for all runs (see module docstring).

    ``mode``: ``"fused"``, ``"probabilities"`` or ``"auto"`` (probabilities for
    evaluations of at least ``min_runs`` runs, fused below).
    """

    def __init__(self, layer, controller, mode: str = "probabilities", min_runs: int = CPU_MIN_RUNS):
        super().__init__(layer, controller)
        if mode not in MODES:
            raise ValueError(f"unknown attention sharing mode {mode!r}")
        self.mode = mode
        self.min_runs = max(2, int(min_runs))

    def _active(self) -> Optional[ModulationHook]:
        hooks = self.controller.hooks
        if len(hooks) != 1 or not isinstance(hooks[0], ModulationHook):
            return None
        hook = hooks[0]
        step = self.controller.step
        if self.layer not in hook.injected or step < hook.t_m or self.controller.layout is None:
            return None
        if self.controller.layout.runs < 2 and getattr(hook, "rows", None) is None:
            return None
        return hook

    def _mode(self, runs: int) -> str:
        if self.mode == "auto":
            return "probabilities" if runs >= self.min_runs else "fused"
        return self.mode

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        hook = self._active()
        if (hook is None or attention_mask is not None or hidden_states.ndim != 3
                or getattr(attn, "group_norm", None) is not None or getattr(attn, "norm_q", None) is not None
                or getattr(attn, "norm_k", None) is not None or getattr(attn, "residual_connection", False)
                or getattr(attn, "rescale_output_factor", 1.0) != 1.0
                or (encoder_hidden_states is not None and getattr(attn, "norm_cross", None))):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        ctrl = self.controller
        lay = ctrl.layout
        if getattr(hook, "rows", None) is not None:
            out = self._rows(attn, hook, hidden_states, encoder_hidden_states)
            ctx = ctrl.context(self.layer)
            return hook.on_output(self.layer, out, ctx) if ctx.step == hook.t_m and self.layer in hook.modulated \
                else out
        R = lay.runs
        rows, n_q, c = hidden_states.shape
        n = rows // R
        ctx = ctrl.context(self.layer)
        hs = hidden_states.view(R, n, n_q, c)
        cross = encoder_hidden_states is not None
        context = encoder_hidden_states if cross else hidden_states
        cv = context.view(R, n, *context.shape[1:])
        r = hook.reference_run
        if r is not None:
            q = attn.to_q(hs[r])
            k = attn.to_k(cv[r])
        else:
            q, k = hook.reference_qk(self.layer, ctx.step, hidden_states.device, hidden_states.dtype)

        heads = attn.heads
        d = q.shape[-1] // heads
        qh = q.view(n, n_q, heads, d).transpose(1, 2)  # [n,h,Sq,d]
        kh = k.view(n, -1, heads, d).transpose(1, 2)  # [n,h,Sk,d]
        if cross and ctrl.runs_share_context:
            # every run sees the same q, k and v: the layer's output is the same for all runs
            v = attn.to_v(cv[0]).view(n, -1, heads, d).transpose(1, 2)
            out = torch.nn.functional.scaled_dot_product_attention(qh, kh, v)
            out = out.transpose(1, 2).reshape(n, n_q, heads * d).to(q.dtype)
            out = attn.to_out[1](attn.to_out[0](out))
            out = repeat_rows(out, R)
        elif self._mode(R) == "fused":
            v = attn.to_v(context)  # [R·n, Sk, C]
            vh = v.view(R, n, -1, heads, d).transpose(2, 3)  # [R,n,h,Sk,d] (a view)
            out = torch.empty((R, n, n_q, heads, d), dtype=v.dtype, device=v.device)
            for run in range(R):
                o = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh[run])  # [n,h,Sq,d]
                out[run].copy_(o.transpose(1, 2))
                del o
            out = out.view(R * n, n_q, heads * d).to(q.dtype)
            out = attn.to_out[1](attn.to_out[0](out))
        else:
            v = attn.to_v(context)  # [R·n, Sk, C]
            s_k = v.shape[1]
            vh = v.view(R, n, s_k, heads, d).permute(1, 3, 2, 0, 4).reshape(n, heads, s_k, R * d)
            out = _probabilities_times_values(qh, kh, vh)  # [n,h,Sq,R·d]
            out = out.view(n, heads, n_q, R, d).permute(3, 0, 2, 1, 4).reshape(R * n, n_q, heads * d).to(q.dtype)
            out = attn.to_out[1](attn.to_out[0](out))
        if ctx.step == hook.t_m and self.layer in hook.modulated:
            out = hook.on_output(self.layer, out, ctx)
        return out


    def _rows(self, attn, hook, hidden_states, encoder_hidden_states):
        """Compacted rows (:mod:`.rows`): the reference q/k once per source (distinct frame), then per row."""
        ctrl, rows = self.controller, hook.rows
        halves = ctrl.layout.halves
        step = ctrl.step
        n_rows, n_q, c = hidden_states.shape
        cross = encoder_hidden_states is not None
        context = encoder_hidden_states if cross else hidden_states
        if rows.in_chunk:
            q = attn.to_q(rows.source_rows(hidden_states, halves).flatten(0, 1))
            k = attn.to_k(rows.source_rows(context, halves).flatten(0, 1))
            q, k = q.view(halves, rows.n_sources, *q.shape[1:]), k.view(halves, rows.n_sources, *k.shape[1:])
        else:
            q, k = hook.source_qk(self.layer, step, halves, device=hidden_states.device, dtype=hidden_states.dtype)
        heads = attn.heads
        d = q.shape[-1] // heads

        def split(t):  # [m, S, C] -> [m, h, S, d]
            return t.view(t.shape[0], t.shape[1], heads, d).transpose(1, 2)
        sdpa = torch.nn.functional.scaled_dot_product_attention
        if cross and ctrl.runs_share_context:
            # the same q, k and v for every row of a source: computed once per source, then per row
            v = attn.to_v(rows.source_rows(context, halves).flatten(0, 1))
            o = sdpa(split(q.flatten(0, 1)), split(k.flatten(0, 1)), split(v))
            out = attn.to_out[1](attn.to_out[0](o.transpose(1, 2).reshape(o.shape[0], n_q, heads * d).to(q.dtype)))
            return rows.per_row(out.view(halves, rows.n_sources, n_q, -1))
        v = attn.to_v(context)  # [halves·N, Sk, C]
        # "auto": each probability matrix serves the rows of one source (as many as runs share a frame)
        if self._mode(rows.n // rows.n_sources) == "fused" or rows.n_sources == rows.n:
            o = sdpa(split(rows.per_row(q)), split(rows.per_row(k)), split(v))  # [halves·N, h, Sq, d]
            o = o.transpose(1, 2).reshape(n_rows, n_q, heads * d)
        else:
            s_k = v.shape[1]
            vv = v.view(halves, rows.n, s_k, heads, d)
            o = torch.empty((halves, rows.n, n_q, heads, d), dtype=v.dtype, device=v.device)
            for src, (idx, host) in enumerate(zip(rows.groups, rows.groups_host)):
                m = len(host)  # P of this source applied to the values of all its rows at once
                vs = vv.index_select(1, idx).permute(0, 3, 2, 1, 4).reshape(halves, heads, s_k, m * d)
                p = _probabilities_times_values(split(q[:, src]), split(k[:, src]), vs)  # [halves,h,Sq,m·d]
                o.index_copy_(1, idx, p.view(halves, heads, n_q, m, d).permute(0, 3, 2, 1, 4))
            o = o.view(n_rows, n_q, heads * d)
        return attn.to_out[1](attn.to_out[0](o.to(q.dtype)))


def _probabilities_times_values(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``softmax(q kᵀ/√d) · v`` with ``v`` wider than ``q`` (``[n,h,Sq,d]``, ``[n,h,Sk,d]``, ``[n,h,Sk,E]``)."""
    n, h, s_q, d = q.shape
    s_k = k.shape[2]
    scale = d ** -0.5
    kt = (k * scale).transpose(-1, -2)
    step = max(1, min(s_q, PROBABILITY_CHUNK // max(1, n * h * s_k)))
    out = torch.empty((n, h, s_q, v.shape[-1]), dtype=v.dtype, device=v.device)
    for a in range(0, s_q, step):
        p = torch.softmax(torch.matmul(q[:, :, a:a + step].float(), kt.float()), dim=-1).to(v.dtype)
        out[:, :, a:a + step] = torch.matmul(p, v)
    return out


@contextlib.contextmanager
def sharing_attention(backbone, layers, mode: Optional[str] = "probabilities",
                      min_runs: int = CPU_MIN_RUNS) -> Iterator[None]:
    """Temporarily give the injected ``layers`` a :class:`SharedAttentionProcessor` (``mode`` None: no change)."""
    if not mode or not layers or not getattr(backbone, "swappable_processors", True):
        yield  # (backbones hooked through someone else's patch points, e.g. ComfyUI's, cannot swap processors)
        return
    backbone.install_processors()
    modules = backbone.attention_layers()
    saved = {}
    try:
        for layer in layers:
            mod = modules[layer]
            saved[layer] = mod.processor
            mod.set_processor(SharedAttentionProcessor(layer, backbone.controller, mode, min_runs))
        yield
    finally:
        for layer, proc in saved.items():
            modules[layer].set_processor(proc)
