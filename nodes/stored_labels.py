"""Label maps whose frames live in a :class:`~vidseg_core.label_store.LabelStore` (compact, spilled to a file
for long videos).

:class:`StoredLabels` is a :class:`~.sockets.Labels` (every node takes it): ``labels`` is the store's whole
tensor (uint8 for up to 255 labels; for a spilled store a copy-on-write mapping of its file, so only the
frames a node touches come into memory).  Nodes that can work frame range by frame range use
:func:`label_chunks`, which reads a spilled store from its file (nothing stays in memory).  A copy made
with ``dataclasses.replace`` (new label maps) is a plain Labels again: ``store`` is not an init field.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..vidseg_core.label_store import LabelStore
from .sockets import Labels


@dataclass(repr=False, eq=False)
class StoredLabels(Labels):
    store: Optional[LabelStore] = field(default=None, init=False, compare=False)

    @classmethod
    def from_store(cls, store: LabelStore, table, frame_size, meta=None) -> "StoredLabels":
        out = cls(store.tensor(), table, tuple(frame_size), False, dict(meta or {}))
        out.store = store
        return out


#: frames per chunk of :func:`label_chunks` (32 frames of 854x480 uint8: 13 MB)
CHUNK_FRAMES = 32


def label_chunks(labels: Labels, size: Optional[int] = None) -> Iterator[Tuple[int, torch.Tensor]]:
    """``(start, maps)`` of full-resolution label maps, ``size`` (default :data:`CHUNK_FRAMES`) frames at a time."""
    size = int(size or CHUNK_FRAMES)
    store = getattr(labels, "store", None)
    if isinstance(store, LabelStore) and tuple(store.frame_size) == tuple(labels.frame_size):
        yield from store.chunks(size)
        return
    lab, (h, w) = labels.labels, labels.frame_size
    for a in range(0, lab.shape[0], size):
        part = lab[a:a + size]
        if tuple(part.shape[1:]) != (h, w):  # coarse maps: resized as Labels.full_resolution does, per chunk
            part = F.interpolate(part[:, None].float(), size=(h, w), mode="nearest-exact")[:, 0].round().long()
        yield a, part


def label_range(labels: Labels) -> Tuple[int, int]:
    """(min, max) label value (a uint8 store holds 0..255 by its type; a wider one is read chunk by chunk)."""
    store = getattr(labels, "store", None)
    if isinstance(store, LabelStore):
        return (0, 255) if store.dtype == np.uint8 else store.value_range()
    lab = labels.labels
    return (int(lab.min()), int(lab.max())) if lab.numel() else (0, 0)
