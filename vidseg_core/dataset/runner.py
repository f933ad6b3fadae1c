"""A whole dataset in one call: read, select, shard, check the output folder, run, score, report.

:func:`run_dataset` is what ``python -m vidseg_core dataset`` calls; tests and benchmarks call it too.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from ..errors import InputError
from .engines import ENGINES, run_local, run_ray
from .layouts import read_dataset, select_videos
from .progress import STATE, Progress, RunFolder, check_out_folder
from .protocol import JobConfig
from .scores import check_class_ids, score_run, write_scores
from .sharding import parse_shard, shard


@dataclass
class DatasetRun:
    """What to run (see ``python -m vidseg_core dataset --help``)."""

    root: str
    layout: str
    out: str
    config: JobConfig
    split: Optional[str] = None
    resolution: str = "480p"
    annotations: Optional[str] = None
    videos: Optional[str] = None
    shard: Optional[str] = None
    engine: str = "local"
    workers: Optional[int] = None
    ray_address: Optional[str] = None
    metrics: Optional[str] = None
    num_classes: Optional[int] = None
    overwrite: bool = False
    score_only: bool = False
    quiet: bool = False


@dataclass
class DatasetResult:
    scores: dict
    selected: List[str]
    skipped: List[str] = field(default_factory=list)   # finished earlier, not recomputed
    computed: List[str] = field(default_factory=list)  # segmented by this run
    failed: List[str] = field(default_factory=list)
    records: List[dict] = field(default_factory=list)  # this run's per-video records (worker pid, seconds, ...)

    @property
    def exit_code(self) -> int:
        return 1 if self.scores["failed"] else 0


def manifest(run: DatasetRun, dataset) -> dict:
    """What must not change between a run and its resumption in the same folder."""
    settings = run.config.settings.describe()
    settings.pop("reference_mask", None)
    settings.pop("reference_frame", None)
    return {"layout": run.layout, "split": dataset.split, "resolution": run.resolution, "model": run.config.model,
            "precision": run.config.precision, "prediction_type": run.config.prediction_type, "settings": settings,
            "frames": run.config.frames, "stride": run.config.stride, "max_side": run.config.max_side}


def redo_changed(folder: RunFolder, videos, config: JobConfig, quiet: bool = False) -> List[str]:
    """Forget the finished videos whose frames or reference mask changed since they were segmented (their
    marker's fingerprint differs), so that they are segmented again; returns their names."""
    from .protocol import current_fingerprint

    changed = []
    for v in videos:
        rec = folder.done_record(v.name)
        if rec is None or "input_fingerprint" not in rec:
            continue
        now = current_fingerprint(v, config)
        if now is not None and now != rec["input_fingerprint"]:
            folder.discard(v.name)
            changed.append(v.name)
    if changed and not quiet:
        print(f"note: the frames or reference of {len(changed)} finished video(s) changed since they were segmented; "
              f"segmenting them again: {', '.join(changed[:10])}{' ...' if len(changed) > 10 else ''}", file=sys.stderr)
    return changed


def run_dataset(run: DatasetRun) -> DatasetResult:
    from ..metrics.evaluate import parse_metrics

    if run.engine not in ENGINES:
        raise InputError(f"Unknown engine {run.engine!r}.", f"Use one of {', '.join(ENGINES)}.")
    if run.workers is not None and run.workers < 1:
        raise InputError(f"--workers must be at least 1, got {run.workers}.", "Omit it for one worker per GPU or CPU.")
    if run.engine == "local" and (run.workers or run.ray_address):
        raise InputError("--workers and --ray-address need --engine ray.",
                         "Add --engine ray, or use --shard I/N with one process per GPU.")
    metrics = parse_metrics(run.metrics) if run.metrics else None
    dataset = select_videos(read_dataset(run.root, run.layout, run.split, run.resolution, run.annotations),
                            run.videos)
    names = [v.name for v in dataset.videos]
    mine = dataset.videos
    if run.shard:
        i, n = parse_shard(run.shard)
        mine = shard(dataset.videos, i, n)
    out = Path(run.out)
    if run.score_only and not (out / STATE / "run.json").is_file():
        raise InputError(f"--score-only: {out} holds no dataset run to score.",
                         "Give the --out folder of an earlier dataset run, or leave --score-only out to segment "
                         "the videos first.")
    num_classes = run.num_classes or dataset.num_classes
    if "miou" in (metrics or dataset.metrics):
        check_class_ids(dataset, mine, num_classes)  # before any work: a wrong id would fail only when scoring
    others = [p for p in (run.annotations, run.config.model) if p and Path(p).exists()]
    others += [run.videos] if run.videos and Path(run.videos).is_file() else []  # a list file
    check_out_folder(out, Path(run.root), others)
    folder = RunFolder(out)
    config = dataclasses.replace(run.config, out=str(out), gt_transform=dataset.gt_transform)
    folder.open(manifest(run, dataset), run.overwrite, [v.name for v in mine])
    result = DatasetResult(scores={}, selected=[v.name for v in mine])
    if not run.score_only:
        redo_changed(folder, mine, config, run.quiet)
        todo = [v for v in mine if not folder.is_done(v.name)]
        result.skipped = [v.name for v in mine if v not in todo]
        if not run.quiet:
            print(f"{dataset.layout} {dataset.split or ''}: {len(mine)} videos ({sum(v.num_frames for v in mine)} "
                  f"frames) selected, {len(result.skipped)} done earlier, {len(todo)} to run on "
                  f"{run.engine}", file=sys.stderr)
        progress = Progress(len(todo), sum(v.num_frames for v in todo), run.quiet)
        if run.engine == "ray":
            records = run_ray(todo, config, progress.video, run.workers, run.ray_address)
        else:
            records = run_local(todo, config, progress.video)
        result.records = records
        result.computed = [r["video"] for r in records if r["status"] == "done"]
        result.failed = [r["video"] for r in records if r["status"] != "done"]
    result.scores = score_run(dataset, folder, names, metrics, num_classes)
    write_scores(result.scores, out)
    return result
