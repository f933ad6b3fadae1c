"""Attention hook points shared by every backbone (docs/design/authors_code.md#feature-capture, #masked-modulation-as-published; docs/design/backbones.md#attention-hook-points).

Every decoder attention layer of a backbone gets a :class:`HookedAttnProcessor`.
With no hook active it computes plain scaled-dot-product attention, exactly as
diffusers' default processor.  Hooks can

* read the projected queries / keys (feature capture: the paper's features are
  ``to_q(norm1(x))`` of the spatial self-attention, before the heads split);
* replace queries / keys (the authors' q/k injection from the reference pass);
* change the attention output after ``to_out`` and before the residual add
  (masked modulation, paper §3.2: ``f(σ(QKᵀ/√d)V) + λM``).

Rows of the UNet batch follow one :class:`RowLayout`: ``runs`` independent
sampler runs, each with its two classifier-free-guidance halves (0 =
unconditional, 1 = conditional) of ``frames`` frames.  Spatial layers see
``[runs·2·frames, tokens, C]`` in that order; temporal layers see
``[runs·2·tokens, frames, C]``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, NamedTuple, Optional

import torch
import torch.nn.functional as F

LAYER_KINDS = ("spatial_self", "spatial_cross", "temporal_self", "temporal_cross")


class LayerId(NamedTuple):
    """A decoder attention layer: LDM output block index (0..11) and its kind."""

    block: int
    kind: str

    @property
    def temporal(self) -> bool:
        return self.kind.startswith("temporal")

    def __str__(self) -> str:  # e.g. "b7.spatial_cross"
        return f"b{self.block}.{self.kind}"


@dataclass(frozen=True)
class RowLayout:
    """How UNet batch rows map to (run, guidance half, frame).

    ``halves`` is 2 (unconditional, conditional) for a guided evaluation, or 1
    when only the conditional half is evaluated (``denoised(conditional_only=True)``).
    """

    runs: int
    frames: int
    halves: int = 2

    @property
    def rows(self) -> int:
        return self.runs * self.halves * self.frames


@dataclass
class HookContext:
    """What a hook knows about the current UNet evaluation."""

    step: int
    layout: RowLayout
    grid: tuple  # token grid (h, w) of the layer, for spatial and temporal layers alike


class AttentionHook:
    """Base class: override what you need.  Methods must not modify inputs in place."""

    def wants(self, layer: LayerId, ctx: HookContext) -> bool:
        return True

    def on_qk(self, layer: LayerId, q: torch.Tensor, k: torch.Tensor, ctx: HookContext):
        return q, k

    def on_output(self, layer: LayerId, out: torch.Tensor, ctx: HookContext) -> torch.Tensor:
        return out


@dataclass
class AttentionController:
    """Holds the active hooks and the current step / layout of a denoising loop."""

    hooks: List[AttentionHook] = field(default_factory=list)
    step: int = -1
    layout: Optional[RowLayout] = None
    latent_grid: tuple = (0, 0)  # latent (h, w) of the current evaluation
    #: every run of the evaluation has the same cross-attention context (the backbones tile one batch
    #: conditioning over the runs): lets processors share work without comparing tensors on the host
    runs_share_context: bool = False

    def context(self, layer: LayerId) -> HookContext:
        """Context for ``layer``: decoder block ``b`` works at latent / 2**(3 - b // 3)."""
        shift = max(0, 3 - layer.block // 3)
        lh, lw = self.latent_grid
        return HookContext(self.step, self.layout or RowLayout(1, 1), (lh >> shift, lw >> shift))


class HookedAttnProcessor:
    """Scaled-dot-product attention with hook points (drop-in for diffusers' processor)."""

    def __init__(self, layer: LayerId, controller: AttentionController):
        self.layer = layer
        self.controller = controller

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, *args, **kwargs):
        ctrl = self.controller
        active = ctrl.hooks
        residual = hidden_states
        ndim = hidden_states.ndim
        if ndim == 4:
            b, c, hh, ww = hidden_states.shape
            hidden_states = hidden_states.view(b, c, hh * ww).transpose(1, 2)
        batch, tokens, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, encoder_hidden_states.shape[1]
                                                         if encoder_hidden_states is not None else tokens, batch)
            attention_mask = attention_mask.view(batch, attn.heads, -1, attention_mask.shape[-1])
        if getattr(attn, "group_norm", None) is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        q = attn.to_q(hidden_states)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if encoder_hidden_states is not None and getattr(attn, "norm_cross", None):
            context = attn.norm_encoder_hidden_states(context)
        k = attn.to_k(context)
        v = attn.to_v(context)

        hctx = None
        if active:
            hctx = ctrl.context(self.layer)
            for hook in active:
                if hook.wants(self.layer, hctx):
                    q, k = hook.on_qk(self.layer, q, k, hctx)

        head_dim = k.shape[-1] // attn.heads
        qh = q.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        kh = k.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        vh = v.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
        if getattr(attn, "norm_q", None) is not None:
            qh = attn.norm_q(qh)
        if getattr(attn, "norm_k", None) is not None:
            kh = attn.norm_k(kh)
        out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=attention_mask, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(q.dtype)
        out = attn.to_out[0](out)
        out = attn.to_out[1](out)

        if active:
            for hook in active:
                if hook.wants(self.layer, hctx):
                    out = hook.on_output(self.layer, out, hctx)

        if ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, hh, ww)
        if getattr(attn, "residual_connection", False):
            out = out + residual
        return out / getattr(attn, "rescale_output_factor", 1.0)


