"""Small tensor helpers that never make the host wait for the device.

``torch.nn.functional.one_hot`` reads ``min()``/``max()`` of its input on the
host on every device but CUDA, and a ``topk`` followed by a tie check needs a
host decision; these helpers give the same results with device-side work only,
so loops over chunks, frames or iterations stay free of synchronisations on
any accelerator (checked on the CPU by ``tests/helpers/sync_counter.py``).
"""
from __future__ import annotations

import torch


def one_hot_mask(idx: torch.Tensor, n: int) -> torch.Tensor:
    """``idx [...]`` integers in ``0..n-1`` -> bool ``[..., n]`` (``one_hot(idx, n).bool()`` without its checks)."""
    return idx.unsqueeze(-1) == torch.arange(n, device=idx.device)


def smallest_k(d: torch.Tensor, k: int, sync_free: bool = True) -> torch.Tensor:
    """Column indices ``[m, k]`` of the ``k`` smallest entries of every row of ``d [m, n]`` (finite, >= 0),
    ordered by ``(value, index)``: equal values go to the smallest index.

    ``sync_free`` ranks float32 rows (16-bit ones widened exactly) by one int64 key per entry,
    ``bits(value) * n + index`` (the IEEE bits of a non-negative float order like the floats), float64 rows
    by a stable sort: all on the device.  Otherwise a float ``topk(k + 1)`` and, only when the host sees a
    tie at the k-th value, an exact fix of those rows: 5x cheaper on the CPU, where host reads are free.
    Both give the same indices.
    """
    n = int(d.shape[1])
    if sync_free:
        if d.dtype == torch.float64:
            return torch.sort(d, dim=1, stable=True).indices[:, :k]
        bits = (d.float() + 0.0).view(torch.int32)  # + 0.0 turns -0.0 into +0.0
        key = bits.to(torch.int64).mul_(n).add_(torch.arange(n, device=d.device))
        return key.topk(k, dim=1, largest=False, sorted=True).indices
    kk = min(k + 1, n)  # one more to detect ties at the k-th value
    vals, idx = d.topk(kk, dim=1, largest=False, sorted=True)
    idx = _order_by_value_then_index(d, idx[:, :k])  # topk orders equal values arbitrarily
    if kk > k and bool((vals[:, k] == vals[:, k - 1]).any()):  # the k-th value continues past the top k
        rows = torch.nonzero(vals[:, k] == vals[:, k - 1]).flatten()
        idx[rows] = smallest_k(d[rows], k, sync_free=True)
    return idx


def _order_by_value_then_index(d: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Reorder the ``[m, k]`` column indices ``idx`` of ``d`` by ``(value, index)`` (a k-wide sort)."""
    idx = torch.sort(idx, dim=1).values
    order = torch.sort(torch.gather(d, 1, idx), dim=1, stable=True).indices
    return torch.gather(idx, 1, order)
