"""Feature extraction FLOPs per frame on the REAL SD 2.1 and SVD architectures (meta tensors, no weights).

    python benchmarks/features_flops.py [--frames 14] [--height 448] [--width 832]

The feature pass (paper §4.1, docs/design/authors_code.md#schedule-and-noise-levels) encodes the frames and runs
the UNet from t_m to the last step, where the queries of decoder blocks 6-8 are
read.  The last evaluation's output is never used, so ``capture_features``
runs it on the conditional half only (``denoised(conditional_only=True)``) and
stops it right after block 8's queries (``CaptureQueries(stop_when_done=True)``);
the features agree with the full pass to float rounding (~1e-6, tested in
``tests/test_features.py``).  This script counts,
with ``torch.utils.flop_counter.FlopCounterMode`` (attention through the math
SDPA kernel so that it is counted), the FLOPs per frame of

* the full pass: encode + every UNet evaluation complete (the authors' reference pass);
* ours: encode + the same pass with the last evaluation conditional-only and stopped after block 8.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.modulation import _meta, count, meta_sd, meta_svd  # noqa: E402
from vidseg_core.backbones.attention import CaptureQueries  # noqa: E402
from vidseg_core.features import evaluate_feature_step, feature_layers  # noqa: E402


def _stopped_feature_step(bb, x, cond):
    capture = CaptureQueries(feature_layers(bb.config), steps={bb.config.feature_step}, device="meta",
                             stop_when_done=True)
    evaluate_feature_step(bb, x, cond, capture)
    if len(capture.captured) != len(capture.layers):
        raise RuntimeError("the feature step did not capture every feature layer")


def feature_pass_flops(bb, cond_of, frames: int, height: int, width: int) -> dict:
    """FLOPs (whole batch, not per frame) of the feature pass of ``bb`` (a meta backbone): ``encode``, one guided
    UNet evaluation ``unet_eval``, ``full`` (encode + every evaluation complete) and ``ours`` (the last one
    conditional-only and stopped after block 8), ``steps`` evaluations, ``last_fraction``."""
    T, H, W = frames, height, width
    lh, lw = H // 8, W // 8
    cfg = bb.config
    x = _meta(1, T, 4, lh, lw)
    cond = cond_of(T, lh, lw)
    steps = cfg.feature_step - cfg.modulation_step + 1
    unet_eval = count(lambda: bb.denoised(x, cfg.feature_step, cond))
    last = count(lambda: _stopped_feature_step(bb, x, cond))
    encode = count(lambda: bb.vae.encode(_meta(T, 3, H, W)))
    return {"encode": encode, "unet_eval": unet_eval, "steps": steps, "last_fraction": last / unet_eval,
            "full": encode + steps * unet_eval, "ours": encode + (steps - 1) * unet_eval + last}


def run(frames: int = 14, height: int = 448, width: int = 832, log=print) -> dict:
    """``{arch: {"full": FLOP/frame, "ours": FLOP/frame, "steps": n, "setting": ...}}``."""
    T, H, W = frames, height, width
    log(f"== feature pass FLOPs per frame: real architectures (meta tensors), {W}x{H}, T = {T} frames")
    result = {}
    for name, make in (("SD 2.1", meta_sd), ("SVD", meta_svd)):
        bb, cond_of = make()
        f = feature_pass_flops(bb, cond_of, T, H, W)
        full, ours, steps, tf = f["full"], f["ours"], f["steps"], 1e12
        log(f"  {name}: {steps} UNet evaluations (CFG, {2 * T} rows) of {f['unet_eval'] / tf:.2f} TFLOP; the last "
            f"one conditional-only, stopped after block 8: {100 * f['last_fraction']:.0f}% of one; "
            f"encode {f['encode'] / tf:.2f} TFLOP")
        log(f"    full pass {full / T / tf:.3f} TFLOP/frame, ours {ours / T / tf:.3f} TFLOP/frame "
            f"({full / ours:.3f}x fewer, {100 * (1 - ours / full):.1f}% saved)")
        result[name] = {"full": full / T, "ours": ours / T, "steps": steps, "last_fraction": f["last_fraction"],
                        "setting": {"frames": T, "height": H, "width": W}}
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=14)
    ap.add_argument("--height", type=int, default=448)
    ap.add_argument("--width", type=int, default=832)
    args = ap.parse_args(argv)
    with torch.inference_mode():
        run(args.frames, args.height, args.width)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
