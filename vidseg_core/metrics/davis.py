"""DAVIS region similarity J, boundary measure F and their protocols (peers notes §1.5-1.6).

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

Per object statistics over its N frames: ``M = nanmean(x)``, ``R = nanmean(x > 0.5)``,
``D = nanmean(bin_0) - nanmean(bin_3)`` with the four official decay bins that
share their edge frames (:func:`decay_bins`).

Protocols (label maps in, objects split as ``label == k``; GT 255 = void):

* ``semi`` (semi-supervised): objects ``1..max(first GT frame)``; first and last
  frames are not scored; void counts as background; predictions may not hold
  more ids than there are GT objects (missing ids score as empty masks);
* ``unsupervised``: all frames scored with the void mask; up to
  ``max_proposals`` (20) predicted ids; each GT object gets the proposal of a
  one-to-one assignment (``scipy.optimize.linear_sum_assignment``) maximising
  ``(mean_t J + mean_t F) / 2``.

``J&F-Mean = (mean over objects of J-M + mean over objects of F-M) / 2``,
weighted by object, not by sequence.

Speed: every mask is reduced to its bounding box (+ the tolerance margin)
before the boundary and dilation work, and J for all (proposal, object) pairs
comes from one joint histogram per frame: the unsupervised matching of 20
proposals over 50 frames at 854x480 takes ~0.25 s on a CPU core, ~9x less than
whole-frame boundaries and dilations (``benchmarks/bench_metrics.py``).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from .labels import as_label_array, check_same_shape

PROTOCOLS = ("semi", "unsupervised")
BOUND_TH = 0.008
MAX_PROPOSALS = 20
VOID = 255


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


# ---------------------------------------------------------------- statistics
def decay_bins(n: int) -> List[Tuple[int, int]]:
    """The four decay bins ``[start, stop)`` over ``n`` frames; adjacent bins share their edge frame."""
    ids = (np.round(np.linspace(1, n, 5) + 1e-10) - 1).astype(np.int64)
    return [(int(ids[i]), int(ids[i + 1]) + 1) for i in range(4)]


def _nanmean(x) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else float("nan")


def davis_statistics(per_frame) -> Tuple[float, float, float]:
    """(M, R, D) of one object's per-frame values: mean, recall at 0.5, decay over 4 bins."""
    x = np.asarray(per_frame, dtype=np.float64).ravel()
    if x.size == 0:
        raise InputError("No frames to compute DAVIS statistics over.", "Score at least one frame.")
    mean = _nanmean(x)
    recall = float(np.mean(x > 0.5))  # NaN frames count as misses, as in the official code
    bins = decay_bins(x.size)
    decay = _nanmean(x[bins[0][0]:bins[0][1]]) - _nanmean(x[bins[3][0]:bins[3][1]])
    return mean, recall, decay


# ---------------------------------------------------------------- protocols
@dataclass
class ObjectScore:
    """Scores of one GT object of one sequence."""

    sequence: str
    object_id: int
    proposal_id: int
    J_mean: float
    J_recall: float
    J_decay: float
    F_mean: float
    F_recall: float
    F_decay: float
    J: List[float] = field(default_factory=list)
    F: List[float] = field(default_factory=list)

    def to_dict(self, per_frame: bool = False) -> dict:
        d = asdict(self)
        if not per_frame:
            d.pop("J")
            d.pop("F")
        return d


@dataclass
class DavisResult:
    """Global DAVIS figures (object-weighted means) plus the per-object scores."""

    protocol: str
    jf_mean: float
    J_mean: float
    J_recall: float
    J_decay: float
    F_mean: float
    F_recall: float
    F_decay: float
    objects: List[ObjectScore]
    bound_th: float = BOUND_TH
    frames_scored: int = 0

    def to_dict(self, per_frame: bool = False) -> dict:
        d = {"protocol": self.protocol, "J&F-Mean": self.jf_mean}
        d.update((k, v) for k, v in asdict(self).items() if k not in ("objects", "protocol", "jf_mean"))
        d["objects"] = [o.to_dict(per_frame) for o in self.objects]
        return d


