"""Every VidSeg benchmark in one run, printed as ONE markdown table (and written to ``--out``).

    python benchmarks/run_all.py --out benchmarks/results/latest.md [--quick] [--skip memory coarse_oracle]
                                 [--only cbr]

Benchmarks (names for ``--skip`` / ``--only``):

* ``modulation``    -- the modulation stage alone: sequential oracle vs batched (and chunked) on tiny-sd, same
                       inputs on both sides (``benchmarks/modulation.py``);
* ``pipeline_flops``-- FLOPs per frame of the WHOLE pipeline on the real SD 2.1 / SVD architectures: the authors'
                       quality mode against ours on the CPU and CUDA paths and in chunks, and the fast mode
                       (``benchmarks/pipeline_flops.py``);
* ``cbr``           -- vectorised CBR vs the per-trajectory loop (``benchmarks/cbr.py``), at the default
                       thread count and at 1 thread;
* ``pipeline``      -- the feature pass and the whole pipeline (fast, quality, quality through the sequential
                       oracle) per frame on the blackswan frames with tiny-sd (``benchmarks/pipeline_speed.py``);
* ``memory``        -- peak RSS against video length on the bedroom frames, a fresh process per
                       configuration (``benchmarks/pipeline_memory.py``);
* ``coarse_oracle`` -- coarse-stage quality on oracle features (``benchmarks/coarse_oracle.py``);
* ``metrics``       -- metric timings (``benchmarks/bench_metrics.py``);
* ``dataset``       -- dataset throughput of ``dataset --mode fast``: one process against Ray with 2 workers,
                       interleaved repeats, and Ray's start-up (``benchmarks/dataset_throughput.py``; needs ray);
* ``features_flops``-- FLOPs per frame of the feature pass on the real SD 2.1 / SVD architectures, full vs
                       the last step conditional-only and stopped after block 8 (``benchmarks/features_flops.py``).

Every timed case runs at least 3 times (``repeats``) in alternating rounds
(``benchmarks/timing.py``); values are medians with min-max, ratios the median
and min-max of per-round paired ratios, both sides of the same scope.  Wall times
on a shared 2-core machine suffer when other processes run.  With torch's
default OpenMP spinning, 2 threads on a busy 2-core machine were 100-250x
slower than 1 thread, so this script sets ``OMP_WAIT_POLICY=PASSIVE`` unless
the environment already sets it (printed above the table); ``--threads 1`` is
steadier still, and the pipeline rows also give CPU time.  ``--quick``
runs reduced sizes (a smoke run of a few minutes; its figures are not the
benchmark's).  The machine (CPU, cores, torch, threads) and the load average
are printed above the table: the figures are CPU times on a possibly shared
machine.
"""
from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, List, Optional

# Before torch is imported (libgomp reads it when it loads; the memory children inherit it): threads that
# sleep at OpenMP barriers instead of spinning.  With the default spinning, 2 threads on a 2-core machine
# busy with other processes made tiny-sd runs 100-250x slower (e.g. 78-190 s instead of 0.8 s).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.clips import CLIPS  # noqa: E402
from benchmarks.report import load_average, machine, render, row, seconds  # noqa: E402

Rows = List[Dict[str, str]]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _quiet(_msg: str) -> None:
    pass


# ---------------------------------------------------------------------------------------------- settings
#: full and quick settings of every benchmark (all figures of the table come from these)
SETTINGS = {
    "modulation": {
        "full": dict(frames=4, labels=5, height=256, width=448, repeats=3, flops_part=False,
                     cases=("batched, chunks of 3 runs, reference repeated", "batched, chunks of 3 runs, reference stored",
                            "(one UNet evaluation of one run)", "(decode of one run)")),
        "quick": dict(frames=2, labels=2, height=64, width=128, repeats=1, flops_part=False, cases=()),
    },
    "pipeline_flops": {
        "full": dict(frames=14, labels=10, height=448, width=832, chunks=(7,)),
        "quick": dict(frames=2, labels=2, height=64, width=128, chunks=(), archs=("SD 2.1",)),
    },
    "cbr": {
        "full": dict(frames=14, h=28, w=52, channels=640, repeat=3, compat=True),
        "quick": dict(frames=3, h=6, w=8, channels=16, repeat=1, compat=True),
    },
    "pipeline": {
        "full": dict(clusters=5, num_frames=4, max_side=480, repeats=3),
        "quick": dict(clusters=2, num_frames=2, max_side=128, repeats=1),
    },
    "memory": {
        "full": dict(lengths=(14, 56, 200), max_side=480, clusters=3, batch_size=None),
        "quick": dict(lengths=(2, 4, 6), max_side=192, clusters=2, batch_size=2),
    },
    "coarse_oracle": {
        "full": dict(sigmas=(0.5,), n_init=10, frames=50),
        "quick": dict(sigmas=(0.5,), n_init=1, frames=14),
    },
    "metrics": {"full": {}, "quick": {}},
    "dataset": {
        "full": dict(videos=12, size="384x216", repeats=3, workers=2),
        "quick": dict(videos=2, size="128x72", repeats=1, workers=2),
    },
    "features_flops": {
        "full": dict(frames=14, height=448, width=832),
        "quick": dict(frames=2, height=64, width=128),
    },
}


