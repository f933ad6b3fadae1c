"""A synthetic clip with known ground truth, for the demo and for tests.

Textured regions move over a textured background: a disc (label 1) drifting
right, a square (label 2) drifting down-left, on a striped, noisy background
(label 0).  Every pixel's label is known exactly, so mIoU and mVC can be
computed without any dataset.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np


def _texture(rng, h, w, base, freq, angle):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    stripes = 0.5 + 0.5 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * freq)
    noise = rng.normal(0, 0.06, (h, w)).astype(np.float32)
    tex = np.clip(np.asarray(base, np.float32)[None, None] * (0.65 + 0.35 * stripes[..., None]) + noise[..., None], 0, 1)
    return tex


def make_clip(num_frames: int = 16, size: Tuple[int, int] = (256, 448), seed: int = 0):
    """Frames ``[T,H,W,3]`` uint8 and ground truth ``[T,H,W]`` uint8 (0 background, 1 disc, 2 square)."""
    rng = np.random.default_rng(seed)
    h, w = size
    background = _texture(rng, h, w, (0.35, 0.55, 0.30), 0.35, 0.3)
    disc_tex = _texture(rng, h, w, (0.85, 0.25, 0.20), 0.9, 1.2)
    square_tex = _texture(rng, h, w, (0.20, 0.30, 0.85), 0.6, 2.2)
    yy, xx = np.mgrid[0:h, 0:w]
    frames = np.empty((num_frames, h, w, 3), np.uint8)
    gt = np.zeros((num_frames, h, w), np.uint8)
    r = 0.18 * min(h, w)
    side = 0.30 * min(h, w)
    for t in range(num_frames):
        a = t / max(1, num_frames - 1)
        cy, cx = 0.45 * h, (0.22 + 0.45 * a) * w
        sy, sx = (0.12 + 0.35 * a) * h, (0.78 - 0.25 * a) * w
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        square = (np.abs(yy - sy - side / 2) <= side / 2) & (np.abs(xx - sx) <= side / 2)
        img = background.copy()
        img[square] = square_tex[square]
        img[disc] = disc_tex[disc]  # the disc passes in front of the square
        lab = np.zeros((h, w), np.uint8)
        lab[square] = 2
        lab[disc] = 1
        frames[t] = (img * 255 + 0.5).astype(np.uint8)
        gt[t] = lab
    return frames, gt
