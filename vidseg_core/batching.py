"""How a video of N frames is cut into batches of B frames (paper §4.1).

The authors process frames in batches of B = 14.  Their last batch is forced to
be the last B frames, so it overlaps the previous one and *overwrites* the
overlapped frames, and when N is a multiple of B they run one redundant extra
batch (docs/design/authors_code.md#order-of-operations-and-batching, bug #7).  Here:

* batches are ``[0, B), [B, 2B), ...``;
* a tail shorter than B is processed as the last B frames (full temporal
  context, as the authors do) but only its *new* frames are written
  (``write_start``), so nothing already written is overwritten;
* N % B == 0 gives exactly N / B batches (no redundant batch);
* a clip shorter than B (one frame included) is a single short batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

from .errors import InputError


@dataclass(frozen=True)
class Batch:
    """One batch: frames ``[start, stop)`` are computed, ``[write_start, stop)`` kept."""

    index: int
    start: int
    stop: int
    write_start: int

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def frames(self) -> range:
        return range(self.start, self.stop)

    @property
    def written(self) -> range:
        return range(self.write_start, self.stop)

    @property
    def write_offset(self) -> int:
        """Index inside the batch of the first frame that is kept."""
        return self.write_start - self.start


def plan_batches(num_frames: int, batch_size: int = 14, tail: str = "overlap") -> List[Batch]:
    """Cut ``num_frames`` into batches of ``batch_size``.

    ``tail="overlap"`` (default) computes a short tail as the last ``batch_size``
    frames and keeps only the new ones; ``tail="short"`` computes the tail as a
    shorter batch.  Every frame is written exactly once, in order.
    """
    if num_frames < 1:
        raise InputError("The video has no frames.", "Give at least one frame.")
    if batch_size < 1:
        raise InputError(f"Batch size must be at least 1, got {batch_size}.", "Use the paper's B = 14.")
    if tail not in ("overlap", "short"):
        raise InputError(f"Unknown tail mode {tail!r}.", "Use 'overlap' or 'short'.")
    batches: List[Batch] = []
    start = 0
    while start < num_frames:
        stop = min(start + batch_size, num_frames)
        compute_start = start
        if stop - start < batch_size and tail == "overlap":
            compute_start = max(0, stop - batch_size)
        batches.append(Batch(len(batches), compute_start, stop, start))
        start = stop
    return batches
