"""The core VIDEO type in and out of the pack (ComfyUI imports are lazy, as in :mod:`.bridge`).

* in: :func:`open_video` reads a ``VideoInput`` (Load Video, Trim Video, Create Video ...) with PyAV on its
  ``get_stream_source()`` (a path or a BytesIO), batch by batch, inside its trim window
  (``get_active_trim_window()``; ComfyUI versions without it, such as 0.3.64, have no trimmed videos);
* out: :func:`temp_video_path` + :func:`video_output`: an mp4 written batch by batch in ComfyUI's temp
  folder (``<temp>/vidseg``, emptied by ComfyUI at start-up) returned as ``VideoFromFile``, which core
  Save Video copies without re-encoding and previews;
* :func:`blocked`: the value of an output that is switched off (ComfyUI's ``ExecutionBlocker``: a node
  connected to it stops with the message instead of receiving nothing).
"""
from __future__ import annotations

import os
import uuid
from typing import Tuple

from ...vidseg_core.errors import DependencyError, InputError
from ...vidseg_core.video_stream import VideoStream
from . import bridge

VIDEO = "VIDEO"


def is_video(value) -> bool:
    return value is not None and callable(getattr(value, "get_stream_source", None))


def trim_window(video) -> Tuple[float, float]:
    """``(start_time, duration)`` in seconds of the video's active trim (duration 0 = to the end)."""
    get = getattr(video, "get_active_trim_window", None)
    if get is None:
        return 0.0, 0.0
    start, duration = get()
    return max(0.0, float(start or 0.0)), max(0.0, float(duration or 0.0))


def open_video(video, what: str = "video") -> VideoStream:
    """A :class:`~vidseg_core.video_stream.VideoStream` over a core VIDEO (nothing decoded yet but one frame)."""
    if not is_video(video):
        raise InputError(f"The {what} input is a {type(video).__name__}, not a VIDEO.",
                         "Connect a VIDEO, e.g. from core Load Video.")
    try:
        source = video.get_stream_source()  # a video made in the graph is encoded to a file in memory here
    except Exception as exc:  # noqa: BLE001 - e.g. an older ComfyUI that cannot encode into memory
        raise InputError(f"The {what} ({type(video).__name__}) cannot be read as a file ({type(exc).__name__}: "
                         f"{exc}).", "Connect its frames as an IMAGE batch to frames instead, or save it with "
                                     "Save Video and load that file with Load Video.") from exc
    start, duration = trim_window(video)
    name = os.path.basename(source) if isinstance(source, str) else what
    return VideoStream(source, start, duration, name=name)


def frames_or_video(frames, video, node: str):
    """The frame source of a node that takes an IMAGE batch or a VIDEO (exactly one of them):
    :class:`~vidseg_core.video_io.TensorFrames` or :func:`open_video`'s stream."""
    from ...vidseg_core.video_io import TensorFrames, frames_from_tensor
    from ..convert import image_batch

    if (frames is None) == (video is None):
        raise InputError(f"{node} needs the video as frames (IMAGE batch) or as video (VIDEO); " +
                         ("neither is connected." if frames is None else "both are connected."),
                         "Connect exactly one: a VIDEO (Load Video) for long videos, or an IMAGE batch.")
    if frames is not None:  # checked as the core checks a video in memory (0..1, finite)
        return TensorFrames(frames_from_tensor(image_batch(frames)))
    return open_video(video)


def vidseg_temp_dir() -> str:
    """``<ComfyUI temp>/vidseg`` (created): VIDEO outputs and spilled label maps of this session."""
    folder = os.path.join(bridge.temp_directory(), "vidseg")
    os.makedirs(folder, exist_ok=True)
    return folder


def temp_video_path(kind: str) -> str:
    return os.path.join(vidseg_temp_dir(), f"{kind}_{uuid.uuid4().hex[:12]}.mp4")


def video_output(path: str):
    """ComfyUI's ``VideoFromFile`` over a finished file."""
    try:
        from comfy_api.latest import InputImpl

        return InputImpl.VideoFromFile(path)
    except ImportError:
        pass
    try:
        from comfy_api.input_impl import VideoFromFile
    except ImportError as exc:
        raise DependencyError("This ComfyUI has no VIDEO type (comfy_api.input_impl.VideoFromFile).",
                              "Update ComfyUI (0.3.30 or newer).") from exc
    return VideoFromFile(path)


def blocked(message: str):
    """An output value that stops the nodes connected to it with ``message`` (see the module docstring)."""
    try:
        from comfy_execution.graph_utils import ExecutionBlocker
    except ImportError:
        return None
    return ExecutionBlocker(message)
