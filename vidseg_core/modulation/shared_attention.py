"""Attention of the injected layers computed once for all runs (an exact rewrite; reference notes §12.2).

With q/k injection every run of a chunk uses the reference run's queries and
keys in the injected decoder layers, so the attention probabilities
``P = softmax(q kᵀ/√d)`` are the same for every run; only the values differ.
:class:`SharedAttentionProcessor` therefore

* projects q and k for the reference rows only (or takes them from the
  reference store),
* computes ``P`` once (query chunks bound the memory) and multiplies it with
  the values of all runs stacked along the channel axis (``P·[V₀ … V_R]``),
* for cross-attention whose context is the same for every run (SD's text
  context), computes the whole layer once and repeats the output.

The offset hook still runs on the output.  Anything else (other hooks, masks,
q/k norms, a single run) falls back to the normal hooked processor.  Installed
on the injected layers only for the duration of :func:`sharing_attention`.
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


class SharedAttentionProcessor(HookedAttnProcessor):
    """Hooked processor that shares the attention probabilities across runs (see module docstring).

    Active for evaluations of at least ``min_runs`` runs; smaller ones use the parent processor.
    """

    def __init__(self, layer, controller, min_runs: int = 2):
        super().__init__(layer, controller)
        self.min_runs = max(2, int(min_runs))

    def _active(self) -> Optional[ModulationHook]:
        hooks = self.controller.hooks
        if len(hooks) != 1 or not isinstance(hooks[0], ModulationHook):
            return None
        hook = hooks[0]
        step = self.controller.step
        if self.layer not in hook.injected or step < hook.t_m or self.controller.layout is None:
            return None
        if self.controller.layout.runs < self.min_runs:
            return None
        return hook

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
            q_ref, k_ref = hook.store.qk[(ctx.step, self.layer)]
            q, k = q_ref.to(hidden_states.device, hidden_states.dtype), k_ref.to(context.device, context.dtype)

        heads = attn.heads
        d = q.shape[-1] // heads
        qh = q.view(n, n_q, heads, d).transpose(1, 2)  # [n,h,Sq,d]
        kh = k.view(n, -1, heads, d).transpose(1, 2)  # [n,h,Sk,d]
        same_context = cross and (context.device.type == "meta" or bool((cv[1:] == cv[:1]).all()))
        if same_context:
            # every run sees the same q, k and v: the layer's output is the same for all runs
            v = attn.to_v(cv[0]).view(n, -1, heads, d).transpose(1, 2)
            out = torch.nn.functional.scaled_dot_product_attention(qh, kh, v)
            out = out.transpose(1, 2).reshape(n, n_q, heads * d).to(q.dtype)
            out = attn.to_out[1](attn.to_out[0](out))
            out = repeat_rows(out, R)
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
def sharing_attention(backbone, layers, enabled: bool = True, min_runs: int = 2) -> Iterator[None]:
    """Temporarily give the injected ``layers`` a :class:`SharedAttentionProcessor`."""
    if not enabled or not layers or not getattr(backbone, "swappable_processors", True):
        yield  # (backbones hooked through someone else's patch points, e.g. ComfyUI's, cannot swap processors)
        return
    backbone.install_processors()
    modules = backbone.attention_layers()
    saved = {}
    try:
        for layer in layers:
            mod = modules[layer]
            saved[layer] = mod.processor
            mod.set_processor(SharedAttentionProcessor(layer, backbone.controller, min_runs))
        yield
    finally:
        for layer, proc in saved.items():
            modules[layer].set_processor(proc)
