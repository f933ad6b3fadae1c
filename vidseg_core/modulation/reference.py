"""The reference trajectory, computed once per batch (docs/design/authors_code.md#order-of-operations-and-batching,
#the-equivalent-design-the-pack-implements).

The authors' reference pass is both their feature pass and the source of the
q/k injected into every modulated pass.  :func:`reference_pass` does both in
one trajectory: it denoises the batch's noisy latents from the noising step to
the end with

* the feature capture of :mod:`vidseg_core.features` (the features are the
  same tensors :func:`~vidseg_core.features.capture_features` returns: the
  same evaluations in the same order), and
* a :class:`ReferenceRecorder` that keeps, for every step >= t_m, the q/k of
  the injected decoder layers, the latents after the blended steps and the
  latent entering t_m (:class:`ReferenceStore`),

so :func:`~.runner.modulate_batch` given the store computes no reference run
(the "store" mode of :mod:`.memory`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, FrozenSet, Optional, Tuple

import torch

from ..backbones.attention import AttentionHook, LayerId


@dataclass
class ReferenceStore:
    """The reference pass's per-step q/k of the injected layers and its latents after each blended step.

    ``x_tm``: the latent entering step ``t_m`` (``[T,4,h,w]``); ``key``: the plan
    it was recorded for (t_m, injected layers, blending window), checked on use.
    """

    qk: Dict[Tuple[int, LayerId], Tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)
    latents: Dict[int, torch.Tensor] = field(default_factory=dict)  # step -> [T,4,h,w]
    x_tm: Optional[torch.Tensor] = None
    key: Optional[tuple] = None

    def nbytes(self) -> int:
        n = sum(q.numel() * q.element_size() + k.numel() * k.element_size() for q, k in self.qk.values())
        return n + sum(x.numel() * x.element_size() for x in self.latents.values())

    def matches(self, plan) -> bool:
        return self.key == plan_key(plan)


def plan_key(plan) -> tuple:
    return (plan.start, plan.t_m, plan.last, tuple(sorted(plan.injected)), plan.blend_window)


def _host_copy(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` kept on ``device``: the tensor itself on its own device (hooks never modify tensors in place),
    else a copy; to the host of a GPU: pinned and non-blocking (no sync)."""
    t = t.detach()
    if t.device == device:
        return t
    if device.type == "cpu" and t.device.type == "cuda":
        out = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=True)
        out.copy_(t, non_blocking=True)
        return out
    return t.to(device, copy=True)


class ReferenceRecorder(AttentionHook):
    """Fills a :class:`ReferenceStore` while the reference run is evaluated alone (``runs == 1``).

    ``device``: where the store lives (None: the compute device).
    """

    def __init__(self, store: ReferenceStore, injected: FrozenSet[LayerId], t_m: int, device=None):
        self.store, self.injected, self.t_m = store, injected, int(t_m)
        self.device = None if device is None else torch.device(device)

    def wants(self, layer, ctx):
        return ctx.step >= self.t_m and layer in self.injected

    def on_qk(self, layer, q, k, ctx):
        if ctx.layout.runs != 1 or ctx.layout.halves != 2:
            raise RuntimeError("the reference recorder expects the reference run alone, both guidance halves")
        dev = self.device or q.device
        self.store.qk[(ctx.step, layer)] = (_host_copy(q, dev), _host_copy(k, dev))
        return q, k

    def latent_callback(self, plan):
        """Sampler callback keeping ``x_tm`` and the latents after the blended steps (the trajectory is unchanged)."""
        store = self.store

        def callback(step: int, x: torch.Tensor) -> torch.Tensor:
            dev = self.device or x.device
            if step == plan.t_m - 1:
                store.x_tm = _host_copy(x[0], dev)
            if plan.blends(step):
                store.latents[step] = _host_copy(x[0], dev)
            return x
        return callback


def record_reference(backbone, inputs, plan, device=None, end_step: Optional[int] = None,
                     store: Optional[ReferenceStore] = None, x: Optional[torch.Tensor] = None,
                     start: Optional[int] = None) -> Tuple[ReferenceStore, torch.Tensor]:
    """Denoise the reference run alone from ``start`` (default ``plan.start``, latent ``inputs.x_start``)
    through ``end_step`` (default: the last step) recording into ``store``.  Returns ``(store, x)``."""
    store = store if store is not None else ReferenceStore()
    rec = ReferenceRecorder(store, plan.injected, plan.t_m, device)
    start = plan.start if start is None else start
    if x is None:
        x = inputs.x_start[None]
        if plan.t_m == start:
            store.x_tm = _host_copy(inputs.x_start, rec.device or inputs.x_start.device)
    with backbone.hooks(rec):
        x = backbone.denoise(x, inputs.cond, start, end_step, rec.latent_callback(plan))
    store.key = plan_key(plan)
    return store, x


@torch.inference_mode()
def reference_pass(backbone, inputs, settings=None, store_dtype: torch.dtype = torch.float16, device=None,
                   feature_device=None):
    """Features and reference store of one batch from ONE reference trajectory (see the module docstring).

    Returns ``(aggregated, correspondence, store)``: the features exactly as
    :func:`~vidseg_core.features.capture_features` returns them, and the
    :class:`ReferenceStore` for :func:`~.runner.modulate_batch` (``reference_store=``).
    ``device``: where the store is kept; ``feature_device``: where the features
    are returned (None: the CPU, as :func:`~vidseg_core.features.capture_features`).

    The trajectory runs to the feature step t_k as the feature pass does
    (its evaluation at t_k conditional-only and stopped after the last feature
    layer), recording the injected q/k of the steps >= t_m; the one remaining
    evaluation, the full guided one at t_k, records that step's q/k.
    """
    from ..features import evaluate_feature_step, feature_capture, features_from_capture
    from .settings import ModulationSettings

    plan = (settings or ModulationSettings()).resolve(backbone)
    cfg = backbone.config
    t_k = int(cfg.feature_step)
    if not plan.start == int(cfg.modulation_step) <= t_k <= plan.last:
        raise ValueError("the feature step must lie in the reference trajectory")
    capture = feature_capture(cfg, device=feature_device)
    store, x = (ReferenceStore(), inputs.x_start[None]) if t_k == plan.start else \
        record_reference(backbone, inputs, plan, device, end_step=t_k - 1)
    if t_k == plan.start and plan.t_m == plan.start:
        store.x_tm = _host_copy(inputs.x_start, torch.device(device) if device is not None else inputs.x_start.device)
    evaluate_feature_step(backbone, x, inputs.cond, capture)
    record_reference(backbone, inputs, plan, device, store=store, x=x, start=t_k)
    agg, corr = features_from_capture(capture, inputs, cfg, store_dtype)
    return agg, corr, store
