"""Binary label masks at the grids the modulation needs (reference notes §8.1, §8.5, §9.5).

* token grid of the modulated layer: the coarse map's own grid for blocks 6-8
  (H/16, where the authors' PNG resize is the identity); other blocks get a
  nearest-neighbour resize (the authors would use PIL's default bicubic of the
  0/255 PNG there, which is not binary — a documented deviation);
* latent grid (blending): nearest ×2 upsampling;
* full frame (difference-map filter): Pillow's LANCZOS resize of the 0/255 mask
  divided by 255, reproduced bit-exactly in :func:`lanczos_upsample_mask`.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Sequence, Tuple

import torch
import torch.nn.functional as F


def label_masks(coarse: torch.Tensor, label_ids: torch.Tensor) -> torch.Tensor:
    """``coarse [T,h,w]`` long, ``label_ids [L]`` -> float masks ``[L,T,h,w]`` (1 where coarse == label)."""
    ids = label_ids.to(coarse.device).view(-1, 1, 1, 1)
    return (coarse.unsqueeze(0) == ids).float()


def resize_nearest(masks: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``[..., h, w]`` -> ``[..., H, W]`` nearest neighbour (pixel-centre convention, exact for integer factors)."""
    size = (int(size[0]), int(size[1]))
    if tuple(masks.shape[-2:]) == size:
        return masks
    lead = masks.shape[:-2]
    flat = masks.reshape(-1, 1, *masks.shape[-2:]).float()
    out = F.interpolate(flat, size=size, mode="nearest-exact")
    return out.reshape(*lead, *size).to(masks.dtype)


# ------------------------------------------------------------------ Pillow LANCZOS, bit-exact
_PRECISION_BITS = 32 - 8 - 2  # Pillow's Resample.c for 8-bit images
_LANCZOS_SUPPORT = 3.0


def _lanczos(x: torch.Tensor) -> torch.Tensor:
    """Pillow's truncated sinc: ``sinc(x)·sinc(x/3)`` on [-3, 3), 0 elsewhere."""
    def sinc(v):
        pv = v * math.pi
        return torch.where(v == 0, torch.ones_like(v), torch.sin(pv) / torch.where(v == 0, torch.ones_like(pv), pv))

    inside = (x >= -3.0) & (x < 3.0)
    return torch.where(inside, sinc(x) * sinc(x / 3.0), torch.zeros_like(x))


@lru_cache(maxsize=64)
def _fixed_point_weights_on(in_size: int, out_size: int, device: torch.device) -> torch.Tensor:
    """:func:`_fixed_point_weights` moved to ``device`` once (no host->device copy per call)."""
    return _fixed_point_weights(in_size, out_size).to(device)


@lru_cache(maxsize=64)
def _fixed_point_weights(in_size: int, out_size: int) -> torch.Tensor:
    """``[out, in]`` float64 matrix of Pillow's integer filter coefficients (``precompute_coeffs`` +
    ``normalize_coeffs_8bpc``) for a full-image resize ``in_size -> out_size``."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = _LANCZOS_SUPPORT * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    mat = torch.zeros(out_size, in_size, dtype=torch.float64)
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        xs = torch.arange(xmax, dtype=torch.float64)
        w = _lanczos((xs + xmin - center + 0.5) * (1.0 / filterscale))
        ww = float(w.sum())
        if ww != 0.0:
            w = w / ww
        w = w[:ksize]
        one = float(1 << _PRECISION_BITS)
        # C's (int) cast truncates toward zero: (int)(±0.5 + k·2^22)
        fixed = torch.where(w < 0, torch.trunc(-0.5 + w * one), torch.trunc(0.5 + w * one))
        mat[xx, xmin:xmin + len(fixed)] = fixed
    return mat


def _clip8(acc: torch.Tensor) -> torch.Tensor:
    """Pillow's ``clip8``: ``acc >> 22`` clamped to 0..255 (``acc`` holds exact integers in float64)."""
    out = torch.floor(acc / float(1 << _PRECISION_BITS))
    out = torch.where(acc <= 0, torch.zeros_like(out), out)
    return out.clamp(0, 255)


def lanczos_upsample_mask(masks: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """Binary masks ``[..., h, w]`` -> ``Image.fromarray(255·m).resize((W, H), LANCZOS) / 255`` as float32.

    A bit-exact emulation of Pillow's 8-bit two-pass resampling (horizontal
    pass first, rounded and clipped to 0..255 in between, 22-bit fixed-point
    coefficients); computed in float64 on the input's device (every value is an
    integer below 2^53, so sums are exact in any order and the result is the
    same bits on every device), on the CPU for devices without float64 (MPS).
    """
    H, W = int(size[0]), int(size[1])
    h, w = masks.shape[-2:]
    lead = masks.shape[:-2]
    dev = masks.device if masks.device.type not in ("mps", "meta") else torch.device("cpu")
    if masks.device.type == "meta":
        return torch.empty((*lead, H, W), dtype=torch.float32, device="meta")
    x = (masks.detach().to(dev, torch.float64) * 255.0).round().reshape(-1, h, w)
    half = float(1 << (_PRECISION_BITS - 1))
    if W != w:
        x = _clip8(torch.matmul(x, _fixed_point_weights_on(w, W, dev).t()) + half)
    if H != h:
        x = _clip8(torch.matmul(_fixed_point_weights_on(h, H, dev), x) + half)
    return (x / 255.0).to(torch.float32).reshape(*lead, H, W).to(masks.device)


def coarse_present(coarse: torch.Tensor, label_ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """``[L, T]`` bool: label ``l`` occurs in frame ``t`` of the coarse map."""
    ids = torch.as_tensor(label_ids, device=coarse.device).view(-1, 1, 1, 1)
    return (coarse.unsqueeze(0) == ids).flatten(2).any(-1)