# ---------------------------------------------------------------------------------------------- adapters
def _tflop_row(benchmark: str, case: str, flops: float, baseline: Optional[float] = None,
               notes: Optional[str] = None):
    """A FLOPs-per-frame row against ``baseline`` (``None``: this row is the baseline); ``notes`` defaults to
    the saving in per cent."""
    if baseline is None:
        return row(benchmark, case, "TFLOP/frame", f"{flops / 1e12:.3f}", "1.00x (baseline)", notes or "")
    if notes is None:
        notes = f"{100 * (1 - flops / baseline):.1f}% fewer FLOPs"
    return row(benchmark, case, "TFLOP/frame", f"{flops / 1e12:.3f}", f"{baseline / flops:.3f}x fewer", notes)


def _timing_rows(benchmark: str, samples, baseline: str, where: str, notes: Dict[str, str], unit: str = "s/frame",
                 components=()) -> Rows:
    """One row per timed case: median (min-max) wall, CPU median in the notes, ratio to ``baseline`` as the median
    (min-max) of paired rounds."""
    from benchmarks.timing import paired_ratios, ratio_text

    rows: Rows = []
    base = samples[baseline]
    for name, s in samples.items():
        if name == baseline:
            r = f"1.00x (baseline, {s.n} rounds)"
        elif name in components:
            r = ""
        else:
            r = ratio_text(base, s) + (" faster" if statistics.median(paired_ratios(base, s)) >= 1 else ": slower")
        note = "; ".join(x for x in (where if name == baseline else "", notes.get(name, ""),
                                     f"CPU {s.median('cpu'):.3f} {unit}") if x)
        rows.append(row(benchmark, name, f"{unit}, median (min-max)", s.text(), r, note))
    return rows


def bench_modulation(cfg, log) -> Rows:
    from benchmarks import modulation

    res = modulation.run(**cfg)  # prints its own report (sent to stderr by run_benchmarks)
    tm = res.get("timing")
    if not tm:
        return []
    s = tm["setting"]
    where = f"modulation stage only on both sides, same noisy latents: tiny-sd, {s['frames']} frames " \
            f"{s['width']}x{s['height']}, K = {s['labels']} labels ({2 * s['labels']} modulated runs)"
    notes = {"batched (one chunk)": f"labels agree with the oracle on {100 * tm['agree']:.3f}% of pixels, "
                                    f"max |Δ difference map| {tm['dmax']:.1e}",
             "batched, chunks of 3 runs, reference stored": f"store holds {tm['store_mib']:.1f} MiB",
             "(one UNet evaluation of one run)": "component of one modulated run",
             "(decode of one run)": "component of one modulated run"}
    comps = [n for n in tm["samples"] if n.startswith("(")]
    return _timing_rows("modulation: time", tm["samples"], "sequential oracle", where, notes, components=comps)


def bench_pipeline_flops(cfg, log) -> Rows:
    from benchmarks import pipeline_flops

    res = pipeline_flops.run(**cfg, log=log)
    rows: Rows = []
    for arch, f in res.items():
        s = f["setting"]
        where = (f"{s['width']}x{s['height']}, T = {s['frames']}, K = {s['labels']} labels in every frame, meta tensors; "
                 f"E + (2K+1)(S·U + D), S = {s['steps']}")
        bench = f"pipeline: FLOPs {arch}"
        rows.append(_tflop_row(bench, "authors' quality mode (reference pass = feature pass, decoded)",
                               f["authors"], notes=where))
        for name, v in f["paths"].items():
            note = f"an H200 fits about {f['h200_runs']} runs per chunk" if "CUDA default" in name else None
            rows.append(_tflop_row(bench, f"ours, quality, {name}", v, f["authors"], note))
        rows.append(_tflop_row(bench, "ours, fast mode (feature pass + guided filter)", f["fast"], f["authors"],
                               "the guided filter adds about 0.25 GFLOP/frame (element-wise, not in the count)"))
    return rows


