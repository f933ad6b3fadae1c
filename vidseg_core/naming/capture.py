"""The cross-attention queries naming needs, kept from the feature pass (no extra UNet pass).

At the feature step t_k the feature pass evaluates the UNet's conditional half and stops right after
the last feature layer (decoder block 8's self-attention, :func:`vidseg_core.features.evaluate_feature_step`).
The decoder cross-attention layers (``attn2``) that evaluation computes before it stops are blocks 3-7:
their projected queries ``to_q(norm2(x))`` are kept here, conditional half, in the backbone's dtype on
its device, for one batch at a time.  Blocks 3-5 work at half the feature grid, blocks 6-7 at the grid.

Bytes per frame at 512x512 for SD 2.1 (fp16): blocks 3-5: 3 x 256 tokens x 1280 channels, blocks 6-7:
2 x 1024 x 640, i.e. 2.29 M values = 4.6 MB, held for one batch only (the word maps are computed from
them right away, :mod:`.cross_attention`); :func:`query_bytes_per_frame` gives the figure for any size.
"""
from __future__ import annotations

from typing import Dict, List, Sequence

import torch

from ..backbones.attention import CaptureQueries, LayerId
from .cross_attention import layer_module

#: the first decoder block with cross-attention (LDM output blocks 3..11)
FIRST_BLOCK = 3


def naming_layers(config) -> List[LayerId]:
    """Cross-attention layers evaluated before the feature pass stops: blocks 3 .. (last feature block - 1)."""
    last = max(tuple(config.feature_blocks) + (config.correspondence_block,))
    return [LayerId(b, "spatial_cross") for b in range(FIRST_BLOCK, last)]


class NamingCapture(CaptureQueries):
    """:class:`CaptureQueries` of the naming layers at the feature step, keeping the first evaluation's
    queries (quality mode evaluates t_k twice on the same latents: once for the features, once guided)."""

    def __init__(self, layers: Sequence[LayerId], step: int, dtype: torch.dtype, device, stop_when_done=False):
        super().__init__(layers, steps={int(step)}, half=1, run=0, dtype=dtype, device=device,
                         stop_when_done=stop_when_done)

    def on_qk(self, layer, q, k, ctx):
        if (ctx.step, layer) in self.captured:
            return q, k
        return super().on_qk(layer, q, k, ctx)

    def queries(self) -> Dict[LayerId, torch.Tensor]:
        """Layer -> ``[T, tokens, C]``."""
        return {layer: q for (_, layer), q in self.captured.items()}


def query_bytes_per_frame(backbone, work_size, dtype_bytes: int = 2) -> int:
    """Bytes of kept queries per frame at ``work_size = (H, W)`` (frames / 8 = latent; block b at latent >> (3 - b//3))."""
    lh, lw = work_size[0] // 8, work_size[1] // 8
    total = 0
    for layer in naming_layers(backbone.config):
        shift = max(0, 3 - layer.block // 3)
        channels = layer_module(backbone, layer).to_q.out_features
        total += (lh >> shift) * (lw >> shift) * channels
    return total * dtype_bytes
