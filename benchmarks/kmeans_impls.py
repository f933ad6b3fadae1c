"""KMeans implementations: the torch default vs scikit-learn with seed 1 (the authors' clustering).

Structured tokens at the real shapes (default: 14 frames x 28 x 52 cells x 640
channels, K = 20, n_init = 10): ``--regions`` Voronoi regions whose seeds drift
over the frames, each with its own random prototype, plus a smooth positional
field shared by all regions and Gaussian noise, every token divided by its
max-abs value (the authors' normalisation).  More regions than clusters make
the clustering ambiguous, as real proposal regions do.

Per data seed it prints the inertia of both, their relative difference, and the
share of tokens with the same cluster after optimal matching of the cluster ids
(``scipy.optimize.linear_sum_assignment`` on the contingency table); it also
checks that ``impl="sklearn"`` with seed 1 is exactly the authors' call
(``KMeans(n_clusters, n_init=10)`` without ``random_state`` after
``np.random.seed(1)``).  On the first data seed both are timed (``--repeat``
interleaved rounds, median and min-max, ``benchmarks/timing.py``).  Run:

    python benchmarks/kmeans_impls.py [--frames 14] [--h 28] [--w 52] [--channels 640] [--k 20]
                                      [--regions 21] [--data-seeds 0 1] [--repeat 3] [--device cpu] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.report import cpu_model, load_average  # noqa: E402
from benchmarks.timing import ratio_text, time_cases  # noqa: E402
from vidseg_core.kmeans import fit_kmeans  # noqa: E402


def structured_tokens(frames=14, h=28, w=52, channels=640, regions=21, noise=0.35, seed=0) -> torch.Tensor:
    """``[frames*h*w, channels]`` float32 tokens (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([h, w], dtype=torch.float32)
    start = torch.rand(regions, 2, generator=g) * size
    velocity = (torch.rand(regions, 2, generator=g) - 0.5) * 0.8  # cells per frame
    protos = torch.randn(regions, channels, generator=g)
    freqs = torch.randn(8, 2, generator=g) * 0.25
    phases = torch.rand(8, generator=g) * 6.283
    basis = torch.randn(16, channels, generator=g) * 0.5
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    cells = torch.stack([yy.flatten(), xx.flatten()], 1)  # [hw, 2]
    arg = cells @ freqs.T + phases  # [hw, 8]
    field = torch.cat([arg.sin(), arg.cos()], 1) @ basis  # [hw, C]
    out = []
    for t in range(frames):
        seeds = start + velocity * t
        region = torch.cdist(cells, seeds).argmin(1)
        f = protos[region] + field + noise * torch.randn(h * w, channels, generator=g)
        out.append(f / f.abs().amax(1, keepdim=True))
    return torch.cat(out)


def matched_agreement(a: np.ndarray, b: np.ndarray, k: int) -> float:
    """Share of tokens with the same cluster after the best one-to-one matching of the ids."""
    from scipy.optimize import linear_sum_assignment

    table = np.zeros((k, k), np.int64)
    np.add.at(table, (a, b), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum()) / len(a)


def authors_call(x: torch.Tensor, k: int, n_init: int):
    """The authors' call as they make it: no random_state, numpy's global RNG seeded with 1 just before."""
    from sklearn.cluster import KMeans

    np.random.seed(1)
    return KMeans(n_clusters=k, n_init=n_init).fit(x.numpy())


def run(frames=14, h=28, w=52, channels=640, k=20, regions=21, n_init=10, data_seeds=(0, 1), repeat=3,
        device="cpu", log=print):
    out = {"shape": [frames, h, w, channels], "k": k, "n_init": n_init, "regions": regions,
           "cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": device,
           "load_start": load_average(), "sets": []}
    log(f"tokens {frames} x {h} x {w} = {frames * h * w} x {channels}, K = {k}, n_init = {n_init}, {regions} regions; "
        f"CPU {out['cpu']} ({out['cores']} cores, load {out['load_start']}), torch threads {out['torch_threads']}; "
        f"torch KMeans on {device}")
    for i, ds in enumerate(data_seeds):
        x = structured_tokens(frames, h, w, channels, regions, seed=ds)
        cases = {"torch": lambda: fit_kmeans(x, k, n_init=n_init, seed=1, impl="torch", device=device),
                 "sklearn": lambda: fit_kmeans(x, k, n_init=n_init, seed=1, impl="sklearn")}
        if i == 0:
            small = x[: 50 * k]  # warm-up on a small input: imports, thread pools, allocator

            def warmup():
                fit_kmeans(small, k, n_init=1, seed=1, impl="torch", device=device)
                fit_kmeans(small, k, n_init=1, seed=1, impl="sklearn")

            samples, res = time_cases(cases, repeats=repeat, warmup=warmup, keep=("torch", "sklearn"),
                                      device=torch.device(device), log=log)
        else:
            samples, res = None, {name: fn() for name, fn in cases.items()}
        t, s = res["torch"], res["sklearn"]
        theirs = authors_call(x, k, n_init)
        d = {"data_seed": ds, "inertia_torch": t.inertia, "inertia_sklearn": s.inertia,
             "inertia_diff": (t.inertia - s.inertia) / s.inertia,
             "agreement": matched_agreement(t.labels.numpy(), s.labels.numpy(), k),
             "sklearn_is_authors": bool(np.array_equal(s.labels.numpy(), theirs.labels_)),
             "authors_inertia": float(theirs.inertia_)}
        line = (f"data seed {ds}: inertia torch {t.inertia:.2f}, sklearn seed 1 {s.inertia:.2f} "
                f"(torch {d['inertia_diff']:+.3%}); same cluster after id matching {d['agreement']:.2%}; "
                f"sklearn seed 1 = the authors' call: {d['sklearn_is_authors']}")
        if samples is not None:
            st, ss = samples["torch"], samples["sklearn"]
            d.update(torch_s=st.text(), sklearn_s=ss.text(), speedup=ratio_text(ss, st), rounds=repeat,
                     torch_cpu_s=st.text("cpu"), sklearn_cpu_s=ss.text("cpu"), speedup_cpu=ratio_text(ss, st, "cpu"))
            line += (f"\n  s, median (min-max) of {repeat} interleaved rounds: wall torch {d['torch_s']}, "
                     f"sklearn {d['sklearn_s']}, sklearn / torch {d['speedup']}; process CPU time torch "
                     f"{d['torch_cpu_s']}, sklearn {d['sklearn_cpu_s']}, sklearn / torch {d['speedup_cpu']}")
        log(line)
        out["sets"].append(d)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=14)
    ap.add_argument("--h", type=int, default=28)
    ap.add_argument("--w", type=int, default=52)
    ap.add_argument("--channels", type=int, default=640)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--regions", type=int, default=21)
    ap.add_argument("--n-init", type=int, default=10)
    ap.add_argument("--data-seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--repeat", type=int, default=3, help="interleaved timing rounds on the first data seed")
    ap.add_argument("--device", default="cpu", help="device of the torch KMeans (sklearn always runs on the CPU)")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads of both (torch.set_num_threads, scikit-learn's thread pools; default: torch's)")
    args = ap.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=torch.get_num_threads()):  # scikit-learn uses as many threads as torch
        run(args.frames, args.h, args.w, args.channels, args.k, args.regions, args.n_init, tuple(args.data_seeds),
            args.repeat, args.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
