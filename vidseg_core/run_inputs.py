"""What a run reads, opened and checked before any work: the frames, the reference mask, the model and the namer.

Plain functions of plain values, used by the ``segment`` command and by the dataset runner alike (the
commands only translate their options into these arguments).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import List, Optional, Tuple

from .errors import InputError

#: environment variables naming model folders (a ComfyUI ``models`` dir or any folder)
MODEL_DIR_VARIABLES = ("VIDSEG_MODELS_DIR", "COMFYUI_MODELS_DIR")


def parse_range(text: Optional[str]) -> Tuple[int, Optional[int]]:
    """``"START:STOP"`` (either part may be left out) as ``(start, stop or None)``; None / "" = all frames."""
    if not text:
        return 0, None
    try:
        a, _, b = text.partition(":")
        return int(a or 0), (int(b) if b else None)
    except ValueError:
        raise InputError(f"Invalid frame range {text!r}.", "Write START:STOP, e.g. 0:50 or 10:.") from None


def open_frames(path, frames: Optional[str] = None, stride: int = 1, max_side: Optional[int] = None):
    """The frames of ``path`` (a video file or a folder of frames) as a
    :class:`~vidseg_core.video_io.FrameSource`, with the range, stride and size cap checked (the frames must stay
    >= 64 px)."""
    from .validation import check_frame_size, check_int
    from .video_io import FrameSource

    if max_side is not None:
        check_int("--max-side", max_side, 1, None, "Give the longer side in pixels, e.g. --max-side 512.")
    source = FrameSource(path, frame_range=parse_range(frames), stride=stride, max_side=max_side)
    check_frame_size(source.frame_size, source.source_size, max_side)
    return source


def load_reference(path, frame_size, warn=True):
    """A reference label mask as an int array; a mask of another size is resized (nearest) with a warning."""
    from .metrics.io import read_label_png

    ref = read_label_png(path)
    h, w = frame_size
    if ref.shape != (h, w):
        from .labels import resize_nearest

        if abs(ref.shape[1] / ref.shape[0] - w / h) > 0.02 * (w / h):
            raise InputError(f"The reference mask is {ref.shape[1]}x{ref.shape[0]} but the frames are {w}x{h} "
                             "(another aspect ratio: it does not belong to this video).",
                             "Give the mask of a frame of this video, at the frames' size.")
        if warn:
            warnings.warn(f"reference mask {ref.shape[1]}x{ref.shape[0]} resized (nearest) to the frames' {w}x{h}")
        ref = resize_nearest(ref, (h, w))
    return ref


def reference_at_working_size(ref, frame_size):
    """The reference mask at the working size (``--max-side``) and the labels that vanish in that resize.

    A region smaller than one working pixel is lost for the whole video: said at once (warning), listed by
    the caller in ``summary.json`` (``lost_at_max_side``, also in ``lost_labels``)."""
    h, w = (int(v) for v in frame_size)
    if tuple(ref.shape) == (h, w):
        return ref, []
    from .labels import labels_lost_by_resize, resize_nearest

    small = resize_nearest(ref, (h, w))
    lost = labels_lost_by_resize(ref, small)
    if lost:
        warnings.warn(f"reference label(s) {', '.join(map(str, lost))} vanish when the mask is scaled to the "
                      f"working size {w}x{h} (--max-side): each is smaller than one pixel there, so it is lost for "
                      "the whole video; raise --max-side (or omit it), or enlarge those regions in the mask")
    return small, lost


def model_search_dirs() -> List[Path]:
    """The model folders named by :data:`MODEL_DIR_VARIABLES` (each with its checkpoints / diffusers / vidseg)."""
    dirs: List[Path] = []
    for var in MODEL_DIR_VARIABLES:
        value = os.environ.get(var)
        if not value:
            continue
        base = Path(value).expanduser()
        dirs.append(base)
        dirs.extend(base / sub for sub in ("checkpoints", "diffusers", "vidseg"))
    return dirs


def load_model(model: str, device: str = "auto", precision: str = "auto", prediction_type: Optional[str] = None,
               compile: bool = False):
    """The backbone ``model`` (a path, a name in :func:`model_search_dirs`, or a tiny test model), compiled
    when ``compile``."""
    from .backbones import load_backbone

    backbone = load_backbone(model, device=device, precision=precision, prediction_type=prediction_type,
                             search_dirs=model_search_dirs())
    if compile:
        from .compile import compile_backbone

        compile_backbone(backbone)
    return backbone


def load_namer(naming, backbone, namer: Optional[str] = None, device: str = "auto", precision: str = "auto"):
    """``naming`` (:class:`~vidseg_core.naming.segmenter.NamingSettings`, or None) with its namer loaded from
    ``namer`` when given; refused when ``backbone`` cannot name on its own and no namer is given."""
    if naming is None:
        return None
    from .naming.segmenter import resolve_namer

    if namer:
        from .backbones import load_backbone

        naming.namer = load_backbone(namer, device=device, precision=precision, search_dirs=model_search_dirs())
    resolve_namer(backbone, naming.namer)
    return naming