def bench_cbr(cfg, log) -> Rows:
    import torch

    from benchmarks import cbr

    rows: Rows = []
    threads = torch.get_num_threads()
    for n in dict.fromkeys((threads, 1)):
        torch.set_num_threads(n)
        try:
            res = cbr.run(**cfg, log=log)
        finally:
            torch.set_num_threads(threads)
        where = f"{res['frames']} frames, {res['h']}x{res['w']} grid, {res['channels']} channels, " \
                f"{res['labels']} labels, {n} thread{'s' if n > 1 else ''}"
        for variant, title in (("default", "paper Eqs 3-5"), ("compat", "authors' variant, float64")):
            if variant not in res:
                continue
            d = res[variant]
            rows.append(row("cbr", f"loop oracle, {title}", "s, median (min-max)", d["loop_text"],
                            f"1.00x (baseline, {d['rounds']} rounds)", where))
            rows.append(row("cbr", f"vectorised, {title}", "s, median (min-max)", d["vectorised_text"],
                            f"{d['ratio']} faster than loop", f"identical output: {d['identical']}"))
    return rows


def bench_pipeline(cfg, log, data: Path = CLIPS) -> Rows:
    from benchmarks import pipeline_speed

    res = pipeline_speed.run(data / "blackswan" / "frames", **cfg, log=log)
    s = res["setting"]
    where = f"{s['model']}, {s['frames']} blackswan frames {s['source_size'][1]}x{s['source_size'][0]}" + \
            (f" (capped {s['frame_size'][1]}x{s['frame_size'][0]})" if s["frame_size"] != s["source_size"] else "") + \
            f" -> work {s['work_size'][1]}x{s['work_size'][0]}, grid {s['grid'][0]}x{s['grid'][1]}, " \
            f"B = {s['batch_size']}, K = {s['clusters']}"
    notes = {}
    for key, st in res["stages"].items():
        per = ", ".join(f"{k} {v / s['frames']:.3f}" for k, v in st["seconds"].items() if k != "read")
        notes[key] = f"{st['labels']} labels; last round per frame: {per} s"
    if res.get("agree") is not None:
        notes["quality"] += f"; labels agree with the oracle's on {100 * res['agree']:.3f}% of pixels"
    sm = res["samples"]
    if "quality" in sm and "fast" in sm:
        from benchmarks.timing import ratio_text

        notes["fast"] += f"; the quality mode (batched) takes {ratio_text(sm['quality'], sm['fast'])} as long"
    names = pipeline_speed.CASE_NAMES
    samples = {names[k]: v for k, v in sm.items()}
    notes = {names[k]: v for k, v in notes.items()}
    base = names["oracle"] if "oracle" in sm else next(iter(samples))
    samples = {base: samples.pop(base), **samples}
    # only the batched quality mode has the oracle's scope; the feature pass and the fast mode are listed beside it
    others = [names[k] for k in ("features", "fast") if k in sm]
    return _timing_rows("pipeline", samples, base, where, notes, components=others)


def _peak_source_note(rep) -> str:
    """Where the peak comes from; ru_maxrss is only explained when it is the source (it includes the parent's
    RSS at fork on Linux, see ``pipeline_memory._peak_mb``)."""
    source = rep.get("peak_source", "ru_maxrss")
    if source != "ru_maxrss":
        return f"peak = {source} of the child"
    return (f"peak = ru_maxrss ({rep.get('ru_maxrss_mb', 0):.0f} MB, of which "
            f"{rep.get('ru_maxrss_mb_start', 0):.0f} MB inherited from the parent at start)")


