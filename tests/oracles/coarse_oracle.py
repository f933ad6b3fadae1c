"""Oracle features for the coarse stage: one-hot ground truth + Gaussian noise instead of diffusion features.

The blackswan masks (854x480, values {0, 1}) are taken to the authors' feature
grid 28x52 (work size 832x448 / 16) with NEAREST, one-hot encoded, padded with
zero channels and perturbed by Gaussian noise of standard deviation ``noise``.
The aggregated features are max-abs normalised per token like the authors'
(docs/design/authors_code.md#feature-capture); the correspondence features get an independent noise draw.
Also tiny confusion-matrix mIoU and VC_n helpers (docs/design/metrics.md#vspw-miou, #vspw-video-consistency-mvc_8-mvc_16), used
by ``tests/test_coarse_oracle.py`` and ``benchmarks/coarse_oracle.py``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from vidseg_core.labels import resize_nearest
from vidseg_core.video_features import VideoFeatures

GRID = (28, 52)
FRAME_SIZE = (480, 854)
WORK_SIZE = (448, 832)


def load_masks(masks_dir: Path, count: int = 50) -> np.ndarray:
    from PIL import Image

    files = sorted(Path(masks_dir).glob("*.png"))[:count]
    return np.stack([np.asarray(Image.open(f)) for f in files]).astype(np.int64)


def grid_gt(masks: np.ndarray) -> np.ndarray:
    return np.stack([resize_nearest(m, GRID) for m in masks])


def oracle_features(masks: np.ndarray, noise: float, channels: int = 16, seed: int = 0) -> VideoFeatures:
    gt = torch.from_numpy(grid_gt(masks))
    n_cls = int(gt.max()) + 1
    onehot = torch.nn.functional.one_hot(gt, channels if channels >= n_cls else n_cls).float()
    g = torch.Generator().manual_seed(seed)
    agg = onehot + noise * torch.randn(onehot.shape, generator=g)
    agg = agg / agg.abs().amax(-1, keepdim=True).clamp_min(1e-12)
    corr = onehot + noise * torch.randn(onehot.shape, generator=g)
    return VideoFeatures(agg, corr, FRAME_SIZE, WORK_SIZE, backbone="oracle")


def miou(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> float:
    pred = np.asarray(pred).reshape(-1)
    gt = np.asarray(gt).reshape(-1)
    ok = (gt >= 0) & (gt < num_classes)
    wrong = ~((pred >= 0) & (pred < num_classes))
    p = np.where(wrong, num_classes, pred)  # out-of-range predictions: a "wrong" column
    cm = np.bincount((num_classes + 1) * gt[ok] + p[ok], minlength=num_classes * (num_classes + 1))
    cm = cm.reshape(num_classes, num_classes + 1)
    inter = np.diag(cm[:, :num_classes]).astype(float)
    union = cm.sum(1) + cm[:, :num_classes].sum(0) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nanmean(inter / union))


def video_consistency(pred: np.ndarray, gt: np.ndarray, n: int = 8) -> float:
    """mVC_n of one video, official windowing ``range(T - n)``."""
    T = len(gt)
    vals = []
    for i in range(T - n):
        g = np.all(gt[i + 1:i + n] == gt[i], axis=0)
        p = np.all(pred[i + 1:i + n] == pred[i], axis=0)
        s = g.sum()
        vals.append(np.nan if s == 0 else (g & p).sum() / s)
    return float(np.nanmean(vals)) if vals else float("nan")