def _pair_scores(pred: np.ndarray, gt: np.ndarray, void: Optional[np.ndarray], n_prop: int, n_obj: int,
                 bound_th: float, diagonal_only: bool):
    """J and F for every (proposal k, object o) pair and frame: arrays ``[K, O, T]``.

    ``pred`` holds ids 0..n_prop, ``gt`` ids (values > n_obj are background).
    """
    from scipy import ndimage  # lazy

    t_count = gt.shape[0]
    radius = boundary_tolerance(gt.shape, bound_th)
    J = np.zeros((n_prop, n_obj, t_count))
    F = np.zeros((n_prop, n_obj, t_count))
    for t in range(t_count):
        g = gt[t].astype(np.int64)
        g = np.where(g <= n_obj, g, 0)
        p = pred[t].astype(np.int64)
        if void is not None and void[t].any():
            keep = ~void[t]
            g = np.where(keep, g, 0)
            p = np.where(keep, p, 0)
            cnt = np.bincount(g[keep] * (n_prop + 1) + p[keep], minlength=(n_obj + 1) * (n_prop + 1))
        else:
            cnt = np.bincount((g * (n_prop + 1) + p).ravel(), minlength=(n_obj + 1) * (n_prop + 1))
        hist = cnt.reshape(n_obj + 1, n_prop + 1).astype(np.float64)
        inter = hist[1:, 1:].T                      # [K, O]
        area_p = hist[:, 1:].sum(axis=0)[:, None]   # [K, 1]
        area_g = hist[1:, :].sum(axis=1)[None, :]   # [1, O]
        union = area_p + area_g - inter
        with np.errstate(divide="ignore", invalid="ignore"):
            j = inter / union
        j[union == 0] = 1.0
        J[:, :, t] = j

        p_boxes = ndimage.find_objects(p.astype(np.int32), max_label=n_prop)
        g_boxes = ndimage.find_objects(g.astype(np.int32), max_label=n_obj)
        g_edges = [_edge(g, o + 1, g_boxes[o], radius) for o in range(n_obj)]
        for k in range(n_prop):
            if diagonal_only:
                objs = [k] if k < n_obj else []
            else:
                objs = range(n_obj)
            if not objs:
                continue
            pe = _edge(p, k + 1, p_boxes[k], radius)
            for o in objs:
                F[k, o, t] = _f_from_edges(pe, g_edges[o])
    return J, F


