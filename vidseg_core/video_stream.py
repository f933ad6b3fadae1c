"""A video file read with PyAV batch by batch, inside an optional trim window; never decoded whole.

:class:`VideoStream` has the interface of :class:`~vidseg_core.video_io.FrameSource` (``len``,
``frame_size``, ``read(start, stop)`` -> float32 ``[n,H,W,3]`` in 0..1), so the pipeline consumes it batch
by batch.  The source is a path or a binary file object (e.g. ``io.BytesIO``), as a host application hands
it over; it is only read.

* Frame selection follows the timestamps: with a trim window ``(start_time, duration)`` in seconds
  (``duration`` 0 = to the end), the frames whose presentation timestamp ``pts`` satisfies
  ``start_pts <= pts < end_pts`` are the video (``start_pts = int(start_time / time_base)``); untrimmed,
  every frame with ``pts >= 0``.  Opening the stream lists the selected timestamps by demuxing (no decoding).
* Frames are decoded to 8-bit RGB; a rotation stored in the file is applied.
* Only the frames of the most recent :meth:`read` are kept (as uint8), so reading the same window again
  (e.g. for an overlay) decodes nothing; a window that starts before them seeks back to the nearest
  keyframe.  :attr:`max_held` records the most frames ever held, for tests.
"""
from __future__ import annotations

import io
import os
from fractions import Fraction
from typing import Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch

from .errors import DependencyError, InputError

Source = Union[str, "io.IOBase"]
#: frame rate assumed when the file states none
DEFAULT_FPS = Fraction(24)


def import_av():
    """PyAV, or a :class:`DependencyError` with the fix."""
    try:
        import av
    except ImportError as exc:
        raise DependencyError(f"PyAV is needed to read and write videos but cannot be imported ({exc}).",
                              "pip install av (ComfyUI installs it; in another environment: pip install -r "
                              "requirements.txt).") from exc
    return av


