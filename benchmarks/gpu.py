"""One prepared command for a GPU: the whole pipeline on full-size SD 2.1 and SVD (random weights, bf16).

    python benchmarks/gpu.py [--frames DIR] [--families sd21 svd] [--labels 10] [--repeats 3] [--budget-s 450]
                             [--presence 0.414] [--dtype auto|bf16|fp16|fp32] [--compile] [--out DIR]   # one CUDA device
    python benchmarks/gpu.py --device cpu --tiny --num-frames 2 --max-side 192 --repeats 1   # CPU smoke test

For each family it builds the real architecture from the shipped configs
(``vidseg_core/backbones/configs``; nothing downloaded, random weights: the
time does not depend on the weights' values) in bf16 on the device, reads the
14 blackswan frames (854x480, worked at 832x448) from ``--frames`` (default
``gpu_frames/blackswan`` in the repository, see ``scripts/gpu_prepare.sh``, else
the benchmark clips' ``blackswan/frames``, docs/benchmarks.md#the-clips) and
times, per frame, in alternating rounds (``benchmarks/timing.py``),
GPU-synchronised, with CUDA events and the peak memory of each case:

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

``--dtype`` sets the precision (default bf16 on CUDA, fp32 on the CPU):
``--dtype bf16`` on the CPU rehearses the GPU run's precision (the smoke test
does), ``--dtype fp16`` on CUDA times the authors' precision (the VAE stays
fp32, as the pack runs it; ``benchmarks/precision.py`` measures what each
precision does to the labels).

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
import sys
import time
from pathlib import Path
from typing import List

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from benchmarks.clips import CLIPS  # noqa: E402
import torch  # noqa: E402

from benchmarks.pipeline_speed import CASE_NAMES, pipeline_cases  # noqa: E402
from benchmarks.gpu_cases import (build, count_syncs, flop_counts, matmul_ceiling, meta_twin,  # noqa: E402
                                  presence_cases, presence_flops, profile_quality)
from benchmarks.timing import ratio_text, time_cases, time_once  # noqa: E402

FRAME_DIRS = (ROOT / "gpu_frames" / "blackswan", CLIPS / "blackswan" / "frames")
FAMILIES = ("sd21", "svd")
PRESENCE_NAMES = {"mod_rows": "modulation alone at the given presence, absent (label, frame) rows skipped",
                  "mod_whole": "modulation alone at the given presence, whole runs (skip_absent_rows=False)"}


class Log:
    """Prints and keeps every line (written to ``log.txt`` under the output folder)."""

    def __init__(self):
        self.lines: List[str] = []

    def __call__(self, msg: str) -> None:
        print(msg, flush=True)
        self.lines.append(msg)


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
    from benchmarks.modulation import FlopCountingUnavailable

    try:
        flops = flop_counts(bb, n, hw, stages, chunk if len(seen.get("chunks") or []) > 1 else None)
    except FlopCountingUnavailable as e:  # the table then shows no FLOP columns, and says why
        log(f"  FLOPs not counted: {e}")
        flops = {}
    if presence is not None:
        coarse = presence.pop("coarse")
        present = torch.stack([(coarse == i).flatten(1).any(1) for i in torch.unique(coarse)])
        presence["present"] = float(present.float().mean())
        lab = presence.pop("labels")
        presence["labels_equal"] = bool(torch.equal(lab["mod_rows"].cpu(), lab["mod_whole"].cpu()))
        if flops:
            flops.update(presence_flops(*meta_twin(bb), n, hw, coarse))
    for r in sorted({1, chunk}):
        samples[f"unet{r}"].per = 1.0
        if flops:
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
    bb = None  # the model goes before the next family is built
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
                                                                   "else the clips' blackswan/frames)")
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
    ap.add_argument("--dtype", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                    help="weights and compute dtype (auto: bf16 on CUDA, fp32 on the CPU; bf16 on the CPU rehearses "
                         "the GPU run's precision; fp16 keeps the VAE in fp32, as the pack does)")
    ap.add_argument("--matmul-size", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="where log.txt, table.md, result.json go (default $OUT)")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    log = Log()
    from vidseg_core.devices import resolve_device
    from vidseg_core.video_io import FrameSource

    device = resolve_device(args.device)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}.get(
        args.dtype, torch.bfloat16 if device.type == "cuda" else torch.float32)
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