def _split_void(gt: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    void = gt == VOID
    return np.where(void, 0, gt), void


def _check_pair(pred, gt) -> Tuple[np.ndarray, np.ndarray]:
    pred = as_label_array(pred, "prediction", 3)
    gt = as_label_array(gt, "ground truth", 3)
    check_same_shape(pred, gt)
    if pred.size and pred.min() < 0:
        raise InputError("The prediction holds negative ids.", "Use 0 for background and 1..N for objects.")
    if gt.size and gt.min() < 0:
        raise InputError("The ground truth holds negative ids.", "Use 0 for background, 1..N for objects, 255 for void.")
    return pred, gt


def _num_objects(gt: np.ndarray) -> int:
    n_obj = int(gt[0].max()) if gt.size else 0
    if n_obj == 0:
        raise InputError("The first ground-truth frame holds no object (only background/void).",
                         "DAVIS objects are the ids 1..max of the first annotated frame; check the GT folder.")
    return n_obj


def _object_scores(seq: str, J: np.ndarray, F: np.ndarray, proposals: Sequence[int]) -> List[ObjectScore]:
    out = []
    for o in range(J.shape[0]):
        jm, jr, jd = davis_statistics(J[o])
        fm, fr, fd = davis_statistics(F[o])
        out.append(ObjectScore(seq, o + 1, int(proposals[o]), jm, jr, jd, fm, fr, fd,
                               [float(v) for v in J[o]], [float(v) for v in F[o]]))
    return out


def score_sequence(pred, gt, protocol: str = "semi", bound_th: float = BOUND_TH,
                   max_proposals: int = MAX_PROPOSALS, sequence: str = "") -> List[ObjectScore]:
    """Per-object DAVIS scores of one sequence (label maps ``[T, H, W]``, GT 255 = void)."""
    if protocol not in PROTOCOLS:
        raise InputError(f"Unknown DAVIS protocol {protocol!r}.", f"Use one of {PROTOCOLS}.")
    pred, gt = _check_pair(pred, gt)
    gt, void = _split_void(gt)
    n_obj = _num_objects(gt)
    if protocol == "semi":
        if gt.shape[0] < 3:
            raise InputError(f"The semi-supervised protocol needs at least 3 frames (first and last are not scored); got {gt.shape[0]}.",
                             "Use --protocol unsupervised for very short clips, or give the whole sequence.")
        pred, gt = pred[1:-1], gt[1:-1]
        n_pred = int(pred.max())
        if n_pred > n_obj:
            raise InputError(
                f"The prediction holds object id {n_pred} but the first GT frame has only {n_obj} object(s).",
                "Map predicted ids onto the GT object ids (1..N, 0 = background) or use the unsupervised protocol.")
        J, F = _pair_scores(pred, gt, None, n_obj, n_obj, bound_th, diagonal_only=True)
        idx = np.arange(n_obj)
        return _object_scores(sequence, J[idx, idx], F[idx, idx], idx + 1)

    n_pred = int(pred.max())
    if n_pred > max_proposals:
        raise InputError(
            f"The prediction holds id {n_pred}, above the {max_proposals} proposals the unsupervised protocol allows.",
            f"Relabel proposals to 1..{max_proposals} (0 = background) or raise max_proposals.")
    n_prop = max(n_pred, n_obj)  # fewer proposals than objects: pad with empty ones
    J, F = _pair_scores(pred, gt, void, n_prop, n_obj, bound_th, diagonal_only=False)
    from scipy.optimize import linear_sum_assignment  # lazy

    score = (J.mean(axis=2) + F.mean(axis=2)) / 2.0  # [K, O]
    rows, cols = linear_sum_assignment(-score)
    proposal_of = np.zeros(n_obj, dtype=np.int64)
    proposal_of[cols] = rows
    objs = np.arange(n_obj)
    return _object_scores(sequence, J[proposal_of, objs], F[proposal_of, objs], proposal_of + 1)


def summarize(objects: Sequence[ObjectScore], protocol: str, bound_th: float = BOUND_TH,
              frames_scored: int = 0) -> DavisResult:
    """Object-weighted global means (the DAVIS CSV columns)."""
    if not objects:
        raise InputError("No DAVIS object was scored.", "Give at least one sequence with an annotated object.")

    def m(name):
        return float(np.mean([getattr(o, name) for o in objects]))

    jm, fm = m("J_mean"), m("F_mean")
    return DavisResult(protocol, (jm + fm) / 2.0, jm, m("J_recall"), m("J_decay"), fm, m("F_recall"), m("F_decay"),
                       list(objects), bound_th, frames_scored)


class DavisEvaluator:
    """Accumulates objects over sequences: ``add_sequence(pred, gt, name)`` then ``compute()``."""

    def __init__(self, protocol: str = "semi", bound_th: float = BOUND_TH, max_proposals: int = MAX_PROPOSALS):
        if protocol not in PROTOCOLS:
            raise InputError(f"Unknown DAVIS protocol {protocol!r}.", f"Use one of {PROTOCOLS}.")
        self.protocol = protocol
        self.bound_th = bound_th
        self.max_proposals = max_proposals
        self.objects: List[ObjectScore] = []
        self.frames_scored = 0

    def add_sequence(self, pred, gt, name: str = "") -> List[ObjectScore]:
        objs = score_sequence(pred, gt, self.protocol, self.bound_th, self.max_proposals, name)
        self.objects.extend(objs)
        self.frames_scored += len(objs[0].J) if objs else 0
        return objs

    def compute(self) -> DavisResult:
        return summarize(self.objects, self.protocol, self.bound_th, self.frames_scored)


def evaluate_semi_supervised(pred, gt, bound_th: float = BOUND_TH) -> DavisResult:
    """DAVIS semi-supervised protocol on one sequence (first and last frames not scored)."""
    ev = DavisEvaluator("semi", bound_th)
    ev.add_sequence(pred, gt)
    return ev.compute()


def evaluate_unsupervised(pred, gt, bound_th: float = BOUND_TH, max_proposals: int = MAX_PROPOSALS) -> DavisResult:
    """DAVIS unsupervised protocol on one sequence (Hungarian matching of proposals to objects)."""
    ev = DavisEvaluator("unsupervised", bound_th, max_proposals)
    ev.add_sequence(pred, gt)
    return ev.compute()
