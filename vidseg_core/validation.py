"""Settings checked up front: before a model is loaded, before an output is touched.

A bad value (``batch_size=0``, an unknown mode, a mask with no label) must stop a run at once with a
message naming the setting and the fix, never become a default silently nor fail after minutes of
work.  These are the generic checks (a whole number in a range, a finite number, the frame size); each
settings object checks its own fields with them (``SegmentSettings.check()``, ``ModulationSettings.check()``,
``ShotSettings.check()``), called by :class:`~vidseg_core.pipeline.VideoSegmenter` and by the commands
before they load the model.
"""
from __future__ import annotations

import math
import numbers
from typing import Optional, Tuple

from .errors import InputError

#: frames are rounded down to multiples of this (every backbone's ``config.size_multiple``)
SIZE_MULTIPLE = 64


def check_int(name: str, value, low: int, high: Optional[int] = None, fix: str = "") -> int:
    """``value`` as an int in ``low..high``; bools, floats and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{name} must be a whole number, got {value!r} ({type(value).__name__}).",
                         fix or f"Give an integer >= {low}.")
    v = int(value)
    if v < low or (high is not None and v > high):
        span = f"{low}..{high}" if high is not None else f">= {low}"
        raise InputError(f"{name} = {v} is outside {span}.", fix or f"Give a value in {span}.")
    return v


def check_batch_size(value) -> Optional[int]:
    """``None`` (the backbone's, 14) or a positive number of frames per batch."""
    if value is None:
        return None
    return check_int("batch_size", value, 1, None, "Use the paper's B = 14 (None / leave it out for the default).")


def check_seed(value) -> Optional[int]:
    if value is None:
        return None
    return check_int("seed", value, 0, 2**63 - 1, "Use a seed >= 0 (the authors use 1).")


def check_finite(name: str, value, fix: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}.", fix) from None
    if not math.isfinite(v):
        raise InputError(f"{name} must be finite, got {value!r}.", fix)
    return v


def check_frame_size(frame_size: Tuple[int, int], source_size: Tuple[int, int], max_side: Optional[int],
                     multiple: int = SIZE_MULTIPLE) -> None:
    """Frames (after ``--max-side``) must be at least ``multiple`` px on both sides; the fix names the cause."""
    h, w = frame_size
    if min(h, w) >= multiple:
        return
    sh, sw = source_size
    if max_side and min(sh, sw) >= multiple:
        need = math.ceil(multiple * max(sh, sw) / min(sh, sw))
        raise InputError(f"--max-side {max_side} makes the {sw}x{sh} frames {w}x{h}: both sides must be at least "
                         f"{multiple} px.", f"Use --max-side {need} or more, or leave it out.")
    raise InputError(f"Frames of {sw}x{sh} are too small: both sides must be at least {multiple} px.",
                     f"Upscale the video to at least {multiple}x{multiple}.")
