"""Stand-ins for ComfyUI's core VIDEO type and ExecutionBlocker (tests only, no ComfyUI).

Written from the behaviour of ComfyUI's ``VideoFromFile`` (``comfy_api.latest._input_impl``), not its code:

* :class:`VideoFromFile` (as in 0.33): a path or BytesIO; ``get_stream_source()`` returns it raw (untrimmed;
  a BytesIO rewound); ``as_trimmed(start, duration)`` returns a new video whose
  ``get_active_trim_window()`` is ``(start, duration)``; ``get_components()`` decodes every frame of the
  window (``pts >= int(start / time_base)`` and, with a duration, ``< int((start + duration) / time_base)``)
  into one float IMAGE; ``get_dimensions()`` -> (width, height); ``get_frame_rate()``; ``get_frame_count()``;
* :class:`VideoFromFileV0364`: the older class, without a trim window (no ``get_active_trim_window``);
* :class:`ExecutionBlocker`: an output value that blocks the nodes connected to it with ``message``.
"""
from __future__ import annotations

import io
import shutil
import sys
import types
from fractions import Fraction

import numpy as np
import torch


class VideoFromFileV0364:
    def __init__(self, file):
        self._file = file

    def get_stream_source(self):
        if isinstance(self._file, io.BytesIO):
            self._file.seek(0)
        return self._file

    def _open(self):
        import av

        return av.open(self.get_stream_source(), mode="r")

    def get_dimensions(self):
        with self._open() as c:
            s = c.streams.video[0]
            return s.width, s.height

    def _window(self, stream):
        return 0, None

    def get_components(self):
        """Every frame of the (trimmed) video as float ``[T,H,W,3]`` (decoded whole: tests only)."""
        out = []
        with self._open() as c:
            s = c.streams.video[0]
            lo, hi = self._window(s)
            for frame in c.decode(s):
                if frame.pts < lo or (hi is not None and frame.pts >= hi):
                    continue
                out.append(torch.from_numpy(frame.to_ndarray(format="rgb24")).float() / 255.0)
            rate = Fraction(s.average_rate) if s.average_rate else Fraction(1)
        return types.SimpleNamespace(images=torch.stack(out), audio=None, frame_rate=rate)

    def save_to(self, path, format="auto", codec="auto", metadata=None):
        src = self.get_stream_source()
        if isinstance(src, io.BytesIO):
            with open(path, "wb") as f:
                f.write(src.getvalue())
        else:
            shutil.copyfile(src, path)


class VideoFromFile(VideoFromFileV0364):
    def __init__(self, file, *, start_time: float = 0, duration: float = 0):
        super().__init__(file)
        self._start, self._duration = start_time, duration

    def get_active_trim_window(self):
        return float(max(0.0, self._start)), float(self._duration)

    def as_trimmed(self, start_time=0, duration=0, strict_duration=True):
        return VideoFromFile(self.get_stream_source(), start_time=start_time + self._start, duration=duration)

    def _window(self, stream):
        start, duration = self.get_active_trim_window()
        return int(start / stream.time_base), (int((start + duration) / stream.time_base) if duration else None)

    def get_frame_rate(self):
        with self._open() as c:
            return Fraction(c.streams.video[0].average_rate)

    def get_frame_count(self):
        return int(self.get_components().images.shape[0])


class ExecutionBlocker:
    def __init__(self, message):
        self.message = message


def install() -> None:
    """Register ``comfy_api.latest.InputImpl``, ``comfy_api.input_impl`` and ``comfy_execution.graph_utils``
    (attributes are added to modules that already exist)."""
    def module(name):
        if name not in sys.modules:
            sys.modules[name] = types.ModuleType(name)
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(module(parent), child, sys.modules[name])
        return sys.modules[name]

    latest = module("comfy_api.latest")
    impl = getattr(latest, "InputImpl", None) or types.SimpleNamespace()
    impl.VideoFromFile = VideoFromFile
    latest.InputImpl = impl
    module("comfy_api.input_impl").VideoFromFile = VideoFromFile
    module("comfy_execution.graph_utils").ExecutionBlocker = ExecutionBlocker


def write_test_video(path, frames: np.ndarray, fps=12, codec: str = "libx264") -> str:
    """Encode uint8 ``[T,H,W,3]`` frames with PyAV (yuv420p, even sides) and return the path."""
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=Fraction(fps))
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for rgb in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return str(path)
