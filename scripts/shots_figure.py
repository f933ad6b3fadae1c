"""Draw docs/shots_oracle.jpg: frames across the cuts of an A|B|A edit, labels without and with shots.

Oracle features (ground truth one-hot plus noise, ``tests/helpers/edited_clips.py``) stand in for the
diffusion features, so the figure shows what the shot machinery does without SD 2.1 weights.  Columns:
the last frame of A, the first and last frames of B, the first frame of A's return.  Rows: frames, coarse
labels with cut detection off (B takes A's labels), coarse labels with cuts auto (B gets new labels, A
gets its own back).

    python scripts/shots_figure.py [--data DIR] [--out docs/shots_oracle.jpg]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from benchmarks.clips import CLIPS, require  # noqa: E402
from helpers.edited_clips import edited_sequence, load_scenes, oracle_video_features  # noqa: E402
from vidseg_core.label_io import colorize  # noqa: E402
from vidseg_core.pipeline import SegmentSettings  # noqa: E402
from vidseg_core.shot_context import coarse_segment_shots  # noqa: E402
from vidseg_core.shots import ShotSettings  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(CLIPS))
    ap.add_argument("--out", default=str(ROOT / "docs" / "shots_oracle.jpg"))
    args = ap.parse_args()
    seq = edited_sequence(load_scenes(require(Path(args.data))), "A|B|A")
    feats = oracle_video_features(seq, 0.3)
    frames = torch.from_numpy(seq.frames)
    rows = {}
    for cuts in ("off", "auto"):
        s = SegmentSettings(num_clusters=6, n_init=2, reference_mask=seq.gt[0], names={0: "background", 1: "swan"},
                            shots=ShotSettings(cuts=cuts))
        rows[cuts] = coarse_segment_shots(feats, s, 14, frames=frames)
    show = [13, 14, 33, 34]
    h, w = seq.frames.shape[1:3]
    tiles = [[Image.fromarray(seq.frames[i]) for i in show]]
    for cuts in ("off", "auto"):
        labels, table, _ = rows[cuts]
        tiles.append([Image.fromarray(colorize(labels[i], table).numpy()).resize((w, h), Image.NEAREST) for i in show])
    canvas = Image.new("RGB", (w * len(show), h * len(tiles)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(tiles):
        for c, im in enumerate(row):
            canvas.paste(im, (c * w, r * h))
    captions = ["frames 13 | 14 (cut) | 33 | 34 (cut)", "cuts off: B gets A's labels", "cuts auto: new labels for B, A's back"]
    for r, text in enumerate(captions):
        draw.rectangle((0, r * h, 8 + 7 * len(text), r * h + 16), fill="white")
        draw.text((4, r * h + 2), text, fill="black")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(args.out, quality=85)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
