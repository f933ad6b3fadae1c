"""Fast mode: coarse label probabilities upsampled with a colour guided filter (no diffusion passes).

For previews and long videos.  Per frame, with the frame ``I`` (RGB, 0..1) as
guide and ``p_l`` the one-hot of label ``l`` at the coarse grid (optionally
softened by a Gaussian of ``softness`` cells) bilinearly upsampled:

    q_l = mean(a_l)ᵀ·I + mean(b_l),   a_l = (Σ_I + ε·U)⁻¹ cov(I, p_l),   b_l = mean(p_l) − a_lᵀ mean(I)

(He, Sun & Tang, "Guided Image Filtering", colour version), computed at
1/``subsample`` resolution with the coefficients bilinearly upsampled ("Fast
Guided Filter", He & Sun 2015), then ``argmax_l q_l`` with ties to the lowest
label.  Box means use windows clipped at the borders: float64 cumulative sums
on the CPU, float32 direct window sums on a GPU (no float64 there, no
cancellation either).  Everything is torch, on the frames' device, with no
host read per frame or label (``tests/test_sync_free.py``).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from ..errors import InputError
from .base import UpsampleContext, Upsampler, check_upsample_inputs


def _box_sum_1d(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Sums over ``[i − r, i + r]`` clipped to the axis, by cumulative sums (O(1) per element)."""
    n = x.shape[dim]
    shape = list(x.shape)
    shape[dim] = 1
    c = torch.cat([torch.zeros(shape, dtype=x.dtype, device=x.device), torch.cumsum(x, dim)], dim)
    i = torch.arange(n, device=x.device)
    hi = (i + r + 1).clamp(max=n)
    lo = (i - r).clamp(min=0)
    return c.index_select(dim, hi) - c.index_select(dim, lo)


def _box_mean_cumsum(x: torch.Tensor, r: int, acc: torch.dtype) -> torch.Tensor:
    """Clipped-window mean by cumulative sums in ``acc`` (float64: exact enough; O(1) per element)."""
    H, W = x.shape[-2:]
    total = _box_sum_1d(_box_sum_1d(x.to(acc), r, -1), r, -2)
    iy, ix = torch.arange(H, device=x.device), torch.arange(W, device=x.device)
    ny = ((iy + r + 1).clamp(max=H) - (iy - r).clamp(min=0)).to(acc)
    nx = ((ix + r + 1).clamp(max=W) - (ix - r).clamp(min=0)).to(acc)
    return (total / (ny[:, None] * nx[None, :])).to(x.dtype)


def _box_mean_window(x: torch.Tensor, r: int) -> torch.Tensor:
    """Clipped-window mean as two separable direct window sums in float32 (no cumulative-sum cancellation).

    ``avg_pool2d`` with ``count_include_pad=False`` divides by the clipped window's size; the 2-D clipped
    count is the product of the 1-D ones, so a row pass then a column pass gives the same mean.  Each
    output sums only ``2r+1`` terms, so float32 keeps ~1e-7 relative error where a float32 cumulative sum
    over a whole row would lose ~1e-5 absolute to cancellation (float64, slow on consumer GPUs, is avoided).
    """
    k = 2 * r + 1
    y = F.avg_pool2d(x.to(torch.float32), (1, k), stride=1, padding=(0, r), count_include_pad=False)
    y = F.avg_pool2d(y, (k, 1), stride=1, padding=(r, 0), count_include_pad=False)
    return y.to(x.dtype)


#: ``"float64"`` (cumulative sums, the CPU default), ``"float32"`` (direct window sums, the GPU default)
BOX_PRECISIONS = ("auto", "float64", "float32")


def box_precision(device: torch.device, precision: str = "auto") -> str:
    """The box sums' precision on ``device``: ``auto`` is float64 on the CPU, float32 elsewhere (CUDA, MPS)."""
    if precision not in BOX_PRECISIONS:
        raise InputError(f"Box precision {precision!r} is not one of {BOX_PRECISIONS}.", "Use 'auto'.")
    if precision == "auto":
        return "float64" if torch.device(device).type == "cpu" else "float32"
    return precision


