"""Reading videos and frame folders as batches of RGB frames, streaming.

A :class:`FrameSource` knows how many frames a video has, their size and a name
per frame, and reads any window ``[start, stop)`` as ``[n, H, W, 3]`` float32
in 0..1.  Video files are decoded sequentially with a small rolling buffer, so
memory is bounded by the batch size, not the video length; a folder of frames
is read on demand.  Nothing is ever written next to the input.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from .errors import InputError
from .frame_order import list_frame_files

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v", ".gif")


def _to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(rgb.astype(np.float32)).div_(255.0)


def _resize_rgb(rgb: np.ndarray, size: Optional[Tuple[int, int]]) -> np.ndarray:
    if size is None or rgb.shape[:2] == size:
        return rgb
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((size[1], size[0]), Image.BICUBIC))


def capped_size(height: int, width: int, max_side: Optional[int]) -> Tuple[int, int]:
    """(H, W) scaled down so the longer side is at most ``max_side`` (aspect kept)."""
    if not max_side or max(height, width) <= max_side:
        return height, width
    scale = max_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


class FrameSource:
    """Frames of a video file or a folder of images; see the module docstring.

    ``frame_range`` = (start, stop) in source frames (stop ``None`` = end) and
    ``stride`` select which source frames are used; ``max_side`` caps the
    working resolution (frames are scaled down, aspect kept).
    """

    def __init__(self, path, frame_range: Tuple[int, Optional[int]] = (0, None), stride: int = 1,
                 max_side: Optional[int] = None, buffer: int = 32):
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"Input {self.path} does not exist.", "Give a video file or a folder of frames.")
        if stride < 1:
            raise InputError(f"Stride must be at least 1, got {stride}.", "Use --stride 1 for every frame.")
        start, stop = frame_range
        if start < 0 or (stop is not None and stop <= start):
            raise InputError(f"Invalid frame range {start}:{stop}.", "Use START >= 0 and STOP > START.")
        self._buffer: "OrderedDict[int, np.ndarray]" = OrderedDict()
        self._buffer_size = max(1, buffer)
        if self.path.is_dir():
            self._kind = "folder"
            files = list_frame_files(self.path, IMAGE_EXTENSIONS)  # natural order, one file per stem
            if not files:
                raise InputError(f"The folder {self.path} holds no images ({', '.join(IMAGE_EXTENSIONS)}).",
                                 "Point to a folder of frames or to a video file.")
            self._files = files
            total = len(files)
            h, w = self._read_image(files[0]).shape[:2]
        elif self.path.suffix.lower() in VIDEO_EXTENSIONS:
            self._kind = "gif" if self.path.suffix.lower() == ".gif" else "video"
            total, h, w = self._probe_video()
        else:
            raise InputError(f"{self.path.name} is neither a folder of frames nor a video "
                             f"({', '.join(VIDEO_EXTENSIONS)}).", "Give a supported video file or a folder of frames.")
        stop = total if stop is None else min(stop, total)
        self._indices: List[int] = list(range(start, stop, stride))
        self._selected = set(self._indices)
        if not self._indices:
            raise InputError(f"No frames selected: the video has {total} frames and the range is {start}:{stop}.",
                             "Choose a frame range inside the video.")
        self.source_size = (h, w)
        self.frame_size = capped_size(h, w, max_side)
        self._cap = None
        self._cap_pos = 0

    # ------------------------------------------------------------ info
    def __len__(self) -> int:
        return len(self._indices)

    @property
    def num_frames(self) -> int:
        return len(self._indices)

    @property
    def names(self) -> List[str]:
        """A file-name stem per selected frame (the frame's own name for folders)."""
        if self._kind == "folder":
            return [self._files[i].stem for i in self._indices]
        return [f"{i:05d}" for i in self._indices]

    def fingerprint(self) -> str:
        """A digest of the input the outputs depend on: name, size and modification time of every selected
        frame file (a video file: its own), so a rerun notices a frame that was replaced or edited."""
        import hashlib

        digest = hashlib.sha256()
        files = [self._files[i] for i in self._indices] if self._kind == "folder" else [self.path]
        for f in files:
            st = f.stat()
            digest.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return digest.hexdigest()

    # ------------------------------------------------------------ reading
    def read(self, start: int, stop: int) -> torch.Tensor:
        """Selected frames ``[start, stop)`` as ``[n, H, W, 3]`` float32 in 0..1."""
        if not (0 <= start < stop <= len(self)):
            raise InputError(f"Frame window {start}:{stop} is outside 0:{len(self)}.", "Read inside the video.")
        return torch.stack([_to_tensor(self._frame(self._indices[i])) for i in range(start, stop)])

    def read_all(self) -> torch.Tensor:
        return self.read(0, len(self))

    def _check_size(self, rgb: np.ndarray, what: str) -> np.ndarray:
        if rgb.shape[:2] != self.source_size:
            raise InputError(
                f"Frame {what} is {rgb.shape[1]}x{rgb.shape[0]} but the first frame is "
                f"{self.source_size[1]}x{self.source_size[0]}: all frames must have one size.",
                "Resize the frames to a common size first.")
        return _resize_rgb(rgb, self.frame_size)

    def _frame(self, index: int) -> np.ndarray:
        if index in self._buffer:
            self._buffer.move_to_end(index)
            return self._buffer[index]
        if self._kind == "folder":
            rgb = self._check_size(self._read_image(self._files[index]), self._files[index].name)
        elif self._kind == "gif":
            rgb = self._check_size(self._read_gif_frame(index), str(index))
        else:
            rgb = self._read_video_frame(index)
        self._buffer[index] = rgb
        while len(self._buffer) > self._buffer_size:
            self._buffer.popitem(last=False)
        return rgb

    @staticmethod
    def _read_image(path: Path) -> np.ndarray:
        from PIL import Image

        try:
            with Image.open(path) as im:
                return np.asarray(im.convert("RGB"))
        except Exception as exc:
            raise InputError(f"Cannot read image {path.name}: {exc}.", "Replace or remove the broken frame.") from exc

    def _probe_video(self):
        if self._kind == "gif":
            from PIL import Image

            try:
                with Image.open(self.path) as im:
                    n = getattr(im, "n_frames", 1)
                    w, h = im.size
            except Exception as exc:
                raise InputError(f"Cannot read video {self.path.name}: {exc}.", "Check the file or convert it.") from exc
            return n, h, w
        cv2 = _cv2()
        cap = cv2.VideoCapture(str(self.path))
        ok, frame = cap.read() if cap.isOpened() else (False, None)
        if not ok:
            cap.release()
            raise InputError(f"Cannot read video {self.path.name}: no frame could be decoded.",
                             "Check the file, or convert it to mp4 (H.264) or to a folder of frames.")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        cap.release()
        if n <= 0:  # container without a count: count by decoding
            cap = cv2.VideoCapture(str(self.path))
            n = 0
            while cap.grab():
                n += 1
            cap.release()
        return n, frame.shape[0], frame.shape[1]

    def _read_gif_frame(self, index: int) -> np.ndarray:
        from PIL import Image

        with Image.open(self.path) as im:
            im.seek(index)
            return np.asarray(im.convert("RGB"))

    def _read_video_frame(self, index: int) -> np.ndarray:
        cv2 = _cv2()
        if self._cap is None or index < self._cap_pos:
            if self._cap is not None:
                self._cap.release()
            self._cap = cv2.VideoCapture(str(self.path))
            self._cap_pos = 0
        frame = None
        while self._cap_pos <= index:
            ok, frame = self._cap.read()
            if not ok:
                raise InputError(f"Video {self.path.name} ended early at frame {self._cap_pos} (expected {index + 1}).",
                                 "The file may be truncated; re-encode it or use a frame range.")
            self._cap_pos += 1
            if self._cap_pos - 1 in self._selected and self._cap_pos - 1 != index:
                self._buffer[self._cap_pos - 1] = self._check_size(frame[:, :, ::-1].copy(), str(self._cap_pos - 1))
        return self._check_size(frame[:, :, ::-1].copy(), str(index))

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TensorFrames:
    """Frames already in memory (``[T,H,W,3]`` float in 0..1) with the interface of :class:`FrameSource`."""

    #: frame rate of outputs written from an IMAGE batch (it carries none)
    fps = 24

    def __init__(self, frames: torch.Tensor):
        self.frames = frames
        self.frame_size = (int(frames.shape[1]), int(frames.shape[2]))
        self.source_size = self.frame_size

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def read(self, start: int, stop: int) -> torch.Tensor:
        return self.frames[start:stop]

    def close(self) -> None:
        pass


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InputError(f"OpenCV is needed to read video files but cannot be imported ({exc}).",
                         "pip install opencv-python-headless, or give a folder of frames.") from exc
    return cv2


def _check_opaque(alpha: torch.Tensor) -> None:
    """Refuse an alpha channel that is not fully opaque (255 for uint8, 1.0 for floats)."""
    full = 255 if alpha.dtype == torch.uint8 else 1.0
    if not alpha.is_floating_point() and alpha.dtype != torch.uint8:
        return  # the dtype is refused with its own message below
    if alpha.numel() and bool((alpha.float() < full - 1e-3).any()):
        raise InputError(f"The frames are RGBA with transparent pixels (alpha down to {float(alpha.float().min()):g}); "
                         "VidSeg segments RGB colours only, and dropping the alpha would change what is seen.",
                         "Composite the frames over a background, or pass frames[..., :3] to drop the alpha "
                         "knowingly.")


def frames_from_tensor(frames) -> torch.Tensor:
    """Check a video given in memory and return it as float32 ``[T,H,W,3]`` in 0..1.

    Accepted: a torch tensor or a numpy array ``[T,H,W,3]`` (ComfyUI's IMAGE layout) holding floats in
    0..1, or ``uint8`` values 0..255 (divided by 255).  RGBA frames ``[T,H,W,4]`` are accepted only when the
    alpha channel is fully opaque (it is then dropped: nothing is lost); transparent pixels are refused, since
    their colour alone is not what the user sees (composite them over a background, or drop the alpha).
    Anything else is refused with the fix: other shapes (a single ``[H,W,3]`` image, channels first),
    floats outside 0..1 (0..255 floats: divide by 255), other integer or bool dtypes, NaN / inf.
    """
    if isinstance(frames, np.ndarray):
        if frames.dtype == object or not (np.issubdtype(frames.dtype, np.number) or frames.dtype == bool):
            raise InputError(f"Frames as a numpy array of dtype {frames.dtype} cannot be used.",
                             "Give float values in 0..1 or uint8 values 0..255.")
        frames = torch.from_numpy(np.ascontiguousarray(frames))
    if not isinstance(frames, torch.Tensor):
        raise InputError(f"Frames must be a torch tensor or numpy array [T,H,W,3]; got {type(frames).__name__}.",
                         "Pass the video as an IMAGE batch (one image per frame), e.g. torch.stack(frames).")
    shape = tuple(frames.shape)
    if frames.ndim == 3 and shape[-1] in (3, 4):
        raise InputError(f"Frames must be a batch [T,H,W,3]; got one image {shape}.",
                         "Add the frame axis: frames[None] (or stack several frames).")
    if frames.ndim != 4 or shape[-1] not in (3, 4):
        hint = " (channels first: use frames.permute(0, 2, 3, 1))" if frames.ndim == 4 and shape[1] in (3, 4) else ""
        raise InputError(f"Frames must be an image batch [T,H,W,3]; got {shape}{hint}.",
                         "Pass the video as [frames, height, width, RGB].")
    if shape[0] < 1:
        raise InputError("The video has no frames.", "Give at least one frame.")
    if shape[-1] == 4:
        _check_opaque(frames[..., 3])
    x = frames[..., :3]
    if x.dtype == torch.uint8:
        return x.float().div_(255.0)
    if not x.is_floating_point():
        raise InputError(f"Frames of dtype {str(x.dtype).replace('torch.', '')} are not supported.",
                         "Give float values in 0..1, or uint8 values 0..255.")
    x = x.float()
    lo, hi = float(x.amin()), float(x.amax())
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError("The frames hold NaN or infinite values.", "Give finite float values in 0..1.")
    if hi > 1.0 + 1e-3 or lo < -1e-3:
        hint = "they look like 0..255 values: divide by 255" if hi <= 255.0 + 1e-3 and lo >= -1e-3 else \
            ("they look like -1..1 values: use (x + 1) / 2" if lo >= -1.0 - 1e-3 and hi <= 1.0 + 1e-3 else
             "rescale them to 0..1")
        raise InputError(f"Float frames must hold values in 0..1; these span {lo:g}..{hi:g}.",
                         f"Rescale: {hint} (or pass uint8 0..255).")
    return x.clamp(0.0, 1.0) if (lo < 0.0 or hi > 1.0) else x
