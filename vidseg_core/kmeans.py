"""KMeans that initialises the scene context model (paper §4.1, docs/design/authors_code.md#effective-settings, #label-assignment-and-the-scene-context-model).

The authors run ``sklearn.cluster.KMeans(n_clusters=20, n_init=10)`` (k-means++,
``max_iter=300``, ``tol=1e-4``) on *all* max-abs normalised tokens of the first
14-frame batch.  The call has no ``random_state``, so it draws from numpy's
global RNG -- which their ``seed_everything(1)`` seeds at the start of every
batch, so their clustering is exactly ``random_state=1``: reproducible, not
unseeded.  Here the seed is explicit (the per-batch seed, 1 by default) and two
implementations sit behind :func:`fit_kmeans`:

* ``impl="torch"`` (default): greedy k-means++ seeding (``2 + ln k`` local
  trials per centre, the candidate that lowers the potential most wins),
  Lloyd iterations (stop when the labels no longer change or the squared centre
  shift falls below ``tol`` x the mean per-feature variance), empty clusters
  moved to the points farthest from their centres, best of ``n_init`` runs by
  inertia.  Squared distances are computed in row chunks
  (``|x|^2 - 2 x.c + |c|^2``), centre sums as one-hot matmuls, so it runs on a
  GPU with bounded memory and is deterministic for a fixed seed and device.
* ``impl="sklearn"``: scikit-learn's ``KMeans`` with ``random_state=seed`` and
  the authors' other parameters: with seed 1 it is the authors' clustering of
  the same features, exactly; the reference the torch version is tested
  against (inertia within 1 %).

The two do not draw the same random numbers, so their labels are not
identical: both find a solution of comparable inertia, but on real-shaped
features the torch default is another solution than the authors'
(``benchmarks/kmeans_impls.py`` measures inertia, label agreement and speed).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from .errors import InputError
from .tensor_ops import one_hot_mask

#: the KMeans implementations (``SegmentSettings.kmeans_impl``)
KMEANS_IMPLS = ("torch", "sklearn")


@dataclass
class KMeansResult:
    """``centers`` [k, C] float32 (CPU), ``labels`` [n] int64 (CPU), ``inertia`` (sum of squared distances)."""

    centers: torch.Tensor
    labels: torch.Tensor
    inertia: float
    n_iter: int

    def __iter__(self):  # ``centers, labels, inertia = fit_kmeans(...)``
        return iter((self.centers, self.labels, self.inertia))


def _as_tokens(tokens) -> torch.Tensor:
    if isinstance(tokens, np.ndarray):
        tokens = torch.from_numpy(tokens)
    if not isinstance(tokens, torch.Tensor):
        raise InputError(f"KMeans tokens must be a tensor or array, got {type(tokens).__name__}.",
                         "Pass features as a [n, C] tensor.")
    if tokens.ndim != 2:
        raise InputError(f"KMeans tokens must be [n, C]; got shape {tuple(tokens.shape)}.",
                         "Flatten the frames first: features.reshape(-1, C).")
    if not tokens.is_floating_point():
        tokens = tokens.float()
    if tokens.shape[0] == 0 or tokens.shape[1] == 0:
        raise InputError(f"KMeans got no data (shape {tuple(tokens.shape)}).", "Give at least one token with channels.")
    if not bool(torch.isfinite(tokens).all()):
        raise InputError("KMeans tokens contain NaN or infinite values.",
                         "Check the feature extraction (precision overflow?) before clustering.")
    return tokens


def fit_kmeans(tokens, k: int, n_init: int = 10, seed: int = 1, impl: str = "torch",
               device=None, max_iter: int = 300, tol: float = 1e-4,
               chunk_size: int = 16384, check_every: Optional[int] = None) -> KMeansResult:
    """Cluster ``tokens`` [n, C] into ``k`` clusters (best of ``n_init`` k-means++ runs).

    Returns a :class:`KMeansResult` (unpacks as ``centers, labels, inertia``).
    ``k`` larger than the number of tokens raises :class:`InputError`.
    ``check_every``: the host reads the convergence test every that many Lloyd iterations (None: 1 on the
    CPU, 8 on an accelerator, where each read is a synchronisation); the result does not depend on it.
    """
    x = _as_tokens(tokens)
    n = int(x.shape[0])
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise InputError(f"The number of clusters must be a positive integer, got {k!r}.", "Use e.g. K = 20 (paper).")
    if k > n:
        raise InputError(f"K = {k} clusters is more than the {n} tokens to cluster.",
                         f"Use K <= {n}, or give more frames/a larger feature grid.")
    if n_init < 1:
        raise InputError(f"n_init must be >= 1, got {n_init}.", "Use the authors' n_init = 10.")
    if max_iter < 1:
        raise InputError(f"max_iter must be >= 1, got {max_iter}.", "Use the default 300.")
    if impl not in KMEANS_IMPLS:
        raise InputError(f"Unknown KMeans implementation {impl!r}.", f"Use one of {', '.join(KMEANS_IMPLS)}.")
    if impl == "sklearn":
        return _fit_sklearn(x, int(k), n_init, seed, max_iter, tol)
    dev = torch.device(device) if device is not None else x.device
    return _fit_torch(x, int(k), n_init, seed, dev, max_iter, tol, max(1, int(chunk_size)), check_every)


# ---------------------------------------------------------------- sklearn
def _fit_sklearn(x, k, n_init, seed, max_iter, tol) -> KMeansResult:
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=k, n_init=n_init, random_state=seed, max_iter=max_iter, tol=tol, init="k-means++")
    km.fit(x.detach().cpu().numpy())
    return KMeansResult(torch.from_numpy(km.cluster_centers_).float(), torch.from_numpy(km.labels_).long(),
                        float(km.inertia_), int(km.n_iter_))


# ---------------------------------------------------------------- torch
def _sq_dist(x: torch.Tensor, x_sq: torch.Tensor, c: torch.Tensor, chunk: int):
    """Nearest centre and its squared distance for every row, computed in row chunks."""
    c_sq = (c * c).sum(1)
    labels = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    mind = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], chunk):
        xs = x[start:start + chunk]
        d = torch.addmm(c_sq[None, :], xs, c.T, beta=1.0, alpha=-2.0)
        d = d.add_(x_sq[start:start + chunk, None]).clamp_(min=0)
        md, lab = d.min(1)
        labels[start:start + chunk] = lab
        mind[start:start + chunk] = md
    return labels, mind


def _dist_to_points(x: torch.Tensor, x_sq: torch.Tensor, pts: torch.Tensor, chunk: int) -> torch.Tensor:
    """Squared distances [m, n] from a few points to all rows."""
    p_sq = (pts * pts).sum(1)
    out = torch.empty(pts.shape[0], x.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], chunk):
        xs = x[start:start + chunk]
        out[:, start:start + chunk] = (x_sq[None, start:start + chunk] - 2.0 * pts @ xs.T + p_sq[:, None]).clamp_(min=0)
    return out


def _kmeans_pp(x, x_sq, k, gen, chunk) -> torch.Tensor:
    """Greedy k-means++ seeding.  The random numbers come from the CPU generator ``gen`` in the same order
    as drawn one by one (first index, then ``trials`` uniforms per centre), copied to the device once; the
    chosen indices stay on the device (no host synchronisation per centre)."""
    n = x.shape[0]
    trials = 2 + int(math.log(k))
    first = torch.randint(n, (1,), generator=gen)
    r_all = torch.rand(k - 1, trials, generator=gen, dtype=torch.float64).to(x.device)
    first = first.to(x.device)
    centers = [x.index_select(0, first)[0]]
    closest = _dist_to_points(x, x_sq, x.index_select(0, first), chunk)[0]
    pot = closest.double().sum()
    for i in range(k - 1):
        r = r_all[i] * pot
        cum = torch.cumsum(closest.double(), 0)
        cand = torch.searchsorted(cum, r).clamp_(max=n - 1)
        d = torch.minimum(_dist_to_points(x, x_sq, x[cand], chunk), closest[None, :])
        pots = d.double().sum(1)
        best = torch.argmin(pots).view(1)
        pot = pots.index_select(0, best)[0]
        closest = d.index_select(0, best)[0]
        centers.append(x.index_select(0, cand.index_select(0, best))[0])
    return torch.stack(centers)


def _centre_sums(x, labels, k, chunk):
    sums = torch.zeros(k, x.shape[1], dtype=x.dtype, device=x.device)
    if x.device.type == "cpu":  # sequential and deterministic on the CPU
        sums.index_add_(0, labels, x)
        return sums, torch.bincount(labels, minlength=k)
    for start in range(0, x.shape[0], chunk):  # one-hot matmul: deterministic on GPUs (index_add_ is not)
        oh = one_hot_mask(labels[start:start + chunk], k).to(x.dtype)
        sums += oh.T @ x[start:start + chunk]
    counts = torch.bincount(labels, minlength=k)
    return sums, counts


def _move_empty(new, counts, x, mind, eager: bool):
    """Empty clusters go to the points farthest from their centres, the i-th empty cluster (by index) to the
    i-th farthest point (stable order).  ``eager`` asks the host whether any cluster is empty first (free on
    the CPU, skips the sort); otherwise all of it runs on the device."""
    empty = counts == 0
    if eager and not bool(empty.any()):
        return new
    k = new.shape[0]
    far = torch.argsort(mind, descending=True, stable=True)[:k]
    rank = (torch.cumsum(empty, 0) - 1).clamp_(min=0)
    return torch.where(empty[:, None], x[far[rank]], new)


def _lloyd(x, x_sq, centers, max_iter, tol_abs, chunk, check_every: int):
    """Lloyd iterations; stops when the labels repeat or the squared centre shift is <= ``tol_abs``.

    The stop decision is kept on the device and read by the host only every ``check_every`` iterations (1 on
    the CPU); iterations after the stop leave centres and labels frozen, so the result, ``n_iter`` included,
    is the same for every ``check_every``.
    """
    k = centers.shape[0]
    eager = check_every == 1
    done = torch.zeros((), dtype=torch.bool, device=x.device)
    n_iter = torch.full((), max_iter, dtype=torch.long, device=x.device)
    prev = None
    for it in range(1, max_iter + 1):
        labels, mind = _sq_dist(x, x_sq, centers, chunk)
        if prev is not None:  # strict convergence: the assignment is stable (centres unchanged)
            stable = ~done & (labels == prev).all()
            n_iter = torch.where(stable, it, n_iter)
            done = done | stable
        sums, counts = _centre_sums(x, labels, k, chunk)
        new = sums / counts.clamp(min=1)[:, None].to(x.dtype)
        new = _move_empty(new, counts, x, mind, eager)
        small = ~done & (((new - centers) ** 2).sum() <= tol_abs)
        centers = torch.where(done, centers, new)
        prev = labels if prev is None else torch.where(done, prev, labels)
        n_iter = torch.where(small, it, n_iter)
        done = done | small
        if it % check_every == 0 and bool(done):
            break
    labels, mind = _sq_dist(x, x_sq, centers, chunk)  # labels consistent with the final centres
    return centers, labels, mind.double().sum(), n_iter


def _fit_torch(x, k, n_init, seed, device, max_iter, tol, chunk, check_every) -> KMeansResult:
    x = x.to(device=device, dtype=torch.float32)
    mean = x.mean(0, keepdim=True)
    xc = x - mean  # centring improves the precision of |x|^2 - 2x.c + |c|^2
    x_sq = (xc * xc).sum(1)
    tol_abs = xc.var(0, unbiased=False).mean().double() * tol  # float64, compared with the float32 shift
    if check_every is None:
        check_every = 1 if device.type == "cpu" else 8
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    best = None  # (centers, labels, inertia, n_iter), chosen on the device: the first lowest inertia wins
    for _ in range(n_init):
        c0 = _kmeans_pp(xc, x_sq, k, gen, chunk)
        run = _lloyd(xc, x_sq, c0, max_iter, tol_abs, chunk, max(1, int(check_every)))
        if best is None:
            best = run
        else:
            better = run[2] < best[2]
            best = tuple(torch.where(better, a, b) for a, b in zip(run, best))
    centers, labels, inertia, n_iter = best
    return KMeansResult((centers + mean).float().cpu(), labels.cpu(), float(inertia), int(n_iter))