def bench_memory(cfg, log, data: Path = CLIPS) -> Rows:
    from benchmarks import pipeline_memory

    res = pipeline_memory.run(data / "bedroom" / "frames", log=log, **cfg)
    rows: Rows = []
    for rep in res["configs"]:
        s = rep["summary"]
        src, work = rep["source_size"], rep["work_size"]
        cap = f"max side {rep['max_side']} -> " if rep.get("max_side") else ""
        drift = s["rss_drift_after_batch1_mb"]
        rows.append(row(
            "memory vs length", f"{rep['mode']}, {rep['frames']} frames ({rep['num_batches']} batches)", "peak RSS",
            f"{s['peak_mb']:.0f} MB", f"{s['vs_shortest']:.3f}x the {res['configs'][0]['frames']}-frame run"
            if rep["frames"] != min(c["frames"] for c in res["configs"] if c["mode"] == rep["mode"])
            else "1.000x (baseline)",
            f"bedroom {src[1]}x{src[0]}, {cap}work {work[1]}x{work[0]}, K = {rep['clusters']}; fresh process; "
            f"model loaded {s['model_mb']:.0f} MB; peak growth after batch 1 {s['peak_growth_after_batch1_mb']:+.0f} MB, "
            f"RSS drift {'n/a' if drift is None else f'{drift:+.0f} MB'}; {s['seconds_per_batch']:.1f} s/batch; "
            + _peak_source_note(rep)))
    return rows


def bench_coarse_oracle(cfg, log, data: Path = CLIPS) -> Rows:
    from benchmarks import coarse_oracle

    res = coarse_oracle.run(data / "blackswan" / "masks_osvos", log=log, **cfg)
    rows: Rows = []
    for sigma, variants in res["results"].items():
        base = variants.get("KNN only")
        for name, (miou, vc) in variants.items():
            r = "baseline" if name == "KNN only" or base is None else \
                f"mIoU {miou - base[0]:+.4f}, mVC_8 {vc - base[1]:+.4f}"
            rows.append(row("coarse stage on oracle features", f"{name}, noise sigma {sigma:g}", "mIoU / mVC_8",
                            f"{miou:.4f} / {vc:.4f}", r,
                            f"{res['frames']} blackswan masks (OSVOS pseudo-GT), grid {res['grid'][0]}x{res['grid'][1]}, "
                            f"K = 20, n_init {res['n_init']}; regression figures, not benchmark results"))
    return rows


def bench_metrics(cfg, log, data: Path = CLIPS) -> Rows:
    from benchmarks import bench_metrics

    res = bench_metrics.run(data / "blackswan", log=log)
    where = f"{res['frames']} masks {res['size'][1]}x{res['size'][0]}"
    b = res["boundary"]
    return [
        row("metrics", f"DAVIS unsupervised J&F ({res['proposals']} proposals)", "time",
            seconds(res["unsupervised"]["seconds"]), "", f"{where}; J&F = {res['unsupervised']['jf']:.6f}"),
        row("metrics", "DAVIS semi-supervised J&F", "time", seconds(res["semi_supervised"]["seconds"]), "", where),
        row("metrics", "VC_8 + VC_16", "time", seconds(res["vc"]["seconds"]), "", where),
        row("metrics", "mIoU (21 classes)", "time", seconds(res["miou"]["seconds"]), "", where),
        row("metrics", "F of all (proposal, frame) pairs, full-frame baseline", "s, median (min-max)",
            b["baseline_text"], "1.00x (baseline, 3 rounds)", where),
        row("metrics", "J and F of all (proposal, frame) pairs, cropped", "s, median (min-max)", b["cropped_text"],
            f"{b['ratio']} faster", f"identical F values: {b['identical']} (this side also computes J)"),
    ]


def bench_features_flops(cfg, log) -> Rows:
    from benchmarks import features_flops

    res = features_flops.run(**cfg, log=log)
    rows: Rows = []
    for arch, f in res.items():
        s = f["setting"]
        where = f"{s['width']}x{s['height']}, T = {s['frames']}, {f['steps']} UNet evaluations, meta tensors"
        bench = f"features: FLOPs {arch}"
        rows.append(_tflop_row(bench, "encode + every evaluation complete (authors' reference pass)", f["full"],
                               notes=where))
        rows.append(_tflop_row(bench, "ours: last evaluation conditional half only, stopped after block 8", f["ours"],
                               f["full"], f"the last evaluation costs {100 * f['last_fraction']:.0f}% of a full one; "
                                          "same features (float rounding)"))
    return rows


