"""The order of frames in a folder: one rule for every command that lists frames.

Frames are sorted by *natural* (numeric-aware) order of their names: the runs of digits in a name are
compared as numbers, the rest as text (case-insensitive).  ``1.jpg, 2.jpg, ..., 10.jpg`` (ffmpeg's
``%d`` naming) comes out in time order, and zero-padded names (``00000.jpg``) keep their usual order.
Ties (``1.jpg`` / ``01.jpg``) are broken by the plain name, so the order is always the same.

Every output of a frame is named after the frame's stem (its name without the extension), so two frames
with one stem (``00002.jpg`` and ``00002.png``) are refused: one would overwrite the other's outputs.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple

from .errors import InputError

_DIGITS = re.compile(r"(\d+)")
#: at most this many clashing names are listed in a message
_SHOWN = 5


def natural_key(name: str) -> Tuple:
    """Sort key of a name: digit runs as numbers, text case-insensitive, then the plain name."""
    parts = _DIGITS.split(name)
    return tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)), name


def sort_frames(paths: Iterable) -> List[Path]:
    """``paths`` in frame order (natural order of the stems, then of the whole names)."""
    return sorted((Path(p) for p in paths), key=lambda p: (natural_key(p.stem), natural_key(p.name)))


def check_unique_stems(files: Sequence[Path], folder) -> None:
    """Refuse two frames with one stem (their outputs would share one file), naming them."""
    by_stem: dict = {}
    for p in files:
        by_stem.setdefault(p.stem, []).append(p.name)
    clashes = [sorted(names) for names in by_stem.values() if len(names) > 1]
    if clashes:
        shown = "; ".join(" and ".join(c) for c in clashes[:_SHOWN])
        more = f" (and {len(clashes) - _SHOWN} more)" if len(clashes) > _SHOWN else ""
        raise InputError(f"The folder {folder} holds frames with the same name but another extension: {shown}{more}. "
                         "Each frame's outputs are named after it, so one would overwrite the other.",
                         "Keep one file per frame (remove or rename the others).")


def list_frame_files(folder, extensions: Sequence[str]) -> List[Path]:
    """The files of ``folder`` whose extension is one of ``extensions``, in frame order, stems checked unique."""
    folder = Path(folder)
    files = sort_frames(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in extensions)
    check_unique_stems(files, folder)
    return files


def frame_number(name: str) -> Optional[int]:
    """The number in a frame's name: its last run of digits (``frame_0012.png`` -> 12), or None."""
    runs = _DIGITS.findall(Path(name).stem)
    return int(runs[-1]) if runs else None
