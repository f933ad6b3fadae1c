"""Tiny DAVIS 2017 / VSPW / folders trees built from the real blackswan and bedroom clips.

Small frames (128 x 72) and few frames per video keep the dataset tests fast; each "video" is a different
window of the real clips (blackswan: frames with the OSVOS masks; bedroom: no masks).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = (128, 72)  # W x H
#: video name -> (first blackswan frame, number of frames, reversed)
CLIPS = {"swan-a": (0, 6, False), "swan-b": (6, 4, False), "swan-c": (9, 5, True)}


def _frame(src: Path, i: int, size=SIZE) -> Image.Image:
    im = Image.open(src / "frames" / f"{i:05d}.jpg").convert("RGB")
    return im if size is None else im.resize(size, Image.BICUBIC)


def _mask(src: Path, i: int, size=SIZE) -> np.ndarray:
    im = Image.open(src / "masks_osvos" / f"{i:05d}.png")
    return np.asarray(im if size is None else im.resize(size, Image.NEAREST)).astype(np.uint8)


def _save_p(arr: np.ndarray, path: Path) -> None:
    im = Image.fromarray(arr.astype(np.uint8), mode="P")
    im.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0, 128, 128, 0] + [0] * (256 * 3 - 12))
    im.save(path)


def _indices(spec):
    start, n, rev = spec
    idx = list(range(start, start + n))
    return idx[::-1] if rev else idx


def make_davis2017(blackswan: Path, root: Path, clips=CLIPS, split="val", size=SIZE) -> Path:
    """``root/JPEGImages/480p/<v>``, ``Annotations/480p/<v>`` (0 bg, 1 swan, 2 bank, 255 void strip),
    ``ImageSets/2017/<split>.txt`` and ``ImageSets/2016/<split>.txt``; ``size`` (W, H) or None = 854 x 480."""
    for name, spec in clips.items():
        jd = root / "JPEGImages" / "480p" / name
        ad = root / "Annotations" / "480p" / name
        jd.mkdir(parents=True)
        ad.mkdir(parents=True)
        for k, i in enumerate(_indices(spec)):
            _frame(blackswan, i, size).save(jd / f"{k:05d}.jpg", quality=95)
            m = _mask(blackswan, i, size).copy()
            m[:12][m[:12] == 0] = 2  # a second object: the top strip of the bank
            m[-2:] = 255  # a void strip
            _save_p(m, ad / f"{k:05d}.png")
    for year in ("2017", "2016"):
        (root / "ImageSets" / year).mkdir(parents=True)
        (root / "ImageSets" / year / f"{split}.txt").write_text("\n".join(clips) + "\n")
    return root


def make_vspw(blackswan: Path, root: Path, clips=CLIPS, split="val") -> Path:
    """``root/<split>.txt``, ``root/data/<v>/origin/*.jpg`` and ``mask/*.png`` with RAW VSPW ids:
    swan 5, upper background 12, lower background 0 ("others"), a void strip 255."""
    for name, spec in clips.items():
        od = root / "data" / name / "origin"
        md = root / "data" / name / "mask"
        od.mkdir(parents=True)
        md.mkdir(parents=True)
        for k, i in enumerate(_indices(spec)):
            _frame(blackswan, i).save(od / f"{k + 1:08d}.jpg", quality=95)
            swan = _mask(blackswan, i) == 1
            m = np.zeros(swan.shape, np.uint8)
            m[: swan.shape[0] // 2] = 12
            m[swan] = 5
            m[:, :3] = 255
            Image.fromarray(m, mode="L").save(md / f"{k + 1:08d}.png")
    (root / f"{split}.txt").write_text("\n".join(clips) + "\n")
    return root


def make_folders(shared: Path, root: Path, annotations: Path) -> Path:
    """``root/swan/`` (frames, GT in ``annotations/swan/``), ``root/room/`` (bedroom frames, a single
    reference mask ``annotations/room.png``) and ``root/plain/`` (no annotation)."""
    swan, room, plain = root / "swan", root / "room", root / "plain"
    for d in (swan, room, plain, annotations / "swan"):
        d.mkdir(parents=True)
    for k in range(5):
        _frame(shared / "blackswan", k).save(swan / f"{k:05d}.png")
        _save_p(_mask(shared / "blackswan", k), annotations / "swan" / f"{k:05d}.png")
    for k in range(4):
        im = Image.open(shared / "bedroom" / "frames" / f"{k * 10:05d}.jpg").convert("RGB").resize(SIZE)
        im.save(room / f"f{k:03d}.jpg", quality=95)
        im.save(plain / f"f{k:03d}.jpg", quality=95)
    ref = np.zeros((SIZE[1], SIZE[0]), np.uint8)
    ref[:, SIZE[0] // 2:] = 3
    _save_p(ref, annotations / "room.png")
    return root
