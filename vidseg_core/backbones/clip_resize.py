"""The authors' resize of the SVD CLIP conditioning frame: Gaussian pre-blur when shrinking, then bicubic.

The authors' ``FrozenOpenCLIPImageEmbedder.preprocess`` (docs/design/authors_code.md#effective-settings,
"SVD conditioning") squashes the whole frame, no crop, to 224x224 with
``kornia.geometry.resize(x, (224, 224), interpolation="bicubic",
align_corners=True, antialias=True)`` (kornia 0.7.2).  That resize is
re-expressed here from its definition, per axis with ``f = in / out``:

* **Pre-blur**, only when some axis shrinks (``max f > 1``): a separable
  Gaussian with ``σ = max((f − 1) / 2, 0.001)`` per axis, sampled at integer
  offsets from the centre of a window of ``k = int(max(4σ, 3))`` taps (made odd
  by adding 1), normalised to sum 1, with a *reflect* border (mirror about the
  edge sample, which is not repeated).  On an axis that does not shrink
  ``σ = 0.001`` and the 3-tap window is exactly ``(0, 1, 0)``
  (``exp(−1/(2·0.001²))`` underflows to 0), so that axis is left as it is.
* **Bicubic** convolution (Keys, ``a = −0.75``) with ``align_corners=True``:
  output ``i`` samples source coordinate ``i·(in − 1)/(out − 1)`` from its four
  nearest samples, indices clamped to the border.  The coordinate is rounded in
  the working dtype, as torch's bicubic kernel (which kornia calls) rounds it.
* Nothing happens when the size already matches.

Both stages are linear and act on one axis each, so each axis is one
``out × in`` matrix (built in float64) and the resize is ``M_h · X · M_wᵀ``.
torch's own ``interpolate(..., antialias=True)`` widens the cubic kernel instead
(PIL style, ``a = −0.5``), which on real 448x832 frames differs from this by a
mean 0.08-0.16 and a max 0.7-1.3 in CLIP-normalised units.
"""
from __future__ import annotations

from typing import Tuple

import torch

#: Keys' cubic convolution parameter used by torch's bicubic (and so by kornia)
CUBIC_A = -0.75


def gaussian_sigma(n_in: int, n_out: int) -> float:
    """σ of the pre-blur along one axis: ``max((f − 1) / 2, 0.001)`` with ``f = n_in / n_out``."""
    return max((n_in / n_out - 1.0) / 2.0, 0.001)


def gaussian_window(sigma: float) -> int:
    """Taps of the pre-blur window: ``int(max(4σ, 3))``, plus one if even."""
    k = int(max(4.0 * sigma, 3.0))
    return k + 1 if k % 2 == 0 else k


def _reflect(idx: torch.Tensor, n: int) -> torch.Tensor:
    """Indices mirrored into ``0..n-1`` about the edge samples (``-1 -> 1``, ``n -> n-2``)."""
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * (n - 1)
    idx = idx.remainder(period)
    return torch.where(idx > n - 1, period - idx, idx)


def blur_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """``[n_in, n_in]`` float64 Gaussian pre-blur along one axis (identity when the axis does not shrink)."""
    if n_in <= n_out:
        return torch.eye(n_in, dtype=torch.float64)
    sigma = gaussian_sigma(n_in, n_out)
    k = gaussian_window(sigma)
    offsets = torch.arange(k, dtype=torch.float64) - k // 2
    taps = torch.exp(-offsets ** 2 / (2.0 * sigma ** 2))
    taps = taps / taps.sum()
    rows = torch.arange(n_in)[:, None].expand(n_in, k)
    cols = _reflect(rows + offsets.long()[None, :], n_in)
    return torch.zeros(n_in, n_in, dtype=torch.float64).index_put_((rows, cols), taps.expand(n_in, k), accumulate=True)


def _cubic(d: torch.Tensor) -> torch.Tensor:
    """Keys' cubic convolution kernel at distances ``d`` (``a = CUBIC_A``)."""
    a = CUBIC_A
    d = d.abs()
    near = ((a + 2.0) * d - (a + 3.0)) * d * d + 1.0
    far = ((a * d - 5.0 * a) * d + 8.0 * a) * d - 4.0 * a
    return torch.where(d <= 1.0, near, torch.where(d < 2.0, far, torch.zeros_like(d)))


def bicubic_matrix(n_in: int, n_out: int, coord_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``[n_out, n_in]`` float64 bicubic resampling along one axis, ``align_corners=True``, border-clamped.

    ``coord_dtype``: the dtype in which the source coordinates are rounded
    (torch rounds them in the image's compute dtype: float32 for float32 images).
    """
    scale = torch.tensor(float(n_in - 1), dtype=coord_dtype) / (n_out - 1) if n_out > 1 else torch.tensor(0.0)
    src = (torch.arange(n_out, dtype=coord_dtype) * scale.to(coord_dtype)).double()
    base = src.floor()
    taps = base[:, None] + torch.arange(-1, 3, dtype=torch.float64)[None, :]  # the 4 nearest samples
    weights = _cubic(src[:, None] - taps)
    cols = taps.long().clamp(0, n_in - 1)
    rows = torch.arange(n_out)[:, None].expand_as(cols)
    return torch.zeros(n_out, n_in, dtype=torch.float64).index_put_((rows, cols), weights, accumulate=True)


def resize_matrix(n_in: int, n_out: int, coord_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``[n_out, n_in]`` float64: the whole resize along one axis (pre-blur, then bicubic)."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"axis sizes must be positive; got {n_in} -> {n_out}")
    return bicubic_matrix(n_in, n_out, coord_dtype) @ blur_matrix(n_in, n_out)


def resize_antialiased_bicubic(image: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``[..., H, W]`` -> ``[..., h, w]`` as kornia 0.7.2's antialiased bicubic ``resize`` (align_corners=True).

    Computed in the image's dtype when it is float32 or float64, otherwise in float32.
    """
    h, w = (int(side) for side in size)
    if tuple(image.shape[-2:]) == (h, w):
        return image
    dtype = image.dtype if image.dtype in (torch.float32, torch.float64) else torch.float32
    x = image.to(dtype)
    m_h = resize_matrix(image.shape[-2], h, dtype).to(dtype).to(x.device)  # cast first: MPS has no float64
    m_w = resize_matrix(image.shape[-1], w, dtype).to(dtype).to(x.device)
    return m_h @ x @ m_w.transpose(0, 1)


__all__ = ["CUBIC_A", "bicubic_matrix", "blur_matrix", "gaussian_sigma", "gaussian_window",
           "resize_antialiased_bicubic", "resize_matrix"]
