"""Interleaved, repeated timing: the one helper every timing benchmark uses.

The project's rule for speed figures: both sides of a ratio measure the same
scope, each side is repeated at least 3 times in *interleaved* order, and the
spread is reported.  :func:`time_cases` runs the cases in rounds whose order
alternates direction (``A B C``, ``C B A``, ``A B C`` ...; for two cases this is
A-B-B-A-A-B), so a slow drift of the machine (another job starting, thermal or
frequency changes) falls on every case alike instead of on whichever ran last.

Each sample records wall time, process CPU time (all threads) and, on CUDA,
the time between two CUDA events and the peak memory allocated by torch.  On
CUDA the device is synchronised before and after every sample, so wall times
are GPU-synchronised.  A ratio between two cases is given per round (the two
samples of one round ran next to each other) as the median and min-max of
those paired ratios.
"""
from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import torch


@dataclass
class Samples:
    """The repeated samples of one case (seconds; ``per`` divides them, e.g. frames for s/frame)."""

    name: str
    wall: List[float] = field(default_factory=list)
    cpu: List[float] = field(default_factory=list)
    device: List[float] = field(default_factory=list)  # CUDA event time (empty off CUDA)
    peak_mb: List[float] = field(default_factory=list)  # CUDA peak allocated (empty off CUDA)
    per: float = 1.0

    @property
    def n(self) -> int:
        return len(self.wall)

    def median(self, what: str = "wall") -> float:
        return statistics.median(getattr(self, what)) / self.per

    def low(self, what: str = "wall") -> float:
        return min(getattr(self, what)) / self.per

    def high(self, what: str = "wall") -> float:
        return max(getattr(self, what)) / self.per

    def text(self, what: str = "wall", digits: int = 3) -> str:
        """``"1.234 (1.200-1.300)"``: median and min-max."""
        return f"{self.median(what):.{digits}f} ({self.low(what):.{digits}f}-{self.high(what):.{digits}f})"

    def to_dict(self) -> dict:
        d = {"name": self.name, "n": self.n, "per": self.per, "wall": self.wall, "cpu": self.cpu,
             "median": self.median(), "min": self.low(), "max": self.high(), "cpu_median": self.median("cpu")}
        if self.device:
            d.update(device=self.device, device_median=self.median("device"))
        if self.peak_mb:
            d.update(peak_mb=self.peak_mb, peak_mb_max=max(self.peak_mb))
        return d


def round_order(names: Sequence[str], repeats: int) -> List[List[str]]:
    """The rounds: forward, reversed, forward, ... (A B, B A, A B for two cases)."""
    names = list(names)
    return [names if r % 2 == 0 else names[::-1] for r in range(repeats)]


def _sync(device: Optional[torch.device]) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: Optional[torch.device] = None):
    """``(result, wall, cpu, device_seconds or None, peak_mb or None)`` of one call, GPU-synchronised on CUDA."""
    cuda = device is not None and device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    if cuda:
        end.record()
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    if cuda:
        return out, wall, cpu, start.elapsed_time(end) / 1000.0, torch.cuda.max_memory_allocated(device) / 2 ** 20
    return out, wall, cpu, None, None


def time_cases(cases: Dict[str, Callable[[], object]], repeats: int = 3, per: float = 1.0,
               device: Optional[torch.device] = None, warmup: bool | Callable[[], object] = True,
               log: Optional[Callable[[str], None]] = None, keep: Iterable[str] = ()):
    """Time every case ``repeats`` times in alternating rounds (see the module doc).

    ``warmup``: ``True`` runs every case once untimed first; a callable is run
    once instead (e.g. a small input); ``False`` none.  ``keep``: names whose
    last result is returned.  Returns ``(samples by name, last results of keep)``.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    if callable(warmup):
        warmup()
    elif warmup:
        for name, fn in cases.items():
            fn()
            if log:
                log(f"  warm-up {name} done")
    samples = {name: Samples(name, per=per) for name in cases}
    results: Dict[str, object] = {}
    keep = set(keep)
    for r, order in enumerate(round_order(list(cases), repeats)):
        for name in order:
            out, wall, cpu, dev, peak = time_once(cases[name], device)
            s = samples[name]
            s.wall.append(wall)
            s.cpu.append(cpu)
            if dev is not None:
                s.device.append(dev)
                s.peak_mb.append(peak)
            if name in keep:
                results[name] = out
            del out
            if log:
                log(f"  round {r + 1}/{repeats} {name}: {wall / per:.3f} s wall, {cpu / per:.3f} s CPU"
                    + (f" per {per:g}" if per != 1 else ""))
    return samples, results


def paired_ratios(slow: Samples, fast: Samples, what: str = "wall") -> List[float]:
    """``slow / fast`` of each round (the two samples taken next to each other)."""
    a, b = getattr(slow, what), getattr(fast, what)
    return [x * fast.per / (y * slow.per) for x, y in zip(a, b) if y > 0]


def ratio_text(slow: Samples, fast: Samples, what: str = "wall") -> str:
    """``"1.12x (1.08-1.16)"``: median and min-max of the paired ratios (how many times ``fast`` is faster)."""
    r = paired_ratios(slow, fast, what)
    if not r:
        return "n/a"
    return f"{statistics.median(r):.2f}x ({min(r):.2f}-{max(r):.2f})"
