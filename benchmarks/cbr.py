"""CBR speed: vectorised ``vidseg_core.cbr`` vs the per-cell / per-trajectory Python loop oracle.

Same inputs for both (default: 14 frames, 28x52 grid, 640 channels, features
of a drifting random texture plus noise, labels from blobs plus flicker);
asserts identical output, prints both times (median and min-max of ``--repeat``
alternating rounds, ``benchmarks/timing.py``) and the paired ratio.  Run:

    python benchmarks/cbr.py [--frames 14] [--h 28] [--w 52] [--channels 640] [--compat]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.timing import ratio_text, time_cases  # noqa: E402
from tests.oracles.cbr_inputs import structured_inputs  # noqa: E402
from tests.oracles.cbr_loop import cbr_compat_loop, cbr_loop  # noqa: E402
from vidseg_core.cbr import cbr_refine, cbr_refine_compat  # noqa: E402


def run(frames=14, h=28, w=52, channels=640, repeat=3, compat=False, log=print):
    """Time both implementations on the same inputs; returns the figures (seconds) as a dict."""
    torch.manual_seed(0)
    labels, feats = structured_inputs(frames, h, w, channels)
    out = {"frames": frames, "h": h, "w": w, "channels": channels, "labels": int(labels.unique().numel()),
           "threads": torch.get_num_threads()}
    log(f"inputs: {frames} frames, {h}x{w} grid, {channels} channels, "
        f"{out['labels']} labels, torch threads {torch.get_num_threads()}")

    def pair(vectorised, loop):
        """Both sides ``repeat`` times in alternating rounds; the vectorised one warmed up first."""
        samples, outs = time_cases({"loop": loop, "vectorised": vectorised}, repeats=repeat, warmup=vectorised,
                                   keep=("loop", "vectorised"))
        lo, ve = samples["loop"], samples["vectorised"]
        same = torch.equal(outs["vectorised"], outs["loop"])
        d = {"vectorised": ve.median(), "loop": lo.median(), "identical": same, "ratio": ratio_text(lo, ve),
             "vectorised_text": ve.text(digits=4), "loop_text": lo.text(digits=3), "rounds": repeat}
        return d, outs["vectorised"]

    d, fast = pair(lambda: cbr_refine(labels, feats), lambda: cbr_loop(labels, feats))
    d["changed"] = float((fast != labels).float().mean())
    log(f"default CBR (Eqs 3-5, radius^2 = 2): vectorised {d['vectorised_text']} s, loop {d['loop_text']} s, "
        f"speed-up {d['ratio']}; identical output: {d['identical']}; cells changed: {d['changed']:.1%}")
    assert d["identical"], "vectorised CBR differs from the loop oracle"
    out["default"] = d

    if compat:
        d, _ = pair(lambda: cbr_refine_compat(labels, feats, dtype=torch.float64),
                    lambda: cbr_compat_loop(labels, feats, dtype=torch.float64))
        log(f"compat CBR (the authors' variant): vectorised {d['vectorised_text']} s, loop {d['loop_text']} s, "
            f"speed-up {d['ratio']}; identical output: {d['identical']}")
        assert d["identical"], "vectorised compat CBR differs from the loop oracle"
        out["compat"] = d
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=14)
    ap.add_argument("--h", type=int, default=28)
    ap.add_argument("--w", type=int, default=52)
    ap.add_argument("--channels", type=int, default=640)
    ap.add_argument("--repeat", type=int, default=3, help="alternating rounds of both sides (median, min-max)")
    ap.add_argument("--compat", action="store_true", help="also time the authors' variant (float64, both sides)")
    args = ap.parse_args(argv)
    run(args.frames, args.h, args.w, args.channels, args.repeat, args.compat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
