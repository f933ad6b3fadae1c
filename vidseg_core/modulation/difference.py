"""Difference maps -> label map (paper §3.2 and §4.3; docs/design/authors_code.md#masked-modulation-as-published, #difference-maps-to-labels-as-published).

For each label ``l`` the two modulated decodes ``I⁺_l`` and ``I⁻_l`` become one
difference map per frame, and the label map is the per-pixel argmax:

1. both decodes are resized to the ORIGINAL frame size with bilinear
   interpolation (``cv2.resize`` ``INTER_LINEAR``: half-pixel centres, no
   antialiasing — :func:`resize_bilinear`);
2. ``D = ‖I⁺ − I⁻‖₂`` over RGB, in float on the 0..255 scale
   (:func:`rgb_distance`).  ``compat="wrap"`` reproduces the authors' uint8
   arithmetic instead (docs/design/authors_code.md#difference-maps-to-labels-as-published, bug #1): ``sqrt(Σ_c ((a_c − b_c)² mod 256))``;
3. Gaussian blur 5×5, σ = 3, border ``BORDER_REFLECT_101``, the torch twin of
   ``cv2.GaussianBlur(d, (5, 5), 3)`` (:func:`gaussian_blur`);
4. optional JPEG round trip (``compat="wrap+jpeg"``, bug #2, needs Pillow);
5. ``D ← D / (max D + 1e-5)`` per label and frame;
6. ``D ← D·M + s·D·(1 − M)`` with ``M`` the label's coarse mask upsampled to
   the frame with Pillow's 8-bit LANCZOS (:func:`~.masks.lanczos_upsample_mask`), s = 0.7;
   s = 1 skips the step, as the authors' unfiltered output does (in float the
   identity ``D·M + D·(1 − M)`` moves values by a rounding step and breaks ties);
7. argmax over labels, ties to the lowest label (:class:`LabelArgmax`, a running
   argmax so memory does not grow with the number of labels).

Precision: float32, except with ``compat`` set, where every step runs in the
authors' float64 (numpy's square root of the widened sum, ``cv2.GaussianBlur``
on float64 itself, the normalisation, the filter with the mask as ``k / 255.0``
and the argmax), so exact ties -- frequent in the wrapped, JPEG-quantised maps --
and the truncation to 8 bits before the JPEG fall as theirs do
(:func:`map_dtype`).

Everything here is pure torch (CPU or GPU) except the compat branches.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

COMPAT_MODES = ("none", "wrap", "wrap+jpeg")


def map_dtype(compat: str = "none") -> torch.dtype:
    """The dtype of difference maps, filter and argmax: float32, or the authors' float64 with ``compat`` set."""
    return torch.float32 if compat == "none" else torch.float64


