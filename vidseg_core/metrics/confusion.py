"""Dataset-level semantic segmentation scores from ONE global confusion matrix.

VSPW / Cityscapes / CamVid style (docs/design/metrics.md#vspw-miou):

* one confusion matrix is accumulated over all frames of all videos
  (rows = ground truth, columns = prediction), never a mean of per-video scores;
* ground-truth pixels outside ``[0, num_classes)`` (``ignore_index`` = 255,
  and "others" after the VSPW remap) are not scored;
* a prediction outside ``[0, num_classes)`` on a scored pixel (255, a raw
  cluster id, a negative value) is counted as WRONG in a dedicated extra column
  (the official evaluator silently files it in a wrong cell, or crashes when
  gt = num_classes - 1);
* ``mIoU = nanmean(IoU_c)``: a class predicted but absent from the ground truth
  counts with IoU 0; a class absent from both is dropped (official).  The
  variant that averages only over classes with ground-truth pixels
  (``class_average="gt_only"``, used by some VSPW code bases) is available and
  is always reported as ``miou_gt_classes``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import List, Optional

import numpy as np

from ..errors import InputError
from .labels import as_label_array, check_same_shape, vspw_remap

CLASS_AVERAGES = ("official", "gt_only")


def _nanmean(x: np.ndarray) -> Optional[float]:
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    return float(x.mean()) if x.size else None


@dataclass
class MIoUResult:
    """Scores of a :class:`ConfusionMatrix` (``None`` = undefined, e.g. nothing scored)."""

    miou: Optional[float]
    miou_official: Optional[float]
    miou_gt_classes: Optional[float]
    pixel_acc: Optional[float]
    mean_class_acc: Optional[float]
    fwiou: Optional[float]
    class_iou: List[Optional[float]] = field(default_factory=list)
    num_classes: int = 0
    class_average: str = "official"
    scored_pixels: int = 0
    ignored_pixels: int = 0
    out_of_range_pred_pixels: int = 0
    frames: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


class ConfusionMatrix:
    """Global confusion-matrix accumulator: ``update(pred, gt)`` per frame, then ``compute()``.

    Parameters
    ----------
    num_classes:
        Number of evaluated classes C; valid ids are ``0 .. C-1``.
    ignore_index:
        Ground-truth id that is never scored (default 255).
    vspw_remap:
        Apply the VSPW remap (0 -> 255, -1, 254 -> 255, docs/design/metrics.md#vspw-miou) to the
        ground truth before scoring.
    remap_pred:
        Also apply that remap to the predictions (use it when predictions are in
        the RAW VSPW label space, e.g. labels copied from raw first-frame GT);
        by default predictions are taken to be in the remapped 0..C-1 space,
        as the official script expects.
    class_average:
        ``"official"`` (nanmean over classes present in GT or prediction) or
        ``"gt_only"`` (mean over classes with ground-truth pixels); selects
        which one is returned as ``miou``.  Both are always reported.
    strict_gt:
        Raise :class:`InputError` when the ground truth holds an id that is
        neither a class nor ``ignore_index`` (usually a wrong ``num_classes`` or
        a forgotten remap).  With ``False`` such pixels are ignored, as in the
        official script, and counted in ``ignored_pixels``.

    The matrix is ``[C, C + 1]``: column C counts out-of-range predictions.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, vspw_remap: bool = False,
                 remap_pred: bool = False, class_average: str = "official", strict_gt: bool = True):
        if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool) or num_classes < 1:
            raise InputError(f"num_classes must be a positive integer, got {num_classes!r}.",
                             "Pass the number of evaluated classes (124 for VSPW, 19 for Cityscapes, 11 for CamVid).")
        if class_average not in CLASS_AVERAGES:
            raise InputError(f"class_average must be one of {CLASS_AVERAGES}, got {class_average!r}.",
                             "Use 'official' (VSPW nanmean) or 'gt_only'.")
        if 0 <= ignore_index < num_classes:
            raise InputError(f"ignore_index {ignore_index} is a valid class id (num_classes={num_classes}).",
                             "Use an ignore index outside 0..num_classes-1 (255 by default).")
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.vspw_remap = bool(vspw_remap)
        self.remap_pred = bool(remap_pred)
        self.class_average = class_average
        self.strict_gt = bool(strict_gt)
        self.reset()

    def reset(self) -> None:
        c = self.num_classes
        self.matrix = np.zeros((c, c + 1), dtype=np.int64)
        self.ignored_pixels = 0
        self.frames = 0

    def update(self, pred, gt) -> None:
        """Add one frame ``[H, W]`` (or a stack ``[T, H, W]``) to the matrix."""
        pred = as_label_array(pred, "prediction")
        gt = as_label_array(gt, "ground truth")
        check_same_shape(pred, gt)
        if self.vspw_remap:
            gt = vspw_remap(gt, self.ignore_index)
            if self.remap_pred:
                pred = vspw_remap(pred, self.ignore_index)
        c = self.num_classes
        gt = gt.astype(np.int64, copy=False)
        valid = (gt >= 0) & (gt < c)
        if self.strict_gt:
            bad = ~valid & (gt != self.ignore_index)
            if bad.any():
                vals = np.unique(gt[bad])[:8].tolist()
                raise InputError(
                    f"The ground truth holds ids {vals} that are neither classes 0..{c - 1} "
                    f"nor the ignore index {self.ignore_index}.",
                    "Check num_classes; for raw VSPW masks turn on the VSPW remap (--vspw-remap).",
                )
        g = gt[valid]
        p = pred[valid].astype(np.int64, copy=False)
        p = np.where((p >= 0) & (p < c), p, c)  # out of range -> the "wrong" column
        self.matrix += np.bincount(g * (c + 1) + p, minlength=c * (c + 1)).reshape(c, c + 1)
        self.ignored_pixels += int(valid.size - g.size)
        self.frames += 1 if gt.ndim == 2 else gt.shape[0]

    def compute(self) -> MIoUResult:
        m = self.matrix.astype(np.float64)
        c = self.num_classes
        diag = np.diag(m[:, :c])
        rows = m.sum(axis=1)            # GT pixels per class (incl. out-of-range predictions)
        cols = m[:, :c].sum(axis=0)     # predicted pixels per class (on scored pixels)
        total = m.sum()
        union = rows + cols - diag
        with np.errstate(divide="ignore", invalid="ignore"):
            iou = diag / union
            class_acc = diag / rows
        miou_official = _nanmean(iou)
        miou_gt = _nanmean(iou[rows > 0])
        if total > 0:
            freq = rows / total
            fw = float((freq[freq > 0] * iou[freq > 0]).sum())
            pix = float(diag.sum() / total)
        else:
            fw = pix = None
        return MIoUResult(
            miou=miou_official if self.class_average == "official" else miou_gt,
            miou_official=miou_official,
            miou_gt_classes=miou_gt,
            pixel_acc=pix,
            mean_class_acc=_nanmean(class_acc),
            fwiou=fw,
            class_iou=[None if np.isnan(v) else float(v) for v in iou],
            num_classes=c,
            class_average=self.class_average,
            scored_pixels=int(total),
            ignored_pixels=int(self.ignored_pixels),
            out_of_range_pred_pixels=int(m[:, c].sum()),
            frames=int(self.frames),
        )


def mean_iou(pred, gt, num_classes: int, **kwargs) -> MIoUResult:
    """One-shot :class:`ConfusionMatrix` over label maps ``[H, W]`` or ``[T, H, W]``."""
    cm = ConfusionMatrix(num_classes, **kwargs)
    cm.update(pred, gt)
    return cm.compute()
