"""Coarse stage on oracle features: mIoU and mVC_8 of KNN only vs KNN + CBR, by noise level.

The diffusion features are replaced by the one-hot ground truth of the 50
blackswan ``masks_osvos`` frames at the authors' 28x52 feature grid (NEAREST),
padded to 16 channels, plus Gaussian noise of std ``sigma`` (independent draws
for the aggregated and the correspondence features).  KMeans (K = 20, n_init =
10, seed 1) + KNN (k = 4) + refinement, first-frame reference, batches of 14
with the overlapping tail.  Scores against the grid-level ground truth
(global-confusion mIoU over the 2 classes; VC_8 with the official windowing,
42 windows).  Frames 1-49 are OSVOS predictions (pseudo ground truth): these
are regression figures for the coarse stage, not benchmark results.

Reading the table: the oracle correspondence features carry no position or
texture, only the class, so (a) the paper's local search picks a random
same-class neighbour and trajectories random-walk inside a class region, and
(b) the authors' global search jumps anywhere in the class and the jump filter
drops every trajectory, so "compat" equals "KNN only" here.  Majority voting
raises mVC_8 but erodes a class whose per-cell KNN recall is below ~50 %
(the swan at sigma >= 0.5), which lowers mIoU.

    python benchmarks/coarse_oracle.py [--sigmas 0.1 0.3 0.5 0.7 1.0] [--n-init 10]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.clips import CLIPS, missing_clip_message  # noqa: E402
from tests.oracles.coarse_oracle import grid_gt, load_masks, miou, oracle_features, video_consistency  # noqa: E402
from vidseg_core.context_model import coarse_segment  # noqa: E402
from vidseg_core.video_features import VideoFeatures  # noqa: E402

VARIANTS = [
    ("KNN only", "none", None),
    ("KNN+CBR", "cbr", None),
    ("KNN+CBR compat", "cbr_compat", None),
    ("KNN+CBR, corr sigma 0.1", "cbr", 0.1),
]


def run(data=CLIPS / "blackswan" / "masks_osvos", sigmas=(0.1, 0.3, 0.5, 0.7, 1.0),
        n_init=10, frames=50, log=print):
    """The table above as ``{"results": {sigma: {variant: (mIoU, mVC_8)}}, ...}`` (also logged as markdown)."""
    masks = load_masks(Path(data), frames)
    gt = grid_gt(masks)
    log(f"{len(masks)} frames, grid {gt.shape[1]}x{gt.shape[2]}, swan cells in frame 0: {int(gt[0].sum())}")
    header = "| sigma | " + " | ".join(f"{name} mIoU | {name} mVC_8" for name, _, _ in VARIANTS) + " |"
    log(header)
    log("|" + "---|" * (1 + 2 * len(VARIANTS)))
    t0 = time.perf_counter()
    results = {}
    for sigma in sigmas:
        feats = oracle_features(masks, sigma)
        cells = []
        results[sigma] = {}
        for name, refiner, corr_sigma in VARIANTS:
            f = feats
            if corr_sigma is not None:
                f = VideoFeatures(feats.aggregated, oracle_features(masks, corr_sigma, seed=1).correspondence,
                                  feats.frame_size, feats.work_size, "oracle")
            cs = coarse_segment(f, k=20, batch_size=14, refiner=refiner, reference_mask=masks[0], seed=1,
                                n_init=n_init)
            pred = cs.labels.numpy()
            scores = (miou(pred, gt, 2), video_consistency(pred, gt, 8))
            results[sigma][name] = scores
            cells += [f"{scores[0]:.4f}", f"{scores[1]:.4f}"]
        log(f"| {sigma:g} | " + " | ".join(cells) + " |")
    seconds = time.perf_counter() - t0
    log(f"total {seconds:.0f} s, torch threads {torch.get_num_threads()}")
    return {"frames": len(masks), "grid": tuple(gt.shape[1:]), "results": results, "seconds": seconds,
            "n_init": n_init}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=CLIPS / "blackswan" / "masks_osvos")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 1.0])
    ap.add_argument("--n-init", type=int, default=10)
    ap.add_argument("--frames", type=int, default=50)
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(missing_clip_message(args.data), file=sys.stderr)
        return 2
    run(args.data, args.sigmas, args.n_init, args.frames, log=lambda m: print(m, flush=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
