"""Host/device synchronisations of the coarse stage, counted on the CPU (docs/determinism_and_sync.md).

Oracle features of the 14 blackswan masks (28 x 52 grid, 64 channels).  Prints one row per loop: the
count with the CPU defaults and with the GPU defaults forced (KNN ``sync_free=True``, KMeans
``check_every=8``), and the same loop on a shorter problem to show what grows.

    python benchmarks/sync_counts.py
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.clips import CLIPS, require  # noqa: E402
from tests.helpers.sync_counter import SyncCounter  # noqa: E402
from tests.oracles.coarse_oracle import load_masks, oracle_features  # noqa: E402
from vidseg_core.cbr import cbr_refine, cbr_refine_compat  # noqa: E402
from vidseg_core.context_model import SceneContext  # noqa: E402
from vidseg_core.kmeans import fit_kmeans  # noqa: E402


def count(fn) -> int:
    with SyncCounter() as sc:
        fn()
    return sc.total


def main() -> int:
    masks = load_masks(require(CLIPS / "blackswan" / "masks_osvos"), 14)
    f = oracle_features(masks, 0.5, channels=64)
    agg, corr = f.aggregated, f.correspondence
    x = agg.reshape(-1, 64)
    rows = []
    for gpu in (False, True):
        ctx = SceneContext()
        ctx.init(agg, masks[0], 0, 20, 2, 1)
        ctx.knn.sync_free = gpu
        rows.append((f"SceneContext.step (KNN + CBR + refit), 7 / 14 frames, {'GPU' if gpu else 'CPU'} defaults",
                     count(lambda: ctx.step(agg[:7], corr[:7])), count(lambda: ctx.step(agg, corr))))
        ce = 8 if gpu else 1
        rows.append((f"KMeans K=20, 1 init, 5 / 20 iterations (tol 0), check_every={ce}",
                     count(lambda: fit_kmeans(x, 20, n_init=1, max_iter=5, tol=0, check_every=ce)),
                     count(lambda: fit_kmeans(x, 20, n_init=1, max_iter=20, tol=0, check_every=ce))))
        rows.append((f"KMeans K=20, n_init 1 / 10, default tol, check_every={ce}",
                     count(lambda: fit_kmeans(x, 20, n_init=1, check_every=ce)),
                     count(lambda: fit_kmeans(x, 20, n_init=10, check_every=ce))))
    lab = ctx.knn.predict(x).reshape(agg.shape[:3])
    for fn in (cbr_refine, cbr_refine_compat):
        rows.append((f"{fn.__name__}, 7 / 14 frames", count(lambda: fn(lab[:7], corr[:7])), count(lambda: fn(lab, corr))))
    print("| loop | smaller | larger |\n|---|---|---|")
    for name, a, b in rows:
        print(f"| {name} | {a} | {b} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
