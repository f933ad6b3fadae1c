"""Peak memory of the whole pipeline against video length (streaming: it must stay flat).

Every configuration (mode x number of frames) runs in a FRESH Python process
that loads the backbone, opens the frames with ``FrameSource`` (read per
batch, never the whole video), runs ``VideoSegmenter.run`` and drops each
batch's results as soon as it gets them, like the ``segment`` command.  The
child reports its peak RSS (``VmHWM`` of /proc/self/status where available,
else ``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which on Linux starts at
the parent's RSS in a child: see :func:`_peak_mb`) after loading the model and
after every batch, and its current RSS
(``/proc/self/statm``) after every batch, so growth shows up both as a larger
final peak and as a drift from batch to batch.

    python benchmarks/pipeline_memory.py [--data clips/bedroom/frames] [--lengths 14 56 200]
        [--modes fast quality] [--max-side 480 (0 = none)] [--clusters 3] [--model tiny-sd]
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.clips import CLIPS, missing_clip_message  # noqa: E402
from benchmarks.child_process import run_tagged_child  # noqa: E402
from benchmarks.proc_status import status_mb  # noqa: E402

DEFAULT_DATA = CLIPS / "bedroom" / "frames"
RESULT_TAG = "MEMORY-RESULT "


def _rusage_peak_mb() -> float:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024


def _peak_mb() -> float:
    """Peak RSS of this process (MB).

    ``getrusage(RUSAGE_SELF).ru_maxrss`` of a child started by a large parent
    starts at the PARENT's RSS on Linux: the forked copy of the parent's
    address space counts towards the child's maximum, which survives exec
    (measured: a child of a 2 GB parent reports 1.9 GB before doing anything;
    in run_all the children reported the parent's 7.5 GB).  ``VmHWM`` is the
    high-water mark of the exec'ed address space only, so it is used when
    available; ``ru_maxrss`` is reported alongside.
    """
    hwm = status_mb("VmHWM")
    return _rusage_peak_mb() if hwm is None else hwm


def child(data: str, frames: int, mode: str, max_side: Optional[int], clusters: int, model: str,
          batch_size: Optional[int], threads: Optional[int] = None) -> Dict[str, object]:
    """One configuration, in this process (meant to be a fresh one): see the module docstring."""
    import torch

    if threads:
        torch.set_num_threads(threads)

    from vidseg_core.backbones import load_backbone
    from vidseg_core.pipeline import SegmentSettings, VideoSegmenter
    from vidseg_core.video_io import FrameSource

    out: Dict[str, object] = {"frames": frames, "mode": mode, "max_side": max_side, "clusters": clusters,
                              "threads": torch.get_num_threads(), "peak_mb_start": _peak_mb(),
                              "ru_maxrss_mb_start": _rusage_peak_mb(),
                              "peak_source": "VmHWM" if status_mb("VmHWM") is not None else "ru_maxrss"}
    t0 = time.perf_counter()
    bb = load_backbone(model)
    out["peak_mb_after_load"] = _peak_mb()
    out["rss_mb_after_load"] = status_mb("VmRSS")
    source = FrameSource(data, frame_range=(0, frames), max_side=max_side)
    if len(source) < frames:
        raise SystemExit(f"{data} has only {len(source)} frames, {frames} requested")
    out["source_size"] = list(source.source_size)
    out["frame_size"] = list(source.frame_size)
    out["work_size"] = list(bb.work_size(*source.frame_size))
    seg = VideoSegmenter(bb, SegmentSettings(mode=mode, num_clusters=clusters, batch_size=batch_size))
    batches: List[Dict[str, float]] = []
    t = time.perf_counter()
    for res in seg.run(source.read, len(source), source.frame_size):
        n = len(res.batch.written)
        del res  # dropped at once, like the segment command after writing its PNGs
        now = time.perf_counter()
        batches.append({"frames": n, "seconds": now - t, "peak_mb": _peak_mb(), "rss_mb": status_mb("VmRSS")})
        t = now
    source.close()
    s = seg.summary
    out.update(batches=batches, num_batches=len(batches), grid=list(s.grid), labels=len(s.table),
               stage_seconds={k: round(v, 2) for k, v in s.seconds.items()},
               seconds=time.perf_counter() - t0, peak_mb=_peak_mb(), ru_maxrss_mb=_rusage_peak_mb())
    return out


def run_config(data, frames: int, mode: str, max_side: Optional[int], clusters: int, model: str = "tiny-sd",
               batch_size: Optional[int] = None, threads: Optional[int] = None,
               timeout: Optional[float] = None) -> Dict[str, object]:
    """Run :func:`child` in a fresh interpreter (``threads``: torch threads, default this process's)."""
    import torch

    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--data", str(data), "--frames", str(frames),
           "--mode", mode, "--clusters", str(clusters), "--model", model]
    cmd += ["--max-side", str(max_side or 0)]  # 0 = no cap (the child's default is a cap)
    if batch_size:
        cmd += ["--batch-size", str(batch_size)]
    cmd += ["--threads", str(threads or torch.get_num_threads())]
    return run_tagged_child(cmd, RESULT_TAG, ROOT, timeout=timeout)


def summarize(rep: Dict[str, object], base_peak: Optional[float]) -> Dict[str, object]:
    """Flatness figures of one report: growth of the peak and of the RSS after the first batch."""
    b = rep["batches"]
    first, last = b[0], b[-1]
    per_batch = [x["seconds"] for x in b]
    growth_peak = last["peak_mb"] - first["peak_mb"]
    drift = (last["rss_mb"] - first["rss_mb"]) if first.get("rss_mb") is not None else None
    return {
        "peak_mb": rep["peak_mb"],
        "vs_shortest": rep["peak_mb"] / base_peak if base_peak else 1.0,
        "model_mb": rep["peak_mb_after_load"],
        "peak_growth_after_batch1_mb": growth_peak,
        "rss_drift_after_batch1_mb": drift,
        "seconds_per_batch": sum(per_batch) / len(per_batch),
        "first_batch_seconds": per_batch[0],
    }


def run(data=DEFAULT_DATA, lengths: Sequence[int] = (14, 56, 200), modes: Sequence[str] = ("fast", "quality"),
        max_side: Optional[int] = 480, clusters: int = 3, model: str = "tiny-sd", batch_size: Optional[int] = None,
        quality_max_side: Optional[int] = "same", quality_clusters: Optional[int] = None,
        threads: Optional[int] = None, log=print) -> Dict[str, object]:
    """Every (mode, length) configuration in its own process; returns ``{"configs": [...], ...}``.

    ``quality_max_side`` / ``quality_clusters`` override the cap / K of the quality rows ("same" / None: as fast).
    """
    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"frames not found at {data}")
    configs = []
    for mode in modes:
        side = max_side if (mode != "quality" or quality_max_side == "same") else quality_max_side
        k = quality_clusters if (mode == "quality" and quality_clusters) else clusters
        base = None
        for n in lengths:
            rep = run_config(data, n, mode, side, k, model, batch_size, threads)
            s = summarize(rep, base)
            base = base or rep["peak_mb"]
            rep["summary"] = s
            configs.append(rep)
            if log:
                log(f"  {mode:7s} {n:4d} frames ({rep['num_batches']} batches, work {rep['work_size'][1]}x"
                    f"{rep['work_size'][0]}, K {k}): peak RSS {s['peak_mb']:.0f} MB ({s['vs_shortest']:.3f}x), "
                    f"model {s['model_mb']:.0f} MB, peak growth after batch 1 {s['peak_growth_after_batch1_mb']:+.0f} MB, "
                    f"RSS drift {s['rss_drift_after_batch1_mb']:+.0f} MB, {s['seconds_per_batch']:.1f} s/batch, "
                    f"wall {rep['wall_seconds']:.0f} s")
    return {"data": str(data), "configs": configs}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--lengths", type=int, nargs="+", default=[14, 56, 200])
    ap.add_argument("--modes", nargs="+", default=["fast", "quality"], choices=["fast", "quality"])
    ap.add_argument("--max-side", type=int, default=480, help="working-resolution cap (0 = none)")
    ap.add_argument("--clusters", type=int, default=3, help="K")
    ap.add_argument("--model", default="tiny-sd")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the children (default torch's)")
    # one configuration in this process (used by the parent)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--frames", type=int, default=14, help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="fast", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        rep = child(str(args.data), args.frames, args.mode, args.max_side or None, args.clusters, args.model,
                    args.batch_size, args.threads)
        print(RESULT_TAG + json.dumps(rep), flush=True)
        return 0
    if not args.data.is_dir():
        print(missing_clip_message(args.data), file=sys.stderr)
        return 2
    print(f"peak memory vs video length: {args.data}, max side {args.max_side or 'none'}, K = {args.clusters}, "
          f"{args.model}, one fresh process per configuration")
    run(args.data, args.lengths, args.modes, args.max_side or None, args.clusters, args.model, args.batch_size,
        threads=args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
