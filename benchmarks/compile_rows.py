"""Dynamo graphs compiled per ``modulate_batch`` call as SD's compacted rows change the UNet batch size.

Compacted rows (``vidseg_core/modulation/rows.py``) denoise only the present
(label, frame) pairs, so the UNet batch differs from chunk to chunk and batch to
batch.  This compiles tiny-sd with dynamo's ``aot_eager`` backend (tracing and
guards as inductor, no C compiler needed) and prints, per call, the row count,
the chunks, the graphs dynamo compiled during the call
(``counters["stats"]["unique_graphs"]``), whether the labels equal eager, and
the recompile-limit hits.  Bounded compilation means 0 new graphs for new row
counts once a couple of batch sizes have been seen.  Figures in
``docs/benchmarks.md`` (torch.compile).

    python benchmarks/compile_rows.py [--frames 4]
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidseg_core.backbones import load_backbone  # noqa: E402
from vidseg_core.compile import compile_backbone  # noqa: E402
from vidseg_core.features import prepare_batch  # noqa: E402
from vidseg_core.modulation import ModulationSettings, modulate_batch  # noqa: E402
from vidseg_core.modulation.reference import reference_pass  # noqa: E402


def coarse_map(T: int, present2: int, present3: int) -> torch.Tensor:
    """Labels 0, 1 in every frame, label 2 in the first ``present2`` frames, 3 in the last ``present3``."""
    c = torch.zeros(T, 4, 8, dtype=torch.long)
    c[:, :, 4:] = 1
    c[:present2, :2, :2] = 2
    if present3:
        c[T - present3:, 2:, 6:] = 3
    return c


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=4, help="frames per batch (>= 4: six distinct row counts)")
    args = ap.parse_args(argv)
    T = args.frames
    import torch._dynamo as dynamo
    from torch._dynamo.utils import counters

    bb = load_backbone("tiny-sd")
    with torch.inference_mode():
        inputs = prepare_batch(bb, torch.rand(T, 64, 128, 3, generator=torch.Generator().manual_seed(1)))
        _, _, store = reference_pass(bb, inputs)
    pairs = [(1, 0), (1, 1), (2, 1), (2, 2), (3, 2), (3, 3)]
    cases = [(coarse_map(T, a, b), {}, store) for a, b in pairs]  # one chunk each: 2·(2T + a + b) rows
    cases += [(coarse_map(T, 1, 0), dict(max_runs_per_chunk=1), store),
              (coarse_map(T, 3, 1), dict(max_runs_per_chunk=1), store),
              (coarse_map(T, 2, 1), dict(max_runs_per_chunk=2), None),  # the reference store built in the call
              (coarse_map(T, 3, 2), dict(reference_pass="repeat", max_runs_per_chunk=2), None)]
    eager = [modulate_batch(bb, inputs, c, None, None, ModulationSettings(**kw), reference_store=s)
             for c, kw, s in cases]
    dynamo.reset()
    counters.clear()
    state = compile_backbone(bb, backend="aot_eager")
    total = 0
    print(f"tiny-sd, {T} frames 64x128, aot_eager, torch {torch.__version__}")
    print("rows | chunks | store | new graphs | labels = eager | seconds")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimeWarning)
        for (c, kw, s), e in zip(cases, eager):
            t0, before = time.perf_counter(), counters["stats"]["unique_graphs"]
            r = modulate_batch(bb, inputs, c, None, None, ModulationSettings(**kw), reference_store=s)
            new = counters["stats"]["unique_graphs"] - before
            total += new
            where = "given" if s is not None else r.stats["reference_pass"]
            print(f"{r.stats['compacted_rows']} | {r.stats['chunks']} | {where} | {new} | "
                  f"{torch.equal(r.labels, e.labels)} | {time.perf_counter() - t0:.1f}", flush=True)
    print(f"graphs in all: {total}; recompile-limit hits: {state.limit_hits}; "
          f"RuntimeWarnings: {[str(w.message)[:120] for w in caught]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
