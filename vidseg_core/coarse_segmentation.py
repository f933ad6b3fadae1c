"""The result of the coarse stage (paper §4.1-4.2): per-frame label maps at the feature grid.

``labels`` [N, h, w] int64 on the CPU holds label *values* (reference mask
values, e.g. raw GT ids, or renumbered cluster ids without a reference);
``table`` lists every value that can occur with its name and palette colour;
``unassigned_clusters`` are the KMeans clusters that won no label;
``meta`` records how it was made (K, seed, batch size, refiner, ...).
Masked modulation consumes ``masks(value)`` / ``one_hot()``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List

import torch

from .errors import InputError
from .labels import LabelTable


@dataclass
class CoarseSegmentation:
    labels: torch.Tensor
    table: LabelTable
    unassigned_clusters: List[int] = field(default_factory=list)
    meta: Dict[str, Any] = field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return int(self.labels.shape[0])

    @property
    def grid(self):
        return int(self.labels.shape[1]), int(self.labels.shape[2])

    def masks(self, value: int) -> torch.Tensor:
        """Binary masks [N, h, w] (bool) of one label value (empty where absent)."""
        self.table.entry(value)  # raises for unknown values
        return self.labels == int(value)

    def one_hot(self) -> torch.Tensor:
        """[N, L, h, w] bool masks in table order."""
        vals = torch.tensor(self.table.values, dtype=self.labels.dtype)
        return self.labels[:, None] == vals[None, :, None, None]

    def colorize(self) -> torch.Tensor:
        """uint8 RGB [N, h, w, 3] with the table's palette."""
        return self.table.colorize(self.labels)

    def slice(self, start: int, stop: int) -> "CoarseSegmentation":
        if not (0 <= start < stop <= self.num_frames):
            raise InputError(f"Frame range [{start}, {stop}) is outside 0..{self.num_frames}.", "Use a valid range.")
        return CoarseSegmentation(self.labels[start:stop], self.table, list(self.unassigned_clusters), dict(self.meta))
