"""How many (label, frame) pairs are present on the benchmark clips, and what skipping the absent ones saves.

SD 2.1 quality mode denoises only the rows (label, frame) whose label is present
in the frame's coarse map (``ModulationSettings.skip_absent_rows``,
``vidseg_core/modulation/rows.py``); whole runs compute ``active labels × T``
rows per sign.  The fraction ``present / (active labels × T)`` is the share of
modulated UNet rows that is left.  Measured per batch of 14 frames (the
pipeline's batches, overlapping tail):

* (a) on given proposals (``masks_rvos``: 21 ids, ``masks_osvos``: swan /
  background), resized NEAREST to the 28x52 feature grid of 832x448;
* (b) on the pipeline's OWN coarse maps (features + KMeans + KNN + CBR) with
  the tiny random-weight SD (``tiny-sd``) on the clips at half size: random
  weights give other clusters than real SD 2.1 would, so (b) only shows how
  such maps behave, not what real SD 2.1 gives.

``--timing`` also times ``modulate_batch`` with the rows skipped vs whole runs
on tiny-sd (the blackswan frames at half size, ``masks_rvos`` as the coarse
map, the reference store given as in the pipeline), interleaved rounds
(``benchmarks/timing.py``), median and min-max.

    python benchmarks/label_presence.py [--clusters 10 20] [--own-frames 28] [--timing] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.clips import CLIPS, require  # noqa: E402
from vidseg_core.batching import plan_batches  # noqa: E402
from vidseg_core.labels import resize_nearest  # noqa: E402

DATA = CLIPS
GRID = (28, 52)  # feature grid of 832x448


def presence(coarse: torch.Tensor) -> Dict[str, float]:
    """``coarse [T,h,w]`` of one batch -> active labels, present pairs and their share of whole-run rows."""
    ids = torch.unique(coarse)
    present = torch.stack([(coarse == i).flatten(1).any(1) for i in ids])  # [L,T]
    pairs, full = int(present.sum()), present.numel()
    return {"labels": len(ids), "present": pairs, "full": full, "fraction": pairs / full}


def batched(maps: torch.Tensor, batch_size: int = 14) -> List[Dict[str, float]]:
    return [presence(maps[b.start:b.stop]) for b in plan_batches(maps.shape[0], batch_size)]


def load_masks(folder: Path, grid=GRID) -> torch.Tensor:
    from PIL import Image
    files = sorted(folder.glob("*.png"))
    return torch.from_numpy(np.stack([resize_nearest(np.asarray(Image.open(f)).astype(np.int64), grid)
                                      for f in files]))


def load_frames(folder: Path, count: int, scale: float = 0.5) -> torch.Tensor:
    from PIL import Image
    out = []
    for f in sorted(folder.glob("*.jpg"))[:count]:
        im = Image.open(f).convert("RGB")
        im = im.resize((int(im.width * scale), int(im.height * scale)), Image.BICUBIC)
        out.append(torch.from_numpy(np.asarray(im).copy()).float() / 255)
    return torch.stack(out)


def own_coarse(clip: str, frames: int, clusters: int) -> torch.Tensor:
    """The pipeline's coarse maps of ``clip`` (tiny-sd, half size, no upsampling)."""
    from vidseg_core.backbones import load_backbone
    from vidseg_core.pipeline import SegmentSettings, VideoSegmenter

    video = load_frames(DATA / clip / "frames", frames)
    seg = VideoSegmenter(load_backbone("tiny-sd"), SegmentSettings(num_clusters=clusters, n_init=2))
    maps = [res.coarse for res in seg.run(lambda a, b: video[a:b], video.shape[0], tuple(video.shape[1:3]),
                                          skip_upsample=lambda b: True)]
    return torch.cat(maps)


def summary(name: str, per_batch: Sequence[Dict[str, float]], log=print) -> float:
    pairs, full = sum(b["present"] for b in per_batch), sum(b["full"] for b in per_batch)
    fr = pairs / full
    labels = "/".join(str(b["labels"]) for b in per_batch)
    log(f"| {name} | {len(per_batch)} | {labels} | {pairs} / {full} | {fr:.3f} | "
        f"{min(b['fraction'] for b in per_batch):.3f}-{max(b['fraction'] for b in per_batch):.3f} | {1 / fr:.2f}x |")
    return fr


