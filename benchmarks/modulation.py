"""Masked modulation: sequential oracle vs batched implementation vs the guided-filter fast mode.

    python benchmarks/modulation.py [--frames 4] [--labels 5] [--height 448] [--width 832] [--repeats 3]
                                    [--flop-labels 10] [--flop-frames 14] [--skip-timing] [--skip-flops]

Part 1 (time, tiny-sd, same inputs for all): seconds per frame of
``tests/oracles/modulation_sequential.py`` (the authors' structure: a reference
pass storing q/k and latents, then one pass per label and sign), of
``modulate_batch`` (one chunk; also chunks of 3 runs with the reference
repeated vs stored) and of ``GuidedFilterUpsampler``; every case ``--repeats``
times in alternating rounds (``benchmarks/timing.py``), median and min-max; the
batched labels are checked against the oracle's.  Both sides of the ratio are
the modulation stage alone, from the same noisy latents; the whole-pipeline
ratio (feature pass, coarse stage and decodes included) is
``benchmarks/pipeline_speed.py``'s.

Part 2 (floating-point operations, REAL SD 2.1 and SVD architectures from
``vidseg_core/backbones/configs`` on meta tensors — nothing downloaded, no
weights): per frame at 448x832, K = 10 labels, T = 14 frames, counted with
``torch.utils.flop_counter.FlopCounterMode`` (attention through the math SDPA
kernel so that it is counted):

These are counts of the modulation stage, NOT a like-for-like ratio: the
authors' reference pass is also their feature pass, ours is separate.  The
same-scope whole-pipeline FLOPs are ``benchmarks/pipeline_flops.py``'s.

* the authors' schedule: a reference pass + 2K passes, each a full UNet
  evaluation (CFG batch 2T) at every step from t_m to the end, and a decode of
  every modulated pass (their per-pass structure);
* ours: what ``modulate_batch`` executes (counted by running it on the meta
  backbone);
* the fast mode.  FlopCounterMode only counts matmuls / convolutions, and the
  guided filter is mostly element-wise, so the fast mode is also given with an
  "all ops" count (matmul/conv formulas + one op per output element of every
  other non-view op, kernel area for pooling); the quality mode's all-ops count
  is given for the same ratio.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path
from typing import Optional

# OpenMP threads sleep at barriers instead of spinning (read when torch loads libgomp): with spinning, 2 threads
# on a busy 2-core machine made the tiny-model timings up to 100x slower and meaningless
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from oracles.modulation_sequential import sequential_modulation  # noqa: E402
from vidseg_core.backbones import load_backbone  # noqa: E402
from vidseg_core.features import BatchInputs, prepare_batch  # noqa: E402
from vidseg_core.modulation import ModulationSettings, modulate_batch  # noqa: E402
from vidseg_core.upsample import GuidedFilterUpsampler  # noqa: E402


# ------------------------------------------------------------------ inputs
def synthetic_frames(T, H, W, seed=0):
    """Smooth coloured blobs drifting over the frames (0..1)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(1, 3, H // 32 + 2, W // 32 + 2, generator=g)
    frames = []
    for t in range(T):
        shifted = torch.roll(base, shifts=t, dims=-1)
        frames.append(torch.nn.functional.interpolate(shifted, (H, W), mode="bicubic", align_corners=False)[0])
    return torch.stack(frames).clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def voronoi_coarse(T, h, w, K, seed=0):
    """K labels as Voronoi cells of slowly moving seeds: every label in every frame."""
    g = torch.Generator().manual_seed(seed)
    seeds = torch.rand(K, 2, generator=g) * torch.tensor([h, w])
    vel = (torch.rand(K, 2, generator=g) - 0.5) * 0.6
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    out = []
    for t in range(T):
        s = seeds + t * vel
        d = (yy[None] - s[:, 0, None, None]) ** 2 + (xx[None] - s[:, 1, None, None]) ** 2
        lab = d.argmin(0)
        lab.view(-1)[torch.arange(K) * (h * w // K)] = torch.arange(K)  # make sure every label occurs
        out.append(lab)
    return torch.stack(out)


# ------------------------------------------------------------------ timing
def timing(args):
    T, H, W, K = args.frames, args.height, args.width, args.labels
    bb = load_backbone("tiny-sd")
    frames = synthetic_frames(T, H, W)
    inputs = prepare_batch(bb, frames)
    lh, lw = inputs.latent_hw
    coarse = voronoi_coarse(T, lh // 2, lw // 2, K)
    ids = list(range(K))
    size = (H, W)
    print(f"== time: tiny-sd, {T} frames {W}x{H}, K = {K} labels ({2 * K} modulated runs), "
          f"{torch.get_num_threads()} threads, {args.repeats} interleaved rounds")

    cases = {
        "sequential oracle": lambda: sequential_modulation(bb, inputs, coarse, ids, size),
        "batched (one chunk)": lambda: modulate_batch(bb, inputs, coarse, ids, size,
                                                      ModulationSettings(return_difference_maps=True)),
        "batched, attention probabilities not shared": lambda: modulate_batch(
            bb, inputs, coarse, ids, size, ModulationSettings(share_attention=False)),
        "batched, chunks of 3 runs, reference repeated": lambda: modulate_batch(
            bb, inputs, coarse, ids, size, ModulationSettings(max_runs_per_chunk=3, reference_pass="repeat")),
        "batched, chunks of 3 runs, reference stored": lambda: modulate_batch(
            bb, inputs, coarse, ids, size, ModulationSettings(max_runs_per_chunk=3, reference_pass="store")),
        "fast mode (guided filter)": lambda: GuidedFilterUpsampler().upsample(frames, coarse, ids),
    }
    x1 = inputs.x_start[None]
    cases["(one UNet evaluation of one run)"] = lambda: bb.denoised(x1, bb.config.modulation_step, inputs.cond)
    cases["(decode of one run)"] = lambda: bb.decode(inputs.z0)
    from benchmarks.timing import ratio_text, time_cases

    if getattr(args, "cases", None) is not None:
        cases = {k: v for k, v in cases.items() if k in args.cases or k in ("sequential oracle", "batched (one chunk)")}

    def warm():
        GuidedFilterUpsampler().upsample(frames[:1], coarse[:1], ids)  # warm-up of the small kernels
        bb.denoised(inputs.x_start[None], bb.config.modulation_step, inputs.cond)

    with torch.inference_mode():
        samples, outs = time_cases(cases, repeats=args.repeats, per=T, warmup=warm,
                                   keep=("sequential oracle", "batched (one chunk)",
                                         "batched, chunks of 3 runs, reference stored"))
    seq_labels, seq_maps = outs["sequential oracle"]
    res = outs["batched (one chunk)"]
    agree = (res.labels == seq_labels).float().mean().item()
    dmax = (res.difference_maps - seq_maps).abs().max().item()
    stored = outs.get("batched, chunks of 3 runs, reference stored")
    store = stored.stats.get("store_bytes", 0) if stored is not None else 0
    for name, s in samples.items():
        print(f"  {name:48s} {s.text()} s/frame wall (median, min-max), {s.median('cpu'):.3f} CPU")
    seq = samples["sequential oracle"]
    print(f"  batched vs sequential (modulation only, same inputs): {ratio_text(seq, samples['batched (one chunk)'])} "
          f"faster; labels agree on {100 * agree:.3f}% of pixels, max |Δ difference map| = {dmax:.2e}")
    steps = len(bb.sigmas()) - 1 - bb.config.modulation_step
    if "(one UNet evaluation of one run)" in samples and "(decode of one run)" in samples:
        u, dec = samples["(one UNet evaluation of one run)"].median() * T, samples["(decode of one run)"].median() * T
        print(f"  per modulated run: {steps} UNet evaluations {steps * u:.2f} s + decode {dec:.2f} s; the decode alone "
              f"bounds batched/sequential to <= {(steps * u + dec) / dec:.2f}x for exact outputs")
    return {"setting": {"frames": T, "height": H, "width": W, "labels": K, "repeats": args.repeats,
                        "threads": torch.get_num_threads()},
            "samples": samples, "agree": agree, "dmax": dmax,
            "store_mib": store / 2 ** 20}


# ------------------------------------------------------------------ FLOPs
_VIEW_OPS = {"view", "_unsafe_view", "reshape", "expand", "permute", "transpose", "t", "unsqueeze", "squeeze",
             "select", "slice", "alias", "detach", "as_strided", "split", "split_with_sizes", "unbind", "chunk",
             "narrow", "clone", "copy_", "_to_copy", "contiguous", "cat", "stack", "empty", "empty_like", "zeros",
             "zeros_like", "ones_like", "full", "full_like", "new_empty", "new_zeros", "new_full", "lift_fresh",
             "index_select", "index", "repeat", "repeat_interleave", "arange", "scalar_tensor", "_local_scalar_dense",
             "fill_", "zero_", "empty_strided", "view_as", "expand_as", "flatten", "unfold", "roll", "flip",
             "index_put_", "masked_fill", "_reshape_alias", "lift", "sym_size", "set_", "resize_"}


class AllOpsCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """FlopCounterMode's matmul/conv formulas + one op per output element of every other computing op."""

    def __init__(self):
        super().__init__()
        from torch.utils.flop_counter import flop_registry

        self.registry = flop_registry
        self.matmul = 0
        self.other = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        pkt = func._overloadpacket
        if pkt not in self.registry:  # count composite ops (matmul, linear, ...) through their decomposition
            with self:
                r = func.decompose(*args, **kwargs)
                if r is not NotImplemented:
                    return r
        out = func(*args, **kwargs)
        name = pkt.__name__
        if pkt in self.registry:
            self.matmul += self.registry[pkt](*args, **kwargs, out_val=out)
        elif name not in _VIEW_OPS:
            outs = out if isinstance(out, (tuple, list)) else (out,)
            n = sum(o.numel() for o in outs if torch.is_tensor(o))
            if name.startswith("avg_pool") or name.startswith("max_pool"):
                ks = args[1] if len(args) > 1 else kwargs.get("kernel_size", [1])
                n *= int(torch.tensor(ks).prod()) if not isinstance(ks, int) else ks * ks
            self.other += n
        return out

    @property
    def total(self):
        return self.matmul + self.other


def _meta(*shape):
    return torch.empty(*shape, device="meta")


def meta_sd(unet_config=None, vae_config=None):
    """The SD 2.1 backbone on meta tensors (shipped configs, or the given ones) and ``cond_of(T, lh, lw)``."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from vidseg_core.backbones.config import SD21Config
    from vidseg_core.backbones.sd21 import SD21Backbone, SD21Condition

    d = ROOT / "vidseg_core" / "backbones" / "configs" / "sd21"
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(dict(unet_config or json.loads((d / "unet" / "config.json").read_text())))
        vae = AutoencoderKL.from_config(dict(vae_config or json.loads((d / "vae" / "config.json").read_text())))
    bb = SD21Backbone("sd21-meta", SD21Config(), unet.eval(), vae.eval(), torch.device("meta"), torch.float32,
                      torch.zeros(1, 77, unet.config.cross_attention_dim))
    return bb, lambda T, lh, lw: SD21Condition(_meta(2, 77, unet.config.cross_attention_dim))


def meta_svd(unet_config=None, vae_config=None):
    """The SVD backbone on meta tensors (shipped configs, or the given ones) and ``cond_of(T, lh, lw)``."""
    from vidseg_core.backbones.config import SVDConfig
    from vidseg_core.backbones.svd import SVDBackbone, SVDCondition, _build

    d = ROOT / "vidseg_core" / "backbones" / "configs" / "svd"
    # a few SVD parameters are made with the legacy torch.Tensor([...]) constructor, which ignores the meta
    # default device: move everything to meta
    unet = _build("unet", dict(unet_config or json.loads((d / "unet" / "config.json").read_text())), meta=True).to("meta")
    vae = _build("vae", dict(vae_config or json.loads((d / "vae" / "config.json").read_text())), meta=True).to("meta")
    bb = SVDBackbone("svd-meta", SVDConfig(), unet.eval(), vae.eval(), None, torch.device("meta"), torch.float32)
    D = unet.config.cross_attention_dim
    return bb, lambda T, lh, lw: SVDCondition(_meta(2, 1, D), _meta(2, 4, lh, lw), _meta(2, 3), _meta(T))


class FlopCountingUnavailable(RuntimeError):
    """This torch's FlopCounterMode cannot count the backbones (see :func:`flop_counting_problem`)."""


@functools.lru_cache(maxsize=None)
def flop_counting_problem() -> Optional[str]:
    """``None`` when FlopCounterMode counts a linear layer under ``inference_mode``, else why not.

    torch 2.5.1 counts no linear layer or convolution there (only bare ``mm``), so every FLOP table would
    read 0; torch 2.11 and 2.13 count them.  The counters refuse rather than print zeros."""
    from torch.utils.flop_counter import FlopCounterMode

    lin, x = torch.nn.Linear(8, 8), torch.zeros(2, 8)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        lin(x)
    if fc.get_total_flops() == 2 * 2 * 8 * 8:
        return None
    return (f"torch {torch.__version__}'s FlopCounterMode counts no linear layer under inference_mode (torch 2.11 "
            "and 2.13 do); count FLOPs with a newer torch")


def _refuse_without_flop_counting() -> None:
    problem = flop_counting_problem()
    if problem:
        raise FlopCountingUnavailable(problem)


def count(fn):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    _refuse_without_flop_counting()
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):
        with FlopCounterMode(display=False) as fc:
            fn()
    return fc.get_total_flops()


def count_all(fn):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    _refuse_without_flop_counting()
    with torch.inference_mode(), sdpa_kernel(SDPBackend.MATH):
        with AllOpsCounter() as c:
            fn()
    return c.total


def flops(args):
    T, K, H, W = args.flop_frames, args.flop_labels, args.height, args.width
    lh, lw = H // 8, W // 8
    coarse = voronoi_coarse(T, lh // 2, lw // 2, K)
    ids = list(range(K))
    print(f"== FLOPs per frame: real architectures (meta tensors), {W}x{H}, T = {T} frames, K = {K} labels")
    result = {}
    for name, make in (("SD 2.1", meta_sd), ("SVD", meta_svd)):
        bb, cond_of = make()
        cfg = bb.config
        steps = len(bb.sigmas()) - 1 - cfg.modulation_step
        x = _meta(T, 4, lh, lw)
        inputs = BatchInputs(_meta(T, 3, H, W), x, cond_of(T, lh, lw), x, x)
        unet_eval = count(lambda: bb.denoised(x[None], cfg.modulation_step, inputs.cond))
        decode = count(lambda: bb.decode(x))
        authors = (1 + 2 * K) * steps * unet_eval + 2 * K * decode
        ours = count(lambda: modulate_batch(bb, inputs, coarse, ids, (H, W), ModulationSettings(share_attention=True)))
        ours_plain = count(lambda: modulate_batch(bb, inputs, coarse, ids, (H, W),
                                                  ModulationSettings(share_attention=False)))
        fast = count(lambda: GuidedFilterUpsampler().upsample(_meta(T, H, W, 3), coarse, ids))
        ours_all = count_all(lambda: modulate_batch(bb, inputs, coarse, ids, (H, W),
                                                    ModulationSettings(share_attention=True)))
        fast_all = count_all(lambda: GuidedFilterUpsampler().upsample(_meta(T, H, W, 3), coarse, ids))
        tf = 1e12
        print(f"  {name}: one UNet evaluation (CFG, {2 * T} rows) {unet_eval / tf:.2f} TFLOP, decode of {T} frames "
              f"{decode / tf:.2f} TFLOP, {steps} steps per pass")
        print(f"    authors' schedule  {authors / T / tf:10.3f} TFLOP/frame  (reference + {2 * K} passes + {2 * K} decodes)")
        print(f"    ours (batched)     {ours / T / tf:10.3f} TFLOP/frame  (modulation stage only: without our "
              f"separate feature pass, so not comparable with the line above; see pipeline_flops.py)")
        print(f"    ours, no shared attention probabilities {ours_plain / T / tf:.3f} TFLOP/frame")
        print(f"    fast mode          {fast / T / 1e9:10.3f} GFLOP/frame (FlopCounterMode: matmul/conv only); "
              f"all ops {fast_all / T / 1e9:.3f} G/frame")
        print(f"    upsampling stage only, quality / fast: {ours_all / fast_all:.3g}x (all ops); both modes share the "
              f"feature pass, so whole pipelines differ far less (pipeline_flops.py)")
        result[name] = {"setting": {"frames": T, "height": H, "width": W, "labels": K, "steps": steps},
                        "unet_eval": unet_eval, "decode": decode, "authors": authors / T, "ours": ours / T,
                        "fast": fast / T, "ours_all": ours_all / T, "fast_all": fast_all / T,
                        "ours_plain": ours_plain / T}
    return result


def run(frames=4, labels=5, height=448, width=832, repeats=3, flop_labels=10, flop_frames=14, timing_part=True,
        flops_part=True, cases=None):
    """Both parts as dicts (FLOPs per frame; timing samples per frame), for ``benchmarks/run_all.py``.
    ``cases``: timed cases besides the sequential oracle and the one-chunk batched run (default all)."""
    args = argparse.Namespace(frames=frames, labels=labels, height=height, width=width, repeats=repeats,
                              flop_labels=flop_labels, flop_frames=flop_frames, cases=cases)
    return {"flops": flops(args) if flops_part else None, "timing": timing(args) if timing_part else None}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--labels", type=int, default=5)
    ap.add_argument("--height", type=int, default=448)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds (at least 3 for published figures)")
    ap.add_argument("--cases", nargs="*", default=None, help="timed cases besides the oracle and one-chunk batched")
    ap.add_argument("--flop-labels", type=int, default=10)
    ap.add_argument("--flop-frames", type=int, default=14)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--skip-timing", action="store_true")
    ap.add_argument("--skip-flops", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.skip_flops:
        flops(args)
    if not args.skip_timing:
        timing(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
