"""Random-but-structured CBR inputs shared by ``tests/test_cbr.py`` and ``benchmarks/cbr.py``."""
from __future__ import annotations

import torch


def structured_inputs(T, h, w, C, num_labels=5, seed=0):
    """A random texture drifting one cell left every other frame (+ noise), blob labels with 10 % flicker."""
    g = torch.Generator().manual_seed(seed)
    tex = torch.randn(h, w + T, C, generator=g)
    feats = torch.stack([tex[:, (t // 2):(t // 2) + w] for t in range(T)])
    feats = feats + 0.5 * torch.randn(feats.shape, generator=g)
    coarse = torch.randint(0, num_labels, (1, 1, h // 4 + 1, (w + T) // 4 + 1), generator=g).float()
    blobs = torch.nn.functional.interpolate(coarse, scale_factor=4, mode="nearest")[0, 0, :h, :w + T].long()
    labels = torch.stack([blobs[:, (t // 2):(t // 2) + w] for t in range(T)])
    flip = torch.rand(labels.shape, generator=g) < 0.1
    labels = torch.where(flip, torch.randint(0, num_labels, labels.shape, generator=g), labels)
    return labels, feats
