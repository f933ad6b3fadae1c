"""Seconds per frame of the whole pipeline on real frames: feature pass, fast mode, quality mode (batched) and
quality mode through the sequential oracle, repeated in interleaved order.

Default: the 14 blackswan frames (854x480, worked at 832x448: a 28x52 feature
grid, one batch of 14), the ``tiny-sd`` backbone (random weights: the time of
the real architecture's *structure* at toy width, not of SD 2.1), K = 5 (the
authors' demo K for this clip), no reference mask (the K clusters are the
labels).  Every case covers the same scope per frame — read frames in memory
-> resize, encode, condition, feature pass, coarse stage, upsampling -> label
maps — except ``features`` (encode + feature pass alone, the part every mode
shares):

* ``fast``     -- ``segment_video(mode="fast")`` (guided filter);
* ``quality``  -- ``segment_video(mode="quality")`` (batched masked modulation, the device's defaults:
                  chunk sizes from free memory, attention sharing as on this device);
* ``quality, sequential oracle`` -- the same pipeline with the modulation done by
  ``tests/oracles/modulation_sequential.py``: a reference pass and then one pass
  per (label, sign) one after another, the authors' structure without their disk
  round trips (:class:`SequentialOracleUpsampler`).

Each case runs ``--repeats`` times in alternating rounds (``benchmarks/timing.py``);
wall and CPU time are recorded, medians and min-max reported, and the quality
ratio is the median of per-round paired ratios.

    python benchmarks/pipeline_speed.py [--data clips/blackswan/frames] [--clusters 5] [--frames N]
        [--max-side S] [--cases features fast quality oracle] [--model tiny-sd] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see run_all.py: sleeping OpenMP threads on a busy machine

ROOT = Path(__file__).resolve().parents[1]
for p in (ROOT, ROOT / "tests"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from benchmarks.clips import CLIPS, missing_clip_message  # noqa: E402
import torch  # noqa: E402

from vidseg_core.upsample import Upsampler, check_upsample_inputs  # noqa: E402

DEFAULT_DATA = CLIPS / "blackswan" / "frames"
CASES = ("features", "fast", "quality", "oracle")
CASE_NAMES = {"features": "feature pass (encode + reference trajectory to t_k)",
              "fast": "whole pipeline, fast mode",
              "quality": "whole pipeline, quality mode (batched)",
              "oracle": "whole pipeline, quality mode, sequential oracle"}


class SequentialOracleUpsampler(Upsampler):
    """Quality mode done the authors' way: ``tests/oracles/modulation_sequential.py`` (a reference pass, then
    2L single-run passes one after another, decode per pass, NumPy/OpenCV difference maps) on the labels present
    in the batch's coarse map."""

    name = "sequential_oracle"

    def __init__(self, settings=None):
        from vidseg_core.modulation import ModulationSettings

        self.settings = settings or ModulationSettings()

    def upsample(self, frames, coarse, label_ids=None, context=None):
        from oracles.modulation_sequential import sequential_modulation

        coarse, ids = check_upsample_inputs(frames, coarse, label_ids)
        present = torch.unique(coarse.cpu())
        size = tuple(frames.shape[1:3])
        if present.numel() == 1:
            return torch.full((frames.shape[0],) + size, int(present[0]), dtype=torch.long)
        s = self.settings
        labels, _ = sequential_modulation(context.backbone, context.inputs, coarse, present.tolist(), size,
                                          lam=s.lam, filter_s=s.filter_s)
        return labels


def segment(bb, frames, settings, oracle: bool = False):
    """``(labels [N,H,W], coarse [N,h,w], summary)`` of the whole pipeline; ``oracle`` swaps the quality
    upsampler for :class:`SequentialOracleUpsampler` (everything else identical)."""
    from vidseg_core.pipeline import VideoSegmenter, segment_video

    if not oracle:
        return segment_video(bb, frames, settings, keep_coarse=True)

    class OracleSegmenter(VideoSegmenter):
        def _upsampler(self):
            return SequentialOracleUpsampler(self.settings.modulation)

    seg = OracleSegmenter(bb, settings)
    n = frames.shape[0]
    labels = coarse = None
    for res in seg.run(lambda a, b: frames[a:b], n, tuple(frames.shape[1:3])):
        if labels is None:
            labels = torch.empty((n,) + tuple(res.labels.shape[1:]), dtype=torch.long)
            coarse = torch.empty((n,) + tuple(res.coarse.shape[1:]), dtype=torch.long)
        labels[res.batch.write_start:res.batch.stop] = res.labels
        coarse[res.batch.write_start:res.batch.stop] = res.coarse
    return labels, coarse, seg.summary


