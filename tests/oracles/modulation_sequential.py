"""Straightforward SEQUENTIAL masked modulation, the oracle for ``vidseg_core.modulation``.

Written the way the authors' code runs (docs/design/authors_code.md#masked-modulation-as-published, #difference-maps-to-labels-as-published), one pass at a time:

1. a reference pass from the noisy latents to the end that stores, at every
   step >= t_m, the q and k of every injected decoder attention layer and the
   latent after every step;
2. for sign in (+λ, −λ), for label in the sorted labels: a separate modulated
   pass (one run) that, at step t_m, adds sign·λ·M_label to the modulated
   layers' outputs (explicit loop over frames and guidance halves, like
   ``attn_out[i + T] += λ·M_i``), substitutes the stored q/k at every step
   >= t_m, and blends its latent with the stored reference latent after every
   step of the window;
3. decode, ×255, ``cv2.resize`` (bilinear) to the frame size, float L2 over RGB,
   ``cv2.GaussianBlur((5,5), 3)``, divide by max + 1e-5, filter with the PIL
   LANCZOS-upsampled 0/255 mask, ``np.argmax`` over labels (first maximum).

Nothing here is shared with the batched implementation except the backbone
interface (``denoise``, ``decode``, hooks).
"""
from __future__ import annotations

import numpy as np
import torch

from vidseg_core.backbones.attention import AttentionHook, LayerId


class _Recorder(AttentionHook):
    def __init__(self, injected, t_m):
        self.injected, self.t_m, self.qk = set(injected), t_m, {}

    def on_qk(self, layer, q, k, ctx):
        if layer in self.injected and ctx.step >= self.t_m:
            self.qk[(ctx.step, layer)] = (q.clone(), k.clone())
        return q, k


class _Modulate(AttentionHook):
    def __init__(self, store, injected, modulated, t_m, mask, value):
        self.store, self.injected, self.modulated = store, set(injected), set(modulated)
        self.t_m, self.mask, self.value = t_m, mask, value  # mask [T, h*w] at the layer grid

    def on_qk(self, layer, q, k, ctx):
        if layer in self.injected and ctx.step >= self.t_m:
            q, k = self.store[(ctx.step, layer)]
        return q, k

    def on_output(self, layer, out, ctx):
        if layer not in self.modulated or ctx.step != self.t_m:
            return out
        out = out.clone()
        T = self.mask.shape[0]
        tokens = self.mask.shape[1]
        assert ctx.grid[0] * ctx.grid[1] == tokens, "oracle supports the coarse grid only"
        for i in range(T):
            m = self.value * self.mask[i][:, None].to(out.dtype)
            if layer.temporal:  # rows [half, token], frame axis 1
                out[:tokens, i] += m
                out[tokens:, i] += m
            else:  # rows [half, frame]
                out[i] += m
                out[i + T] += m
        return out


def sequential_modulation(backbone, inputs, coarse, label_ids, frame_size, lam=50.0, t_m=None, block=None,
                          layers=None, injection_blocks=None, injection_layers=None, blend_steps="config",
                          filter_s=0.7, blur=True):
    """Return ``(labels [T,H,W] long, maps [L,T,H,W] float32 normalised difference maps)``."""
    import cv2
    from PIL import Image

    cfg = backbone.config
    start = cfg.modulation_step
    t_m = start if t_m is None else t_m
    block = cfg.modulation_block if block is None else block
    layers = cfg.modulation_layers if layers is None else layers
    modulated = [LayerId(block, k) for k in layers]
    iblocks = cfg.injection_blocks if injection_blocks is None else injection_blocks
    ikinds = cfg.injection_layers if injection_layers is None else injection_layers
    injected = [LayerId(b, k) for b in iblocks for k in ikinds]
    window = tuple(cfg.blend_steps) if blend_steps == "config" else blend_steps
    H, W = frame_size
    T, h, w = coarse.shape
    lh, lw = inputs.latent_hw
    label_ids = [int(v) for v in label_ids]

    with torch.inference_mode():
        # 1. reference pass
        rec = _Recorder(injected, t_m)
        ref_latents = {}

        def keep(i, x):
            ref_latents[i] = x.clone()
            return x
        with backbone.hooks(rec):
            backbone.denoise(inputs.x_start[None], inputs.cond, start, None, keep)

        # 2. modulated passes
        decoded = {}
        for sign in (1.0, -1.0):
            for label in label_ids:
                m = (coarse == label).float().to(backbone.device)  # [T,h,w]
                m_lat = m.repeat_interleave(lh // h, 1).repeat_interleave(lw // w, 2)[None, :, None]

                def blend(i, x, m_lat=m_lat):
                    if window is not None and window[0] <= i <= window[1]:
                        x = x * m_lat + ref_latents[i] * (1 - m_lat)
                    return x
                hook = _Modulate(rec.qk, injected, modulated, t_m, m.reshape(T, -1), sign * lam)
                with backbone.hooks(hook):
                    z = backbone.denoise(inputs.x_start[None], inputs.cond, start, None, blend)[0]
                img = backbone.decode(z).float().cpu().numpy()  # [T,3,h8,w8] 0..1
                decoded[(label, sign)] = [cv2.resize(np.ascontiguousarray(f.transpose(1, 2, 0) * 255.0), (W, H),
                                                     interpolation=cv2.INTER_LINEAR) for f in img]

    # 3. difference maps -> labels
    maps = np.zeros((len(label_ids), T, H, W), np.float32)
    scores = np.zeros_like(maps)
    for li, label in enumerate(label_ids):
        for t in range(T):
            a, b = decoded[(label, 1.0)][t], decoded[(label, -1.0)][t]
            d = np.sqrt(np.sum((a.astype(np.float32) - b.astype(np.float32)) ** 2, axis=2))
            if blur:
                d = cv2.GaussianBlur(d, (5, 5), 3)
            d = d / (d.max() + 1e-5)
            maps[li, t] = d
            mask = ((coarse[t] == label).cpu().numpy() * 255).astype(np.uint8)
            soft = np.asarray(Image.fromarray(mask).resize((W, H), Image.LANCZOS)).astype(np.float32) / 255.0
            scores[li, t] = d * soft + filter_s * d * (1 - soft)
    idx = np.argmax(scores, axis=0)
    labels = np.asarray(label_ids)[idx]
    return torch.from_numpy(labels).long(), torch.from_numpy(maps)
