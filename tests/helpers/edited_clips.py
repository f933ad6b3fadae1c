"""Edited test videos built from real clips: hard cuts at known frames, a dissolve, a fast pan.

Scenes (frames at ``size``, ground truth at the oracle feature grid 28x52):

* ``A``: the 14 blackswan frames, ground truth from the first-frame-convention masks (0 water/bank, 1 swan);
  its return (``A'``) plays the same frames backwards, so every returning frame has a known first appearance;
* ``B``: bedroom frames, ground truth = three brightness bands of the frame (ids 2, 3, 4);
* ``C``: the synthetic clip of :mod:`vidseg_core.synthetic` (ids 5, 6, 7).

:func:`edited_sequence` returns frames, a soft ground truth ``[N, h, w, channels]`` (a dissolve mixes the
two scenes' one-hots), the hard ground truth, the true cuts and, per frame, the source clip and frame.
:func:`oracle_video_features` turns the soft ground truth into oracle features (one-hot plus noise, max-abs
normalised per token, as ``tests/oracles/coarse_oracle.py``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from vidseg_core.labels import resize_nearest
from vidseg_core.synthetic import make_clip

GRID = (14, 26)  # half the authors' 28x52 grid: the CPU tests stay short
CHANNELS = 16
SIZE = (240, 428)


def _load_rgb(files, size) -> np.ndarray:
    from PIL import Image

    return np.stack([np.asarray(Image.open(f).convert("RGB").resize((size[1], size[0]), Image.BILINEAR))
                     for f in files])


@dataclass
class Scene:
    name: str
    frames: np.ndarray  # [n, H, W, 3] uint8
    gt: np.ndarray  # [n, h, w] int64 at GRID


@dataclass
class EditedSequence:
    name: str
    frames: np.ndarray  # [N, H, W, 3] uint8
    soft: np.ndarray  # [N, h, w, CHANNELS] float32: per-cell class weights (a dissolve mixes two)
    gt: np.ndarray  # [N, h, w] int64: argmax of soft
    cuts: List[int]  # hard cuts: first frame of each new shot
    fades: List[Tuple[int, int]] = field(default_factory=list)  # dissolves [start, stop): one cut expected inside
    source: List[Tuple[str, int]] = field(default_factory=list)  # (scene name, frame index in the scene)

    def frames_tensor(self) -> torch.Tensor:
        return torch.from_numpy(self.frames).float().div_(255.0)


def load_scenes(data: Path, size=SIZE, bedroom_frames: int = 20, synthetic_frames: int = 11) -> Dict[str, Scene]:
    """The scenes A, B, C (and ``pan`` source frames) from ``data`` (blackswan, bedroom)."""
    from PIL import Image

    a_files = sorted((data / "blackswan" / "frames").glob("*.jpg"))[:14]
    m_files = sorted((data / "blackswan" / "masks_osvos").glob("*.png"))[:14]
    a_gt = np.stack([resize_nearest(np.asarray(Image.open(f)).astype(np.int64), GRID) for f in m_files])
    scenes = {"A": Scene("A", _load_rgb(a_files, size), a_gt)}
    b_files = sorted((data / "bedroom" / "frames").glob("*.jpg"))[:bedroom_frames]
    b = _load_rgb(b_files, size)
    small = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(b).float().permute(0, 3, 1, 2), GRID)
    luma = small.mean(1).numpy()
    b_gt = 2 + np.digitize(luma, [85.0, 150.0])
    scenes["B"] = Scene("B", b, b_gt.astype(np.int64))
    c_frames, c_gt = make_clip(synthetic_frames, size, seed=3)
    scenes["C"] = Scene("C", c_frames, 5 + np.stack([resize_nearest(g.astype(np.int64), GRID) for g in c_gt]))
    return scenes


def _onehot(gt: np.ndarray) -> np.ndarray:
    return np.eye(CHANNELS, dtype=np.float32)[gt]


def edited_sequence(scenes: Dict[str, Scene], order: str, fade: int = 0) -> EditedSequence:
    """Scenes joined in ``order`` ("A|B|A"; a repeated scene plays backwards), hard cuts between them;
    ``fade > 0`` joins the first two scenes by a dissolve of that many frames instead of a cut."""
    names = order.split("|")
    frames, soft, source, cuts, fades = [], [], [], [], []
    seen = set()
    for i, n in enumerate(names):
        sc = scenes[n]
        idx = list(range(len(sc.frames)))
        if n in seen:
            idx = idx[::-1]
        seen.add(n)
        f, g = sc.frames[idx], _onehot(sc.gt[idx])
        start = sum(len(x) for x in frames)
        if i == 1 and fade:
            prev_f, prev_g, prev_src = frames[-1], soft[-1], source[-1]
            a = np.linspace(0, 1, fade + 2, dtype=np.float32)[1:-1]
            k = len(prev_f) - fade  # the dissolve overlaps the end of the previous scene and the start of this one
            mixf = (1 - a[:, None, None, None]) * prev_f[k:] + a[:, None, None, None] * f[:fade]
            mixg = (1 - a[:, None, None, None]) * prev_g[k:] + a[:, None, None, None] * g[:fade]
            frames[-1] = np.concatenate([prev_f[:k], np.round(mixf).astype(np.uint8)])
            soft[-1] = np.concatenate([prev_g[:k], mixg])
            src_mix = [(n, j) if a[t] >= 0.5 else prev_src[k + t] for t, j in enumerate(idx[:fade])]
            source[-1] = prev_src[:k] + src_mix
            start -= fade
            fades.append((start, start + fade + 1))
            f, g, idx = f[fade:], g[fade:], idx[fade:]
            start += fade
        elif i > 0:
            cuts.append(start)
        frames.append(f)
        soft.append(g)
        source.append([(n, j) for j in idx])
    soft_all = np.concatenate(soft)
    return EditedSequence(order + (f" (dissolve {fade})" if fade else ""), np.concatenate(frames), soft_all,
                          soft_all.argmax(-1).astype(np.int64), cuts, fades, [s for part in source for s in part])


def fast_pan(data: Path, size=SIZE, frames: int = 24, step: float = 0.06) -> EditedSequence:
    """A fast horizontal pan (no cut) over one bedroom frame: a window of 60 % of its width sliding
    ``step`` of the width per frame, then back."""
    from PIL import Image

    img = np.asarray(Image.open(sorted((data / "bedroom" / "frames").glob("*.jpg"))[0]).convert("RGB"))
    H, W = img.shape[:2]
    win = int(0.6 * W)
    xs = []
    x, d = 0.0, step * W
    for _ in range(frames):
        xs.append(int(round(x)))
        if not 0 <= x + d <= W - win:
            d = -d
        x += d
    out = np.stack([np.asarray(Image.fromarray(img[:, x0:x0 + win]).resize((size[1], size[0]), Image.BILINEAR))
                    for x0 in xs])
    gt = np.full((frames,) + GRID, 2, np.int64)
    return EditedSequence("fast pan", out, _onehot(gt), gt, [], [], [("pan", i) for i in range(frames)])


def oracle_video_features(seq: EditedSequence, noise: float = 0.3, seed: int = 0, frame_size=(480, 854),
                          work_size=(448, 832)):
    """Oracle :class:`~vidseg_core.video_features.VideoFeatures` of a sequence (soft one-hot + noise)."""
    from vidseg_core.video_features import VideoFeatures

    g = torch.Generator().manual_seed(seed)
    soft = torch.from_numpy(seq.soft)
    agg = soft + noise * torch.randn(soft.shape, generator=g)
    agg = agg / agg.abs().amax(-1, keepdim=True).clamp_min(1e-12)
    corr = soft + noise * torch.randn(soft.shape, generator=g)
    return VideoFeatures(agg, corr, frame_size, work_size, backbone="oracle")


def data_dir() -> Optional[Path]:
    from tests.helpers.clip_folder import clip_folder

    root = clip_folder()
    need = [root / "blackswan" / "frames", root / "blackswan" / "masks_osvos", root / "bedroom" / "frames"]
    return root if all(p.is_dir() for p in need) else None