def pipeline_cases(bb, frames: torch.Tensor, clusters: int, cases: Sequence[str] = CASES,
                   batch_size: Optional[int] = None, stages: Optional[dict] = None) -> Dict[str, Callable]:
    """The timed callables by case key; ``stages`` (if given) receives each case's last per-stage seconds."""
    from vidseg_core.features import extract_features
    from vidseg_core.pipeline import SegmentSettings

    out: Dict[str, Callable] = {}

    def run_mode(key, mode, oracle=False):
        def fn():
            labels, coarse, summary = segment(bb, frames, SegmentSettings(mode=mode, num_clusters=clusters,
                                                                          batch_size=batch_size), oracle)
            if stages is not None:
                stages[key] = {"seconds": dict(summary.seconds), "labels": len(summary.table),
                               "result": labels, "coarse": coarse, "table": list(summary.table.values)}
            return labels
        return fn

    if "features" in cases:
        out["features"] = lambda: extract_features(bb, frames, batch_size=batch_size)
    if "fast" in cases:
        out["fast"] = run_mode("fast", "fast")
    if "quality" in cases:
        out["quality"] = run_mode("quality", "quality")
    if "oracle" in cases:
        out["oracle"] = run_mode("oracle", "quality", oracle=True)
    return out


def run(data=DEFAULT_DATA, clusters: int = 5, num_frames: Optional[int] = None, max_side: Optional[int] = None,
        cases: Sequence[str] = CASES, model: str = "tiny-sd", batch_size: Optional[int] = None, repeats: int = 3,
        log=print) -> Dict[str, object]:
    """``{"setting": {...}, "samples": {case: Samples}, "stages": {...}, "agree": fraction or None}``."""
    from benchmarks.timing import time_cases
    from vidseg_core.backbones import load_backbone
    from vidseg_core.features import extract_features
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
               "batch_size": batch_size or bb.config.batch_size, "threads": torch.get_num_threads(),
               "repeats": repeats}
    if log:
        log(f"{model}: {n} frames {source.source_size[1]}x{source.source_size[0]} -> work {work[1]}x{work[0]} "
            f"(grid {work[0] // 16}x{work[1] // 16}), K = {clusters}, {torch.get_num_threads()} threads, "
            f"{repeats} interleaved rounds")
    stages: dict = {}
    fns = pipeline_cases(bb, frames, clusters, cases, batch_size, stages)
    samples, _ = time_cases(fns, repeats=repeats, per=n, log=log,
                            warmup=lambda: extract_features(bb, frames[: min(2, n)], batch_size=batch_size))
    agree = None
    if "quality" in stages and "oracle" in stages:
        agree = (stages["quality"]["result"] == stages["oracle"]["result"]).float().mean().item()
    for v in stages.values():
        for k in ("result", "coarse"):
            v.pop(k, None)
    if log:
        for key, s in samples.items():
            log(f"  {CASE_NAMES[key]}: {s.text()} s/frame wall, {s.median('cpu'):.3f} CPU")
    return {"setting": setting, "samples": samples, "stages": stages, "agree": agree}


def main(argv=None) -> int:
    from benchmarks.timing import ratio_text

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--clusters", type=int, default=5)
    ap.add_argument("--frames", type=int, default=None, help="first N frames (default all)")
    ap.add_argument("--max-side", type=int, default=None)
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--model", default="tiny-sd")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.data.is_dir():
        print(missing_clip_message(args.data), file=sys.stderr)
        return 2
    res = run(args.data, args.clusters, args.frames, args.max_side, args.cases, args.model, args.batch_size,
              args.repeats)
    s = res["samples"]
    if "quality" in s and "oracle" in s:
        print(f"  quality batched vs sequential oracle (whole pipeline): {ratio_text(s['oracle'], s['quality'])} "
              f"faster; labels agree on {100 * res['agree']:.3f}% of pixels")
    if "fast" in s and "quality" in s:
        print(f"  quality / fast: {ratio_text(s['quality'], s['fast'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
