"""How much the compute precision moves the labels: bf16 and fp16 against fp32, batched and sequential.

The pack runs in bf16 on CUDA by default (``precision="auto"``), fp32 on the
CPU; the authors ran fp16 under autocast (fp32 weights, fp16 matrix products;
docs/design/authors_code.md#runtime-structure-and-precision).  Quality mode takes an argmax over
difference maps of decodes (paper §4.3, Eq. 7-8): rounding in the UNet and the
VAE moves pixels whose two best labels are close.  This measures by how much,
on the same weights, frames and random draws:

* **modulation alone**: ``modulate_batch`` (batched) and the sequential oracle
  (``tests/oracles/modulation_sequential.py``: reference pass + 2L single-run
  passes) on the SAME fp32 inputs (encoded latents, noise, conditioning, cast
  to the precision) and the same coarse map (``--labels`` Voronoi labels, every
  label in every frame): the upsampler's own sensitivity;
* **whole pipeline**: features, KMeans, KNN, CBR and modulation all in the
  precision, quality mode, K = ``--labels``; the coarse maps and labels are
  compared with fp32 after matching ids one to one (Hungarian, on the pixel
  counts), as KMeans may number the same clusters differently.

Precisions: ``bf16`` and ``fp16`` are the backbone cast as the pack casts it on
CUDA (``Backbone.to``: the VAE stays fp32 in fp16); ``autocast-fp16`` keeps the
fp32 weights and runs under ``torch.autocast`` in fp16, the authors' setting
(modulation alone only); ``fp16-vae16`` is fp16 with the VAE in fp16 too (not a
pack setting: what fp16 would cost without fp32 decodes).  fp16 is refused on the CPU by the loaders (slow
there): the cast here bypasses that on purpose, to measure its rounding.

    python benchmarks/precision.py [--models tiny-sd tiny-svd] [--num-frames 2] [--max-side 192] [--labels 10]
    python benchmarks/precision.py --models sd21-full --num-frames 2 --max-side 128   # real architecture, random

``sd21-full`` / ``svd-full`` build the real architectures from the shipped
configs with random weights (as ``benchmarks/gpu.py``).  Random weights give
weaker, noisier difference maps than real checkpoints, so these agreements are
a lower bound on what real weights give, not a prediction of it.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from benchmarks.clips import CLIPS, missing_clip_message  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
PRECISIONS = ("bf16", "fp16", "autocast-fp16", "fp16-vae16")
MODELS = ("tiny-sd", "tiny-svd", "sd21-full", "svd-full")
FRAMES = CLIPS / "blackswan" / "frames"


def build(model: str, device: torch.device):
    """The fp32 backbone (seeded: every call gives the same weights)."""
    if model.startswith("tiny"):
        from vidseg_core.backbones import load_backbone

        return load_backbone(model, device=str(device), precision="fp32")
    from benchmarks.gpu_cases import build as build_full

    return build_full("sd21" if model.startswith("sd21") else "svd", device, torch.float32, tiny=False)


def at_precision(model: str, precision: str, device: torch.device):
    """``(backbone, context)``: the backbone as the pack runs it in ``precision`` and the context to call it in."""
    bb = build(model, device)
    if precision.startswith("autocast-"):
        return bb, torch.autocast(device.type, dtype=DTYPES[precision.split("-", 1)[1]])
    if precision == "fp16-vae16":  # not a pack setting: the VAE in fp16 too (no fp32 decodes)
        from vidseg_core.backbones.base import cast_module

        cast_module(bb.to(dtype=torch.float16).vae, torch.float16)
        return bb, contextlib.nullcontext()
    return bb.to(dtype=DTYPES[precision]), contextlib.nullcontext()


def cast_inputs(inputs, dtype: torch.dtype):
    """The batch inputs with every floating tensor (conditioning included) cast to ``dtype``."""
    def cast(x):
        if torch.is_tensor(x):
            return x.to(dtype) if x.is_floating_point() else x
        if isinstance(x, dict):
            return {k: cast(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return type(x)(cast(v) for v in x)
        return x
    return type(inputs)(*(cast(getattr(inputs, f.name)) for f in dataclasses.fields(inputs)))


def matched_agreement(a: torch.Tensor, b: torch.Tensor) -> float:
    """Share of pixels equal after renumbering ``b``'s ids one to one onto ``a``'s (most shared pixels)."""
    from scipy.optimize import linear_sum_assignment

    ia, a_idx = torch.unique(a, return_inverse=True)
    ib, b_idx = torch.unique(b, return_inverse=True)
    counts = np.zeros((len(ia), len(ib)), dtype=np.int64)
    np.add.at(counts, (a_idx.flatten().numpy(), b_idx.flatten().numpy()), 1)
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum()) / a.numel()


def modulation_alone(model: str, frames: torch.Tensor, labels: int, precisions, device, log) -> Dict[str, dict]:
    """Labels of ``modulate_batch`` and of the sequential oracle per precision, on the fp32 inputs."""
    from benchmarks.modulation import voronoi_coarse
    from oracles.modulation_sequential import sequential_modulation
    from vidseg_core.features import prepare_batch
    from vidseg_core.modulation import ModulationSettings, modulate_batch

    bb32 = build(model, device)
    with torch.inference_mode():
        inputs = prepare_batch(bb32, frames)
    del bb32
    lh, lw = inputs.latent_hw
    coarse = voronoi_coarse(int(frames.shape[0]), lh // 2, lw // 2, labels)
    ids = sorted(int(v) for v in torch.unique(coarse))
    size = tuple(int(v) for v in frames.shape[1:3])
    out: Dict[str, dict] = {}
    for p in ("fp32",) + tuple(precisions):
        t = time.perf_counter()
        bb, ctx = at_precision(model, p, device)
        x = cast_inputs(inputs, bb.dtype)
        with torch.inference_mode(), ctx:
            batched = modulate_batch(bb, x, coarse, ids, size, ModulationSettings()).labels
            oracle = sequential_modulation(bb, x, coarse, ids, size)[0]
        out[p] = {"batched": batched.cpu(), "oracle": oracle.cpu()}
        log(f"  {model} modulation alone, {p}: {time.perf_counter() - t:.1f} s")
        del bb
    return out


def whole_pipeline(model: str, frames: torch.Tensor, labels: int, precisions, device, log) -> Dict[str, dict]:
    """Coarse maps and labels of the whole quality pipeline per precision (the authors' autocast is
    measured for the modulation alone)."""
    from benchmarks.pipeline_speed import segment
    from vidseg_core.pipeline import SegmentSettings

    out: Dict[str, dict] = {}
    for p in ("fp32",) + tuple(q for q in precisions if not q.startswith("autocast-")):
        t = time.perf_counter()
        bb, _ = at_precision(model, p, device)
        with torch.inference_mode():
            lab, coarse, _ = segment(bb, frames, SegmentSettings(mode="quality", num_clusters=labels))
        out[p] = {"labels": lab.cpu(), "coarse": coarse.cpu()}
        log(f"  {model} whole pipeline, {p}: {time.perf_counter() - t:.1f} s")
        del bb
    return out


def _equal(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a == b).float().mean().item()


def _pct(x: Optional[float]) -> str:
    return "" if x is None else f"{100 * x:.2f}%"


def table(model: str, mod: Dict[str, dict], pipe: Dict[str, dict]) -> List[str]:
    """Markdown rows: agreement with fp32 (share of pixels) per precision."""
    ref_b, ref_o = mod["fp32"]["batched"], mod["fp32"]["oracle"]
    rows = []
    for p in ("fp32",) + tuple(k for k in mod if k != "fp32"):
        m = mod[p]
        w = pipe.get(p)
        coarse = labels = None
        if w is not None:
            coarse = matched_agreement(pipe["fp32"]["coarse"], w["coarse"])
            labels = matched_agreement(pipe["fp32"]["labels"], w["labels"])
        rows.append(f"| {model} | {p} | {_pct(_equal(ref_b, m['batched']))} | {_pct(_equal(ref_o, m['oracle']))} | "
                    f"{_pct(_equal(m['batched'], m['oracle']))} | {_pct(coarse)} | {_pct(labels)} |")
    return rows


HEADER = ["| Model | Precision | modulation alone: batched vs fp32 batched | oracle vs fp32 oracle | batched vs oracle "
          "(same precision) | whole pipeline: coarse maps vs fp32 (ids matched) | labels vs fp32 (ids matched) |",
          "|---|---|---|---|---|---|---|"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["tiny-sd", "tiny-svd"], choices=MODELS)
    ap.add_argument("--precisions", nargs="+", default=["bf16", "fp16", "autocast-fp16"], choices=PRECISIONS)
    ap.add_argument("--frames", type=Path, default=FRAMES)
    ap.add_argument("--num-frames", type=int, default=2)
    ap.add_argument("--max-side", type=int, default=192)
    ap.add_argument("--labels", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-pipeline", dest="pipeline", action="store_false", help="modulation alone only")
    args = ap.parse_args(argv)
    from vidseg_core.devices import resolve_device
    from vidseg_core.video_io import FrameSource

    if not args.frames.is_dir():
        print(missing_clip_message(args.frames), file=sys.stderr)
        return 2
    device = resolve_device(args.device)
    frames = FrameSource(args.frames, frame_range=(0, args.num_frames), max_side=args.max_side).read_all()
    log = print
    log(f"precision study: {frames.shape[0]} frames {frames.shape[2]}x{frames.shape[1]} of {args.frames}, "
        f"K = {args.labels}, device {device}, torch {torch.__version__}")
    lines = list(HEADER)
    for model in args.models:
        mod = modulation_alone(model, frames, args.labels, args.precisions, device, log)
        pipe = whole_pipeline(model, frames, args.labels, args.precisions, device, log) if args.pipeline else {}
        lines += table(model, mod, pipe)
    log("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
