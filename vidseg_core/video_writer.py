"""Writing an H.264 mp4 batch by batch with PyAV (browsers and core video nodes read it).

:class:`H264Writer` takes frames as uint8 ``[n,H,W,3]`` (or float in 0..1) and encodes them at once, so
nothing of the whole video is kept.  H.264 in 4:2:0 needs even sides: an odd width or height is padded by
one pixel, repeating the last column / row (the frame's content is unchanged).  A writer that is closed
after an error (or never given a frame) removes its partial file.
"""
from __future__ import annotations

import os
from fractions import Fraction
from typing import Optional

import numpy as np
import torch

from .errors import InputError
from .video_stream import DEFAULT_FPS, import_av


def to_uint8(frames) -> np.ndarray:
    """uint8 ``[n,H,W,3]`` from float (0..1) or uint8 frames (tensor or array); a single ``[H,W]`` channel
    (a mask) becomes grey RGB."""
    if isinstance(frames, torch.Tensor):
        x = frames.detach().cpu()
        x = x if x.dtype == torch.uint8 else (x.float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)
        arr = x.numpy()
    else:
        arr = np.asarray(frames)
        if arr.dtype != np.uint8:
            arr = (np.clip(arr.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    if arr.ndim == 3:  # [n,H,W] masks
        arr = np.repeat(arr[..., None], 3, axis=-1)
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise InputError(f"Frames to encode must be [n,H,W,3] or [n,H,W]; got {arr.shape}.", "Pass RGB frames.")
    return arr


class H264Writer:
    """``write(frames)`` per batch, ``close()`` at the end (returns the path).  ``crf``: x264 quality
    (lower = better, 18 is visually lossless)."""

    def __init__(self, path, fps=DEFAULT_FPS, crf: int = 18, preset: str = "fast"):
        self.av = import_av()
        self.path = str(path)
        self.fps = Fraction(fps).limit_denominator(1001000) if fps else DEFAULT_FPS
        if self.fps <= 0:
            raise InputError(f"Frame rate {fps} must be positive.", "Use e.g. 24 fps.")
        self.crf, self.preset = int(crf), preset
        self.frames = 0
        self._container = None
        self._stream = None
        self._size = None

    def _open(self, h: int, w: int) -> None:
        av = self.av
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._container = av.open(self.path, mode="w", format="mp4", options={"movflags": "faststart"})
        stream = self._container.add_stream("libx264" if "libx264" in av.codecs_available else "h264", rate=self.fps)
        stream.width, stream.height, stream.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
        stream.options = {"crf": str(self.crf), "preset": self.preset}
        self._stream, self._size = stream, (h, w)

    def write(self, frames) -> None:
        arr = to_uint8(frames)
        if self._container is None:
            self._open(arr.shape[1], arr.shape[2])
        if tuple(arr.shape[1:3]) != self._size:
            raise InputError(f"Frame size {arr.shape[2]}x{arr.shape[1]} differs from the video's "
                             f"{self._size[1]}x{self._size[0]}.", "Write frames of one size.")
        h, w = self._size
        if h % 2 or w % 2:
            arr = np.pad(arr, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        for rgb in arr:
            frame = self.av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.frames += 1

    def close(self) -> Optional[str]:
        """Flush and close; the path of the finished file (None when no frame was written)."""
        if self._container is None:
            return None
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._container = None
        return self.path

    def abort(self) -> None:
        """Close without finishing and remove the partial file."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the file is removed anyway
                pass
            self._container = None
        if os.path.exists(self.path):
            os.remove(self.path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            self.close()
        else:
            self.abort()
