"""One prepared command for a lent GPU: the whole pipeline on full-size SD 2.1 and SVD (random weights, bf16).

    python benchmarks/gpu.py [--frames DIR] [--families sd21 svd] [--labels 10] [--repeats 3] [--budget-s 450]
                             [--presence 0.414] [--compile] [--out DIR]            # on one CUDA device
    python benchmarks/gpu.py --device cpu --tiny --num-frames 2 --max-side 192 --repeats 1   # CPU smoke test

For each family it builds the real architecture from the shipped configs
(``vidseg_core/backbones/configs``; nothing downloaded, random weights: the
time does not depend on the weights' values) in bf16 on the device, reads the
14 blackswan frames (854x480, worked at 832x448) from ``--frames`` (default
``gpu_frames/blackswan`` in the repository, see ``scripts/gpu_prepare.sh``, else
``../shared/data/blackswan/frames``) and times, per frame, in alternating rounds
(``benchmarks/timing.py``), GPU-synchronised, with CUDA events and the peak
memory of each case:

* the feature pass (encode + reference trajectory to t_k);
* the whole pipeline in fast mode, in quality mode (batched masked modulation,
  K = ``--labels`` clusters) and in quality mode through the sequential oracle
  (reference pass + 2L single-run passes one after another: the authors'
  structure without their disk round trips), same labels;
* one guided UNet evaluation of 1 run and of the quality run's chunk size;
* SD 2.1 only: ``modulate_batch`` alone with the feature pass's reference
  store, on ``--labels`` labels of which ``--presence`` of the (label, frame)
  pairs are present (0.414: the blackswan ``masks_rvos`` proposals, see
  ``benchmarks/label_presence.py``), the absent rows skipped against whole runs
  (``skip_absent_rows=False``), same inputs, labels compared.

Achieved TFLOP/s compare FLOPs counted on the same architecture on meta
tensors (the counts of ``benchmarks/pipeline_flops.py``) with the median time,
and with a large matrix product measured in the same run (the device's
practical ceiling).  Then one quality batch is profiled (UNet, encode, decode,
difference maps, everything else).  It prints one table and writes the log,
the table and a JSON file under ``$OUT`` (or ``--out``).  ``--budget-s`` caps
the rounds so the whole command fits one device call (each family's warm-up
decides how many rounds fit; fewer than 3 is said in the table).

``--compile`` times the backbone compiled by ``vidseg_core.compile`` (inductor)
and adds what compilation did (regions, fallback, recompile-limit hits, new
graphs) and how many pixels of the compiled quality labels differ from one
eager run after it.  Compilation happens in the warm-up; on 2 CPU cores the
tiny backbones took 2 min (SD) and 8 min (SVD) to compile, so give a compiled
run its own device call, one family at a time.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

import torch  # noqa: E402

from benchmarks.pipeline_speed import CASE_NAMES, pipeline_cases  # noqa: E402
from benchmarks.timing import ratio_text, time_cases, time_once  # noqa: E402

FRAME_DIRS = (ROOT / "gpu_frames" / "blackswan", ROOT.parent / "shared" / "data" / "blackswan" / "frames")
FAMILIES = ("sd21", "svd")
PRESENCE_NAMES = {"mod_rows": "modulation alone at the given presence, absent (label, frame) rows skipped",
                  "mod_whole": "modulation alone at the given presence, whole runs (skip_absent_rows=False)"}


def presence_cases(bb, frames, labels: int, fraction: float, results: dict):
    """``modulate_batch`` alone (the feature pass's reference store given, as the pipeline does) on ``labels``
    Voronoi labels with ``fraction`` of the (label, frame) pairs present: rows skipped vs whole runs.
    Returns ``(cases, inputs, coarse, store)``; each case leaves its labels in ``results``."""
    from benchmarks.modulation import voronoi_coarse
    from benchmarks.pipeline_flops import presence_coarse
    from vidseg_core.features import prepare_batch
    from vidseg_core.modulation import ModulationSettings, modulate_batch
    from vidseg_core.modulation.reference import reference_pass

    inputs = prepare_batch(bb, frames)
    lh, lw = inputs.latent_hw
    coarse = presence_coarse(voronoi_coarse(int(frames.shape[0]), lh // 2, lw // 2, labels), fraction)
    store = reference_pass(bb, inputs)[2]
    size = tuple(int(v) for v in frames.shape[1:3])

    def case(key, skip):
        def fn():
            res = modulate_batch(bb, inputs, coarse, None, size, ModulationSettings(skip_absent_rows=skip),
                                 reference=store)
            results[key] = res.labels
        return fn
    return {"mod_rows": case("mod_rows", True), "mod_whole": case("mod_whole", False)}, inputs, coarse, store


def presence_flops(meta, cond_of, T: int, hw, coarse) -> Dict[str, float]:
    """FLOPs per frame of the two presence cases on the meta twin (reference store recorded on meta too)."""
    from benchmarks.modulation import _meta, count
    from vidseg_core.features import BatchInputs
    from vidseg_core.modulation import ModulationSettings, modulate_batch
    from vidseg_core.modulation.reference import reference_pass

    H, W = hw
    lh, lw = H // 8, W // 8
    x = _meta(T, 4, lh, lw)
    inputs = BatchInputs(_meta(T, 3, H, W), x, cond_of(T, lh, lw), x, x)
    m = torch.device("meta")
    store = reference_pass(meta, inputs, ModulationSettings(), device=m, feature_device=m)[2]
    ids = sorted(int(v) for v in torch.unique(coarse))
    return {key: count(lambda skip=skip: modulate_batch(meta, inputs, coarse, ids, (H, W),
                                                         ModulationSettings(skip_absent_rows=skip),
                                                         reference=store)) / T
            for key, skip in (("mod_rows", True), ("mod_whole", False))}


class Log:
    """Prints and keeps every line (written to ``log.txt`` under the output folder)."""

    def __init__(self):
        self.lines: List[str] = []

    def __call__(self, msg: str) -> None:
        print(msg, flush=True)
        self.lines.append(msg)


# ---------------------------------------------------------------------------------------------- models
def build(family: str, device: torch.device, dtype: torch.dtype, tiny: bool):
    """The backbone: tiny twins (``--tiny``) or the full-size architecture with random weights on ``device``."""
    if tiny:
        from vidseg_core.backbones import load_backbone

        return load_backbone("tiny-sd" if family == "sd21" else "tiny-svd", device=str(device),
                             precision={torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype])
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        if family == "sd21":
            from diffusers import AutoencoderKL, UNet2DConditionModel

            from vidseg_core.backbones.config import SD21Config
            from vidseg_core.backbones.sd21 import CONFIG_DIR, SD21Backbone

            with torch.device(device):
                unet = UNet2DConditionModel.from_config(json.loads((CONFIG_DIR / "unet" / "config.json").read_text()))
                vae = AutoencoderKL.from_config(json.loads((CONFIG_DIR / "vae" / "config.json").read_text()))
            emb = torch.randn(1, 77, unet.config.cross_attention_dim)
            return SD21Backbone("sd21-random", SD21Config(), unet.eval(), vae.eval(), device, dtype,
                                emb).to(device, dtype)
        from vidseg_core.backbones.config import SVDConfig
        from vidseg_core.backbones.svd import SVDBackbone, _build, _finish, real_configs

        cfgs = real_configs()
        with torch.device(device):
            unet, vae, enc = (_build(part, cfg) for part, cfg in zip(("unet", "vae", "image_encoder"), cfgs))
        return SVDBackbone("svd-random", SVDConfig(), _finish(unet, device, dtype), _finish(vae, device, dtype),
                           _finish(enc, device, dtype), device, dtype)


def meta_twin(bb):
    """The same architecture on meta tensors, for FLOP counts: ``(meta backbone, cond_of)``."""
    from benchmarks.modulation import meta_sd, meta_svd

    make = meta_sd if bb.family == "sd" else meta_svd
    return make(dict(bb.unet.config), dict(bb.vae.config))


def matmul_ceiling(device: torch.device, dtype: torch.dtype, n: int, log) -> float:
    """FLOP/s of an ``n x n`` matrix product (random operands, median of 10 after warm-up)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    times = [time_once(lambda: a @ b, device)[3 if device.type == "cuda" else 1] for _ in range(10)]
    rate = 2 * n ** 3 / statistics.median(times)
    log(f"matrix product {n}x{n} {str(dtype).replace('torch.', '')}: {rate / 1e12:.1f} TFLOP/s (median of 10)")
    return rate


# ---------------------------------------------------------------------------------------------- FLOPs
def flop_counts(bb, T: int, hw, stages: dict, chunk: Optional[int]) -> Dict[str, float]:
    """FLOPs per frame of every case on the meta twin (same labels and chunking as the timed quality run)."""
    from benchmarks.features_flops import feature_pass_flops
    from benchmarks.modulation import _meta, count
    from vidseg_core.features import BatchInputs
    from vidseg_core.modulation import ModulationSettings, modulate_batch

    meta, cond_of = meta_twin(bb)
    H, W = hw
    lh, lw = H // 8, W // 8
    fp = feature_pass_flops(meta, cond_of, T, H, W)
    x = _meta(T, 4, lh, lw)
    inputs = BatchInputs(_meta(T, 3, H, W), x, cond_of(T, lh, lw), x, x)
    cfg = meta.config
    steps = len(meta.sigmas()) - 1 - cfg.modulation_step
    U = count(lambda: meta.denoised(x[None], cfg.modulation_step, inputs.cond))
    D = count(lambda: meta.decode(x))
    out = {"features": fp["ours"] / T, "fast": fp["ours"] / T, "unet_eval": U / T}
    q = stages.get("quality")
    if q is not None:
        coarse = q["coarse"][:T]
        ids = sorted(set(q["table"]))
        settings = ModulationSettings(share_attention=bb.device.type == "cpu" or None, max_runs_per_chunk=chunk)
        mod = count(lambda: modulate_batch(meta, inputs, coarse, ids, (H, W), settings))
        out["quality"] = (fp["ours"] + mod) / T
    o = stages.get("oracle")
    if o is not None:
        L = int(torch.unique(o["coarse"][:T]).numel())
        # the oracle: feature pass, then its own reference pass (S evaluations) and 2L passes + decodes
        out["oracle"] = (fp["ours"] + (2 * L + 1) * steps * U + 2 * L * D) / T
    return out


# ---------------------------------------------------------------------------------------------- profile
def profile_quality(bb, frames, clusters: int, device) -> Dict[str, float]:
    """Seconds of one quality batch by part (GPU-synchronised): UNet, encode, decode, difference maps, rest."""
    from benchmarks.pipeline_speed import segment
    from vidseg_core.modulation import runner
    from vidseg_core.pipeline import SegmentSettings

    parts = {"UNet": 0.0, "VAE encode": 0.0, "VAE decode": 0.0, "difference maps": 0.0}

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def timed(fn, key):
        def wrapper(*a, **k):
            sync()
            t = time.perf_counter()
            try:  # the feature step's UNet call ends with CaptureComplete: its time still counts as UNet
                return fn(*a, **k)
            finally:
                sync()
                parts[key] += time.perf_counter() - t
        return wrapper

    # every VAE decode (``decode`` and the modulation's ``decode_clips``) goes through ``_decode_call``
    saved = (bb.denoised, bb.encode, bb._decode_call, runner.difference_map)
    bb.denoised, bb.encode, bb._decode_call = timed(bb.denoised, "UNet"), timed(bb.encode, "VAE encode"), \
        timed(bb._decode_call, "VAE decode")
    runner.difference_map = timed(runner.difference_map, "difference maps")
    try:
        _, total, *_ = time_once(lambda: segment(bb, frames, SegmentSettings(mode="quality", num_clusters=clusters)),
                                 device)
    finally:
        bb.denoised, bb.encode, bb._decode_call, runner.difference_map = saved
        for k in ("denoised", "encode", "_decode_call"):
            bb.__dict__.pop(k, None)
    parts["everything else"] = total - sum(parts.values())
    parts["total"] = total
    return parts


def count_syncs(fn, device) -> Optional[int]:
    """Host/device synchronisations CUDA reports while ``fn()`` runs (``torch.cuda.set_sync_debug_mode("warn")``:
    one warning per synchronising call); None off CUDA."""
    if device.type != "cuda":
        return None
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    return sum("synchroniz" in str(w.message) for w in seen)


# ---------------------------------------------------------------------------------------------- one family
def run_family(family, args, frames, device, dtype, log, deadline: float, families_left: int) -> dict:
    from vidseg_core.upsample import MaskedModulationUpsampler

    t0 = time.perf_counter()
    bb = build(family, device, dtype, args.tiny)
    compiled = None
    if args.compile:
        from torch._dynamo.utils import counters

        from vidseg_core.compile import compile_backbone

        compiled = compile_backbone(bb)
        graphs_before = counters["stats"]["unique_graphs"]
    n = int(frames.shape[0])
    hw = bb.work_size(*frames.shape[1:3])
    log(f"== {family}: {bb.name} {str(dtype).replace('torch.', '')} on {device}, built in "
        f"{time.perf_counter() - t0:.1f} s; {n} frames -> work {hw[1]}x{hw[0]}, K = {args.labels}")
    stages: dict = {}
    cases = pipeline_cases(bb, frames, args.labels, stages=stages)
    presence = None
    if bb.family == "sd" and args.presence:
        presence = {"fraction": args.presence, "labels": {}}
        extra, _, presence["coarse"], _ = presence_cases(bb, frames[:n], args.labels, args.presence,
                                                         presence["labels"])
        cases.update(extra)
    seen: dict = {}
    original = MaskedModulationUpsampler.upsample

    def spy(self, *a, **k):  # the quality run's chunking, for the FLOP count and the UNet case
        out = original(self, *a, **k)
        seen.update(self.last_result.stats)
        return out

    MaskedModulationUpsampler.upsample = spy
    try:
        warm = {}
        for name, fn in cases.items():  # warm-up (compilation, cuDNN autotuning), also sizes the rounds
            warm[name] = time_once(fn, device)[1]
            log(f"  warm-up {name}: {warm[name]:.1f} s")
        chunk = max(seen.get("chunks") or [1])
        from vidseg_core.features import prepare_batch

        inputs = prepare_batch(bb, frames[:n])
        step = bb.config.modulation_step
        for r in sorted({1, chunk}):
            x = inputs.x_start[None].expand(r, *inputs.x_start.shape).contiguous()
            cases[f"unet{r}"] = (lambda x=x: bb.denoised(x, step, inputs.cond))
            warm[f"unet{r}"] = time_once(cases[f"unet{r}"], device)[1]
        per_round = sum(warm.values())
        after = warm["quality"] * (2 if args.profile else 1) + warm.get("mod_rows", 0.0)  # profile + sync counts
        left = max(0.0, (deadline - time.perf_counter()) / families_left - after)
        rounds = max(1, min(args.repeats, int(left // max(per_round, 1e-9))))
        if rounds < args.repeats:
            log(f"  budget: {rounds} of {args.repeats} rounds fit ({per_round:.0f} s a round)")
        samples, _ = time_cases(cases, repeats=rounds, per=n, device=device, warmup=False, log=log)
    finally:
        MaskedModulationUpsampler.upsample = original
    agree = None
    if "quality" in stages and "oracle" in stages:
        agree = (stages["quality"]["result"] == stages["oracle"]["result"]).float().mean().item()
    flops = flop_counts(bb, n, hw, stages, chunk if len(seen.get("chunks") or []) > 1 else None)
    if presence is not None:
        coarse = presence.pop("coarse")
        present = torch.stack([(coarse == i).flatten(1).any(1) for i in torch.unique(coarse)])
        presence["present"] = float(present.float().mean())
        lab = presence.pop("labels")
        presence["labels_equal"] = bool(torch.equal(lab["mod_rows"].cpu(), lab["mod_whole"].cpu()))
        flops.update(presence_flops(*meta_twin(bb), n, hw, coarse))
    for r in sorted({1, chunk}):
        samples[f"unet{r}"].per = 1.0
        flops[f"unet{r}"] = flops["unet_eval"] * n * r
    profile = profile_quality(bb, frames, args.labels, device) if args.profile else None
    # host syncs in one batch as CUDA sees them (the CPU suite counts them by interception: tests/test_sync_free.py)
    syncs = {"quality": count_syncs(cases["quality"], device)}
    if "mod_rows" in cases:
        syncs["modulation"] = count_syncs(cases["mod_rows"], device)
    labels = stages.get("quality", {}).get("labels")
    compile_info = None
    if compiled is not None:  # what compilation did, and the compiled labels against one eager quality run
        from vidseg_core.compile import uncompile_backbone

        compile_info = dict(compiled.to_dict(), new_graphs=counters["stats"]["unique_graphs"] - graphs_before)
        mine = dict(stages["quality"])
        uncompile_backbone(bb)
        cases["quality"]()
        differ = stages["quality"]["result"] != mine["result"]
        compile_info["labels_differ_from_eager"] = [int(differ.sum()), int(differ.numel())]
        stages["quality"] = mine  # the compiled run's stage seconds
        log(f"  compile: {compile_info}")
    for v in stages.values():
        for k in ("result", "coarse"):
            v.pop(k, None)
    del bb
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"family": family, "samples": samples, "flops": flops, "agree": agree, "labels": labels,
            "chunks": seen.get("chunks"), "rounds": rounds, "profile": profile, "stages": stages, "syncs": syncs,
            "presence": presence, "compile": compile_info}


# ---------------------------------------------------------------------------------------------- table
def table(results: List[dict], ceiling: float, device) -> str:
    cuda = device.type == "cuda"
    head = ("| Family | Case | s/frame, median (min-max) | frames/s | CPU s/frame | peak GPU GiB | TFLOP/frame | "
            "achieved TFLOP/s | % of matmul |")
    lines = [head, "|" + "---|" * 9]
    for res in results:
        for key, s in res["samples"].items():
            unet = key.startswith("unet")
            what = "device" if cuda else "wall"
            med = s.median(what)
            f = res["flops"].get(key)
            name = f"one guided UNet evaluation, {key[4:]} run(s)" if unet else {**CASE_NAMES, **PRESENCE_NAMES}[key]
            value = s.text(what) + (" s/call" if unet else "")
            fps = "" if unet else f"{1 / med:.2f}"
            peak = f"{max(s.peak_mb) / 1024:.1f}" if s.peak_mb else "n/a"
            rate = f / med if f else None
            cells = (f"{f / 1e12:.2f}{' per call' if unet else ''} | {rate / 1e12:.1f} | {100 * rate / ceiling:.0f}%"
                     if f else " | | ")
            lines.append(f"| {res['family']} | {name} | {value} | {fps} | {s.median('cpu'):.3f} | {peak} | {cells} |")
    lines.append("")
    for res in results:
        s = res["samples"]
        extra = []
        if "quality" in s and "oracle" in s:
            extra.append(f"batched vs sequential oracle (whole pipeline, paired rounds): "
                         f"{ratio_text(s['oracle'], s['quality'], 'device' if cuda else 'wall')} faster; labels agree "
                         f"on {100 * res['agree']:.2f}% of pixels")
        if res.get("presence") and "mod_rows" in s and "mod_whole" in s:
            p = res["presence"]
            extra.append(f"modulation alone at {p['present']:.3f} of the (label, frame) pairs present: rows skipped "
                         f"{ratio_text(s['mod_whole'], s['mod_rows'], 'device' if cuda else 'wall')} faster than "
                         f"whole runs (paired rounds); labels equal: {p['labels_equal']}")
        extra.append(f"{res['labels']} labels, modulation chunks {res['chunks']}, {res['rounds']} rounds")
        c = res.get("compile")
        if c:
            extra.append(f"compiled ({c['backend']}): {c['regions']} regions, active {c['active']}, fallback "
                         f"{c['fallback']}, recompile-limit hits {len(c['recompile_limit_hits'])}, {c['new_graphs']} "
                         f"graphs; quality labels differ from one eager run in {c['labels_differ_from_eager'][0]} "
                         f"of {c['labels_differ_from_eager'][1]} pixels")
        syncs = {k: v for k, v in (res.get("syncs") or {}).items() if v is not None}
        if syncs:
            extra.append("host/device synchronisations CUDA reported (set_sync_debug_mode): " + ", ".join(
                f"{v} in one {'whole quality pipeline' if k == 'quality' else 'modulate_batch'}"
                for k, v in syncs.items()))
        if res["profile"]:
            p = res["profile"]
            extra.append("one quality batch: " + ", ".join(f"{k} {v:.2f} s ({100 * v / p['total']:.0f}%)"
                                                           for k, v in p.items() if k != "total")
                         + f"; total {p['total']:.2f} s")
        lines += [f"- {res['family']}: {e}" for e in extra]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=Path, default=None, help="folder of frames (default: gpu_frames/blackswan, "
                                                                   "else ../shared/data/blackswan/frames)")
    ap.add_argument("--num-frames", type=int, default=14)
    ap.add_argument("--max-side", type=int, default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny twins instead of the full-size models (smoke test)")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    ap.add_argument("--labels", type=int, default=10, help="K clusters, i.e. labels of the quality mode")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--presence", type=float, default=0.414,
                    help="SD 2.1: time the modulation alone with this fraction of (label, frame) pairs present, rows "
                         "skipped vs whole runs (0.414: blackswan masks_rvos; 0 leaves the two cases out)")
    ap.add_argument("--budget-s", type=float, default=450.0,
                    help="wall seconds the whole command may take (rounds are cut to fit; give the call ~100 s more)")
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet and VAE blocks first")
    ap.add_argument("--matmul-size", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="where log.txt, table.md, result.json go (default $OUT)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    log = Log()
    from vidseg_core.devices import resolve_device
    from vidseg_core.video_io import FrameSource

    device = resolve_device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    folder = args.frames or next((d for d in FRAME_DIRS if d.is_dir()), None)
    if folder is None or not Path(folder).is_dir():
        print(f"frames not found ({folder or ', '.join(map(str, FRAME_DIRS))}); run scripts/gpu_prepare.sh or pass "
              "--frames DIR", file=sys.stderr)
        return 2
    frames = FrameSource(folder, frame_range=(0, args.num_frames), max_side=args.max_side).read_all()
    commit = os.popen(f"git -C {ROOT} rev-parse --short HEAD 2>/dev/null").read().strip() or "unknown"
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    log(f"VidSeg GPU benchmark, commit {commit}, {gpu}, torch {torch.__version__}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}"
        f"; frames {folder} ({frames.shape[0]} x {frames.shape[2]}x{frames.shape[1]})")
    ceiling = matmul_ceiling(device, dtype, args.matmul_size or (8192 if device.type == "cuda" else 512), log)
    deadline = start + args.budget_s
    results = []
    with torch.inference_mode():
        for i, fam in enumerate(args.families):
            results.append(run_family(fam, args, frames, device, dtype, log, deadline, len(args.families) - i))
    text = table(results, ceiling, device)
    log("")
    log(f"ceiling: matrix product {ceiling / 1e12:.1f} TFLOP/s; total {time.perf_counter() - start:.0f} s")
    log(text)
    out = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "log.txt").write_text("\n".join(log.lines) + "\n")
        (out / "table.md").write_text(text + "\n")
        dump = [{**{k: v for k, v in r.items() if k != "samples"},
                 "samples": {k: s.to_dict() for k, s in r["samples"].items()}} for r in results]
        (out / "result.json").write_text(json.dumps({"commit": commit, "device": gpu, "ceiling": ceiling,
                                                     "results": dump}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
