"""An overlay's legend: a small box in the top-left corner with each named label's colour and name.

Only labels with a name of their own are listed (from a reference's names or a vocabulary's words): the
placeholder names ``cluster N`` / ``label N`` say nothing the colour does not.  The box is drawn once per
frame size (OpenCV's Hershey font) and pasted into every frame; rows that do not fit end in ``+N more``.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch

from .labels import LabelEntry, LabelTable

#: box margin from the frame's corner and padding inside it, in pixels
MARGIN, PAD = 4, 4
#: background of the box (dark grey), 0..255
BACKGROUND = (32, 32, 32)


def named_entries(table: Optional[LabelTable]) -> List[LabelEntry]:
    """The table's labels whose name is not the placeholder ``cluster N`` / ``label N``."""
    if table is None:
        return []
    return [e for e in table if e.name.strip() and e.name.strip().lower() not in (f"cluster {e.value}",
                                                                                    f"label {e.value}")]


def legend_box(table: Optional[LabelTable], height: int, width: int) -> Optional[Tuple[np.ndarray, int, int]]:
    """``(box uint8 [h, w, 3], top, left)`` of the legend for frames ``height x width``; None without names."""
    import cv2

    entries = named_entries(table)
    if not entries:
        return None
    row = max(10, min(24, height // 16))  # row height in pixels
    scale = row / 30.0
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, 1
    rows_fit = max(1, (height - 2 * MARGIN - 2 * PAD) // row)
    texts = [e.name for e in entries]
    colours = [tuple(int(c) for c in e.color) for e in entries]
    if len(texts) > rows_fit:
        keep = rows_fit - 1
        texts, colours = texts[:keep] + [f"+{len(texts) - keep} more"], colours[:keep] + [None]
    text_w = max(cv2.getTextSize(t, font, scale, thick)[0][0] for t in texts)
    box_w = min(width - 2 * MARGIN, 2 * PAD + row + PAD + text_w)
    box_h = min(height - 2 * MARGIN, 2 * PAD + row * len(texts))
    if box_w < row or box_h < row:
        return None
    box = np.empty((box_h, box_w, 3), np.uint8)
    box[:] = BACKGROUND
    for i, (t, c) in enumerate(zip(texts, colours)):
        y = PAD + i * row
        if c is not None:
            cv2.rectangle(box, (PAD, y + 2), (PAD + row - 4, y + row - 3), c, thickness=-1)
        cv2.putText(box, t, (PAD + row, y + row - max(2, row // 4)), font, scale, (255, 255, 255), thick,
                    cv2.LINE_AA)
    return box, MARGIN, MARGIN


def add_legend(frames01: torch.Tensor, table: Optional[LabelTable]) -> torch.Tensor:
    """Frames ``[T, H, W, 3]`` in 0..1 with the legend pasted in (a new tensor; the frames themselves when
    no label has a name)."""
    found = legend_box(table, int(frames01.shape[1]), int(frames01.shape[2]))
    if found is None:
        return frames01
    box, top, left = found
    out = frames01.clone()
    patch = torch.from_numpy(box).to(out.device, out.dtype) / 255.0
    out[:, top:top + box.shape[0], left:left + box.shape[1]] = patch
    return out
