"""Draw docs/pipeline_oracle.jpg: the coarse stage and the fast upsampler on real frames.

The diffusion features are replaced by *oracle* features (the blackswan ground
truth one-hot at the feature grid, plus Gaussian noise), so the figure shows
what KMeans + KNN + CBR and the guided-filter upsampler do on real frames
without SD 2.1 weights (which need a GPU).  Rows: frames, coarse maps
(28x52), full-resolution label maps, overlay.

    python scripts/readme_figure.py [--data clips] [--out docs/pipeline_oracle.jpg]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.clips import CLIPS, require  # noqa: E402
from oracles.coarse_oracle import load_masks, oracle_features  # noqa: E402
from vidseg_core.context_model import coarse_segment  # noqa: E402
from vidseg_core.label_io import colorize, overlay  # noqa: E402
from vidseg_core.upsample import make_upsampler  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(CLIPS))
    ap.add_argument("--out", default=str(ROOT / "docs" / "pipeline_oracle.jpg"))
    ap.add_argument("--noise", type=float, default=0.3)
    args = ap.parse_args()
    data = require(Path(args.data) / "blackswan")
    masks = load_masks(data / "masks_osvos", 14)
    frames = torch.from_numpy(np.stack([np.asarray(Image.open(p).convert("RGB"))
                                        for p in sorted((data / "frames").glob("*.jpg"))])).float() / 255
    feats = oracle_features(masks, args.noise)
    coarse = coarse_segment(feats, k=20, reference_mask=masks[0], reference_frame=0)
    full = make_upsampler("guided_filter").upsample(frames, coarse.labels, coarse.table.values)
    show = [0, 6, 13]
    w = 320
    h = int(round(480 * w / 854))

    def tile(img_u8):
        return Image.fromarray(img_u8).resize((w, h), Image.NEAREST)

    rows = [
        [tile((frames[i].numpy() * 255).astype(np.uint8)) for i in show],
        [tile(colorize(coarse.labels[i], coarse.table).numpy()) for i in show],
        [tile(colorize(full[i], coarse.table).numpy()) for i in show],
        [tile((overlay(frames[i:i + 1], full[i:i + 1], coarse.table)[0].numpy() * 255).astype(np.uint8)) for i in show],
    ]
    canvas = Image.new("RGB", (w * len(show), h * len(rows)), "white")
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            canvas.paste(im, (c * w, r * h))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out, quality=85)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
