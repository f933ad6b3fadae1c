"""Evaluate (``VidSegEvaluate``): metrics of label maps against a ground-truth sequence (docs/design/metrics.md)."""
from __future__ import annotations

import json

from ..vidseg_core.errors import InputError
from ..vidseg_core.metrics import PROTOCOLS, evaluate_arrays, parse_metrics
from .comfy_adapters import bridge
from .convert import ground_truth_ids
from .schema import Combo, Int, Node, Out, Socket, String
from .sockets import VIDSEG_LABELS, require_labels


def _pct(v):
    return "n/a" if v is None else f"{100 * v:.2f}"


def format_report(res: dict) -> str:
    """A few readable lines from :func:`evaluate_arrays`' result."""
    lines = [f"{res['frames']} frames, {res['height_width'][1]}x{res['height_width'][0]}"]
    if "miou" in res:
        m = res["miou"]
        lines.append(f"mIoU {_pct(m['miou'])}  pixel acc {_pct(m['pixel_acc'])}  ({m['num_classes']} classes"
                     f"{', inferred' if m.get('num_classes_inferred') else ''})")
        lines.append("class IoU: " + ", ".join(f"{i}: {_pct(v)}" for i, v in enumerate(m["class_iou"])))
    for key in ("vc8", "vc16"):
        if key in res:
            v = res[key]
            lines.append(f"mVC{v['n']} {_pct(v['value'])}" + ("  (video shorter than the window)"
                                                              if v.get("windows") == 0 else ""))
    if "jf" in res:
        j = res["jf"]
        lines.append(f"J&F {_pct(j['J&F-Mean'])}  J {_pct(j['J_mean'])}  F {_pct(j['F_mean'])}  "
                     f"({j['protocol']}, {len(j.get('objects', []))} objects)")
    return "\n".join(lines)


class VidSegEvaluate:
    @classmethod
    def declare(cls) -> Node:
        return Node(
            "VidSegEvaluate", "Evaluate Labels (VidSeg)", "VidSeg/evaluate",
            "Scores label maps against ground truth: mIoU (global confusion matrix), VSPW video consistency mVC8 / "
            "mVC16, DAVIS J&F. The ground truth is a binary MASK batch (object = 1) or a label IMAGE batch (palette "
            "colours or grey ids), one per frame at the frames' size. Shows the result on the node and outputs it as "
            "text.",
            inputs=(
                Socket("labels", VIDSEG_LABELS, "Predicted label maps (coarse ones are resized to frame size)."),
                String("metrics", "miou,jf", "Comma-separated: miou, vc8, vc16, jf."),
                Combo("protocol", PROTOCOLS, "DAVIS J&F protocol: semi (ids match the ground truth) or unsupervised "
                                             "(best matching proposals).", default="semi"),
                Int("num_classes", 0, 0, 1024, "Classes for mIoU; 0 = highest ground-truth id + 1."),
                Socket("ground_truth_mask", "MASK", "Binary ground truth, one mask per frame.", optional=True),
                Socket("ground_truth_labels", "IMAGE", "Ground-truth label maps as images, one per frame.",
                       optional=True),
            ),
            outputs=(Out("report", "STRING", "Readable summary of the metrics."),
                     Out("json", "STRING", "Every number as JSON.")),
            function="evaluate", output_node=True, search_aliases=("miou", "j&f", "segmentation metrics", "score"))

    @classmethod
    def validate_inputs(cls, metrics="miou,jf"):
        """Reject unknown metric names before anything runs."""
        try:
            parse_metrics(metrics)
        except InputError as exc:
            return str(exc)
        return True

    def evaluate(self, labels, metrics="miou,jf", protocol="semi", num_classes=0, ground_truth_mask=None,
                 ground_truth_labels=None):
        labels = require_labels(labels)
        names = parse_metrics(metrics)
        bridge.check_interrupt()
        gt = ground_truth_ids(ground_truth_mask, ground_truth_labels)
        pred = labels.full_resolution().numpy()
        if gt.shape != pred.shape:
            raise InputError(f"The ground truth has shape {gt.shape} (frames, height, width) but the labels have "
                             f"{pred.shape}.", "Give one ground-truth frame per video frame, at the frames' size.")
        res = evaluate_arrays(pred, gt, names, protocol=protocol, num_classes=int(num_classes) or None)
        report = format_report(res)
        return {"ui": {"text": [report]}, "result": (report, json.dumps(res))}


NODES = (VidSegEvaluate,)
