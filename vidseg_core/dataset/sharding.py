"""Deterministic ``--shard I/N`` split of a dataset, balanced by frame count.

Whole videos are the unit of work (the method carries state from batch to batch, docs/design/dataset_runs.md#a-whole-video-per-work-item).
The split is the greedy longest-processing-time rule: videos in order of decreasing frame count (ties by
name) go one by one to the shard with the fewest frames so far (ties to the lowest shard index).  It
depends only on the names and frame counts, so every process of a job array computes the same split; the
shards are disjoint, their union is the whole set, and any two shards differ by at most the longest
video's frames.
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

from ..errors import InputError


def parse_shard(text: str) -> Tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N`` (shards are numbered from 0, like GPUs)."""
    try:
        a, b = text.split("/")
        i, n = int(a), int(b)
    except (ValueError, AttributeError):
        raise InputError(f"Invalid --shard {text!r}.", "Write I/N, e.g. 0/4 for the first of four shards.") from None
    if n < 1 or not 0 <= i < n:
        raise InputError(f"--shard {text}: the index must be in 0..N-1 and N at least 1.",
                         f"Shards of {max(n, 1)} are numbered 0/{max(n, 1)} .. {max(n, 1) - 1}/{max(n, 1)}.")
    return i, n


def longest_first(videos: Sequence) -> List:
    """Videos by decreasing frame count, ties by name (the order work is handed out)."""
    return sorted(videos, key=lambda v: (-v.num_frames, v.name))


def split_shards(videos: Sequence, n: int) -> List[List]:
    """All ``n`` shards (each in longest-first order); see the module docstring."""
    shards: List[List] = [[] for _ in range(n)]
    load = [0] * n
    for v in longest_first(videos):
        k = min(range(n), key=lambda j: (load[j], j))
        shards[k].append(v)
        load[k] += v.num_frames
    return shards


def shard(videos: Sequence, i: int, n: int) -> List:
    """The videos of shard ``i`` of ``n``, in the dataset's order."""
    chosen = {v.name for v in split_shards(videos, n)[i]}
    return [v for v in videos if v.name in chosen]
