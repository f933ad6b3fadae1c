"""Per-video and whole-set scores of a dataset run, with the project's metrics (:mod:`vidseg_core.metrics`).

* DAVIS J&F (semi-supervised protocol: first and last frames not scored): a video's figures are the means
  over its objects; the whole set's are object-weighted means over all objects of all videos, as
  ``davis2017-evaluation``'s ``global_results`` (``J&F-Mean``, ``J-Mean``, ``J-Recall``, ``J-Decay``,
  ``F-Mean``, ...);
* mIoU from ONE confusion matrix accumulated over every frame of every video (VSPW: 124 classes after the
  remap, 255 ignored), never a mean of per-video mIoUs; a video's own mIoU is from its own matrix;
* ``mVC_8`` / ``mVC_16``: VSPW video consistency pooled over all windows of all videos, against the raw
  ground truth (as ``VC_perclip.py``); ``None`` where no window is defined (videos of <= n frames).

Predictions are paired with the ground truth by frame name; only frames with ground truth are scored
(``frames_scored`` per video and in all, said in the printed table where it is fewer than the frames).  Writes ``DIR/scores.json`` (top-level
``"dataset"`` and ``"videos"`` objects, plus ``"failed"`` and ``"pending"``) and ``DIR/scores.csv``.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from ..errors import InputError
from ..metrics.confusion import ConfusionMatrix
from ..metrics.consistency import VideoConsistency
from ..metrics.davis import DavisEvaluator
from ..metrics.io import read_label_sequence, read_pair
from .layouts import Dataset, transform_gt
from .progress import RunFolder, write_json_atomic

JF_KEYS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
VC = {"vc8": ("mVC_8", 8), "vc16": ("mVC_16", 16)}


def metric_columns(metrics) -> List[str]:
    cols: List[str] = []
    if "jf" in metrics:
        cols += list(JF_KEYS)
    if "miou" in metrics:
        cols += ["mIoU", "pixel_acc"]
    cols += [VC[m][0] for m in metrics if m in VC]
    if "names" in metrics:  # naming: predicted names against the classes' names (vidseg_core.naming.dataset_names)
        cols += ["name_acc"]
    return cols


def _num(x) -> Optional[float]:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _jf(result) -> dict:
    d = result.to_dict()  # "J&F-Mean", "J_mean", ... -> the official CSV names "J-Mean", ...
    return {k: _num(d[k if k == "J&F-Mean" else k.replace("-", "_").replace("Mean", "mean")
                     .replace("Recall", "recall").replace("Decay", "decay")]) for k in JF_KEYS} \
        | {"objects": len(result.objects)}


def _miou(cm: ConfusionMatrix) -> dict:
    r = cm.compute()
    return {"mIoU": _num(r.miou), "pixel_acc": _num(r.pixel_acc)}


def _infer_classes(dataset: Dataset, names: List[str]) -> int:
    top = 0
    for v in dataset.videos:
        if v.name in names and v.annotations:
            gt = transform_gt(read_label_sequence(v.annotations)[0], dataset.gt_transform)
            vals = gt[gt != dataset.void]
            top = max(top, int(vals.max()) + 1 if vals.size else 0)
    return max(top, 1)


def check_class_ids(dataset: Dataset, videos, num_classes: Optional[int]) -> None:
    """Refuse ground truth holding ids that are neither a class ``0..num_classes-1`` nor void (after the
    layout's transform), before any work: mIoU could not score it.  Unreadable masks are left to the scorer,
    which records the video as failed."""
    if num_classes is None:
        return
    from ..metrics.io import list_frames, read_label_png

    for v in videos:
        if not v.annotations:
            continue
        for f in list_frames(v.annotations):
            try:
                raw = read_label_png(f)
            except InputError:
                continue
            gt = transform_gt(raw, dataset.gt_transform)
            bad = (gt != dataset.void) & ((gt < 0) | (gt >= num_classes))
            if bad.any():
                ids = np.unique(raw[bad])[:8].tolist()
                space = " (raw ids of the masks; VSPW's 1..124 are its classes, 0 and 255 are ignored)" \
                    if dataset.gt_transform == "vspw" else ""
                raise InputError(f"The ground truth {f} of video {v.name!r} holds ids {ids}{space}, outside the "
                                 f"{num_classes} classes scored by mIoU.",
                                 f"Check that ROOT holds the {dataset.layout} release the layout expects, or pass "
                                 "--num-classes with a number above the largest id (or leave miou out of --metrics).")


class _Scorer:
    """One accumulator per metric (a video's own, or the whole set's)."""

    def __init__(self, metrics, num_classes: Optional[int], void: int):
        self.cm = ConfusionMatrix(num_classes, ignore_index=void) if "miou" in metrics else None
        self.davis = DavisEvaluator("semi") if "jf" in metrics else None
        self.vc = {m: VideoConsistency(VC[m][1]) for m in metrics if m in VC}

    def add(self, pred: np.ndarray, gt: np.ndarray, raw_gt: np.ndarray, name: str) -> None:
        if self.cm is not None:
            self.cm.update(pred, gt)
        if self.davis is not None:
            self.davis.add_sequence(pred, gt, name)
        for acc in self.vc.values():
            acc.add_video(pred, raw_gt)

    def figures(self) -> dict:
        out: dict = {}
        if self.davis is not None:
            out.update(_jf(self.davis.compute()) if self.davis.objects else {k: None for k in JF_KEYS})
        if self.cm is not None:
            out.update(_miou(self.cm))
        for m, acc in self.vc.items():
            out[VC[m][0]] = _num(acc.compute().value)
        return out


def score_run(dataset: Dataset, folder: RunFolder, names: List[str], metrics=None,
              num_classes: Optional[int] = None) -> dict:
    """Score the finished videos among ``names``; the others are listed as failed or pending."""
    metrics = tuple(metrics or dataset.metrics)
    done = [n for n in names if folder.is_done(n)]
    if "miou" in metrics and num_classes is None:
        num_classes = dataset.num_classes or _infer_classes(dataset, done)
    whole = _Scorer(metrics, num_classes, dataset.void)
    by_name = {v.name: v for v in dataset.videos}
    videos: Dict[str, dict] = {}
    failed: Dict[str, str] = {}
    pending: List[str] = []
    frames = scored = frames_scored = 0
    from ..naming.dataset_names import class_names, name_hits

    classes = class_names(dataset.layout)
    named = [0, 0]  # labels named right, labels with a class
    for n in names:
        rec = folder.done_record(n)
        if rec is None:
            fail = folder.failure_record(n)
            if fail is not None:
                failed[n] = fail["error"]
                videos[n] = {"status": "failed", "error": fail["error"]}
            else:
                pending.append(n)
            continue
        entry = {"status": "done", "frames": rec["frames"], "seconds": rec["seconds"]}
        frames += rec["frames"]
        if classes is not None and rec.get("naming"):
            right, total = name_hits(rec, classes)
            named = [named[0] + right, named[1] + total]
            entry["name_acc"] = right / total if total else None
        v = by_name[n]
        if v.annotations:
            try:
                pred, raw, scored_names = read_pair(folder.video_dir(n), v.annotations)
                gt = transform_gt(raw, dataset.gt_transform)
                own = _Scorer(metrics, num_classes, dataset.void)
                own.add(pred, gt, raw, n)
            except InputError as exc:  # e.g. a corrupt ground-truth PNG: the video cannot be scored
                entry.update(status="failed", error=f"scoring: {exc}")
                failed[n] = entry["error"]
            else:
                whole.add(pred, gt, raw, n)
                entry["frames_scored"] = len(scored_names)  # frames with ground truth (sparse annotations)
                entry.update(own.figures())
                scored += 1
                frames_scored += len(scored_names)
        videos[n] = entry
    summary = {"layout": dataset.layout, "split": dataset.split, "videos": len(done), "videos_scored": scored,
               "frames": frames, "frames_scored": frames_scored, "metrics": list(metrics)}
    if scored:
        summary.update(whole.figures())
    if named[1]:
        summary.update(metrics=list(metrics) + ["names"], name_acc=named[0] / named[1], name_labels=named[1])
    if "miou" in metrics:
        summary["num_classes"] = num_classes
    return {"dataset": summary, "videos": videos, "failed": failed, "pending": pending}


def write_scores(scores: dict, out: Path) -> None:
    """``scores.json`` and ``scores.csv`` (one row per video, then the whole set as ``(dataset)``)."""
    write_json_atomic(out / "scores.json", scores)
    cols = metric_columns(scores["dataset"]["metrics"])
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["video", "status", "frames", "seconds"] + cols + ["error"])
    for name, e in scores["videos"].items():
        w.writerow([name, e["status"], e.get("frames", ""), e.get("seconds", "")]
                   + [_cell(e.get(c)) for c in cols] + [e.get("error", "")])
    d = scores["dataset"]
    w.writerow(["(dataset)", "done", d["frames"], ""] + [_cell(d.get(c)) for c in cols] + [""])
    tmp = out / ".scores.csv.tmp"
    tmp.write_text(buf.getvalue())
    tmp.replace(out / "scores.csv")


def _cell(x) -> str:
    return "" if x is None else (f"{x:.6f}" if isinstance(x, float) else str(x))


def format_table(scores: dict) -> str:
    """The printed table: one line per video, the whole set, then the failures."""
    cols = [c for c in metric_columns(scores["dataset"]["metrics"]) if c in ("J&F-Mean", "J-Mean", "F-Mean", "mIoU",
                                                                             "mVC_8", "mVC_16", "name_acc")]
    rows = [(n, e) for n, e in scores["videos"].items() if e["status"] == "done"]
    width = max([len("(dataset)")] + [len(n) for n, _ in rows])
    head = f"{'video':<{width}}  {'frames':>6}  {'s':>7}  " + "  ".join(f"{c:>8}" for c in cols)
    lines = [head, "-" * len(head)]

    def fmt(x):
        return f"{'-':>8}" if x is None else f"{100 * x:8.2f}"

    for n, e in rows:
        lines.append(f"{n:<{width}}  {e['frames']:>6}  {e['seconds']:>7.1f}  " + "  ".join(fmt(e.get(c)) for c in cols))
    d = scores["dataset"]
    lines.append("-" * len(head))
    lines.append(f"{'(dataset)':<{width}}  {d['frames']:>6}  {'':>7}  " + "  ".join(fmt(d.get(c)) for c in cols))
    sparse = [(n, e) for n, e in rows if "frames_scored" in e and e["frames_scored"] < e["frames"]]
    if sparse:
        lines.append(f"note: {len(sparse)} video(s) have frames without ground truth; only frames with ground truth "
                     f"are scored ({d['frames_scored']} frames in all): " + ", ".join(
                         f"{n} {e['frames_scored']} of {e['frames']}" for n, e in sparse[:10])
                     + (" ..." if len(sparse) > 10 else ""))
    if scores["failed"]:
        lines.append(f"FAILED ({len(scores['failed'])}):")
        lines += [f"  {n}: {err}" for n, err in scores["failed"].items()]
    if scores["pending"]:
        lines.append(f"not done yet ({len(scores['pending'])}; other shards?): " + ", ".join(scores["pending"][:10])
                     + (" ..." if len(scores["pending"]) > 10 else ""))
    return "\n".join(lines)
