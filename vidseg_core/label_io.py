"""Writing label maps: palettised PNGs, colour overlays and overlay videos.

A label PNG stores the label *value* of each pixel as a palette index (mode
``P``), with the DAVIS / VOC palette so that the same label has the same colour
in every frame and every tool; :func:`vidseg_core.metrics.io.read_label_png`
reads it back as ids.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Tuple

import numpy as np
import torch

from .errors import InputError
from .labels import LabelTable, palette_color

_PALETTE = bytes(c for v in range(256) for c in palette_color(v))


def save_label_png(path, labels) -> None:
    """Write one label map ``[H,W]`` (values 0..255) as a palettised PNG."""
    from PIL import Image

    arr = torch.as_tensor(labels).cpu().numpy() if not isinstance(labels, np.ndarray) else labels
    if arr.ndim != 2:
        raise InputError(f"A label map must be [H,W]; got {arr.shape}.", "Save one frame at a time.")
    if arr.size and (arr.min() < 0 or arr.max() > 255):
        raise InputError(f"Label values {int(arr.min())}..{int(arr.max())} do not fit a palettised PNG (0..255).",
                         "Use fewer than 256 clusters or labels.")
    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    im.putpalette(_PALETTE)
    im.save(str(path), optimize=False)


def colorize(labels: torch.Tensor, table: Optional[LabelTable] = None) -> torch.Tensor:
    """uint8 RGB ``[...,3]`` of label maps with the palette (stable across the whole video)."""
    lab = torch.as_tensor(labels).long().clamp(0, 255)
    lut = torch.tensor(list(_PALETTE), dtype=torch.uint8).reshape(256, 3)
    if table is not None:
        for e in table:
            if 0 <= e.value < 256:
                lut[e.value] = torch.tensor(e.color, dtype=torch.uint8)
    return lut[lab]


def overlay(frames: torch.Tensor, labels: torch.Tensor, table: Optional[LabelTable] = None,
            alpha: float = 0.5) -> torch.Tensor:
    """Frames ``[T,H,W,3]`` in 0..1 blended with the label colours: float ``[T,H,W,3]`` in 0..1."""
    if frames.shape[:3] != labels.shape:
        raise InputError(f"Frames {tuple(frames.shape[:3])} and labels {tuple(labels.shape)} differ in size.",
                         "Pass label maps at the frames' resolution.")
    col = colorize(labels, table).float() / 255.0
    return (1 - alpha) * frames.float() + alpha * col


#: width in pixels of the white border that marks the first frame of a new shot in an overlay
CUT_BORDER = 3


def mark_cuts(images: torch.Tensor, first_frames, width: int = CUT_BORDER) -> torch.Tensor:
    """Overlay frames ``[T,H,W,3]`` (float 0..1 or uint8) with a white border of ``width`` pixels on the
    frames ``first_frames`` (indices into ``images``: first frames of new shots), so that a cut shows when
    the overlay is scrubbed.  Without such a frame ``images`` is returned as it is (the same object)."""
    idx = sorted({int(i) for i in first_frames if 0 <= int(i) < images.shape[0]})
    if not idx:
        return images
    out = images.clone()
    white = 255 if out.dtype == torch.uint8 else 1.0
    w = max(1, min(int(width), (min(out.shape[1:3]) + 1) // 2))
    for i in idx:
        out[i, :w], out[i, -w:], out[i, :, :w], out[i, :, -w:] = white, white, white, white
    return out


class OverlayVideoWriter:
    """Writes overlay frames to an mp4 (OpenCV) or, where no encoder works, an animated GIF.

    ``on_create(path)`` is called right before the file is created (the mp4 when the first frames come, the
    GIF when it is closed), ``on_abandon(path)`` when an mp4 could not be opened after all (no encoder): an
    output folder records only the file that is really written.
    """

    def __init__(self, path, fps: float = 12.0, on_create: Optional[Callable[[Path], None]] = None,
                 on_abandon: Optional[Callable[[Path], None]] = None):
        self.path = Path(path)
        self.fps = fps
        self._writer = None
        self._gif_frames = []
        self.kind: Optional[str] = None
        self._on_create = on_create or (lambda p: None)
        self._on_abandon = on_abandon or (lambda p: None)

    def _open(self, size: Tuple[int, int]) -> None:
        mp4 = self.path.with_suffix(".mp4")
        try:
            import cv2
        except ImportError:
            cv2 = None
        if cv2 is not None:
            self._on_create(mp4)
            existed = mp4.exists()
            w = cv2.VideoWriter(str(mp4), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (size[1], size[0]))
            if w.isOpened():
                self._writer, self.kind = w, "mp4"
                self.path = mp4
                return
            w.release()
            if not existed:
                mp4.unlink(missing_ok=True)  # an empty file a failed encoder may leave
            self._on_abandon(mp4)
        self.kind = "gif"
        self.path = self.path.with_suffix(".gif")

    def write(self, frames01: torch.Tensor) -> None:
        arr = (frames01.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        if self.kind is None:
            self._open(arr.shape[1:3])
        for f in arr:
            if self._writer is not None:
                self._writer.write(np.ascontiguousarray(f[:, :, ::-1]))
            else:  # GIF: keep a small copy (half size) of every frame until close
                from PIL import Image

                im = Image.fromarray(f)
                im.thumbnail((max(1, f.shape[1] // 2), max(1, f.shape[0] // 2)))
                self._gif_frames.append(im.convert("P", palette=Image.ADAPTIVE))

    def close(self) -> Optional[Path]:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        elif self._gif_frames:
            self._on_create(self.path)
            self._gif_frames[0].save(str(self.path), save_all=True, append_images=self._gif_frames[1:],
                                     duration=int(1000 / self.fps), loop=0)
            self._gif_frames = []
        return self.path if self.kind else None
