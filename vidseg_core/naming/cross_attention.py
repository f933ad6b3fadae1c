"""Each word's cross-attention maps from kept queries, normalised per pixel across the vocabulary.

For a cross-attention layer ``l`` (``H`` heads of width ``d``, scale ``1/sqrt(d)``) with kept queries
``q`` and an entry's key ``k_w = to_k(e_w)`` (``e_w``: the entry's mean token embedding, :mod:`.text`),
the map of word ``w`` at pixel ``p`` and head ``h`` is the attention the layer would give that word if
the prompt held the vocabulary's words alone:

    P_lh(p, w) = softmax_w( q_lh(p) . k_lh(w) / sqrt(d) )

i.e. the layer's own softmax restricted to the vocabulary's tokens: the start token (which takes most of
SD's attention mass at every pixel), the end token and the padding are left out, so every pixel's
scores sum to one across the words and a word is not favoured by its raw key norm.  The maps are averaged
over heads, brought to the feature grid (bilinear; blocks 3-5 are at half the grid) and averaged over
layers: ``A(p, w) = mean_l mean_h P_lh(p, w)``.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch
import torch.nn.functional as F

from ..backbones.attention import LayerId
from ..errors import InputError


class LayerKeys:
    """A layer's keys of the vocabulary ``[W, C]``, its head count and its softmax scale."""

    def __init__(self, keys: torch.Tensor, heads: int, scale: float):
        self.keys, self.heads, self.scale = keys, int(heads), float(scale)


def layer_module(backbone, layer: LayerId):
    """The attention module of ``layer``.  Backbones hooked through another program's patch points (the pack's
    ComfyUI adapter) name their layers by module path inside their UNet: the path is resolved there."""
    m = backbone.attention_layers()[layer]
    if isinstance(m, str):
        try:
            m = backbone.unet.get_submodule(m)
        except AttributeError as exc:
            raise InputError(f"{backbone.name}'s UNet has no attention module {m} ({exc}), which naming reads.",
                             "Name the regions with an SD 2.1 model in the standard layout (ComfyUI's Load "
                             "Checkpoint, or Load SD/SVD).") from exc
    return m


@torch.inference_mode()
def vocabulary_keys(backbone, layers, embeddings: torch.Tensor) -> Dict[LayerId, LayerKeys]:
    """``to_k`` of each layer on the entry embeddings ``[W, C_text]`` (float32 keys on the backbone's device)."""
    out = {}
    for layer in layers:
        m = layer_module(backbone, layer)
        p = next(m.parameters())
        emb = embeddings.to(p.device, p.dtype)[None]
        if getattr(m, "norm_cross", None):
            emb = m.norm_encoder_hidden_states(emb)
        keys = m.to_k(emb)[0].float()
        heads = int(m.heads)
        scale = getattr(m, "scale", None) or (keys.shape[-1] // heads) ** -0.5
        out[layer] = LayerKeys(keys, heads, scale)
    return out


def layer_grid(layer: LayerId, latent_hw: Tuple[int, int]) -> Tuple[int, int]:
    shift = max(0, 3 - layer.block // 3)
    return latent_hw[0] >> shift, latent_hw[1] >> shift


@torch.inference_mode()
def word_probabilities(queries: Dict[LayerId, torch.Tensor], keys: Dict[LayerId, LayerKeys],
                       latent_hw: Tuple[int, int], grid: Tuple[int, int], frames_per_chunk: int = 2) -> torch.Tensor:
    """``A [T, h, w, W]`` float32 (see the module docstring) from queries ``[T, tokens, C]`` per layer."""
    if not queries:
        raise RuntimeError("no cross-attention queries were kept: the backbone does not expose its attn2 layers")
    t = next(iter(queries.values())).shape[0]
    total = None
    for layer, q in queries.items():
        lk = keys[layer]
        hl, wl = layer_grid(layer, latent_hw)
        w_count, c = lk.keys.shape
        d = c // lk.heads
        k = lk.keys.view(w_count, lk.heads, d).to(q.device)
        maps = []
        for a in range(0, t, frames_per_chunk):
            qc = q[a:a + frames_per_chunk].float()
            qc = qc.view(qc.shape[0], qc.shape[1], lk.heads, d)
            logits = torch.einsum("tnhd,whd->tnhw", qc, k) * lk.scale
            maps.append(logits.softmax(-1).mean(2))  # [t, tokens, W]
        m = torch.cat(maps).view(t, hl, wl, w_count)
        if (hl, wl) != tuple(grid):
            m = F.interpolate(m.permute(0, 3, 1, 2), size=tuple(grid), mode="bilinear",
                              align_corners=False).permute(0, 2, 3, 1)
        total = m if total is None else total + m
    return total / len(queries)
