"""Seconds per frame of feature extraction and of the whole pipeline (fast and quality) on real frames.

Default: the 14 blackswan frames (854x480, worked at 832x448: a 28x52 feature
grid, one batch of 14), the ``tiny-sd`` backbone (random weights: the time of
the real architecture's *structure* at toy width, not of SD 2.1), K = 5 (the
authors' demo K for this clip), no reference mask (the K clusters are the
labels, so quality mode modulates every label that occurs).  All three are
measured in this one process, one after the other, after a 2-frame warm-up;
wall and CPU (process) time are both recorded.

    python benchmarks/pipeline_speed.py [--data ../shared/data/blackswan/frames] [--clusters 5]
        [--frames N] [--max-side S] [--modes fast quality] [--model tiny-sd]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "blackswan" / "frames"


def run(data=DEFAULT_DATA, clusters: int = 5, num_frames: Optional[int] = None, max_side: Optional[int] = None,
        modes: Sequence[str] = ("fast", "quality"), model: str = "tiny-sd", batch_size: Optional[int] = None,
        warmup: bool = True, log=print) -> Dict[str, object]:
    """Returns ``{"setting": {...}, "features": {...}, "fast": {...}, "quality": {...}}`` (seconds)."""
    import torch

    from vidseg_core.backbones import load_backbone
    from vidseg_core.features import extract_features
    from vidseg_core.pipeline import SegmentSettings, segment_video
    from vidseg_core.video_io import FrameSource

    data = Path(data)
    if not data.is_dir():
        raise FileNotFoundError(f"frames not found at {data}")
    bb = load_backbone(model)
    source = FrameSource(data, frame_range=(0, num_frames), max_side=max_side)
    frames = source.read_all()
    n = int(frames.shape[0])
    work = bb.work_size(*source.frame_size)
    setting = {"model": model, "frames": n, "source_size": list(source.source_size),
               "frame_size": list(source.frame_size), "work_size": list(work),
               "grid": [work[0] // 16, work[1] // 16], "clusters": clusters,
               "batch_size": batch_size or bb.config.batch_size, "threads": torch.get_num_threads()}
    out: Dict[str, object] = {"setting": setting}
    if log:
        log(f"{model}: {n} frames {source.source_size[1]}x{source.source_size[0]} -> work {work[1]}x{work[0]} "
            f"(grid {work[0] // 16}x{work[1] // 16}), K = {clusters}, {torch.get_num_threads()} threads")
    if warmup:
        extract_features(bb, frames[: min(2, n)], batch_size=batch_size)
    t, c = time.perf_counter(), time.process_time()
    extract_features(bb, frames, batch_size=batch_size)
    dt, dc = time.perf_counter() - t, time.process_time() - c
    out["features"] = {"seconds": dt, "per_frame": dt / n, "cpu_seconds": dc}
    if log:
        log(f"  features (extract_features): {dt / n:.3f} s/frame ({dt:.1f} s wall, {dc:.1f} s CPU)")
    for mode in modes:
        t, c = time.perf_counter(), time.process_time()
        _, summary = segment_video(bb, frames, SegmentSettings(mode=mode, num_clusters=clusters,
                                                               batch_size=batch_size))
        dt, dc = time.perf_counter() - t, time.process_time() - c
        out[mode] = {"seconds": dt, "per_frame": dt / n, "cpu_seconds": dc, "stages": dict(summary.seconds),
                     "labels": len(summary.table), "peak_memory_mb": summary.peak_memory_mb}
        if log:
            stages = ", ".join(f"{k} {v:.1f} s" for k, v in summary.seconds.items())
            log(f"  pipeline {mode}: {dt / n:.3f} s/frame ({dt:.1f} s wall, {dc:.1f} s CPU; {stages}; "
                f"{len(summary.table)} labels)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--clusters", type=int, default=5)
    ap.add_argument("--frames", type=int, default=None, help="first N frames (default all)")
    ap.add_argument("--max-side", type=int, default=None)
    ap.add_argument("--modes", nargs="+", default=["fast", "quality"], choices=["fast", "quality"])
    ap.add_argument("--model", default="tiny-sd")
    ap.add_argument("--batch-size", type=int, default=None)
    args = ap.parse_args(argv)
    if not args.data.is_dir():
        print(f"frames not found at {args.data}", file=sys.stderr)
        return 2
    res = run(args.data, args.clusters, args.frames, args.max_side, args.modes, args.model, args.batch_size)
    if "fast" in res and "quality" in res:
        print(f"  quality / fast: {res['quality']['seconds'] / res['fast']['seconds']:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
