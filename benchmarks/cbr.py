"""CBR speed: vectorised ``vidseg_core.cbr`` vs the per-cell / per-trajectory Python loop oracle.

Same inputs for both (default: 14 frames, 28x52 grid, 640 channels, features
of a drifting random texture plus noise, labels from blobs plus flicker);
asserts identical output, prints both times and the ratio.  Run:

    python benchmarks/cbr.py [--frames 14] [--h 28] [--w 52] [--channels 640] [--compat]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.oracles.cbr_inputs import structured_inputs  # noqa: E402
from tests.oracles.cbr_loop import cbr_compat_loop, cbr_loop  # noqa: E402
from vidseg_core.cbr import cbr_refine, cbr_refine_compat  # noqa: E402


def timed(fn, repeat=1):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best


def run(frames=14, h=28, w=52, channels=640, repeat=3, compat=False, log=print):
    """Time both implementations on the same inputs; returns the figures (seconds) as a dict."""
    torch.manual_seed(0)
    labels, feats = structured_inputs(frames, h, w, channels)
    out = {"frames": frames, "h": h, "w": w, "channels": channels, "labels": int(labels.unique().numel()),
           "threads": torch.get_num_threads()}
    log(f"inputs: {frames} frames, {h}x{w} grid, {channels} channels, "
        f"{out['labels']} labels, torch threads {torch.get_num_threads()}")

    fast, t_fast = timed(lambda: cbr_refine(labels, feats), repeat)
    slow, t_slow = timed(lambda: cbr_loop(labels, feats))
    same = torch.equal(fast, slow)
    changed = float((fast != labels).float().mean())
    log(f"default CBR (Eqs 3-5, radius^2 = 2): vectorised {t_fast * 1000:.1f} ms, loop {t_slow:.2f} s, "
        f"speed-up x{t_slow / t_fast:.0f}; identical output: {same}; cells changed: {changed:.1%}")
    assert same, "vectorised CBR differs from the loop oracle"
    out["default"] = {"vectorised": t_fast, "loop": t_slow, "identical": same, "changed": changed}

    if compat:
        fast, t_fast = timed(lambda: cbr_refine_compat(labels, feats, dtype=torch.float64), repeat)
        slow, t_slow = timed(lambda: cbr_compat_loop(labels, feats, dtype=torch.float64))
        same = torch.equal(fast, slow)
        log(f"compat CBR (reference §7): vectorised {t_fast * 1000:.1f} ms, loop {t_slow:.2f} s, "
            f"speed-up x{t_slow / t_fast:.0f}; identical output: {same}")
        assert same, "vectorised compat CBR differs from the loop oracle"
        out["compat"] = {"vectorised": t_fast, "loop": t_slow, "identical": same}
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=14)
    ap.add_argument("--h", type=int, default=28)
    ap.add_argument("--w", type=int, default=52)
    ap.add_argument("--channels", type=int, default=640)
    ap.add_argument("--repeat", type=int, default=3, help="repeats of the vectorised run (best time)")
    ap.add_argument("--compat", action="store_true", help="also time the authors' variant (float64, both sides)")
    args = ap.parse_args(argv)
    run(args.frames, args.h, args.w, args.channels, args.repeat, args.compat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