class CaptureComplete(Exception):
    """Raised by :class:`CaptureQueries` (``stop_when_done=True``) once every wanted query is captured:
    the rest of that UNet evaluation is not needed (the feature pass discards its output)."""


class CaptureQueries(AttentionHook):
    """Records the projected queries of chosen layers at chosen steps.

    ``half`` selects the guidance half (1 = conditional, as the authors use,
    docs/design/authors_code.md#feature-capture); ``run`` selects the sampler run.  Captured tensors are
    stored as ``[frames, tokens, C]`` (spatial layers), detached, in ``dtype``
    on ``device``.  With ``stop_when_done`` the hook raises
    :class:`CaptureComplete` right after the last wanted query, which ends the
    UNet evaluation early (the decoder blocks after it are skipped).
    """

    def __init__(self, layers, steps, half: int = 1, run: int = 0,
                 dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                 stop_when_done: bool = False):
        self.layers = set(layers)
        self.steps = set(steps)
        self.half, self.run = half, run
        self.dtype, self.device = dtype, torch.device(device)
        self.stop_when_done = stop_when_done
        self.captured: Dict[tuple, torch.Tensor] = {}

    def wants(self, layer, ctx):
        return layer in self.layers and ctx.step in self.steps

    def on_qk(self, layer, q, k, ctx):
        lay = ctx.layout
        if lay.halves == 2:
            half = self.half
        elif self.half == 1:  # a conditional-only evaluation holds the conditional half alone
            half = 0
        else:
            raise ValueError("CaptureQueries(half=0) needs the unconditional half, absent from a "
                             "conditional-only evaluation")
        if layer.temporal:
            # [runs*halves*tokens, frames, C] -> [frames, tokens, C]
            sel = q.view(lay.runs, lay.halves, -1, lay.frames, q.shape[-1])[self.run, half].transpose(0, 1)
        else:
            sel = q.view(lay.runs, lay.halves, lay.frames, -1, q.shape[-1])[self.run, half]
        self.captured[(ctx.step, layer)] = sel.detach().to(self.device, self.dtype).clone()
        if self.stop_when_done and len(self.captured) == len(self.layers) * len(self.steps):
            raise CaptureComplete()
        return q, k
