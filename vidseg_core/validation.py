"""Settings checked up front: before a model is loaded, before an output is touched.

A bad value (``batch_size=0``, an unknown mode, a mask with no label) must stop a run at once with a
message naming the setting and the fix, never become a default silently nor fail after minutes of
work.  :func:`validate_segment_settings` is called by :class:`~vidseg_core.pipeline.VideoSegmenter`
and by the commands before they load the model.
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


def validate_segment_settings(settings) -> None:
    """Every option of a :class:`~vidseg_core.pipeline.SegmentSettings` that can be checked without a model."""
    from .kmeans import _IMPLS
    from .labels import prepare_reference
    from .pipeline import MODES
    from .refiners import get_refiner
    from .upsample import make_upsampler

    s = settings
    check_int("num_clusters", s.num_clusters, 1, 255, "The paper uses K = 20 (labels are stored as 0..255).")
    check_batch_size(s.batch_size)
    check_seed(s.seed)
    if s.mode not in MODES:
        raise InputError(f"Unknown mode {s.mode!r}.", "Use 'quality' or 'fast'.")
    get_refiner(s.refiner)
    check_int("reference_frame", s.reference_frame, 0, None, "Use the index of the annotated frame (0 = first).")
    check_int("n_init", s.n_init, 1, None, "Use the authors' n_init = 10.")
    if s.kmeans_impl not in _IMPLS:
        raise InputError(f"Unknown KMeans implementation {s.kmeans_impl!r}.", f"Use one of {', '.join(_IMPLS)}.")
    for v in s.void_values:
        check_int("void value", v, 0, 255, "Void values are label ids 0..255 (DAVIS / VSPW use 255).")
    s.shots.check()
    if s.shots.overlap and s.batch_size is not None and s.shots.overlap >= s.batch_size:
        raise InputError(f"A seam overlap of {s.shots.overlap} frames needs batches of more than {s.shots.overlap} "
                         f"frames (batch size {s.batch_size}).", "Use an overlap below the batch size, e.g. 2.")
    if s.mode == "quality":
        s.modulation.check()
    else:
        make_upsampler("guided_filter", **s.guided)
    if s.reference is not None:  # dtype, negative ids, nothing but void: at its own size
        import numpy as np

        ref = np.asarray(s.reference.detach().cpu() if hasattr(s.reference, "detach") else s.reference)
        shape = ref.shape[:2] if ref.ndim >= 2 else ref.shape
        prepare_reference(ref, shape, None, s.void_values)


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
