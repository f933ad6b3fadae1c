"""Equality check: prefix sharing on ComfyUI's own SD / SVD UNet (native adapter) vs the same run without it.

Run with ComfyUI's Python (the pack is loaded from this file's checkout; ``--comfyui COMFYUI_DIR``, default the
current folder; the ComfyUI version, commit and frontend are printed first)::

    python <pack>/tools/check_native_split.py --models DIR [--family sd|svd] [--frames 2] [--size 128]

Loads the random full-size SD 2.1 (or SVD) single file that ``tools/check_native.py`` writes
(``DIR/vidseg_check_v2-1_512_random.safetensors``, ``DIR/vidseg_check_svd_random.safetensors``) with ComfyUI's
``load_checkpoint_guess_config``, builds the native adapter, and runs the masked modulation of one batch twice
per coarse map, ``share_prefix`` on and off (interleaved, on first): labels and difference maps must agree
(maps within ``--atol`` relative to their maximum).  Two coarse maps: every label in every frame (the prefix of
one run expanded to all runs) and one label absent from the last frame (SD: compacted rows, the prefix of the
distinct frames gathered per row; SVD keeps whole runs, its temporal layers mix the frames).  Prints
the figures, the prefix statistics (prefix computations, reuses, whole-UNet calls) and the seconds of each run.
Exits 1 on a difference or when the prefix was not shared.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def coarse_maps(t: int, gh: int, gw: int):
    """Three labels in vertical bands; the second map drops label 2 from the last frame."""
    band = (torch.arange(gw) * 3 // gw).expand(t, gh, gw).clone()
    absent = band.clone()
    absent[-1][absent[-1] == 2] = 1
    return {"all labels everywhere": band, "label 2 absent from the last frame": absent}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, type=Path)
    p.add_argument("--comfyui", type=Path, default=None, metavar="COMFYUI_DIR",
                   help="the ComfyUI folder to run on (default: the current folder)")
    p.add_argument("--family", choices=["sd", "svd"], default="sd")
    p.add_argument("--frames", type=int, default=2)
    p.add_argument("--size", type=int, default=128, help="square frame side (multiple of 64)")
    p.add_argument("--atol", type=float, default=1e-4, help="max |Δ| of the difference maps / their max")
    p.add_argument("--timing-runs", type=int, default=7, help="runs of the timed UNet call at t_m (0: no timing)")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats, on/off interleaved")
    p.add_argument("--max-runs-per-chunk", type=int, default=None,
                   help="chunk the split-on side (rows path: the prefix of each frame is computed once and reused "
                        "by later chunks); the split-off side stays in one chunk")
    args = p.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tools.check_native import load_random_checkpoint, synthetic_frames

    pack, model, vae, encoders = load_random_checkpoint(args.models, args.family, comfy_dir=args.comfyui)
    core = pack.vidseg_core
    native = sys.modules[pack.__name__ + ".nodes.comfy_adapters.native"]
    bb = native.backbone_from_comfy(model, vae, **encoders)
    print(f"UNet {type(bb.unet).__module__}.{type(bb.unet).__name__}; splitter "
          f"{type(bb.prefix_splitter(7)).__name__}; {args.frames} frames {args.size}x{args.size}")
    frames = synthetic_frames(args.frames, args.size)
    ok = True
    with torch.inference_mode():
        inputs = core.features.prepare_batch(bb, frames)
        lh, lw = inputs.latent_hw
        for what, coarse in coarse_maps(args.frames, lh // 2, lw // 2).items():
            res = {}
            for share in (True, False):
                t0 = time.perf_counter()
                settings = core.modulation.ModulationSettings(
                    share_prefix=share, return_difference_maps=True,
                    max_runs_per_chunk=args.max_runs_per_chunk if share else None)
                r = core.modulation.modulate_batch(bb, inputs, coarse, None, (args.size, args.size), settings)
                res[share] = (r, time.perf_counter() - t0)
                gc.collect()
            (on, t_on), (off, t_off) = res[True], res[False]
            labels_differ = int((on.labels != off.labels).sum())
            scale = float(off.difference_maps.abs().max())
            rel = float((on.difference_maps - off.difference_maps).abs().max()) / max(scale, 1e-12)
            prefix = on.stats["prefix"]
            shared = isinstance(prefix, dict) and prefix.get("prefix", 0) >= 1 and "refused" not in prefix
            good = labels_differ == 0 and rel <= args.atol and shared
            ok &= good
            print(f"[{what}] labels differ: {labels_differ} of {on.labels.numel()} pixels; maps max |Δ|/max "
                  f"{rel:.3g} (max |map| {scale:.3g}; bit-identical: {torch.equal(on.difference_maps, off.difference_maps)}); "
                  f"compacted rows {on.stats.get('compacted_rows')}; prefix on: {json.dumps(prefix)}; "
                  f"off: {json.dumps(off.stats['prefix'])}; seconds on {t_on:.1f} / off {t_off:.1f}"
                  f"; chunks {on.stats['chunks']} ({on.stats['reference_pass']}){'' if good else '  FAIL'}")
        if args.timing_runs:
            time_tm_call(core, bb, inputs, args.timing_runs, args.repeats)
    return 0 if ok else 1


def time_tm_call(core, bb, inputs, runs: int, repeats: int) -> None:
    """Seconds of one guided UNet call at t_m on ``runs`` identical runs, prefix shared vs not (interleaved
    A-B-B-A...), wall and process CPU time; outputs compared."""
    step = bb.config.modulation_step
    x = inputs.x_start[None].expand(runs, *inputs.x_start.shape).clone()
    split = core.modulation.unet_split
    times = {True: [], False: []}
    outs = {}
    order = [True, False, False, True] * ((repeats + 1) // 2)
    for share in order[: 2 * repeats]:
        with split.shared_prefix(bb, bb.config.modulation_block, step, enabled=share) as drv:
            w0, c0 = time.perf_counter(), time.process_time()
            outs[share] = bb.denoised(x, step, inputs.cond)
            times[share].append((time.perf_counter() - w0, time.process_time() - c0))
            if share:
                assert drv is not None and drv.stats["prefix"] == 1, drv and drv.stats
    rel = float((outs[True] - outs[False]).abs().max() / outs[False].abs().max())

    def fmt(v):
        wall = sorted(w for w, _ in v)
        return f"median {wall[len(wall) // 2]:.2f} s (min {wall[0]:.2f}, max {wall[-1]:.2f}; cpu {sorted(c for _, c in v)[len(v) // 2]:.2f} s)"

    med = {k: sorted(w for w, _ in v)[len(v) // 2] for k, v in times.items()}
    print(f"[timing] UNet call at t_m={step}, {runs} identical runs x 2 halves x {x.shape[1]} frames, {repeats} "
          f"repeats: shared {fmt(times[True])}; whole {fmt(times[False])}; ratio {med[False] / med[True]:.2f}x; "
          f"output max |Δ|/max {rel:.2g}")


if __name__ == "__main__":
    raise SystemExit(main())
