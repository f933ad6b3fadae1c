"""Naming as a second score of a dataset run: predicted names against the ground truth's class names.

On VSPW the reference (the first annotated frame's ground truth, remapped to class ids 0..123) gives each
label its class id, so a label's true class name is known: ``vspw.txt`` line ``id``.  A label counts as
named right when its best word (:mod:`.namer`, threshold aside) is that class name; ``name_acc`` is the
share of labels named right (each label of each video counts once).  It measures the namer alone, on
regions the protocol's reference already delimits, next to the segmentation's mIoU.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

from .vocabulary import load_vocabulary

#: layouts whose label values are class ids with known names
CLASS_LISTS = {"vspw": "vspw"}


def class_names(layout: str) -> Optional[List[str]]:
    key = CLASS_LISTS.get(layout)
    return None if key is None else [n.lower() for n in load_vocabulary(key).names]


def name_hits(record: dict, names: List[str]) -> Tuple[int, int]:
    """(labels whose best word is their class name, labels with a class) of one video's record."""
    naming = record.get("naming") or {}
    right = total = 0
    for lab in naming.get("labels", []):
        v = int(lab["value"])
        if 0 <= v < len(names):
            total += 1
            right += int(str(lab["word"]).lower() == names[v])
    return right, total
