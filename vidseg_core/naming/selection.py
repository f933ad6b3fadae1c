"""Choosing labels by value or by name ("sky, water", "3"), for the command line and the nodes.

Names are matched case-insensitively against the label table; several labels may share a name (two
clusters both named "sky"): a name selects all of them.  An unknown name is an error listing the table.
"""
from __future__ import annotations

from typing import List

import numpy as np
import torch

from ..errors import InputError
from ..labels import LabelTable


def describe(table: LabelTable) -> str:
    return ", ".join(f"{e.value} ({e.name})" for e in table) or "(no labels)"


def select_values(text: str, table: LabelTable) -> List[int]:
    """Label values named by ``text`` (comma / semicolon / newline separated values or names), in order."""
    chosen: List[int] = []
    by_name = {}
    for e in table:
        by_name.setdefault(e.name.strip().lower(), []).append(e.value)
    for raw in str(text or "").replace("\n", ",").replace(";", ",").split(","):
        item = raw.strip()
        if not item:
            continue
        key = " ".join(item.lower().split())
        if key in by_name:
            found = by_name[key]
        elif item.isdigit():
            found = [int(item)]
        else:
            raise InputError(f"No label is called {item!r}.", f"Choose from: {describe(table)}.")
        chosen += [v for v in found if v not in chosen]
    return chosen


def selection_mask(labels, values) -> np.ndarray:
    """uint8 ``[..., H, W]``: 255 where the label is one of ``values``, else 0."""
    lab = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    return (np.isin(lab, list(values)) * 255).astype(np.uint8)
