"""Binary label masks at the grids the modulation needs (docs/design/authors_code.md#masked-modulation-as-published, #difference-maps-to-labels-as-published).

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
def _fixed_point_taps(in_size: int, out_size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Pillow's integer filter coefficients (``precompute_coeffs`` + ``normalize_coeffs_8bpc``) for a
    full-image resize ``in_size -> out_size``, as taps: ``first [out]`` (index of the first input sample of
    each output) and ``weights [out, ksize]`` int64 (zero past each output's support).  CPU tensors."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = _LANCZOS_SUPPORT * filterscale
    ksize = int(math.ceil(support)) * 2 + 1
    first = torch.zeros(out_size, dtype=torch.int64)
    weights = torch.zeros(out_size, ksize, dtype=torch.int64)
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
        first[xx] = xmin
        weights[xx, :len(fixed)] = fixed.to(torch.int64)
    return first, weights


def _resample_axis(x: torch.Tensor, dim: int, out_size: int) -> torch.Tensor:
    """One 8-bit pass of Pillow's resampling along ``dim`` of the int64 image ``x``: taps summed exactly in
    int64, rounded (``+ 2^21``), then ``clip8`` (``>> 22`` clamped to 0..255, 0 for sums <= 0)."""
    n = x.shape[dim]
    first, weights = _fixed_point_taps(n, out_size)
    first, weights = first.to(x.device), weights.to(x.device)
    shape = [1] * x.ndim
    shape[dim] = out_size
    acc = torch.full((), 1 << (_PRECISION_BITS - 1), dtype=torch.int64, device=x.device)
    for j in range(weights.shape[1]):  # ksize taps (7 when upsampling): a few elementwise passes
        idx = (first + j).clamp_(max=n - 1)  # past the support the weight is 0
        acc = acc + x.index_select(dim, idx) * weights[:, j].reshape(shape)
    return torch.where(acc <= 0, torch.zeros_like(acc), acc >> _PRECISION_BITS).clamp_(0, 255)


_BYTE_TO_UNIT = (torch.arange(256, dtype=torch.float64) / 255.0).to(torch.float32)  # k -> float32(k / 255)


def lanczos_upsample_mask(masks: torch.Tensor, size: Tuple[int, int], dtype=torch.float32) -> torch.Tensor:
    """Binary masks ``[..., h, w]`` -> ``Image.fromarray(255·m).resize((W, H), LANCZOS) / 255`` in ``dtype``
    (each value is ``k / 255`` rounded once to ``dtype``: float64 is the authors' ``/ 255.0``).

    A bit-exact emulation of Pillow's 8-bit two-pass resampling (horizontal
    pass first, rounded and clipped to 0..255 in between, 22-bit fixed-point
    coefficients), in int64 arithmetic on the masks' own device (exact on any
    device; no float64, no matrix product that TF32 could round).
    """
    H, W = int(size[0]), int(size[1])
    h, w = masks.shape[-2:]
    lead = masks.shape[:-2]
    if masks.device.type == "meta":  # (FLOP counting on meta tensors)
        return torch.empty((*lead, H, W), dtype=dtype, device="meta")
    x = (masks.detach().to(torch.float32) * 255.0).round().to(torch.int64).reshape(-1, h, w)
    if W != w:
        x = _resample_axis(x, 2, W)
    if H != h:
        x = _resample_axis(x, 1, H)
    table = _BYTE_TO_UNIT if dtype == torch.float32 else (torch.arange(256, dtype=torch.float64) / 255.0).to(dtype)
    return table.to(x.device)[x].reshape(*lead, H, W)


def coarse_present(coarse: torch.Tensor, label_ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """``[L, T]`` bool: label ``l`` occurs in frame ``t`` of the coarse map."""
    ids = torch.as_tensor(label_ids, device=coarse.device).view(-1, 1, 1, 1)
    return (coarse.unsqueeze(0) == ids).flatten(2).any(-1)
