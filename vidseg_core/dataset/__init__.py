"""Whole datasets: the paper's evaluation protocol on DAVIS / VSPW / folders of clips, at scale.

* :mod:`.layouts`  - reading DAVIS 2017 / 2016, VSPW (with its label remap) and plain folders in place;
* :mod:`.protocol` - one video: first annotated frame's GT as the reference, official-layout PNGs;
* :mod:`.progress` - the output folder: atomic DONE markers, resume, failures, progress lines;
* :mod:`.sharding` - deterministic ``--shard I/N`` balanced by frame count;
* :mod:`.engines`  - local and Ray engines (Ray imported only when asked for);
* :mod:`.scores`   - per-video and whole-set scores, JSON / CSV / table;
* :mod:`.runner`   - :func:`run_dataset`, the whole command.
"""
from .layouts import LAYOUTS, Dataset, Video, read_dataset, select_videos
from .runner import DatasetResult, DatasetRun, run_dataset
from .sharding import parse_shard, shard, split_shards

__all__ = ["LAYOUTS", "Dataset", "Video", "read_dataset", "select_videos", "DatasetResult", "DatasetRun",
           "run_dataset", "parse_shard", "shard", "split_shards"]
