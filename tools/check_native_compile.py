"""Equality check: ``VidSeg Model from ComfyUI`` honouring a TorchCompileModel node, against the eager native path.

Run with ComfyUI's Python (the pack is loaded from this file's checkout; ``--comfyui COMFYUI_DIR``, default the
current folder; the ComfyUI version, commit and frontend are printed first)::

    python <pack>/tools/check_native_compile.py --models DIR [--family sd|svd] [--backend aot_eager] [--size 64]

Loads the random full-size SD 2.1 (or SVD) single file that ``tools/check_native.py`` writes with ComfyUI's
``load_checkpoint_guess_config``, puts ComfyUI's own TorchCompileModel request on a clone of the MODEL
(``comfy_api.torch_helpers.set_torch_compile_wrapper``, as the node does), and builds two adapters through the
node: ``compile`` = off from the plain MODEL, ``compile`` = auto from the requested one.  Then one batch's
masked modulation on four coarse maps, eager then compiled each: 3 labels; a 4th label in one frame (SD:
compacted rows); a 5th in the other frame (more rows); the first map again.  Labels must be identical and the
difference maps agree within ``--atol`` (relative to their maximum; with inductor pass a looser ``--atol``
and ``--max-labels-differ``: its kernels sum in another order); ``--run-counts``: first, one guided UNet
evaluation at t_m per run count (new graphs each; none expected from the third on); prints the new dynamo graphs per call
(no new graph is expected once a batch size was seen twice), the graph breaks that are not the adapter's own
patches, the prefix statistics, recompile-limit hits and warnings, and whether any block of the MODEL is
left compiled after the calls (it must not be: ComfyUI's samplers run those modules too).  The seconds are
those of one run each, compilation included: not a speed figure.  Exits 1 on a difference, a limit hit, a
fallback or a block left compiled.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def coarse_maps(t: int, gh: int, gw: int):
    """Three bands; then a 4th label in the first frame, a 5th in the last, then the first map again."""
    band = (torch.arange(gw) * 3 // gw).expand(t, gh, gw).clone()
    fourth = band.clone()
    fourth[0, :1, :1] = 3
    fifth = fourth.clone()
    fifth[-1, -1:, -1:] = 4
    return [("3 labels", band), ("4th label in one frame", fourth), ("5th label in another", fifth),
            ("3 labels again", band)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, type=Path)
    p.add_argument("--comfyui", type=Path, default=None, metavar="COMFYUI_DIR",
                   help="the ComfyUI folder to run on (default: the current folder)")
    p.add_argument("--family", choices=["sd", "svd"], default="sd")
    p.add_argument("--backend", default="aot_eager", help="the TorchCompileModel backend (inductor needs a C compiler "
                                                          "on the CPU and takes minutes at full size)")
    p.add_argument("--frames", type=int, default=2)
    p.add_argument("--size", type=int, default=64, help="square frame side (multiple of 64)")
    p.add_argument("--atol", type=float, default=1e-5, help="max |Δ| of the difference maps / their max")
    p.add_argument("--unet-dtype", choices=["fp16", "bf16"], default=None,
                   help="ComfyUI's model_options dtype for the UNet: weights stored in it; on the CPU ComfyUI then "
                        "casts them to float32 in every forward (comfy.ops manual cast, the path low-VRAM loading "
                        "takes on a GPU)")
    p.add_argument("--max-labels-differ", type=float, default=0.0,
                   help="fraction of pixels whose label may differ (0: identical; inductor reorders float sums, so "
                        "near-ties of the argmax can flip)")
    p.add_argument("--run-counts", type=int, nargs="*", default=[],
                   help="first, one guided UNet evaluation at t_m per run count (e.g. 7 9 11 13 15): new graphs of "
                        "each; from the third on none is expected")
    args = p.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tools.check_native import load_random_checkpoint, synthetic_frames

    options = {"dtype": {"fp16": torch.float16, "bf16": torch.bfloat16}[args.unet_dtype]} if args.unet_dtype else None
    pack, model, vae, encoders = load_random_checkpoint(args.models, args.family, options, comfy_dir=args.comfyui)
    print(f"UNet weights {model.model.get_dtype()}, manual cast to {model.model.manual_cast_dtype}", flush=True)
    from comfy_api.torch_helpers.torch_compile import set_torch_compile_wrapper
    from torch._dynamo.utils import counters

    core = pack.vidseg_core
    node = sys.modules[pack.__name__ + ".nodes.model_from_comfy"].VidSegModelFromComfy()
    requested = model.clone()
    set_torch_compile_wrapper(model=requested, backend=args.backend)
    eager = node.convert(model, vae, compile="off", **encoders)[0].backbone
    compiled = node.convert(requested, vae, **encoders)[0].backbone  # compile = auto
    job = getattr(compiled, "compiled", None)
    if job is None:
        print("FAIL: the TorchCompileModel request was not honoured")
        return 1
    state = job.state
    print("compile state:", state.to_dict(), flush=True)
    regions = compiled.compile_regions()
    settings = core.modulation.ModulationSettings(return_difference_maps=True)
    frames = synthetic_frames(args.frames, args.size)
    failed = []
    with torch.inference_mode():
        ins_e = core.features.prepare_batch(eager, frames)
        ins_c = core.features.prepare_batch(compiled, frames)
        if not torch.equal(ins_e.z0, ins_c.z0):
            dz = float((ins_e.z0 - ins_c.z0).abs().max())
            print(f"latents differ by {dz:.2e}")
        step = compiled.config.modulation_step
        for i, runs in enumerate(args.run_counts):
            before = counters["stats"]["unique_graphs"]
            t0 = time.perf_counter()
            compiled.denoised(ins_c.x_start[None].expand(runs, *ins_c.x_start.shape).clone(), step, ins_c.cond)
            new = counters["stats"]["unique_graphs"] - before
            print(f"{runs} runs, one guided evaluation at t_m: new graphs {new} ({time.perf_counter() - t0:.1f} s)",
                  flush=True)
            if i >= 2 and new:
                failed.append(f"{runs} runs recompiled")
        lh, lw = ins_e.latent_hw
        for name, coarse in coarse_maps(args.frames, lh // 2, lw // 2):
            t0 = time.perf_counter()
            want = core.modulation.modulate_batch(eager, ins_e, coarse, None, None, settings)
            t_eager = time.perf_counter() - t0
            before = counters["stats"]["unique_graphs"]
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                t0 = time.perf_counter()
                got = core.modulation.modulate_batch(compiled, ins_c, coarse, None, None, settings)
                t_comp = time.perf_counter() - t0
            differ = int((got.labels != want.labels).sum())
            rel = float((got.difference_maps - want.difference_maps).abs().max()
                        / want.difference_maps.abs().max().clamp_min(1e-12))
            said = [str(w.message)[:160] for w in caught]
            print(f"{name}: labels differ {differ} of {want.labels.numel()}, maps max |Δ|/max {rel:.2e}, "
                  f"new graphs {counters['stats']['unique_graphs'] - before}, compacted rows "
                  f"{got.stats.get('compacted_rows')}, prefix {got.stats.get('prefix')}, one run each: eager "
                  f"{t_eager:.1f} s, compiled {t_comp:.1f} s, warnings {said}", flush=True)
            if differ > args.max_labels_differ * want.labels.numel() or rel > args.atol or said:
                failed.append(name)
    own = ("AttentionReplace.forward", "AttentionOutput.forward", "_by_rows_forward")
    other = {k.splitlines()[0][:120]: v for k, v in counters["graph_break"].items() if not any(o in k for o in own)}
    print(f"graph breaks: {sum(counters['graph_break'].values())}, not the adapter's patches: {other}")
    left = sum(m._compiled_call_impl is not None for m in regions.values())
    print(f"recompile-limit hits: {state.limit_hits}; active: {state.active}; fallback: {state.fallback}; "
          f"blocks of the MODEL left compiled: {left}")
    if failed or state.limit_hits or not state.active or left:
        print("FAIL:", failed or "see above")
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