class VideoStream:
    """Frames of one video file; see the module docstring.  Use as a context manager or call :meth:`close`."""

    def __init__(self, source: Source, start_time: float = 0.0, duration: float = 0.0, name: str = "video"):
        self.av = import_av()
        self.source = source
        self.name = os.path.basename(os.fspath(source)) if isinstance(source, str) or hasattr(source, "__fspath__") \
            else name
        if start_time < 0 or duration < 0:
            raise InputError(f"The trim window (start {start_time} s, duration {duration} s) is negative.",
                             "Give a start time >= 0 and a duration >= 0 (0 = to the end).")
        self.trim = (float(start_time), float(duration))
        self._container = None
        self._frames: Optional[Iterator] = None
        self._next = 0  # index of the next frame the decoder yields
        self._held: Dict[int, np.ndarray] = {}
        self.max_held = 0
        self._open()
        self._pts = self._list_timestamps()
        if not self._pts:
            raise InputError(f"No frames of {self.name} lie in the trim window (start {start_time} s, duration "
                             f"{duration or 'to the end'} s).", "Trim inside the video, or connect the whole video.")
        first = self._decode_window(0, 1)[0]
        self.frame_size: Tuple[int, int] = (int(first.shape[0]), int(first.shape[1]))
        self.source_size = self.frame_size

    # ------------------------------------------------------------ opening
    def _open(self) -> None:
        av = self.av
        if self._container is not None:
            self._container.close()
        if hasattr(self.source, "seek"):
            self.source.seek(0)
        try:
            self._container = av.open(self.source, mode="r")
        except Exception as exc:  # noqa: BLE001 - PyAV raises many kinds
            raise InputError(f"Cannot open {self.name} as a video ({type(exc).__name__}: {exc}).",
                             "Check the file, or re-encode it to mp4 (H.264).") from exc
        if not self._container.streams.video:
            self._container.close()
            raise InputError(f"{self.name} has no video stream.", "Connect a video file.")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        self._frames = None
        self._next = 0
        self._skip_to = None

    def _window_pts(self) -> Tuple[int, Optional[int]]:
        tb = self._stream.time_base
        start, duration = self.trim
        return int(start / tb), (int((start + duration) / tb) if duration else None)

    def _list_timestamps(self) -> List[int]:
        """Sorted timestamps of the selected frames, from the packets (nothing is decoded)."""
        start_pts, end_pts = self._window_pts()
        found = []
        for packet in self._container.demux(self._stream):
            if packet.size == 0 or getattr(packet, "is_discard", False):
                continue
            if packet.pts is None:
                raise InputError(f"{self.name} has frames without timestamps, so a frame range cannot be found.",
                                 "Re-encode the video to mp4 (e.g. through core Save Video, or ffmpeg -i IN OUT.mp4).")
            if packet.pts >= start_pts and (end_pts is None or packet.pts < end_pts):
                found.append(int(packet.pts))
        self._open()
        return sorted(set(found))

    # ------------------------------------------------------------ info
    def __len__(self) -> int:
        return len(self._pts)

    @property
    def num_frames(self) -> int:
        return len(self._pts)

    @property
    def fps(self) -> Fraction:
        rate = self._stream.average_rate or self._stream.guessed_rate
        return Fraction(rate) if rate else DEFAULT_FPS

    @property
    def names(self) -> List[str]:
        return [f"{i:05d}" for i in range(len(self))]

    # ------------------------------------------------------------ reading
    def read(self, start: int, stop: int) -> torch.Tensor:
        """Frames ``[start, stop)`` as float32 ``[n,H,W,3]`` in 0..1."""
        return torch.from_numpy(self.read_uint8(start, stop)).float().div_(255.0)

    def read_uint8(self, start: int, stop: int) -> np.ndarray:
        """Frames ``[start, stop)`` as uint8 ``[n,H,W,3]``."""
        if not 0 <= start < stop <= len(self):
            raise InputError(f"Frame window {start}:{stop} is outside 0:{len(self)}.", "Read inside the video.")
        return np.stack(self._decode_window(start, stop))

    def batches(self, size: int) -> Iterator[Tuple[int, torch.Tensor]]:
        """``(start, frames)`` of consecutive windows of ``size`` frames, in order."""
        for a in range(0, len(self), size):
            yield a, self.read(a, min(len(self), a + size))

    def _decode_window(self, start: int, stop: int) -> List[np.ndarray]:
        self._held = {i: f for i, f in self._held.items() if start <= i < stop}  # only this window is kept
        missing = [i for i in range(start, stop) if i not in self._held]
        if missing:
            first = missing[0]
            if self._frames is None or first < self._next:
                self._seek(first)
            while self._next < stop:
                index, rgb = self._decode_next()
                if index >= start:
                    self._held[index] = rgb
                    self.max_held = max(self.max_held, len(self._held))
        return [self._held[i] for i in range(start, stop)]

    def _seek(self, index: int) -> None:
        """Position the decoder so that the next frame it yields is frame ``index``."""
        target = self._pts[index]
        if index == 0:
            self._open()
        else:
            self._container.seek(target, stream=self._stream, backward=True, any_frame=False)
        self._frames = self._container.decode(self._stream)
        self._next = index
        self._skip_to = target

    def _decode_next(self) -> Tuple[int, np.ndarray]:
        """The next selected frame as ``(index, uint8 [H,W,3])``."""
        want = self._pts[self._next]
        for frame in self._frames:
            pts = frame.pts
            if pts is None or pts < want:
                continue  # before the window, or decoded from the keyframe before a seek target
            if pts > want:
                if self._skip_to is not None and self._next > 0:  # the seek landed after the frame: decode anew
                    self._open()
                    self._frames, self._skip_to = self._container.decode(self._stream), None
                    return self._decode_next()
                raise InputError(f"Frame {self._next} of {self.name} (timestamp {want}) could not be decoded.",
                                 "The file may be damaged; re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4).")
            self._skip_to = None
            index = self._next
            self._next += 1
            rgb = self._rgb(frame)
            size = getattr(self, "frame_size", None)
            if size is not None and rgb.shape[:2] != size:
                raise InputError(f"Frame {index} of {self.name} is {rgb.shape[1]}x{rgb.shape[0]} but the video "
                                 f"starts at {size[1]}x{size[0]}: the size changes inside the video.",
                                 "Re-encode it at one size (e.g. ffmpeg -i IN -vf scale=W:H OUT.mp4).")
            return index, rgb
        raise InputError(f"{self.name} ended at frame {self._next} of {len(self)} (timestamp {want} not decoded).",
                         "The file may be truncated; re-encode it (e.g. ffmpeg -i IN -c:v libx264 OUT.mp4).")

    @staticmethod
    def _rgb(frame) -> np.ndarray:
        rgb = frame.to_ndarray(format="rgb24")
        rotation = getattr(frame, "rotation", 0) or 0
        if rotation:
            rgb = np.ascontiguousarray(np.rot90(rgb, k=int(round(rotation // 90)), axes=(0, 1)))
        return rgb

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None
        self._frames = None
        self._held = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
