"""``dataset``: segment and score a whole dataset (DAVIS 2017 / 2016, VSPW, folders of clips).

The per-video options are ``segment``'s own (one definition, :func:`.segment.add_method_arguments`,
:func:`._common.add_frame_arguments`, :func:`._common.add_model_arguments`); the work is in
:mod:`vidseg_core.dataset`.
"""
from __future__ import annotations

import sys

from ._common import add_frame_arguments, add_model_arguments
from .naming_args import add_naming_arguments, naming_settings
from .segment import add_method_arguments, settings_from_args

HELP = "segment a whole dataset (DAVIS, VSPW, folders) per the paper's protocol, resumable, sharded or on Ray; scores"


def add_arguments(p) -> None:
    from ..dataset.engines import ENGINES
    from ..dataset.layouts import LAYOUTS
    from ..metrics.evaluate import METRICS

    p.add_argument("root", metavar="ROOT", help="the dataset's folder (read in place, never modified)")
    p.add_argument("--layout", required=True, choices=LAYOUTS,
                   help="davis2017 (JPEGImages/, Annotations/, ImageSets/2017), davis2016 (the DAVIS 2017 package "
                        "through ImageSets/2016; objects merged into one), vspw (<split>.txt, data/<video>/origin|mask; "
                        "label remap), folders (one frame folder or video file per clip)")
    p.add_argument("--split", default=None, help="split file name: DAVIS ImageSets/<year>/SPLIT.txt, VSPW SPLIT.txt "
                                                 "(default val; not for folders)")
    p.add_argument("--resolution", default="480p", help="DAVIS image resolution folder (default 480p)")
    p.add_argument("--annotations", default=None, metavar="DIR",
                   help="folders layout: DIR/<clip>/*.png ground truth per frame, or DIR/<clip>.png reference mask")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: DIR/<video>/<frame>.png, scores.json, scores.csv; an earlier run's folder "
                        "is resumed. With --shard or Ray on several machines it must be one folder every "
                        "process / node sees (a shared file system)")
    p.add_argument("--videos", default=None, metavar="NAMES|FILE",
                   help="only these videos: comma-separated names or a file with one name per line")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="run shard I of N (0-based; balanced by frame count, deterministic): one per GPU or job-array task")
    p.add_argument("--engine", default="local", choices=ENGINES,
                   help="local = this process; ray = one worker per GPU (or CPU slice) on Ray (pip install 'vidseg[ray]')")
    p.add_argument("--workers", type=int, default=None,
                   help="--engine ray: number of workers (default: one per GPU, else one per CPU)")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="--engine ray: join this cluster (e.g. auto or ray://head:10001) instead of starting a local "
                        "Ray; the output folder must be on a file system every node sees")
    add_model_arguments(p)
    add_method_arguments(p)
    add_naming_arguments(p, select=False)  # names against the classes' names: "name_acc" (VSPW)
    add_frame_arguments(p)
    p.add_argument("--metrics", default=None,
                   help=f"comma-separated subset of {','.join(METRICS)} (default: jf for DAVIS, miou,vc8,vc16 for "
                        "VSPW, jf,vc8,vc16 for folders)")
    p.add_argument("--num-classes", type=int, default=None,
                   help="classes for mIoU (default 124 for VSPW, else max ground-truth id + 1)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo the selected videos even if done (and accept other settings in DIR)")
    p.add_argument("--score-only", action="store_true", help="segment nothing; score what DIR holds (after all shards)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def run(args) -> int:
    from ..dataset import DatasetRun, run_dataset
    from ..dataset.protocol import JobConfig
    from ..dataset.scores import format_table

    config = JobConfig(out=args.out, model=args.model, device=args.device, precision=args.precision,
                       prediction_type=args.prediction_type, settings=settings_from_args(args),
                       frames=args.frames, stride=args.stride, max_side=args.max_side,
                       naming=naming_settings(args), namer=args.namer)
    run_ = DatasetRun(root=args.root, layout=args.layout, out=args.out, config=config, split=args.split,
                      resolution=args.resolution, annotations=args.annotations, videos=args.videos, shard=args.shard,
                      engine=args.engine, workers=args.workers, ray_address=args.ray_address, metrics=args.metrics,
                      num_classes=args.num_classes, overwrite=args.overwrite, score_only=args.score_only,
                      quiet=args.quiet)
    result = run_dataset(run_)
    print(format_table(result.scores))
    print(f"wrote {args.out}/scores.json and scores.csv ({len(result.computed)} videos segmented now, "
          f"{len(result.skipped)} finished earlier)", file=sys.stderr)
    return result.exit_code