def box_mean(x: torch.Tensor, r: int, precision: str = "auto") -> torch.Tensor:
    """Mean over the ``(2r+1)²`` window clipped to the image, ``x [N,C,H,W]``.

    ``precision`` (see :func:`box_precision`): float64 cumulative sums on the CPU (unchanged results), float32
    direct window sums on a GPU (consumer GPUs run float64 at 1/32-1/64 rate; MPS has none).
    """
    if r < 1:
        return x
    if box_precision(x.device, precision) == "float64":
        return _box_mean_cumsum(x, r, torch.float64)
    return _box_mean_window(x, r)


def guided_filter_color(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float,
                        precision: str = "auto") -> torch.Tensor:
    """Colour guided filter coefficients' means: returns ``(mean_a [N,3,L,H,W], mean_b [N,L,H,W])``.

    ``guide [N,3,H,W]``, ``src [N,L,H,W]``; the filtered output is ``Σ_c mean_a[:,c]·I_c + mean_b``;
    ``precision``: the box sums' (:func:`box_precision`).
    """
    prec = box_precision(guide.device, precision)
    n, _, H, W = guide.shape
    L = src.shape[1]
    mI = box_mean(guide, radius, prec)  # [N,3,H,W]
    mp = box_mean(src, radius, prec)  # [N,L,H,W]
    prod = (guide.unsqueeze(2) * src.unsqueeze(1)).reshape(n, 3 * L, H, W)
    cov_Ip = box_mean(prod, radius, prec).reshape(n, 3, L, H, W) - mI.unsqueeze(2) * mp.unsqueeze(1)
    # Σ_I: 6 unique entries of the symmetric 3x3 covariance
    pairs = [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    ii = torch.stack([guide[:, a] * guide[:, b] for a, b in pairs], 1)
    var = box_mean(ii, radius, prec) - torch.stack([mI[:, a] * mI[:, b] for a, b in pairs], 1)
    v_rr, v_rg, v_rb, v_gg, v_gb, v_bb = (var[:, i] for i in range(6))
    v_rr, v_gg, v_bb = v_rr + eps, v_gg + eps, v_bb + eps
    # inverse of the symmetric matrix by its adjugate
    i_rr = v_gg * v_bb - v_gb * v_gb
    i_rg = v_gb * v_rb - v_rg * v_bb
    i_rb = v_rg * v_gb - v_gg * v_rb
    i_gg = v_rr * v_bb - v_rb * v_rb
    i_gb = v_rb * v_rg - v_rr * v_gb
    i_bb = v_rr * v_gg - v_rg * v_rg
    det = v_rr * i_rr + v_rg * i_rg + v_rb * i_rb
    inv = torch.stack([torch.stack([i_rr, i_rg, i_rb], 1), torch.stack([i_rg, i_gg, i_gb], 1),
                       torch.stack([i_rb, i_gb, i_bb], 1)], 1) / det[:, None, None]  # [N,3,3,H,W]
    a = torch.einsum("ncdhw,ndlhw->nclhw", inv, cov_Ip)  # [N,3,L,H,W]
    b = mp - (a * mI.unsqueeze(2)).sum(1)
    mean_a = box_mean(a.reshape(n, 3 * L, H, W), radius, prec).reshape(n, 3, L, H, W)
    mean_b = box_mean(b, radius, prec)
    return mean_a, mean_b


def _argmax_first(q: torch.Tensor) -> torch.Tensor:
    """Argmax over dim 0 with ties to the lowest index (a running comparison: fast for few labels)."""
    best, idx = q[0], torch.zeros(q.shape[1:], dtype=torch.long, device=q.device)
    for l in range(1, q.shape[0]):
        better = q[l] > best
        best = torch.where(better, q[l], best)
        idx = torch.where(better, torch.full_like(idx, l), idx)
    return idx


class GuidedFilterUpsampler(Upsampler):
    """Edge-aware upsampling of the coarse labels guided by the frame (no backbone needed).

    ``radius``: window radius in full-resolution pixels (None: one coarse cell);
    ``eps``: regularisation on the 0..1 colour scale (smaller = follows colour
    edges more closely); ``subsample``: work at 1/subsample resolution (None:
    about radius/4); ``softness``: Gaussian σ in coarse cells applied to the
    one-hot before upsampling (0 = off); ``box_precision``: the box sums' precision, ``auto`` = float64
    cumulative sums on the CPU, float32 direct window sums on a GPU (same labels up to near-ties, see
    ``tests/test_upsampler_contract.py``).
    """

    name = "guided_filter"

    def __init__(self, radius: Optional[int] = None, eps: float = 1e-4, subsample: Optional[int] = None,
                 softness: float = 0.0, box_precision: str = "auto"):
        if radius is not None and int(radius) < 1:
            raise InputError(f"Guided filter radius {radius} must be at least 1.", "Use None (one coarse cell) or >= 1.")
        if not eps > 0:
            raise InputError(f"Guided filter eps {eps} must be positive.", "Use e.g. 1e-3.")
        if subsample is not None and int(subsample) < 1:
            raise InputError(f"subsample {subsample} must be at least 1.", "Use None (automatic) or >= 1.")
        if softness < 0:
            raise InputError(f"softness {softness} must be >= 0.", "Use 0 (off) or a few tenths of a cell.")
        if box_precision not in BOX_PRECISIONS:
            raise InputError(f"box_precision {box_precision!r} is not one of {BOX_PRECISIONS}.", "Use 'auto'.")
        self.radius, self.eps, self.subsample, self.softness = radius, float(eps), subsample, float(softness)
        self.box_precision = box_precision

    def parameters_for(self, frame_hw, coarse_hw):
        cell = max(frame_hw[0] / coarse_hw[0], frame_hw[1] / coarse_hw[1])
        r = int(self.radius) if self.radius is not None else max(1, int(round(cell)))
        subsample = int(self.subsample) if self.subsample is not None else max(1, r // 4)
        return r, subsample

    def _soft_onehot(self, coarse_t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        p = (coarse_t.unsqueeze(0) == ids.view(-1, 1, 1)).float().unsqueeze(0)  # [1,L,h,w]
        if self.softness > 0:
            from ..modulation.difference import gaussian_blur

            k = 2 * int(max(1, round(3 * self.softness))) + 1
            p = gaussian_blur(p, k, self.softness)
        return p

    @torch.no_grad()
    def upsample(self, frames, coarse, label_ids=None, context: Optional[UpsampleContext] = None) -> torch.Tensor:
        coarse, ids = check_upsample_inputs(frames, coarse, label_ids)
        T, H, W = frames.shape[:3]
        dev = frames.device
        ids_d = ids.to(dev)
        if ids.numel() == 1:
            return torch.full((T, H, W), int(ids[0]), dtype=torch.long, device=dev)
        r, subsample = self.parameters_for((H, W), coarse.shape[1:])
        hs, ws = max(1, round(H / subsample)), max(1, round(W / subsample))
        rs = max(1, round(r / subsample))
        out = torch.empty((T, H, W), dtype=torch.long, device=dev)
        for t in range(T):
            if context is not None and context.cancel is not None and context.cancel():
                from ..modulation import ModulationCancelled

                raise ModulationCancelled("Upsampling was cancelled.", "Run again when ready.")
            guide = frames[t].to(torch.float32).permute(2, 0, 1).unsqueeze(0)  # [1,3,H,W] (a new tensor)
            guide_lo = F.interpolate(guide, (hs, ws), mode="bilinear", align_corners=False, antialias=subsample > 1)
            p_lo = F.interpolate(self._soft_onehot(coarse[t].to(dev), ids_d), (hs, ws), mode="bilinear",
                                 align_corners=False)
            mean_a, mean_b = guided_filter_color(guide_lo, p_lo, rs, self.eps, self.box_precision)
            L = p_lo.shape[1]
            if (hs, ws) != (H, W):
                mean_a = F.interpolate(mean_a.reshape(1, 3 * L, hs, ws), (H, W), mode="bilinear",
                                       align_corners=False).reshape(1, 3, L, H, W)
                mean_b = F.interpolate(mean_b, (H, W), mode="bilinear", align_corners=False)
            q = (mean_a * guide.unsqueeze(2)).sum(1) + mean_b  # [1,L,H,W]
            out[t] = ids_d[_argmax_first(q[0])]
            if context is not None and context.progress is not None:
                context.progress(t + 1, T)
        return out
