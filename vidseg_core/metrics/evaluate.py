"""One entry point for all metrics: label arrays or PNG folders in, a JSON-ready dict out.

Used by ``python -m vidseg_core evaluate`` and by the ComfyUI evaluation node.

Metrics (docs/design/metrics.md#vspw-miou, #vspw-video-consistency-mvc_8-mvc_16, #davis-j-and-f):

* ``miou``  - global-confusion-matrix mIoU (+ pixel acc, mean class acc, FWIoU);
* ``vc8`` / ``vc16`` - VSPW video consistency, on the RAW ground truth (no remap);
* ``jf``    - DAVIS J&F with the ``semi`` (default) or ``unsupervised`` protocol,
  GT id 255 = void.

A dataset is a GT folder whose sub-folders are videos (``gt/<video>/*.png``
with the matching ``pred/<video>/*.png``): the confusion matrix and the VC
windows are pooled over all videos and J&F is averaged over all objects, as
the official evaluations do.  Undefined values (no scored pixel, no VC window)
are ``None``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import InputError
from .confusion import CLASS_AVERAGES, ConfusionMatrix
from .consistency import VideoConsistency
from .davis import BOUND_TH, MAX_PROPOSALS, PROTOCOLS, DavisEvaluator
from .io import list_frames, read_label_sequence, read_pair
from .labels import as_label_array, check_same_shape

METRICS = ("miou", "vc8", "vc16", "jf")
VC_WINDOWS = {"vc8": 8, "vc16": 16}
VSPW_NUM_CLASSES = 124


def parse_metrics(metrics) -> Tuple[str, ...]:
    """``"miou,vc8"`` or an iterable of names -> validated tuple in canonical order."""
    if metrics is None:
        return METRICS
    names = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics)]
    names = [m for m in names if m]
    unknown = [m for m in names if m not in METRICS]
    if unknown or not names:
        raise InputError(f"Unknown or missing metric(s) {unknown or names}.", f"Choose from {', '.join(METRICS)} (comma-separated).")
    return tuple(m for m in METRICS if m in names)


def _clean(obj):
    """NaN / inf -> None, numpy scalars -> Python, recursively (strict JSON)."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _infer_num_classes(gts: Iterable[np.ndarray], ignore_index: int) -> int:
    top = -1
    for g in gts:
        vals = g[g != ignore_index]
        if vals.size:
            top = max(top, int(vals.max()))
    if top < 0:
        raise InputError("The ground truth holds only ignored pixels, so the number of classes cannot be inferred.",
                         "Pass num_classes (--num-classes).")
    return top + 1


class _Run:
    """Accumulators of one evaluation (one or many sequences)."""

    def __init__(self, metrics, protocol, num_classes, vspw_remap, remap_pred, class_average, ignore_index,
                 bound_th, max_proposals):
        self.metrics = metrics
        self.cm = None
        if "miou" in metrics:
            self.cm = ConfusionMatrix(num_classes, ignore_index=ignore_index, vspw_remap=vspw_remap,
                                      remap_pred=remap_pred, class_average=class_average)
        self.vc = {m: VideoConsistency(VC_WINDOWS[m]) for m in metrics if m in VC_WINDOWS}
        self.davis = DavisEvaluator(protocol, bound_th, max_proposals) if "jf" in metrics else None
        self.frames = 0
        self.frames_without_prediction = 0
        self.sequences: List[str] = []
        self.size = None

    def add(self, pred: np.ndarray, gt: np.ndarray, name: str) -> None:
        if self.cm is not None:
            self.cm.update(pred, gt)
        for acc in self.vc.values():
            acc.add_video(pred, gt)
        if self.davis is not None:
            self.davis.add_sequence(pred, gt, name)
        self.frames += gt.shape[0]
        self.sequences.append(name)
        self.size = [int(gt.shape[1]), int(gt.shape[2])]

    def result(self, per_frame: bool, inferred: bool) -> dict:
        out = {"metrics": list(self.metrics), "videos": len(self.sequences), "frames": self.frames,
               "height_width": self.size}
        if self.frames_without_prediction:
            out["ground_truth_frames_without_prediction"] = self.frames_without_prediction
        if len(self.sequences) > 1:
            out["sequences"] = list(self.sequences)
        if self.cm is not None:
            out["miou"] = self.cm.compute().to_dict()
            out["miou"]["num_classes_inferred"] = inferred
            out["miou"]["vspw_remap"] = self.cm.vspw_remap
        for m, acc in self.vc.items():
            out[m] = acc.compute().to_dict(per_window=per_frame)
        if self.davis is not None:
            out["jf"] = self.davis.compute().to_dict(per_frame=per_frame)
        return _clean(out)


