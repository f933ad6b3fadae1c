"""How much memory whole-video float outputs take, and a refusal before allocating what would not fit.

A float32 MASK video costs ``4·T·H·W`` bytes, an IMAGE video three times that; one MASK per label
multiplies it by the number of labels.  :func:`float_output_bytes` prices each output,
:func:`available_bytes` reads the memory the system can still give, and :func:`check_fits` raises an
:class:`~vidseg_core.errors.OutOfMemoryError` naming the sizes and the fix when the total is above
``fraction`` of it (default 0.75: the host process and its other outputs need the rest).
"""
from __future__ import annotations

import os
from typing import Dict, Optional

from .errors import OutOfMemoryError

#: share of the available memory the float outputs may take
DEFAULT_FRACTION = 0.75


def float_output_bytes(num_frames: int, height: int, width: int, num_labels: int,
                       outputs=("mask", "all_masks", "overlay")) -> Dict[str, int]:
    """Bytes of each float32 output: ``mask`` [T,H,W], ``all_masks`` [T·L,H,W], ``overlay`` [T,H,W,3]."""
    px = int(num_frames) * int(height) * int(width) * 4
    sizes = {"mask": px, "all_masks": px * max(1, int(num_labels)), "overlay": px * 3}
    return {k: v for k, v in sizes.items() if k in outputs}


def available_bytes() -> int:
    """Memory available to new allocations (psutil, else /proc/meminfo's MemAvailable, else physical pages)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def human(nbytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(nbytes) < 1000 or unit == "GB":
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1000.0
    return f"{nbytes:.1f} GB"


def describe(sizes: Dict[str, int]) -> str:
    """'1.2 GB (mask 80.0 MB, all_masks 1.0 GB, overlay 240.0 MB)'."""
    return f"{human(sum(sizes.values()))} (" + ", ".join(f"{k} {human(v)}" for k, v in sizes.items()) + ")"


def fits(sizes: Dict[str, int], available: Optional[int] = None, fraction: float = DEFAULT_FRACTION) -> bool:
    free = available_bytes() if available is None else int(available)
    return sum(sizes.values()) <= fraction * free


def check_fits(sizes: Dict[str, int], what: str, fix: str, available: Optional[int] = None,
               fraction: float = DEFAULT_FRACTION) -> None:
    """Raise :class:`OutOfMemoryError` unless ``sizes`` fit in ``fraction`` of the available memory."""
    free = available_bytes() if available is None else int(available)
    if sum(sizes.values()) > fraction * free:
        raise OutOfMemoryError(f"{what} would take {describe(sizes)}, more than {fraction:.0%} of the "
                               f"{human(free)} of memory available.", fix)
