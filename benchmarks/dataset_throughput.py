"""Dataset throughput of ``dataset --mode fast`` on the CPU: one plain process against Ray with N workers.

A small DAVIS-layout set is built from the real blackswan clip (``--videos`` windows of 6..14 frames at
``--size``), then, in ONE run, the same set is segmented ``--repeats`` times by each engine, interleaved
(local, ray, ray, local, ... so slow drifts of the machine hit both; one uncounted warm-up run each), each time into a fresh output folder,
with the ``tiny-sd`` backbone (the machinery's cost, not SD 2.1's).  The local engine uses all the CPU
threads in one process; Ray uses ``--workers`` actors with CPUs / workers threads each (each loads the
model once per run: actor start-up is inside Ray's time).  Ray's fixed start-up cost (``ray.init`` of a
local instance) and shutdown are timed once, outside the runs.

Printed: seconds per run (median, min-max), videos per hour, frames per second, and the Ray / local
speed-up (median of the per-repeat ratios, with their min-max).

    python benchmarks/dataset_throughput.py [--videos 6] [--size 256x144] [--repeats 3] [--workers 2]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.clips import CLIPS, require  # noqa: E402
from tests.helpers.datasets import make_davis2017  # noqa: E402

BLACKSWAN = CLIPS / "blackswan"


def clips(n: int) -> dict:
    """``n`` windows of the 14 blackswan frames, 6..14 frames long (varied, as real sets are)."""
    lengths = [6 + (5 * k) % 9 for k in range(n)]
    return {f"clip{k:02d}": (0 if ln == 14 else k % (14 - ln), ln, k % 2 == 1) for k, ln in enumerate(lengths)}


def one_run(root: Path, out: Path, engine: str, workers: int, threads: int, mode: str) -> tuple:
    from vidseg_core.dataset import DatasetRun, run_dataset
    from vidseg_core.dataset.protocol import JobConfig
    from vidseg_core.pipeline import SegmentSettings

    cfg = JobConfig(out="", model="tiny-sd", device="cpu", settings=SegmentSettings(num_clusters=5, mode=mode),
                    threads=threads if engine == "local" else None)
    t = time.perf_counter()
    res = run_dataset(DatasetRun(root=str(root), layout="davis2017", out=str(out), config=cfg, engine=engine,
                                 workers=workers if engine == "ray" else None, quiet=True))
    dt = time.perf_counter() - t
    if res.exit_code or len(res.computed) != len(res.selected):
        raise RuntimeError(f"{engine} run failed: {res.scores['failed']}")
    return dt, res.scores["dataset"]["frames"], sum(r["seconds"] for r in res.records)


def run(videos: int = 6, size: str = "256x144", repeats: int = 3, workers: int = 2, mode: str = "fast",
        log=print) -> dict:
    """Times of both engines on one small set; see the module docstring.  Returns seconds and counts."""
    import torch

    from vidseg_core.dataset.engines import start_ray

    require(BLACKSWAN)
    cpus = os.cpu_count() or 1
    w, h = (int(v) for v in size.lower().split("x"))
    tmp = Path(tempfile.mkdtemp(prefix="vsbench", dir="/tmp"))
    os.environ.setdefault("RAY_TMPDIR", str(tmp))
    try:
        root = make_davis2017(BLACKSWAN, tmp / "DAVIS", clips=clips(videos), size=(w, h))
        n_frames = sum(c[1] for c in clips(videos).values())
        log(f"set: {videos} videos, {n_frames} frames at {w}x{h}; tiny-sd, --mode {mode}, K = 5; {cpus} CPUs; "
            f"local = 1 process x {cpus} threads, ray = {workers} workers x {max(1, cpus // workers)} threads; "
            f"torch {torch.__version__}")
        t = time.perf_counter()
        ray, _ = start_ray(None, cpus)
        t_init = time.perf_counter() - t
        times = {"local": [], "ray": []}
        work = {"local": [], "ray": []}
        k = 0
        for r in range(-1, repeats):  # r = -1: one warm-up run of each engine, not counted
            for engine in (("local", "ray") if r % 2 == 0 else ("ray", "local")):
                k += 1
                dt, frames, busy = one_run(root, tmp / f"out{k}", engine, workers, cpus, mode)
                if r >= 0:
                    times[engine].append(dt)
                    work[engine].append(busy)
                log(f"  {'warm-up ' if r < 0 else f'repeat {r + 1}'} {engine:5s}: {dt:7.2f} s  "
                    f"({frames / dt:6.2f} frames/s; per-video work {busy:.2f} s summed over workers)")
                shutil.rmtree(tmp / f"out{k}")
        t = time.perf_counter()
        ray.shutdown()
        t_down = time.perf_counter() - t
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"videos": videos, "frames": n_frames, "size": [w, h], "workers": workers, "cpus": cpus,
            "times": times, "work": work, "ray_init": t_init, "ray_shutdown": t_down}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=6)
    ap.add_argument("--size", default="256x144", help="WxH of the frames (default 256x144)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--mode", default="fast", choices=["fast", "quality"])
    args = ap.parse_args(argv)
    res = run(args.videos, args.size, args.repeats, args.workers, args.mode, log=lambda m: print(m, flush=True))
    print(f"ray start-up (ray.init of a local instance, {res['cpus']} CPUs): {res['ray_init']:.2f} s; "
          f"shutdown {res['ray_shutdown']:.2f} s")
    for engine, ts in res["times"].items():
        med = statistics.median(ts)
        print(f"{engine:5s}: {med:7.2f} s per run (min {min(ts):.2f}, max {max(ts):.2f}); "
              f"{3600 * res['videos'] / med:8.0f} videos/h; {res['frames'] / med:6.2f} frames/s")
    ratios = [a / b for a, b in zip(res["times"]["local"], res["times"]["ray"])]
    print(f"ray ({res['workers']} workers) / local speed-up: {statistics.median(ratios):.2f}x "
          f"(per-repeat {min(ratios):.2f} .. {max(ratios):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