# ------------------------------------------------------------------ resizing
def resize_bilinear(images: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``[..., H, W]`` float -> ``[..., h, w]`` like ``cv2.resize(..., INTER_LINEAR)`` on float input.

    cv2 and torch both map output pixel ``x`` to ``(x + 0.5)·scale − 0.5`` and
    clamp at the borders, without antialiasing when shrinking.
    """
    h, w = int(size[0]), int(size[1])
    if tuple(images.shape[-2:]) == (h, w):
        return images
    lead = images.shape[:-2]
    flat = images.reshape(-1, 1, *images.shape[-2:])
    out = F.interpolate(flat, size=(h, w), mode="bilinear", align_corners=False, antialias=False)
    return out.reshape(*lead, h, w)


def to_uint8_like_authors(images01: torch.Tensor) -> torch.Tensor:
    """``clamp(x, 0, 1)·255`` then ``astype(uint8)`` (truncation), as the authors save decodes (docs/design/authors_code.md#masked-modulation-as-published)."""
    return (images01.float().clamp(0, 1) * 255.0).to(torch.uint8)


def resize_uint8_cv2(images_u8: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """``[N,3,h,w]`` uint8 -> ``[N,3,H,W]`` uint8 with ``cv2.resize`` bilinear (compat mode only)."""
    import cv2
    import numpy as np

    h, w = int(size[0]), int(size[1])
    arr = images_u8.permute(0, 2, 3, 1).cpu().numpy()
    if arr.shape[1:3] == (h, w):
        out = arr
    else:
        out = np.stack([cv2.resize(np.ascontiguousarray(a), (w, h), interpolation=cv2.INTER_LINEAR) for a in arr])
    return torch.from_numpy(out).permute(0, 3, 1, 2).to(images_u8.device)


# ------------------------------------------------------------------ distances
def rgb_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pixel L2 distance over channel dim -3 in float32 (``[...,3,H,W]`` -> ``[...,H,W]``)."""
    d = a.float() - b.float()
    return d.square().sum(-3).sqrt()


def rgb_distance_wrapped(a_u8: torch.Tensor, b_u8: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """The authors' uint8 arithmetic (docs/design/authors_code.md#difference-maps-to-labels-as-published, bug #1).

    ``I⁺ − I⁻`` and its square wrap modulo 256 before the (widened) channel sum:
    ``sqrt(Σ_c ((a_c − b_c)² mod 256))``.  E.g. a = (10, 200, 0), b = (12, 100, 0)
    gives sqrt(4 + 16) = 4.47 instead of 100.02.  ((−d)² ≡ d² mod 256, so the
    wrap of the subtraction itself does not change the result.)  ``dtype=torch.float64`` is the authors'
    precision (numpy's square root of the integer sum).
    """
    d = a_u8.to(torch.int64) - b_u8.to(torch.int64)
    return torch.remainder(d * d, 256).sum(-3).to(dtype).sqrt()


# ------------------------------------------------------------------ blur
def gaussian_kernel1d(ksize: int, sigma: float, dtype=torch.float64) -> torch.Tensor:
    """``cv2.getGaussianKernel(ksize, sigma)`` for ``sigma > 0``: normalised ``exp(−(i − c)²/(2σ²))``."""
    if ksize < 1 or ksize % 2 == 0:
        raise ValueError(f"Gaussian kernel size must be odd and positive, got {ksize}")
    if sigma <= 0:  # cv2's rule for a non-positive sigma
        sigma = 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8
    c = (ksize - 1) / 2.0
    x = torch.arange(ksize, dtype=torch.float64) - c
    k = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return (k / k.sum()).to(dtype)


def reflect101_indices(n: int, pad: int, device=None) -> torch.Tensor:
    """Source indices of a ``BORDER_REFLECT_101`` padding (cv2 ``borderInterpolate``), any pad size."""
    idx = torch.arange(-pad, n + pad, device=device)
    if n == 1:
        return torch.zeros_like(idx)
    period = 2 * n - 2
    idx = torch.remainder(idx, period)
    return torch.where(idx >= n, period - idx, idx)


def gaussian_blur(maps: torch.Tensor, ksize: int = 5, sigma: float = 3.0) -> torch.Tensor:
    """``[..., H, W]`` float -> blurred, matching ``cv2.GaussianBlur(m, (k, k), σ)`` (BORDER_REFLECT_101).

    Separable: rows then columns, as cv2's separable filter engine.
    """
    if ksize is None or ksize <= 1:
        return maps
    pad = ksize // 2
    k = gaussian_kernel1d(ksize, sigma).to(maps.device, torch.float32)
    lead = maps.shape[:-2]
    H, W = maps.shape[-2:]
    x = maps.reshape(-1, 1, H, W).float()
    x = x.index_select(-1, reflect101_indices(W, pad, maps.device))
    x = F.conv2d(x, k.view(1, 1, 1, ksize))
    x = x.index_select(-2, reflect101_indices(H, pad, maps.device))
    x = F.conv2d(x, k.view(1, 1, ksize, 1))
    return x.reshape(*lead, H, W)


def gaussian_blur_cv2(maps: torch.Tensor, ksize: int = 5, sigma: float = 3.0) -> torch.Tensor:
    """``cv2.GaussianBlur(m, (k, k), σ)`` itself on each float64 map ``[..., H, W]`` (compat modes: the authors'
    blur, bit for bit; float32 rounding there can truncate a level lower before the JPEG)."""
    import cv2
    import numpy as np

    if ksize is None or ksize <= 1:
        return maps
    arr = maps.detach().reshape(-1, *maps.shape[-2:]).cpu().to(torch.float64).numpy()
    out = np.stack([cv2.GaussianBlur(m, (int(ksize), int(ksize)), float(sigma)) for m in arr])
    return torch.from_numpy(out).reshape(maps.shape).to(maps.device)


def jpeg_round_trip(maps: torch.Tensor) -> torch.Tensor:
    """The authors' ``Image.fromarray(d).convert("L")`` + JPEG save / reload (docs/design/authors_code.md#difference-maps-to-labels-as-published, bug #2)."""
    import io

    import numpy as np
    from PIL import Image

    out = []
    for m in maps.reshape(-1, *maps.shape[-2:]).detach().cpu().to(torch.float64).numpy():
        buf = io.BytesIO()
        Image.fromarray(m).convert("L").save(buf, format="JPEG")
        buf.seek(0)
        out.append(np.asarray(Image.open(buf).convert("L"), dtype=np.float32))
    return torch.from_numpy(np.stack(out)).reshape(maps.shape).to(maps.device, maps.dtype)


# ------------------------------------------------------------------ one label
def difference_map(plus01: torch.Tensor, minus01: torch.Tensor, frame_size: Tuple[int, int],
                   blur_kernel: int = 5, blur_sigma: float = 3.0, compat: str = "none") -> torch.Tensor:
    """Steps 1-5: decodes ``[T,3,h,w]`` in 0..1 -> normalised difference maps ``[T,H,W]`` (:func:`map_dtype`;
    on the decodes' device, or on the CPU with ``compat`` set)."""
    if compat not in COMPAT_MODES:
        raise ValueError(f"unknown compat mode {compat!r}; use one of {COMPAT_MODES}")
    if compat == "none":
        a = resize_bilinear(plus01.float() * 255.0, frame_size)
        b = resize_bilinear(minus01.float() * 255.0, frame_size)
        d = gaussian_blur(rgb_distance(a, b), blur_kernel, blur_sigma)
    else:  # the authors' float64 all the way, on the CPU
        a = resize_uint8_cv2(to_uint8_like_authors(plus01).cpu(), frame_size)
        b = resize_uint8_cv2(to_uint8_like_authors(minus01).cpu(), frame_size)
        d = gaussian_blur_cv2(rgb_distance_wrapped(a, b, torch.float64), blur_kernel, blur_sigma)
    if compat == "wrap+jpeg":
        d = jpeg_round_trip(d)
    return normalise_maps(d)


def normalise_maps(d: torch.Tensor) -> torch.Tensor:
    """``d / (max(d) + 1e-5)`` per map (over the last two dims)."""
    return d / (d.amax(dim=(-2, -1), keepdim=True) + 1e-5)


def filter_maps(d: torch.Tensor, soft_mask: torch.Tensor, filter_s: float) -> torch.Tensor:
    """``d·M + s·d·(1 − M)``: down-weight responses outside the label's coarse mask (docs/design/authors_code.md#difference-maps-to-labels-as-published).

    ``s = 1`` returns ``d`` itself: the authors skip the filter for their unfiltered output, and the float
    identity would move values by a rounding step (breaking exact ties).  With compat set, pass the mask
    in float64 (``lanczos_upsample_mask(..., dtype=torch.float64)``, the authors' ``k / 255.0``).
    """
    if float(filter_s) == 1.0:
        return d
    m = soft_mask.to(d.device, d.dtype)
    return d * m + filter_s * d * (1 - m)


# ------------------------------------------------------------------ argmax
class LabelArgmax:
    """Running argmax over labels fed in ascending order; ties go to the lowest label (strict ``>``).

    Holds one ``[T,H,W]`` score and one index map, whatever the number of labels.
    ``keep_maps=True`` also keeps every (filtered) map for inspection.  A NaN score never wins a strict ``>``,
    so it would be skipped silently: :attr:`nan_labels` marks the labels that had one, on the device (no host
    read per label); :meth:`labels_with_nan` reads it once.
    """

    def __init__(self, shape: Sequence[int], device=None, keep_maps: bool = False, dtype=torch.float32):
        self.best = torch.full(tuple(shape), -math.inf, dtype=dtype, device=device)
        self.index = torch.zeros(tuple(shape), dtype=torch.long, device=device)
        self.count = 0
        self.nan_labels: List[torch.Tensor] = []  # per label fed: 0-d bool on the device
        self.maps: Optional[List[torch.Tensor]] = [] if keep_maps else None

    def update(self, position: int, scores: torch.Tensor) -> None:
        """Fold in the scores of label number ``position`` (must be fed 0, 1, 2, ... in order)."""
        if position != self.count:
            raise RuntimeError(f"labels must be folded in order: expected {self.count}, got {position}")
        local_scores = scores.to(self.best.device, self.best.dtype)
        self.nan_labels.append(torch.isnan(local_scores).any())
        better = local_scores > self.best
        self.best = torch.where(better, local_scores, self.best)
        self.index = torch.where(better, torch.full_like(self.index, position), self.index)
        self.count += 1
        if self.maps is not None:
            self.maps.append(local_scores.detach().cpu())

    def labels(self, label_ids: torch.Tensor) -> torch.Tensor:
        return label_ids.to(self.index.device)[self.index]

    def labels_with_nan(self) -> List[int]:
        """Positions of the labels whose scores had a NaN (one host read)."""
        if not self.nan_labels or self.best.device.type == "meta":
            return []
        return torch.stack(self.nan_labels).nonzero().flatten().tolist()


def labels_from_difference_maps(maps: torch.Tensor, coarse: torch.Tensor, label_ids, frame_size,
                                filter_s: float = 0.7, absent_labels: str = "keep",
                                compat: str = "none") -> torch.Tensor:
    """Re-derive a label map from returned normalised maps ``[L,T,H,W]`` with another filter ``s``.

    E.g. the authors' unfiltered variant is ``filter_s=1.0`` (docs/design/authors_code.md#difference-maps-to-labels-as-published, #the-equivalent-design-the-pack-implements).  ``compat``: the mode
    the maps were made in (compat modes filter and compare in float64, :func:`map_dtype`).
    """
    from .masks import coarse_present, label_masks, lanczos_upsample_mask

    if compat not in COMPAT_MODES:
        raise ValueError(f"unknown compat mode {compat!r}; use one of {COMPAT_MODES}")
    dtype = map_dtype(compat)
    ids = torch.as_tensor(label_ids).long().cpu()
    masks = label_masks(coarse.long().cpu(), ids)
    present = coarse_present(coarse.long().cpu(), ids)
    acc = LabelArgmax(maps.shape[1:], dtype=dtype)
    for l in range(maps.shape[0]):
        scores = filter_maps(maps[l].to(dtype), lanczos_upsample_mask(masks[l], frame_size, dtype), filter_s)
        if absent_labels == "skip":
            scores = torch.where((~present[l]).view(-1, 1, 1), torch.full_like(scores, -math.inf), scores)
        acc.update(l, scores)
    return acc.labels(ids)
