"""The files the bundled workflows name, put into a ComfyUI folder for the developer checks.

* ``input/vidseg_example.mp4``: a clip of ``frames`` frames at ``size`` made from a folder of frames
  (``*.jpg`` / ``*.png``, sorted, looped when there are fewer), or synthetic moving shapes without one;
* ``input/vidseg_first_frame.png``: the first frame with the object cut out of the alpha channel (what the
  mask editor writes; Load Image's MASK is 1 where alpha is 0), from a mask image (``--mask``, non-zero =
  object) or an ellipse;
* ``models/checkpoints/{v2-1_512-ema-pruned,svd_xt}.safetensors``: links to the random full-size files of
  ``tools/check_native.py`` (never real weights), so the core loaders run without downloads.

Made with PyAV and Pillow (ComfyUI's own requirements).  Existing files that are not links VidSeg made are
never overwritten: the checks stop and say so.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np

MARK = ".vidseg_check"  # suffix of the note saying a file was written by these checks
VIDEO, REFERENCE = "vidseg_example.mp4", "vidseg_first_frame.png"
CHECKPOINTS = {"v2-1_512-ema-pruned.safetensors": "vidseg_check_v2-1_512_random.safetensors",
               "svd_xt.safetensors": "vidseg_check_svd_random.safetensors"}


def _frame_files(folder: Optional[Path]):
    if folder is None:
        return []
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))


def _synthetic(i: int, size: Tuple[int, int]) -> np.ndarray:
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.where((yy < h // 2)[..., None], [25, 75, 150], [50, 125, 50]).astype(np.uint8)
    cx = w * (0.3 + 0.4 * ((i % 50) / 50))
    img[((xx - cx) ** 2 / (0.15 * w) ** 2 + (yy - h / 2) ** 2 / (0.25 * h) ** 2) < 1] = [240, 230, 30]
    return img


def frames(folder: Optional[Path], n: int, size: Tuple[int, int]):
    """``n`` RGB uint8 frames ``[H, W, 3]`` at ``size`` = (width, height), looping the folder's files."""
    from PIL import Image

    files = _frame_files(folder)
    cache = {}
    for i in range(n):
        if not files:
            yield _synthetic(i, size)
            continue
        f = files[i % len(files)]
        if f not in cache:
            with Image.open(f) as im:
                cache[f] = np.asarray(im.convert("RGB").resize(size, Image.BILINEAR))
        yield cache[f]


def write_clip(path: Path, folder: Optional[Path], n: int, size: Tuple[int, int], fps: int = 24) -> Path:
    """An H.264 mp4 (yuv420p) of :func:`frames`; returns ``path``."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for img in frames(folder, n, size):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    tmp.replace(path)
    return path


def write_reference(path: Path, folder: Optional[Path], mask: Optional[Path], size: Tuple[int, int]) -> Path:
    """The first frame, RGBA, alpha 0 on the object."""
    from PIL import Image

    rgb = next(frames(folder, 1, size))
    if mask is not None:
        with Image.open(mask) as im:
            obj = np.asarray(im.resize(size, Image.NEAREST)) != 0
        if obj.ndim == 3:
            obj = obj.any(-1)
    else:
        w, h = size
        yy, xx = np.mgrid[0:h, 0:w]
        obj = ((xx - 0.3 * w) ** 2 / (0.15 * w) ** 2 + (yy - h / 2) ** 2 / (0.25 * h) ** 2) < 1
    alpha = np.where(obj, 0, 255).astype(np.uint8)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(path)
    return path


def _ours(path: Path) -> bool:
    return not path.exists() or path.with_name(path.name + MARK).exists() or path.is_symlink()


def _claim(path: Path) -> None:
    if not _ours(path):
        raise SystemExit(f"{path} exists and was not written by VidSeg's checks: move it away first")
    path.with_name(path.name + MARK).write_text("written by VidSeg's developer checks; safe to delete\n")


def prepare(comfy_dir: Path, models: Path, folder: Optional[Path] = None, mask: Optional[Path] = None,
            n: int = 4, size: Tuple[int, int] = (256, 144)) -> dict:
    """Put the example inputs and the checkpoint links into ``comfy_dir``; returns what was written."""
    comfy_dir = Path(comfy_dir)
    inp = comfy_dir / "input"
    inp.mkdir(parents=True, exist_ok=True)
    done = {}
    for name in (VIDEO, REFERENCE):
        _claim(inp / name)
    done["video"] = write_clip(inp / VIDEO, folder, n, size)
    done["reference"] = write_reference(inp / REFERENCE, folder, mask, size)
    ckpt = comfy_dir / "models" / "checkpoints"
    ckpt.mkdir(parents=True, exist_ok=True)
    for link, target in CHECKPOINTS.items():
        src = (Path(models) / target).resolve()
        dst = ckpt / link
        if not src.is_file():
            continue  # tools/check_native.py writes it
        if dst.is_symlink():
            dst.unlink()
        elif dst.exists():
            raise SystemExit(f"{dst} exists and is not a link VidSeg made: move it away first")
        dst.symlink_to(src)
        done[link] = dst
    return done
