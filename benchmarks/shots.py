"""Edited videos: cut detection quality, labels across shots, seams, and the cost of all of it.

Edited sequences are built from the benchmark clips (docs/benchmarks.md#the-clips;
``tests/helpers/edited_clips.py``: A = blackswan, B = bedroom, C = the synthetic clip; hard cuts at known
frames, a dissolve, a fast pan).  Printed:

1. cut detection per sequence, precision / recall (a found cut is right when it is a true hard cut, or
   lies inside a dissolve, which counts once): the frame detector, and the feature check alone on oracle
   features (ground truth one-hot plus noise);
2. on oracle features: the fraction of A's cells that get the same label on its return as on its first
   appearance (same source frame), with cut detection off and auto;
3. on oracle features: label flips at batch boundaries (cells whose label changes between the last written
   frame of a batch and the first of the next while the ground truth does not, labels mapped to their
   majority ground-truth class) and mVC_8 over windows centred on the boundaries, seam overlap 0..3;
4. the cost: frame cut detection per frame, and a whole fast-mode run with cuts ``off`` against ``auto``
   on the A|B|C|A sequence with ``--model`` (cut detection, feature check and re-anchoring KMeans
   included), as a share of the fast mode's time.

    python benchmarks/shots.py [--data DIR] [--model tiny-sd] [--size 240x428] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from benchmarks.clips import CLIPS, require  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from helpers.edited_clips import edited_sequence, fast_pan, load_scenes, oracle_video_features  # noqa: E402
from vidseg_core.pipeline import SegmentSettings, segment_video  # noqa: E402
from vidseg_core.shot_context import coarse_segment_shots  # noqa: E402
from vidseg_core.shots import (FrameCutDetector, ShotSettings, frame_histograms, plan_shot_batches,  # noqa: E402
                               shots_from_cuts)


def precision_recall(found, cuts, fades):
    found = list(found)
    right = [c for c in found if c in cuts or any(a <= c < b for a, b in fades)]
    hit = [c for c in cuts if c in found] + [f for f in fades if any(f[0] <= c < f[1] for c in found)]
    truth = len(cuts) + len(fades)
    p = len(right) / len(found) if found else 1.0
    r = len(hit) / truth if truth else 1.0
    return p, r


def returning_agreement(seq, labels):
    first = {j: i for i, (n, j) in enumerate(seq.source) if n == "A" and i < 14}
    pairs = [(first[j], i) for i, (n, j) in enumerate(seq.source) if n == "A" and i >= 14 and j in first]
    return float(np.mean([(labels[a] == labels[b]).mean() for a, b in pairs])) if pairs else float("nan")


def boundary_flips(labels, gt, bounds):
    m = {v: np.bincount(gt[labels == v]).argmax() for v in np.unique(labels)}
    lab = np.vectorize(m.get)(labels)
    flips = []
    for t in bounds:
        keep = gt[t] == gt[t - 1]
        flips.append(((lab[t] != lab[t - 1]) & keep).sum() / max(1, keep.sum()))
    vc = []
    for t in bounds:
        i = t - 4
        if i < 0 or i + 8 > len(gt):
            continue
        g = np.all(gt[i + 1:i + 8] == gt[i], axis=0)
        p = np.all(lab[i + 1:i + 8] == lab[i], axis=0)
        vc.append((g & p).sum() / max(1, g.sum()))
    return float(np.mean(flips)), float(np.mean(vc)) if vc else float("nan")


def oracle(seq, cuts="auto", frames=True, batch=8, noise=0.3, **kw):
    s = SegmentSettings(num_clusters=6, n_init=2, reference_mask=seq.gt[0], shots=ShotSettings(cuts=cuts, **kw))
    return coarse_segment_shots(oracle_video_features(seq, noise), s, batch,
                                frames=torch.from_numpy(seq.frames) if frames else None)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(CLIPS))
    ap.add_argument("--model", default="tiny-sd")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--size", default="240x428", help="HxW of the edited frames")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--skip-oracle", action="store_true")
    ap.add_argument("--only-cost", action="store_true", help="part 4 alone")
    ap.add_argument("--clusters", type=int, default=20, help="K of the cost runs (default 20, the paper's)")
    args = ap.parse_args()
    h, w = (int(v) for v in args.size.split("x"))
    data = require(Path(args.data))
    scenes = load_scenes(data, (h, w))
    seqs = [edited_sequence(scenes, o, f) for o, f in (("A|B", 0), ("A|B|A", 0), ("A|B|C|A", 0), ("A|B", 6))]
    seqs.append(fast_pan(data, (h, w)))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads "
          f"{torch.get_num_threads()}; frames {w}x{h}")
    print("\n1. cut detection: precision / recall")
    for seq in ([] if args.only_cost else seqs):
        found = FrameCutDetector().detect(frame_histograms(torch.from_numpy(seq.frames)))
        p, r = precision_recall(found, seq.cuts, seq.fades)
        line = f"  {seq.name:22s} true {seq.cuts}{seq.fades or ''} frames: found {found} P {p:.2f} R {r:.2f}"
        if not args.skip_oracle:
            _, _, summ = oracle(seq, frames=False)
            pf, rf = precision_recall(summ["feature_cuts"], seq.cuts, seq.fades)
            line += f" | features alone (oracle): found {summ['feature_cuts']} P {pf:.2f} R {rf:.2f}"
        print(line)
    if not args.skip_oracle and not args.only_cost:
        print("\n2. oracle features: A's cells with the same label on its return")
        for seq in seqs[1:3]:
            for cuts in ("off", "auto"):
                lab, table, summ = oracle(seq, cuts)
                lab = lab.numpy()
                b = (seq.gt >= 2).any(axis=(1, 2))
                a_ids = np.isin(lab[b], [0, 1]).mean()
                print(f"  {seq.name:10s} cuts {cuts:4s}: same label {returning_agreement(seq, lab):.3f}; "
                      f"cells of other scenes labelled with A's labels {a_ids:.3f}; {len(table)} labels")
        print("\n3. oracle features (A|B|A, B = 6): flips at batch boundaries / mVC_8 across them, by seam overlap")
        seq = seqs[1]
        for noise in (0.3, 0.6):
            for ov in (0, 1, 2, 3):
                s = SegmentSettings(num_clusters=6, n_init=2, reference_mask=seq.gt[0],
                                    shots=ShotSettings(cuts="auto", overlap=ov))
                lab, _, summ = coarse_segment_shots(oracle_video_features(seq, noise), s, 6,
                                                    frames=torch.from_numpy(seq.frames))
                plan = plan_shot_batches(shots_from_cuts(len(lab), summ["cuts"]), 6, ov)
                bounds = [b.write_start for b in plan if not b.first]
                fl, vc = boundary_flips(lab.numpy(), seq.gt, bounds)
                print(f"  noise {noise} overlap {ov}: flips {fl:.4f}, mVC_8 {vc:.4f} ({len(bounds)} boundaries, "
                      f"{sum(b.size for b in plan) / len(lab):.2f} frames computed per frame)")
    from vidseg_core.backbones import load_backbone

    bb = load_backbone(args.model, device=args.device)
    if not args.only_cost:
        print(f"\n2b. {args.model} (fast mode, no reference, K = 5, B = 8): A's return and the labels B shares with A")
    seq = seqs[1]
    frames = seq.frames_tensor()
    for cuts in (() if args.only_cost else ("off", "auto")):
        s = SegmentSettings(num_clusters=5, batch_size=8, mode="fast", shots=ShotSettings(cuts=cuts))
        _, coarse, summ = segment_video(bb, frames, s, keep_coarse=True)
        coarse = coarse.numpy()
        shared = set(np.unique(coarse[:14]).tolist()) & set(np.unique(coarse[14:34]).tolist())
        print(f"  {seq.name:10s} cuts {cuts:4s}: same label on A's return {returning_agreement(seq, coarse):.3f}; "
              f"labels of A also in B {sorted(shared)}; cuts {summ.shots['cuts']}; links of the return "
              f"{summ.shots['shots'][-1]['linked'] if cuts == 'auto' else '-'}")
    print(f"\n4. cost ({args.model}, {args.device}, fast mode, K = {args.clusters}, A|B|C|A, {len(seqs[2].frames)} "
          "frames)")
    seq = seqs[2]
    frames = seq.frames_tensor()
    t = time.perf_counter()
    for _ in range(args.repeats):
        FrameCutDetector().detect_video(lambda a, b: frames[a:b], len(frames))
    det = (time.perf_counter() - t) / args.repeats / len(frames)
    print(f"  frame cut detection: {1000 * det:.2f} ms/frame")
    times = {"off": [], "auto": []}
    stages = {"off": [], "auto": []}
    extra = {}
    for _ in range(args.repeats):
        for cuts in ("off", "auto"):
            s = SegmentSettings(num_clusters=args.clusters, mode="fast", shots=ShotSettings(cuts=cuts))
            t = time.perf_counter()
            _, summ = segment_video(bb, frames, s)
            times[cuts].append(time.perf_counter() - t)
            stages[cuts].append(summ.seconds)
            extra[cuts] = summ
    n = len(frames)
    off, auto = (float(np.median(times[k])) / n for k in ("off", "auto"))
    med = {k: {st: float(np.median([x[st] for x in stages[k]])) / n for st in stages[k][0]} for k in stages}
    added = med["auto"]["shots"] + med["auto"]["coarse"] - med["off"]["coarse"]
    print(f"  whole run, cuts off: {off:.4f} s/frame; cuts auto: {auto:.4f} s/frame "
          f"({extra['auto'].shots['cuts']} found; medians of {args.repeats}, interleaved)")
    for k in ("off", "auto"):
        print(f"  stages, cuts {k}: " + ", ".join(f"{st} {v:.4f}" for st, v in med[k].items()) + " s/frame")
    print(f"  added by the shots (cut detection + coarse-stage difference: re-anchoring KMeans, feature check): "
          f"{added:.4f} s/frame = {100 * added / off:.1f} % of the fast mode's time (cuts off)")

if __name__ == "__main__":
    main()
