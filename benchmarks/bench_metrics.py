"""Timing of the metrics on the blackswan masks (docs/benchmarks.md#the-clips) (50 frames, 854x480).

    python benchmarks/bench_metrics.py [CLIPS/blackswan]

Prints the time of the DAVIS unsupervised protocol (20 proposals x 1 object x
50 frames of J and F, then the matching), of the semi-supervised protocol, of
VC_8 + VC_16 and of mIoU, and compares the cropped boundary computation with a
full-frame baseline (boundary + disk dilation on the whole frame for every
(proposal, frame) pair) measured in the same run.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.clips import CLIPS, require  # noqa: E402
from vidseg_core.metrics import (  # noqa: E402
    boundary_map,
    boundary_tolerance,
    evaluate_semi_supervised,
    evaluate_unsupervised,
    mean_iou,
    read_label_sequence,
    video_consistency,
)
from benchmarks.timing import ratio_text, time_cases  # noqa: E402
from vidseg_core.metrics import davis as davis_mod  # noqa: E402


def _full_frame_f(pred, gt, radius):
    """Baseline: boundary maps and dilations on whole frames (what a direct port does)."""
    pm, gm = pred != 0, gt != 0
    bp, bg = boundary_map(pm), boundary_map(gm)
    dp, dg = davis_mod.dilate(bp, radius), davis_mod.dilate(bg, radius)
    n_fg, n_gt = bp.sum(), bg.sum()
    if n_fg == 0 or n_gt == 0:
        return float(n_fg == n_gt)
    prec, rec = (bp & dg).sum() / n_fg, (bg & dp).sum() / n_gt
    return 0.0 if prec + rec == 0 else 2 * prec * rec / (prec + rec)


def _time(fn, repeat=3):
    """Median seconds of ``repeat`` runs (``benchmarks/timing.py``) and the last result."""
    samples, outs = time_cases({"f": fn}, repeats=repeat, warmup=False, keep=("f",))
    return samples["f"].median(), outs["f"]


def run(data=CLIPS / "blackswan", log=print):
    """Times (seconds) of each metric and of the full-frame baseline vs the cropped computation, as a dict."""
    data = Path(data)
    gt, _ = read_label_sequence(data / "masks_osvos")
    pred, _ = read_label_sequence(data / "masks_rvos")
    radius = boundary_tolerance(gt.shape)
    n_prop = int(pred.max())
    out = {"frames": int(gt.shape[0]), "size": tuple(gt.shape[1:]), "proposals": n_prop}

    t_unsup, r = _time(lambda: evaluate_unsupervised(pred, gt))
    log(f"unsupervised J&F ({n_prop} proposals x 1 object x {gt.shape[0]} frames): {t_unsup:.3f} s "
        f"(J&F = {r.jf_mean:.6f})")
    out["unsupervised"] = {"seconds": t_unsup, "jf": r.jf_mean}
    t_semi, r = _time(lambda: evaluate_semi_supervised((pred == 1).astype(np.uint8), gt))
    log(f"semi-supervised J&F (1 object x {gt.shape[0] - 2} frames): {t_semi:.3f} s (J-Mean = {r.J_mean:.6f})")
    out["semi_supervised"] = {"seconds": t_semi, "J_mean": r.J_mean}
    t_vc, _ = _time(lambda: (video_consistency(pred, gt, 8), video_consistency(pred, gt, 16)))
    log(f"VC_8 + VC_16: {t_vc:.3f} s")
    out["vc"] = {"seconds": t_vc}
    t_miou, _ = _time(lambda: mean_iou(pred, gt, 21))
    log(f"mIoU (21 classes): {t_miou:.3f} s")
    out["miou"] = {"seconds": t_miou}

    def baseline():
        return [[_full_frame_f(pred[t] == k, gt[t] == 1, radius) for k in range(1, n_prop + 1)]
                for t in range(gt.shape[0])]

    samples, outs = time_cases({"baseline": baseline, "cropped": lambda: davis_mod._pair_scores(
        pred, gt, None, n_prop, 1, 0.008, False)}, repeats=3, warmup=False, keep=("baseline", "cropped"))
    base, J_F = outs["baseline"], outs["cropped"]
    t_base, t_crop = samples["baseline"].median(), samples["cropped"].median()
    same = np.allclose(np.array(base).T, J_F[1][:, 0, :], atol=1e-12)
    ratio = ratio_text(samples["baseline"], samples["cropped"])
    log(f"F of all (proposal, frame) pairs: full-frame baseline {samples['baseline'].text()} s, cropped (J and F) "
        f"{samples['cropped'].text()} s -> {ratio} faster; identical values: {same}")
    out["boundary"] = {"baseline": t_base, "cropped": t_crop, "identical": bool(same), "ratio": ratio,
                       "baseline_text": samples["baseline"].text(), "cropped_text": samples["cropped"].text()}
    return out


def main(argv):
    data = require(Path(argv[1]) if len(argv) > 1 else CLIPS / "blackswan")
    run(data)


if __name__ == "__main__":
    main(sys.argv)
