"""Label maps of a whole video kept compact: the smallest integer type, in memory or spilled to a file.

A video's label maps ``[T,H,W]`` as int64 take 8 bytes per pixel (3.3 MB per 854x480 frame); the label
values fit a byte (at most 255 clusters, palette values 0..255).  :class:`LabelStore` keeps them as
uint8 (int16 / int32 only for larger values) and, above ``spill_bytes`` in all, in a file instead of
memory, so that memory does not grow with the video's length:

* :meth:`write` stores a batch of frames (written to the file at once when spilled);
* :meth:`read` gives frames ``[start, stop)`` back by reading the file (nothing stays mapped);
* :meth:`tensor` gives the whole video as one tensor (a copy-on-write mapping of the file when spilled,
  so only the pages a consumer touches come into memory).

The spill file is deleted when the store is garbage collected (or by :meth:`delete`).
"""
from __future__ import annotations

import os
import tempfile
import uuid
import weakref
from typing import Iterator, Optional, Tuple

import numpy as np
import torch

from .errors import InputError

#: spill to a file above this many bytes of label maps (about 160 frames of 854x480)
DEFAULT_SPILL_BYTES = 64 * 2**20


def label_dtype(max_value: int) -> np.dtype:
    """The smallest signed-safe integer type holding values ``0..max_value``."""
    if max_value <= 255:
        return np.dtype(np.uint8)
    if max_value <= 32767:
        return np.dtype(np.int16)
    return np.dtype(np.int32)


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


class LabelStore:
    """``num_frames`` label maps of ``frame_size`` with values in ``0..max_value``; see the module docstring.

    ``spill_dir``: folder of the spill file (default: the system's temporary folder)."""

    def __init__(self, num_frames: int, frame_size: Tuple[int, int], max_value: int,
                 spill_bytes: Optional[int] = DEFAULT_SPILL_BYTES, spill_dir: Optional[str] = None):
        if num_frames < 1:
            raise InputError("A label store needs at least one frame.", "Give at least one frame.")
        if max_value < 0:
            raise InputError(f"Label values must be >= 0, got a maximum of {max_value}.", "Use label values >= 0.")
        self.shape = (int(num_frames),) + tuple(int(v) for v in frame_size)
        self.dtype = label_dtype(int(max_value))
        self.frame_bytes = self.shape[1] * self.shape[2] * self.dtype.itemsize
        self.nbytes = self.frame_bytes * self.shape[0]
        self.path: Optional[str] = None
        self._array: Optional[np.ndarray] = None
        self._file = None
        if spill_bytes is not None and self.nbytes > spill_bytes:
            folder = spill_dir or tempfile.gettempdir()
            os.makedirs(folder, exist_ok=True)
            self.path = os.path.join(folder, f"vidseg_labels_{uuid.uuid4().hex}.bin")
            self._file = open(self.path, "w+b")
            self._file.truncate(self.nbytes)
            self._finalizer = weakref.finalize(self, _remove, self.path)
        else:
            self._array = np.zeros(self.shape, dtype=self.dtype)

    @property
    def spilled(self) -> bool:
        return self.path is not None

    @property
    def num_frames(self) -> int:
        return self.shape[0]

    @property
    def frame_size(self) -> Tuple[int, int]:
        return self.shape[1], self.shape[2]

    def __len__(self) -> int:
        return self.shape[0]

    def write(self, start: int, labels) -> None:
        """Store label maps ``[n,H,W]`` (any integer tensor / array) as frames ``start..start+n-1``."""
        arr = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        n = arr.shape[0]
        if arr.ndim != 3 or tuple(arr.shape[1:]) != self.shape[1:] or not 0 <= start <= start + n <= self.shape[0]:
            raise InputError(f"Label maps {tuple(arr.shape)} at frame {start} do not fit the store {self.shape}.",
                             "Write [n,H,W] maps of the store's frame size inside the video.")
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) > np.iinfo(self.dtype).max):
            raise InputError(f"Label values {int(arr.min())}..{int(arr.max())} do not fit the store's "
                             f"{self.dtype.name}.", "Create the store with the largest label value.")
        arr = np.ascontiguousarray(arr, dtype=self.dtype)
        if self._array is not None:
            self._array[start:start + n] = arr
            return
        self._file.seek(start * self.frame_bytes)
        self._file.write(arr.tobytes())
        self._file.flush()

    def read(self, start: int, stop: int) -> torch.Tensor:
        """Frames ``[start, stop)`` as a ``[n,H,W]`` tensor of the store's type (a copy: nothing stays mapped)."""
        if not 0 <= start < stop <= self.shape[0]:
            raise InputError(f"Frames {start}:{stop} are outside the store's 0:{self.shape[0]}.", "Read inside it.")
        if self._array is not None:
            return torch.from_numpy(self._array[start:stop].copy())
        self._file.seek(start * self.frame_bytes)
        buf = self._file.read((stop - start) * self.frame_bytes)
        arr = np.frombuffer(bytearray(buf), dtype=self.dtype).reshape((stop - start,) + self.shape[1:])
        return torch.from_numpy(arr)

    def chunks(self, size: int) -> Iterator[Tuple[int, torch.Tensor]]:
        """``(start, frames)`` of consecutive windows of at most ``size`` frames."""
        for a in range(0, self.shape[0], max(1, int(size))):
            yield a, self.read(a, min(self.shape[0], a + max(1, int(size))))

    def tensor(self) -> torch.Tensor:
        """The whole video ``[T,H,W]`` (store type): the array itself, or a copy-on-write mapping of the file."""
        if self._array is not None:
            return torch.from_numpy(self._array)
        self._file.flush()
        return torch.from_numpy(np.memmap(self.path, dtype=self.dtype, mode="c", shape=self.shape))

    def value_range(self, chunk: int = 64) -> Tuple[int, int]:
        """(min, max) label value, read chunk by chunk."""
        lo, hi = None, None
        for _, part in self.chunks(chunk):
            a, b = int(part.min()), int(part.max())
            lo, hi = a if lo is None else min(lo, a), b if hi is None else max(hi, b)
        return lo, hi

    def delete(self) -> None:
        """Close and remove the spill file now (tensors mapped from it stay valid where the system allows)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self.path is not None:
            self._finalizer()

    def __repr__(self) -> str:
        where = f"spilled to {os.path.basename(self.path)}" if self.path else "in memory"
        return f"LabelStore({self.shape}, {self.dtype.name}, {self.nbytes / 2**20:.1f} MiB {where})"