def run(clusters=(10, 20), own_frames: int = 28, log=print) -> Dict[str, float]:
    log("| coarse maps | batches | active labels per batch | present / whole-run pairs | fraction | "
        "per batch | modulated UNet rows fewer |")
    log("|---|---|---|---|---|---|---|")
    out = {}
    for folder in ("masks_rvos", "masks_osvos"):
        maps = load_masks(DATA / "blackswan" / folder)
        out[f"blackswan {folder} (50 frames)"] = summary(f"blackswan {folder}, 50 frames, 28x52", batched(maps), log)
        out[f"blackswan {folder} (14 frames)"] = summary(f"blackswan {folder}, frames 0-13", batched(maps[:14]), log)
    for clip, n in (("blackswan", 14), ("bedroom", own_frames)):
        for k in clusters:
            name = f"{clip} own coarse (tiny-sd, K = {k}, {n} frames, half size)"
            out[name] = summary(name, batched(own_coarse(clip, n, k)), log)
    return out


def timing(repeats: int = 3, fraction=None, labels: int = 10, log=print) -> dict:
    """``modulate_batch`` rows skipped vs whole runs, tiny-sd, blackswan at half size with ``masks_rvos`` (or,
    with ``fraction``, ``labels`` Voronoi labels of which that fraction of (label, frame) pairs is present)."""
    from benchmarks.timing import ratio_text, time_cases
    from vidseg_core.backbones import load_backbone
    from vidseg_core.features import prepare_batch
    from vidseg_core.modulation import ModulationSettings, modulate_batch
    from vidseg_core.modulation.reference import reference_pass

    bb = load_backbone("tiny-sd")
    video = load_frames(DATA / "blackswan" / "frames", 14)
    with torch.inference_mode():
        inputs = prepare_batch(bb, video)
        lh, lw = inputs.latent_hw
        coarse = load_masks(DATA / "blackswan" / "masks_rvos", (lh // 2, lw // 2))[:14]
        if fraction is not None:
            from benchmarks.modulation import voronoi_coarse
            from benchmarks.pipeline_flops import presence_coarse
            coarse = presence_coarse(voronoi_coarse(14, lh // 2, lw // 2, labels), fraction)
        _, _, store = reference_pass(bb, inputs)
    p = presence(coarse)
    what = "masks_rvos" if fraction is None else f"Voronoi labels at presence {fraction}"
    log(f"tiny-sd, 14 frames {tuple(video.shape[1:3])} -> grid {lh // 2}x{lw // 2}, {what}: {p['labels']} labels, "
        f"{p['present']} / {p['full']} pairs present ({p['fraction']:.3f}); torch threads {torch.get_num_threads()}")
    results = {}

    def case(skip):
        def fn():
            st = ModulationSettings(skip_absent_rows=skip, return_difference_maps=True)
            res = modulate_batch(bb, inputs, coarse, None, tuple(video.shape[1:3]), st, reference_store=store)
            results[skip] = res
        return fn
    samples, _ = time_cases({"whole runs": case(False), "rows skipped": case(True)}, repeats=repeats, log=log)
    a, b = samples["whole runs"], samples["rows skipped"]
    same = torch.equal(results[False].labels, results[True].labels)
    diff = float((results[False].difference_maps - results[True].difference_maps).abs().max())
    log(f"whole runs {a.text()} s, rows skipped {b.text()} s (median, min-max of {repeats}); "
        f"speed-up wall {ratio_text(a, b)}, CPU {ratio_text(a, b, 'cpu')}; labels equal {same}, "
        f"maps max diff {diff:.1e}")
    return {"whole": a.to_dict(), "rows": b.to_dict(), "presence": p,
            "ratio": statistics.median([x / y for x, y in zip(a.wall, b.wall)])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clusters", type=int, nargs="*", default=[10, 20])
    ap.add_argument("--own-frames", type=int, default=28, help="bedroom frames for the own coarse maps")
    ap.add_argument("--timing", action="store_true")
    ap.add_argument("--only-timing", action="store_true")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timing-presence", type=float, default=None,
                    help="time on Voronoi labels (--timing-labels) with this fraction of pairs present")
    ap.add_argument("--timing-labels", type=int, default=10)
    args = ap.parse_args(argv)
    if not args.only_timing:
        require(DATA / "blackswan")
        run(args.clusters, args.own_frames)
    if args.timing or args.only_timing:
        timing(args.repeats, args.timing_presence, args.timing_labels)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
