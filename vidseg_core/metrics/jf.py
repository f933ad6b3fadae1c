"""DAVIS per-frame measures: region similarity J and boundary measure F (docs/design/metrics.md#davis-j-and-f).

Per frame and object:

* ``J = |(S & G) \\ void| / |(S | G) \\ void|``, and 1 when the union is empty;
* ``F`` = F-measure of boundary precision and recall.  Boundaries are 1-px maps
  (each pixel that differs from its right, lower or lower-right neighbour,
  i.e. shifted half a pixel toward the origin, with the official last-row /
  last-column rules), void pixels are cleared from both masks first, and a
  boundary pixel matches when the other boundary lies within a disk of radius
  ``bound_pix = ceil(bound_th * ||(H, W)||)`` (``bound_th >= 1`` is taken as
  pixels directly).  Special cases: no predicted boundary -> P=1, R=0; no GT
  boundary -> P=0, R=1; neither -> F = 1; P + R = 0 -> F = 0.

Every mask is reduced to its bounding box (+ the tolerance margin) before the boundary and dilation work
(:class:`_Edge`); the statistics and protocols over these measures are in :mod:`.davis`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from .labels import as_label_array, check_same_shape

BOUND_TH = 0.008


# ---------------------------------------------------------------- boundaries
def boundary_map(mask) -> np.ndarray:
    """1-px boundary of a binary mask ``[H, W]`` (official ``seg2bmap`` semantics).

    A pixel is on the boundary when it differs from its right (east), lower
    (south) or lower-right (south-east) neighbour, outside pixels counting as
    background; the last row compares with the east neighbour only, the last
    column with the south neighbour only, and the bottom-right pixel is never
    a boundary.
    """
    seg = np.asarray(mask).astype(bool)
    if seg.ndim != 2:
        raise InputError(f"boundary_map expects one [H, W] mask, got shape {seg.shape}.", "Pass a single frame.")
    east = np.zeros_like(seg)
    south = np.zeros_like(seg)
    south_east = np.zeros_like(seg)
    east[:, :-1] = seg[:, 1:]
    south[:-1, :] = seg[1:, :]
    south_east[:-1, :-1] = seg[1:, 1:]
    b = (seg ^ east) | (seg ^ south) | (seg ^ south_east)
    b[-1, :] = seg[-1, :] ^ east[-1, :]
    b[:, -1] = seg[:, -1] ^ south[:, -1]
    b[-1, -1] = False
    return b


def boundary_tolerance(shape: Sequence[int], bound_th: float = BOUND_TH) -> int:
    """Dilation radius in pixels: ``bound_th`` if >= 1, else ``ceil(bound_th * ||(H, W)||_2)``."""
    if not bound_th > 0:
        raise InputError(f"bound_th must be positive, got {bound_th!r}.", "Use the DAVIS default 0.008.")
    if bound_th >= 1:
        return int(bound_th)
    h, w = shape[-2], shape[-1]
    return int(math.ceil(bound_th * math.hypot(h, w)))


def disk(radius: int) -> np.ndarray:
    """Disk structuring element: offsets with ``dx^2 + dy^2 <= radius^2`` (uint8)."""
    r = int(radius)
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    return ((x * x + y * y) <= r * r).astype(np.uint8)


def dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by :func:`disk` (cv2 when available, else scipy.ndimage); outside = background."""
    mask = np.asarray(mask, dtype=bool)
    if radius <= 0 or not mask.any():
        return mask.copy()
    kernel = disk(radius)
    try:
        import cv2  # lazy: optional fast path
    except ImportError:  # pragma: no cover - exercised via _dilate_scipy in the tests
        return _dilate_scipy(mask, kernel)
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def _dilate_scipy(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    from scipy import ndimage  # lazy

    return ndimage.binary_dilation(mask, structure=kernel.astype(bool), border_value=0)


@dataclass
class _Edge:
    """Boundary of one mask in one frame, restricted to a crop that holds all of its dilation."""

    rows: slice
    cols: slice
    boundary: np.ndarray  # bool, crop-sized
    dilated: np.ndarray   # bool, crop-sized
    count: int


def _edge(labels: np.ndarray, value, bbox: Optional[Tuple[slice, slice]], radius: int) -> Optional[_Edge]:
    """Boundary + dilation of the mask ``labels == value``, whose pixels all lie in ``bbox``.

    The work is done on ``bbox`` grown by ``radius + 1`` pixels (clipped to the
    image): the boundary reaches one pixel above/left of the mask, its
    dilation ``radius`` more, and the official last-row / last-column rules
    give the same result on a crop whose last row / column is background.  So
    the crop holds the complete boundary and dilation, exactly.
    """
    if bbox is None:
        return None
    h, w = labels.shape
    m = radius + 1
    rows = slice(max(bbox[0].start - m, 0), min(bbox[0].stop + m, h))
    cols = slice(max(bbox[1].start - m, 0), min(bbox[1].stop + m, w))
    crop = labels[rows, cols] == value
    if not crop.any():
        return None
    b = boundary_map(crop)
    n = int(b.sum())
    if n == 0:
        return None
    return _Edge(rows, cols, b, dilate(b, radius), n)


def _overlap(a: _Edge, b: _Edge):
    r0, r1 = max(a.rows.start, b.rows.start), min(a.rows.stop, b.rows.stop)
    c0, c1 = max(a.cols.start, b.cols.start), min(a.cols.stop, b.cols.stop)
    if r0 >= r1 or c0 >= c1:
        return None

    def view(e: _Edge, arr):
        return arr[r0 - e.rows.start:r1 - e.rows.start, c0 - e.cols.start:c1 - e.cols.start]

    return view, (r0, r1, c0, c1)


def _f_from_edges(pe: Optional[_Edge], ge: Optional[_Edge]) -> float:
    """F-measure of one (prediction, GT) pair from their cropped boundaries."""
    n_fg = pe.count if pe else 0
    n_gt = ge.count if ge else 0
    if n_fg == 0 and n_gt == 0:
        return 1.0
    if n_fg == 0:
        precision, recall = 1.0, 0.0
    elif n_gt == 0:
        precision, recall = 0.0, 1.0
    else:
        ov = _overlap(pe, ge)
        if ov is None:
            fg_match = gt_match = 0
        else:
            view, _ = ov
            fg_match = int((view(pe, pe.boundary) & view(ge, ge.dilated)).sum())
            gt_match = int((view(ge, ge.boundary) & view(pe, pe.dilated)).sum())
        precision, recall = fg_match / n_fg, gt_match / n_gt
    if precision + recall == 0:
        return 0.0
    return 2.0 * precision * recall / (precision + recall)


def _bbox(mask: np.ndarray) -> Optional[Tuple[slice, slice]]:
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def _as_masks(x, name: str) -> np.ndarray:
    arr = as_label_array(x, name)
    return arr[None] if arr.ndim == 2 else arr


def region_similarity(pred_mask, gt_mask, void=None) -> np.ndarray:
    """Per-frame J of binary masks ``[H, W]`` or ``[T, H, W]`` (1 when the union is empty)."""
    p = _as_masks(pred_mask, "prediction mask") != 0
    g = _as_masks(gt_mask, "ground-truth mask") != 0
    check_same_shape(p, g)
    keep = np.ones_like(g) if void is None else ~(_as_masks(void, "void mask") != 0)
    check_same_shape(keep, g, "void mask and ground truth")
    inter = ((p & g) & keep).sum(axis=(-2, -1)).astype(np.float64)
    union = ((p | g) & keep).sum(axis=(-2, -1)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        j = inter / union
    j[union == 0] = 1.0
    return j


def boundary_measure(pred_mask, gt_mask, void=None, bound_th: float = BOUND_TH) -> np.ndarray:
    """Per-frame boundary F-measure of binary masks ``[H, W]`` or ``[T, H, W]``."""
    p = _as_masks(pred_mask, "prediction mask") != 0
    g = _as_masks(gt_mask, "ground-truth mask") != 0
    check_same_shape(p, g)
    if void is not None:
        v = _as_masks(void, "void mask") != 0
        check_same_shape(v, g, "void mask and ground truth")
        p, g = p & ~v, g & ~v
    radius = boundary_tolerance(g.shape, bound_th)
    out = np.empty(g.shape[0])
    for t in range(g.shape[0]):
        out[t] = _f_from_edges(_edge(p[t], True, _bbox(p[t]), radius), _edge(g[t], True, _bbox(g[t]), radius))
    return out
