"""Engines that hand whole videos to workers: ``local`` (this process) and ``ray`` (a Ray cluster).

Both take the videos longest first and give every video to a :class:`~.protocol.VideoWorker`, which loads
the model once; outputs are identical whichever engine runs them (same code, same settings, same threads
per worker).  The driver holds no frames: workers read and write the frames of their own video.

Ray (docs/design/dataset_runs.md#ray) is imported only here and only when asked for.  One actor per GPU (``num_gpus=1``)
or, on a machine without GPUs, per CPU slice (``num_cpus = CPUs // workers``, torch threads set to match);
a worker that dies is restarted by Ray (``max_restarts``; the constructor reloads the model) and its video
retried (``max_task_retries``); a video that still fails is recorded as failed.  Without ``address`` a
local Ray instance is started for the run and stopped after it; with one, the run joins that cluster, whose
nodes must all see the output folder (a shared file system) and have VidSeg installed.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..errors import InputError
from .progress import RunFolder
from .protocol import JobConfig, VideoWorker
from .sharding import longest_first

ENGINES = ("local", "ray")
#: Ray fault-tolerance settings of the worker actors
MAX_RESTARTS = 2
MAX_TASK_RETRIES = 1

OnVideo = Callable[[dict], None]


def run_local(videos: List, config: JobConfig, on_video: OnVideo) -> List[dict]:
    """All ``videos`` in this process with one model."""
    if not videos:
        return []
    import torch

    threads = torch.get_num_threads()
    try:
        worker = VideoWorker(config)
        records = []
        for v in longest_first(videos):
            rec = worker.run(v)
            records.append(rec)
            on_video(rec)
        return records
    finally:
        torch.set_num_threads(threads)  # config.threads applies to the run only


def import_ray():
    try:
        import ray
    except ImportError as exc:
        raise InputError(f"--engine ray needs Ray, which cannot be imported ({exc}).",
                         "pip install 'vidseg[ray]' (or pip install ray), or use --engine local "
                         "(with --shard I/N per GPU).") from exc
    return ray


def _resources(ray, workers: Optional[int], device: str) -> Dict[str, float]:
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 1))
    want_gpu = gpus > 0 and device != "cpu"
    if want_gpu:
        n = workers or gpus
        return {"workers": n, "num_gpus": 1, "num_cpus": max(1, cpus // n) if cpus >= n else 0}
    n = workers or max(1, cpus)
    return {"workers": n, "num_gpus": 0, "num_cpus": max(1, cpus // n)}


def start_ray(address: Optional[str], workers: Optional[int]):
    """Join ``address`` or start a local instance sized for ``workers``; returns (ray, started_here)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray, False
    kwargs = dict(include_dashboard=False, log_to_driver=False)
    if address:
        ray.init(address=address, **kwargs)
        return ray, True
    root = str(Path(__file__).resolve().parents[2])  # so local workers import this checkout's vidseg_core
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=workers or os.cpu_count(), runtime_env={"env_vars": {"PYTHONPATH": path}}, **kwargs)
    return ray, True


def run_ray(videos: List, config: JobConfig, on_video: OnVideo, workers: Optional[int] = None,
            address: Optional[str] = None) -> List[dict]:
    """All ``videos`` on Ray actors (see the module docstring); longest videos are handed out first."""
    if not videos:
        return []
    ray, started = start_ray(address, workers)
    try:
        res = _resources(ray, workers, config.device)
        n = min(res["workers"], len(videos))
        cfg = config
        if not res["num_gpus"] and config.threads is None:
            from dataclasses import replace

            cfg = replace(config, threads=res["num_cpus"])
        actor_cls = ray.remote(num_gpus=res["num_gpus"], num_cpus=res["num_cpus"], max_restarts=MAX_RESTARTS,
                               max_task_retries=MAX_TASK_RETRIES)(VideoWorker)
        actors = [actor_cls.remote(cfg) for _ in range(n)]
        queue = longest_first(videos)
        idle = list(actors)
        running: Dict[object, tuple] = {}
        records: List[dict] = []
        folder = RunFolder(config.out)

        def finish(rec):
            records.append(rec)
            on_video(rec)

        while queue or running:
            while queue and idle:
                actor = idle.pop(0)
                v = queue.pop(0)
                running[actor.run.remote(v)] = (v, actor)
            if not running:  # every worker is gone: the rest cannot run
                for v in queue:
                    finish(folder.record_failure(v.name, "no Ray worker left to run it"))
                break
            ready, _ = ray.wait(list(running), num_returns=1)
            v, actor = running.pop(ready[0])
            try:
                rec = ray.get(ready[0])
                idle.append(actor)
            except Exception as exc:  # the worker died even after Ray's restarts and retries: drop it
                rec = folder.record_failure(v.name, f"worker lost: {type(exc).__name__}: {exc}")
            finish(rec)
        for a in actors:
            ray.kill(a)
        return records
    finally:
        if started:
            ray.shutdown()
