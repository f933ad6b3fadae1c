"""Tiny SD 2.1 weights under which one word takes one cluster and another word the other (tests only).

Shared by the library's naming tests and the node tests; ``core`` is the package the backbone comes from
(``vidseg_core``, or ``vidseg_pack.vidseg_core`` for the pack as ComfyUI imports it: the two are separate
module trees, and a backbone must meet the segmenter of its own tree).
"""
from __future__ import annotations

import importlib

import torch
import torch.nn.functional as F


def _mod(core: str, name: str):
    return importlib.import_module(f"{core}.{name}")


def feature_queries(bb, frames, layers, core: str = "vidseg_core"):
    """The layers' conditional queries at the feature step, on the current weights."""
    features, capture = _mod(core, "features"), _mod(core, "naming.capture")
    cfg = bb.config
    inputs = features.prepare_batch(bb, frames)
    x = bb.denoise(inputs.x_start[None], inputs.cond, cfg.modulation_step, end_step=cfg.feature_step - 1)
    cap = capture.NamingCapture(layers, cfg.feature_step, torch.float32, "cpu", stop_when_done=True)
    features.evaluate_feature_step(bb, x, inputs.cond, cap)
    return cap.queries(), inputs.latent_hw


def construct(bb, frames, voc, core: str = "vidseg_core"):
    """Weights under which the vocabulary's first word takes the cells of one cluster and its second word
    those of the other.

    1. Every naming layer's ``to_v`` is zeroed: its output no longer depends on its keys, so changing
       ``to_k`` below changes neither the features, nor the clusters, nor any layer's queries.
    2. The video is segmented (2 clusters, fast): cluster ``a`` and ``b``.
    3. Each naming layer gets ``to_k = D u^T`` with ``u^T (e_0 - e_1) = 1``: the logit of word 0 minus
       word 1 at a pixel is ``scale * q_h . D_h`` per head; ``D_h`` is the a-minus-b mean-query difference
       made orthogonal to the mid-point of the two means, scaled so mean ``a`` gets +8 and mean ``b`` -8.
    Returns the coarse labels and ``(a, b)``."""
    capture, pipeline = _mod(core, "naming.capture"), _mod(core, "pipeline")
    text, cross = _mod(core, "naming.text"), _mod(core, "naming.cross_attention")
    T, H, W = frames.shape[:3]
    modules = bb.attention_layers()
    layers = capture.naming_layers(bb.config)
    with torch.no_grad():
        for layer in layers:
            modules[layer].to_v.weight.zero_()
    seg = pipeline.VideoSegmenter(bb, pipeline.SegmentSettings(num_clusters=2, mode="fast", batch_size=T))
    coarse = torch.cat([r.coarse for r in seg.run(lambda x, y: frames[x:y], T, (H, W))])
    a, b = seg.summary.table.values
    emb = text.vocabulary_embeddings(bb, voc)
    diff = emb[0] - emb[1]
    u = diff / diff.dot(diff)
    queries, latent_hw = feature_queries(bb, frames, layers, core)
    grid = tuple(coarse.shape[1:])
    for layer in layers:
        q, m = queries[layer], modules[layer]
        hl, wl = cross.layer_grid(layer, latent_hw)
        c = q.shape[-1]
        q = F.interpolate(q.view(T, hl, wl, c).permute(0, 3, 1, 2), size=grid, mode="nearest").permute(0, 2, 3, 1)
        q = q.reshape(T, *grid, m.heads, c // m.heads)
        mean_a, mean_b = q[coarse == a].mean(0), q[coarse == b].mean(0)
        mid, half = (mean_a + mean_b) / 2, (mean_a - mean_b) / 2
        d = 2 * half - ((mid * 2 * half).sum(-1, keepdim=True) / (mid * mid).sum(-1, keepdim=True)) * mid
        d = d * (8.0 / (m.scale * (half * d).sum(-1, keepdim=True)))
        with torch.no_grad():
            m.to_k.weight.copy_(d.reshape(c)[:, None] * u[None, :])
    return coarse, (a, b)