def bench_dataset(cfg, log) -> Rows:
    import statistics

    from benchmarks import dataset_throughput

    res = dataset_throughput.run(**cfg, log=log)
    where = (f"{res['videos']} videos, {res['frames']} frames at {res['size'][0]}x{res['size'][1]}, fast mode, "
             f"tiny-sd; {len(res['times']['local'])} interleaved repeats")
    med = {e: statistics.median(ts) for e, ts in res["times"].items()}
    ratios = [a / b for a, b in zip(res["times"]["local"], res["times"]["ray"])]
    spread = f"{min(ratios):.2f}-{max(ratios):.2f}"
    return [
        row("dataset", f"local engine, 1 process x {res['cpus']} threads", "videos/h",
            f"{3600 * res['videos'] / med['local']:.0f}", "1.00x (baseline)",
            f"{where}; {med['local']:.1f} s per run (min {min(res['times']['local']):.1f}, "
            f"max {max(res['times']['local']):.1f})"),
        row("dataset", f"Ray engine, {res['workers']} workers", "videos/h", f"{3600 * res['videos'] / med['ray']:.0f}",
            f"{statistics.median(ratios):.2f}x ({spread})",
            f"{med['ray']:.1f} s per run (min {min(res['times']['ray']):.1f}, max {max(res['times']['ray']):.1f}); "
            "workers start and load the model in every run"),
        row("dataset", "Ray start-up (ray.init, local instance)", "time", seconds(res["ray_init"]), "",
            f"shutdown {seconds(res['ray_shutdown'])}"),
    ]


BENCHMARKS: Dict[str, Callable] = {
    "modulation": bench_modulation,
    "pipeline_flops": bench_pipeline_flops,
    "cbr": bench_cbr,
    "pipeline": bench_pipeline,
    "memory": bench_memory,
    "coarse_oracle": bench_coarse_oracle,
    "metrics": bench_metrics,
    "dataset": bench_dataset,
    "features_flops": bench_features_flops,
}


# ---------------------------------------------------------------------------------------------- driver
def run_benchmarks(names, quick: bool = False, log=_log, overrides: Optional[Dict[str, dict]] = None,
                   data: Optional[Path] = None):
    """Run the named benchmarks in order; returns ``(rows, footer lines)``.  A failing benchmark gives an
    error row (the others still run).  ``data``: the clips folder of the benchmarks that read clips (default
    ``CLIPS``, docs/benchmarks.md#the-clips)."""
    rows: Rows = []
    footer: List[str] = []
    for name in names:
        cfg = dict(SETTINGS[name]["quick" if quick else "full"])
        cfg.update((overrides or {}).get(name, {}))
        log(f"== {name} ({'quick' if quick else 'full'}), load average {load_average()}")
        t = time.perf_counter()
        try:
            with contextlib.redirect_stdout(sys.stderr):  # stdout carries the table only
                bench = BENCHMARKS[name]
                takes_data = data is not None and "data" in inspect.signature(bench).parameters
                rows += bench(cfg, log, data=data) if takes_data else bench(cfg, log)
            status = "ok"
        except Exception as exc:  # noqa: BLE001 - report and go on with the other benchmarks
            log(traceback.format_exc())
            rows.append(row(name, "FAILED", "error", f"{type(exc).__name__}: {exc}"[:300]))
            status = "FAILED"
        dt = time.perf_counter() - t
        footer.append(f"- `{name}`: {status}, {dt:.0f} s wall, load average after: {load_average()}")
        log(f"   {name}: {status} in {dt:.0f} s")
    return rows, footer


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="write the markdown table here too")
    ap.add_argument("--data", type=Path, default=None,
                    help="the clips folder of pipeline, memory, coarse_oracle and metrics (default: clips/ or "
                         "VIDSEG_CLIPS; the others read the default)")
    ap.add_argument("--quick", action="store_true", help="reduced sizes: a smoke run, not benchmark figures")
    ap.add_argument("--skip", nargs="*", default=[], choices=list(BENCHMARKS), metavar="NAME",
                    help=f"benchmarks to leave out ({', '.join(BENCHMARKS)})")
    ap.add_argument("--only", nargs="*", default=None, choices=list(BENCHMARKS), metavar="NAME",
                    help="run only these benchmarks")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for everything (default: torch's); 1 is steadier on a loaded machine")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    names = [n for n in (args.only or BENCHMARKS) if n not in args.skip]
    info = machine()
    _log(f"machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']}, {info['threads']} threads; "
         f"load average {info['load_start']}")
    t0 = time.perf_counter()
    rows, footer = run_benchmarks(names, args.quick, data=args.data)
    total = time.perf_counter() - t0
    info["load_end"] = load_average()
    footer = [f"Total wall time: {total:.0f} s ({total / 60:.1f} min){' — QUICK run (reduced sizes)' if args.quick else ''}."
              ] + footer
    text = render(rows, info, title="VidSeg benchmarks" + (" (quick)" if args.quick else ""), footer=footer)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        _log(f"wrote {args.out}")
    return 1 if any(r["case"] == "FAILED" for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
