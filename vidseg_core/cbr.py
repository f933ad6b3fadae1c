"""Correspondence-based refinement (CBR) of coarse label maps (paper §4.2, Eqs 3-5; docs/design/authors_code.md#correspondence-based-refinement-cbr-as-published).

Two variants, both fully vectorised (the only Python loops run over frames or
window offsets, never over cells or trajectories):

:func:`cbr_refine` -- the paper's method (default)
    * Eq 3: for every cell ``p`` of every frame ``j < T-1``,
      ``T^j[p] = argmax_q cos(F^j[p], F^{j+1}[q])`` over the cells with
      ``|p - q|^2 <= radius_sq`` (squared Euclidean distance in feature cells).
      The default ``radius_sq = 2`` is the 3x3 neighbourhood, i.e. the authors'
      threshold of 1 cell per axis (docs/design/authors_code.md#correspondence-based-refinement-cbr-as-published) applied *inside* the search
      instead of as an after-the-fact filter.  ``radius_sq=None`` searches the
      whole frame.  Ties go to the candidate with the smallest raster index.
    * Eq 4: ``TRACK(p, j, k)`` is the cell reached in frame ``k`` by following
      ``T`` from ``p`` in frame ``j`` (``TRACK(p, j, j) = p``; the paper's
      recursion is off by one, this is its evident intent).
    * Eq 5: ``M~^j[p]`` = majority of the labels ``M^k[TRACK(p, j, k)]`` for
      ``k = j .. T-1`` (frames are 0-based, so the last frame of a batch votes
      only for itself and keeps its labels).  **Tie rule**: among the labels
      with the most votes, the one reached first along the trajectory wins --
      so the cell's own label ``M^j[p]`` wins any tie it is part of.
    Votes are accumulated backwards with ``count_j = onehot(M^j) +
    count_{j+1}[T^j]`` (and the same recursion for the first-reach distance),
    which equals composing the index maps and voting along every trajectory.

:func:`cbr_refine_compat` -- the authors' published variant, reproduced exactly
    (docs/design/authors_code.md#correspondence-based-refinement-cbr-as-published): trajectories start only at the cells of the batch's first
    frame, at the cells the authors' float32 coordinate round trip gives
    (:func:`compat_start_index`: a few rows/columns of some grid sides never
    start a track, their neighbour above/left starts two); the first hop is
    static (``p_1 = p_0``); later hops take the global argmax of
    ``t/(t+1) cos(F_t[p_t], F_{t+1}) + 1/(t+1) cos(F_t[p_t], F_0)``
    (the frame-0 "aux" term, bug #4); a trajectory is dropped if any step moves
    down or right by more than ``jump_threshold`` cells (the *signed* test,
    bug #3 -- ``signed=False`` uses ``abs``); each surviving trajectory takes the
    majority of the original labels along it (ties: label first reached in frame
    order, like ``Counter.most_common``) and writes it on all its cells; where
    trajectories converge the last one in raster order of its start wins
    (bug #5); cells no surviving trajectory visits keep their input label.
    Argmax ties go to the smallest raster index (the authors' ``argpartition``
    has no defined order there).

Both take ``labels`` [T, h, w] (any integer values) and the block-7 query
features [T, h, w, C] (cosine similarity, so no normalisation needed) and return
a new [T, h, w] int64 tensor whose values all come from the input labels.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from .errors import InputError
from .tensor_ops import one_hot_mask

_EPS = 1e-12


def _check(labels: torch.Tensor, features: torch.Tensor):
    if not isinstance(labels, torch.Tensor) or not isinstance(features, torch.Tensor):
        raise InputError("CBR needs torch tensors for labels and features.",
                         "Pass labels [T, h, w] (int64) and features [T, h, w, C].")
    if labels.ndim != 3:
        raise InputError(f"CBR labels must be [T, h, w]; got shape {tuple(labels.shape)}.",
                         "Reshape the label maps to frames x grid.")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise InputError(f"CBR labels must be integers, got {labels.dtype}.", "Pass label ids as an int64 tensor.")
    if features.ndim != 4 or tuple(features.shape[:3]) != tuple(labels.shape):
        raise InputError(f"CBR features {tuple(features.shape)} do not match labels {tuple(labels.shape)}: "
                         "expected [T, h, w, C] with the same T, h, w.",
                         "Pass the correspondence features of the same frames at the same grid.")
    if labels.numel() == 0:
        raise InputError("CBR got an empty batch (no frames or empty grid).", "Give at least one frame.")
    if not features.is_floating_point():
        raise InputError(f"CBR features must be floating point, got {features.dtype}.", "Pass float features.")
    if not bool(torch.isfinite(features).all()):
        raise InputError("CBR features contain NaN or infinite values.",
                         "Check the feature extraction (precision overflow?).")


def _normalise(features: torch.Tensor, dtype) -> torch.Tensor:
    f = features.to(dtype)
    return f / f.norm(dim=-1, keepdim=True).clamp_min(_EPS)


def _window_offsets(radius_sq: float):
    r = int(math.floor(math.sqrt(radius_sq)))
    return [(dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if dy * dy + dx * dx <= radius_sq]


def correspondence_maps(features: torch.Tensor, radius_sq: Optional[float] = 2, method: str = "auto",
                        dtype=torch.float32) -> torch.Tensor:
    """Paper Eq 3 for all consecutive frame pairs: ``[T-1, h, w]`` flat indices into frame ``j+1``.

    ``method="window"`` evaluates the few offsets of the search disc with shifted
    copies (cheap for small radii); ``"matrix"`` builds the full ``[hw, hw]``
    cosine matrix per frame pair and masks it (any radius, or ``None`` = global).
    Both break ties towards the smallest raster index of ``q``.
    """
    T, h, w, C = features.shape
    if T < 2:
        return torch.empty(0, h, w, dtype=torch.long, device=features.device)
    if radius_sq is not None and radius_sq < 0:
        raise InputError(f"CBR radius_sq must be >= 0 or None, got {radius_sq}.", "Use 2 (a 3x3 neighbourhood).")
    if method == "auto":
        method = "window" if radius_sq is not None and len(_window_offsets(radius_sq)) <= 49 else "matrix"
    if method == "window" and radius_sq is None:
        raise InputError("The window method needs a finite radius.", "Use method='matrix' for a global search.")
    if method not in ("window", "matrix"):
        raise InputError(f"Unknown correspondence method {method!r}.", "Use 'auto', 'window' or 'matrix'.")
    fn = _normalise(features, dtype)
    dev = features.device
    if method == "window":
        offs = _window_offsets(radius_sq)  # raster order of q for a fixed p
        r = max(max(abs(dy), abs(dx)) for dy, dx in offs)
        b = torch.nn.functional.pad(fn[1:], (0, 0, r, r, r, r))  # zero pad w and h
        ys = torch.arange(h, device=dev)[:, None]
        xs = torch.arange(w, device=dev)[None, :]
        invalid = [~((ys + dy >= 0) & (ys + dy < h) & (xs + dx >= 0) & (xs + dx < w)) for dy, dx in offs]
        sims = torch.empty(T - 1, h, w, len(offs), dtype=dtype, device=dev)
        for j in range(T - 1):  # per frame pair: the temporaries stay cache-sized (3x faster on CPU)
            for o, (dy, dx) in enumerate(offs):
                sim = (fn[j] * b[j, r + dy:r + dy + h, r + dx:r + dx + w]).sum(-1)
                sims[j, :, :, o] = sim.masked_fill_(invalid[o], float("-inf"))
        best = sims.argmax(-1)  # first maximum = smallest raster index
        off = torch.tensor(offs, device=dev, dtype=torch.long)
        qy = ys + off[best][..., 0]
        qx = xs + off[best][..., 1]
        return qy * w + qx
    flat = fn.reshape(T, h * w, C)
    out = torch.empty(T - 1, h * w, dtype=torch.long, device=dev)
    mask = None
    if radius_sq is not None:
        yy, xx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
        pos = torch.stack([yy.flatten(), xx.flatten()], 1)
        mask = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(-1) > radius_sq
    for j in range(T - 1):
        sim = flat[j] @ flat[j + 1].T
        if mask is not None:
            sim = sim.masked_fill(mask, float("-inf"))
        out[j] = sim.argmax(1)
    return out.reshape(T - 1, h, w)


def _compact(labels: torch.Tensor):
    values, idx = torch.unique(labels, sorted=True, return_inverse=True)
    return values, idx


def cbr_refine(labels: torch.Tensor, features: torch.Tensor, radius_sq: Optional[float] = 2,
               method: str = "auto", dtype=torch.float32) -> torch.Tensor:
    """Paper Eqs 3-5 on one batch: refined labels [T, h, w] int64 (see module docstring)."""
    _check(labels, features)
    T, h, w = labels.shape
    values, idx = _compact(labels.to(features.device))
    L = values.numel()
    if T == 1 or L == 1:
        return labels.to(torch.long).clone()
    nxt = correspondence_maps(features, radius_sq, method, dtype).reshape(T - 1, h * w)
    idx = idx.reshape(T, h * w)
    # Backward recursion over frames: votes and first-reach distance along trajectories.
    onehot = one_hot_mask(idx[T - 1], L)
    count = onehot.to(torch.int32)
    first = torch.where(onehot, 0, T).to(torch.int32)
    out = torch.empty(T, h * w, dtype=torch.long, device=features.device)
    out[T - 1] = idx[T - 1]
    for j in range(T - 2, -1, -1):
        oh = one_hot_mask(idx[j], L)
        count = oh.to(torch.int32) + count[nxt[j]]
        first = torch.where(oh, 0, torch.clamp(first[nxt[j]] + 1, max=T)).to(torch.int32)
        key = count * (T + 1) - first  # most votes, then earliest reached
        out[j] = key.argmax(1)
    return values[out].reshape(T, h, w).to(device=labels.device, dtype=torch.long)


#: how the authors' tracking turns a start cell into a fraction and back (:func:`compat_start_index`)
START_ARITHMETIC = ("device", "cuda", "cpu", "exact")


def resolve_start_arithmetic(start: str, device) -> str:
    """``"device"`` (the default) -> the arithmetic the authors' code has on the device the tracking runs on:
    ``"cpu"`` on a CPU, ``"cuda"`` elsewhere; any other choice is returned as it is."""
    if start not in START_ARITHMETIC:
        raise InputError(f"Unknown start-cell arithmetic {start!r}.", f"Use one of {', '.join(START_ARITHMETIC)}.")
    if start != "device":
        return start
    return "cpu" if torch.device(device if device is not None else "cpu").type == "cpu" else "cuda"


def compat_start_index(side: int, arithmetic: str = "cpu") -> torch.Tensor:
    """``[side]`` int64: the row (or column) that track slot ``i`` of a grid side really starts from.

    The authors' tracking turns every cell coordinate ``i`` of a side of ``side`` cells into a float32
    fraction and back, ``int((i / side) * side)`` on 0-d torch tensors; the round trip can land one ulp
    below ``i`` and truncate to ``i - 1``.  That cell then starts two identical tracks (the second in slot
    ``i``, where "last track wins" counts it) and cell ``i`` starts none.  Where it happens depends on the
    division:

    * ``"cuda"`` (their code runs the tracking on the GPU by default): torch's CUDA kernel divides by a
      Python number as ``i * float32(1 / side)``; e.g. sides 25 (rows 5, 10, 15, 20, 23), 31, 41, 43, 47,
      49, 50 skip cells, 28 and 52 (the 832 x 448 grid) and 44 none;
    * ``"cpu"``: the correctly rounded float32 ``i / side`` of the CPU; e.g. side 22 (row 13), 44
      (rows 13, 26; a 1280 x 720 video), 23, 29, 37, 38, 41, 46, 47, 54, 56;
    * ``"exact"``: every cell starts its own track;
    * ``"device"``: ``"cpu"`` here; :func:`compat_trajectories` resolves it by the features' device, so the
      refiner matches the authors' code run on the same device.
    """
    arithmetic = resolve_start_arithmetic(arithmetic, "cpu")
    i = torch.arange(int(side), dtype=torch.int64)
    if arithmetic == "exact" or side < 1:
        return i
    x = i.to(torch.float32)
    side32 = torch.tensor(float(side), dtype=torch.float32)
    frac = x / side32 if arithmetic == "cpu" else x * torch.tensor(1.0 / side, dtype=torch.float32)
    return (frac * side32).to(torch.int64)  # float32 product, truncated like int()


def compat_start_cells(h: int, w: int, arithmetic: str = "cpu", device=None) -> torch.Tensor:
    """``[h*w]`` flat start cell of every track slot (slots in raster order), see :func:`compat_start_index`."""
    rows = compat_start_index(h, arithmetic)
    cols = compat_start_index(w, arithmetic)
    return (rows[:, None] * w + cols[None, :]).reshape(-1).to(device)


def compat_trajectories(features: torch.Tensor, dtype=torch.float32, start: str = "device") -> torch.Tensor:
    """Authors' tracking (docs/design/authors_code.md#correspondence-based-refinement-cbr-as-published): cell index per frame ``[T, h*w]`` of the track slots of frame 0
    (start cells per :func:`compat_start_cells`, static first hop, frame-0 aux term, global argmax)."""
    T, h, w, C = features.shape
    n = h * w
    fn = _normalise(features, dtype).reshape(T, n, C)
    pos = torch.empty(T, n, dtype=torch.long, device=features.device)
    pos[0] = compat_start_cells(h, w, resolve_start_arithmetic(start, features.device), features.device)
    if T >= 2:
        pos[1] = pos[0]  # t = 0: weight 0 on frame 1, argmax of frame-0 self-similarity = p_0
    for t in range(1, T - 1):
        src = fn[t][pos[t]]
        sim = (t / (t + 1)) * (src @ fn[t + 1].T) + (1 / (t + 1)) * (src @ fn[0].T)
        pos[t + 1] = sim.argmax(1)
    return pos


def cbr_refine_compat(labels: torch.Tensor, features: torch.Tensor, jump_threshold: int = 1,
                      signed: bool = True, dtype=torch.float32, start: str = "device") -> torch.Tensor:
    """The authors' CBR (docs/design/authors_code.md#correspondence-based-refinement-cbr-as-published), exactly: see the module docstring.  ``start``: the arithmetic of
    their start cells (:func:`compat_start_index`; ``"exact"``: every cell starts one track)."""
    _check(labels, features)
    if start not in START_ARITHMETIC:
        raise InputError(f"Unknown start-cell arithmetic {start!r}.", f"Use one of {', '.join(START_ARITHMETIC)}.")
    T, h, w = labels.shape
    dev = features.device
    if T == 1:
        return labels.to(torch.long).clone()
    pos = compat_trajectories(features, dtype, start)  # [T, n]
    n = h * w
    y, x = pos // w, pos % w
    dy, dx = y[1:] - y[:-1], x[1:] - x[:-1]
    if not signed:
        dy, dx = dy.abs(), dx.abs()
    alive = ~((dy > jump_threshold) | (dx > jump_threshold)).any(0)  # [n]
    values, idx = _compact(labels.to(dev))
    L = values.numel()
    idx = idx.reshape(T, n)
    along = torch.gather(idx, 1, pos)  # [T, n] label index met by trajectory n in frame t
    oh = one_hot_mask(along, L)  # [T, n, L]
    count = oh.sum(0)
    tt = torch.arange(T, device=dev)[:, None, None]
    first = torch.where(oh, tt, T).amin(0)
    vote = (count * (T + 1) - first).argmax(1)  # [n]; ties -> first reached in frame order
    out = idx.clone()
    src = torch.where(alive, torch.arange(n, device=dev), -1)  # dropped trajectories bid -1: they never win
    for t in range(T):  # last trajectory (raster order of its slot) wins on converging cells
        winner = torch.full((n,), -1, dtype=torch.long, device=dev)
        winner.scatter_reduce_(0, pos[t], src, reduce="amax", include_self=True)
        out[t] = torch.where(winner >= 0, vote[winner.clamp(min=0)], out[t])  # no boolean indexing: no sync
    return values[out].reshape(T, h, w).to(device=labels.device, dtype=torch.long)