def _setup(metrics, protocol, num_classes, vspw_remap, class_average, gts_for_inference):
    metrics = parse_metrics(metrics)
    if protocol not in PROTOCOLS:
        raise InputError(f"Unknown DAVIS protocol {protocol!r}.", f"Use one of {', '.join(PROTOCOLS)}.")
    if class_average not in CLASS_AVERAGES:
        raise InputError(f"Unknown class_average {class_average!r}.", f"Use one of {', '.join(CLASS_AVERAGES)}.")
    inferred = False
    if "miou" in metrics and num_classes is None:
        if vspw_remap:
            num_classes = VSPW_NUM_CLASSES
        else:
            num_classes = _infer_num_classes(gts_for_inference(), 255)
            inferred = True
    return metrics, num_classes, inferred


def evaluate_arrays(pred, gt, metrics: Optional[Union[str, Sequence[str]]] = None, protocol: str = "semi",
                    num_classes: Optional[int] = None, vspw_remap: bool = False, remap_pred: bool = False,
                    class_average: str = "official", ignore_index: int = 255, bound_th: float = BOUND_TH,
                    max_proposals: int = MAX_PROPOSALS, per_frame: bool = False) -> dict:
    """Evaluate ONE video given as label arrays ``pred [T, H, W]`` and ``gt [T, H, W]``.

    ``num_classes`` defaults to 124 with ``vspw_remap`` and otherwise to
    ``max GT id + 1`` (reported as ``num_classes_inferred``; pass it explicitly
    for numbers comparable across videos).  ``per_frame`` adds per-frame J/F
    and per-window VC values.  Returns a JSON-ready dict.
    """
    pred = as_label_array(pred, "prediction", 3)
    gt = as_label_array(gt, "ground truth", 3)
    check_same_shape(pred, gt)
    metrics, num_classes, inferred = _setup(metrics, protocol, num_classes, vspw_remap, class_average, lambda: [gt])
    run = _Run(metrics, protocol, num_classes, vspw_remap, remap_pred, class_average, ignore_index, bound_th, max_proposals)
    run.add(pred, gt, "")
    return run.result(per_frame, inferred)


def _video_dirs(gt_dir: Path) -> List[Path]:
    subs = sorted((p for p in gt_dir.iterdir() if p.is_dir()), key=lambda p: p.name)
    return [p for p in subs if any(f.suffix.lower() == ".png" for f in p.iterdir())]


def evaluate_dirs(pred_dir, gt_dir, metrics: Optional[Union[str, Sequence[str]]] = None, protocol: str = "semi",
                  num_classes: Optional[int] = None, vspw_remap: bool = False, remap_pred: bool = False,
                  class_average: str = "official", ignore_index: int = 255, bound_th: float = BOUND_TH,
                  max_proposals: int = MAX_PROPOSALS, per_frame: bool = False, require_all: bool = False) -> dict:
    """Evaluate PNG folders: one video (``gt_dir/*.png``) or a dataset (``gt_dir/<video>/*.png``).

    Predictions mirror the GT layout and are paired with the GT by file name
    (:func:`~.io.pair_frames`): ground-truth frames without a prediction are
    left out with a warning and counted in the result, or refused with
    ``require_all``.  Same options and result as :func:`evaluate_arrays`.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d, what in ((gt_dir, "ground-truth"), (pred_dir, "prediction")):
        if not d.is_dir():
            raise InputError(f"The {what} folder {d} does not exist or is not a folder.",
                             "Pass a folder of PNG label maps (one per frame), or a folder of such folders.")
    has_png = any(p.suffix.lower() == ".png" for p in gt_dir.iterdir() if p.is_file())
    videos = [] if has_png else _video_dirs(gt_dir)
    if not has_png and not videos:
        list_frames(gt_dir)  # raises the "no PNG files" error
    pairs = [(pred_dir, gt_dir, gt_dir.name)] if has_png else [(pred_dir / v.name, v, v.name) for v in videos]
    for p, _, name in pairs:
        if not p.is_dir():
            raise InputError(f"No prediction folder for video {name!r} (expected {p}).",
                             "Give the predictions the same folder layout as the ground truth.")

    def gts():
        for _, g, _ in pairs:
            yield read_label_sequence(g)[0]

    metrics, num_classes, inferred = _setup(metrics, protocol, num_classes, vspw_remap, class_average, gts)
    run = _Run(metrics, protocol, num_classes, vspw_remap, remap_pred, class_average, ignore_index, bound_th, max_proposals)
    for p, g, name in pairs:
        pred, gt, names = read_pair(p, g, require_all)
        run.add(pred, gt, name)
        run.frames_without_prediction += len(list_frames(g)) - len(names)
    return run.result(per_frame, inferred)
