"""Straightforward per-cell / per-trajectory Python-loop CBR, the oracle for ``vidseg_core.cbr``.

Written literally from paper Eqs 3-5 (``cbr_loop``) and from docs/design/authors_code.md#correspondence-based-refinement-cbr-as-published
(``cbr_compat_loop``), one cell and one trajectory at a time, with the same
documented tie rules as the vectorised code:

* correspondence argmax ties -> smallest raster index of the target cell
  (strict ``>`` while scanning candidates in raster order);
* label votes -> ``collections.Counter.most_common(1)`` over the labels in
  trajectory order, i.e. ties go to the label reached first.
"""
from __future__ import annotations

import math
from collections import Counter

import torch


def _normalise(features, dtype):
    f = features.to(dtype)
    return f / f.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def correspondence_loop(features, radius_sq=2, dtype=torch.float32):
    """Eq 3, one cell at a time: list over j of dict-free flat lists ``nxt[j][p] -> q``."""
    T, h, w, _ = features.shape
    fn = _normalise(features, dtype)
    r = h + w if radius_sq is None else int(math.floor(math.sqrt(radius_sq)))
    nxt = []
    for j in range(T - 1):
        row = []
        for y in range(h):
            for x in range(w):
                src = fn[j, y, x]
                best, best_q = None, None
                for qy in range(max(0, y - r), min(h, y + r + 1)):
                    for qx in range(max(0, x - r), min(w, x + r + 1)):
                        if radius_sq is not None and (qy - y) ** 2 + (qx - x) ** 2 > radius_sq:
                            continue
                        s = float((src * fn[j + 1, qy, qx]).sum())
                        if best is None or s > best:
                            best, best_q = s, qy * w + qx
                row.append(best_q)
        nxt.append(row)
    return nxt


def cbr_loop(labels, features, radius_sq=2, dtype=torch.float32):
    """Paper Eqs 3-5, one trajectory at a time."""
    T, h, w = labels.shape
    lab = labels.reshape(T, h * w).tolist()
    nxt = correspondence_loop(features, radius_sq, dtype)
    out = [row[:] for row in lab]
    for j in range(T):
        for p in range(h * w):
            path = [lab[j][p]]
            q = p
            for k in range(j, T - 1):  # TRACK(p, j, k+1)
                q = nxt[k][q]
                path.append(lab[k + 1][q])
            out[j][p] = Counter(path).most_common(1)[0][0]
    return torch.tensor(out, dtype=torch.long).reshape(T, h, w)


def cbr_compat_loop(labels, features, jump_threshold=1, signed=True, dtype=torch.float64, starts=None):
    """The authors' variant (docs/design/authors_code.md#correspondence-based-refinement-cbr-as-published), one trajectory at a time; ``starts``: the start cell of every
    track slot in raster order (None: every cell starts its own)."""
    T, h, w = labels.shape
    n = h * w
    fn = _normalise(features, dtype).reshape(T, n, -1)
    lab = labels.reshape(T, n).tolist()
    out = [row[:] for row in lab]
    if T == 1:
        return labels.clone().long()
    for p0 in (range(n) if starts is None else starts):
        path = [p0, p0]  # static first hop
        for t in range(1, T - 1):
            src = fn[t][path[-1]]
            sim = (t / (t + 1)) * (fn[t + 1] @ src) + (1 / (t + 1)) * (fn[0] @ src)
            best, best_q = None, None
            for q in range(n):
                s = float(sim[q])
                if best is None or s > best:
                    best, best_q = s, q
            path.append(best_q)
        ok = True
        for t in range(1, T):
            dy = path[t] // w - path[t - 1] // w
            dx = path[t] % w - path[t - 1] % w
            if not signed:
                dy, dx = abs(dy), abs(dx)
            if dy > jump_threshold or dx > jump_threshold:
                ok = False
                break
        if not ok:
            continue
        vote = Counter(lab[t][path[t]] for t in range(T)).most_common(1)[0][0]
        for t in range(T):
            out[t][path[t]] = vote
    return torch.tensor(out, dtype=torch.long).reshape(T, h, w)
