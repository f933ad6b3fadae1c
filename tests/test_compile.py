"""Optional torch.compile of the backbone (``vidseg_core/compile.py``): same labels as eager, nothing silently
disabled (prefix sharing, attention sharing and the feature pass's early exit all run through the compiled
blocks), and an eager fallback with a warning when compilation fails.

The equality test uses dynamo's ``aot_eager`` backend (tracing, guards, graph breaks and AOT autograd like
inductor, without generating C++), so it needs no C compiler and stays fast.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from vidseg_core.backbones import load_backbone
from vidseg_core.compile import compile_backbone, inductor_available, regions, resolve_compile, uncompile_backbone
from vidseg_core.errors import InputError
from vidseg_core.modulation import ModulationSettings
from vidseg_core.pipeline import SegmentSettings, segment_video

dynamo = pytest.importorskip("torch._dynamo")


def _frames():
    g = torch.Generator().manual_seed(3)
    return torch.rand(3, 128, 192, 3, generator=g)


def _settings(**mod):
    return SegmentSettings(mode="quality", num_clusters=3, n_init=1, modulation=ModulationSettings(**mod))


@pytest.fixture(scope="module")
def compiled_sd():
    """One tiny-sd compiled with ``aot_eager`` for the tests below (compiling costs most of their time; dynamo's
    caches are per code object, so each test adds only the graphs its own shapes need)."""
    from torch._dynamo.utils import counters

    dynamo.reset()
    counters.clear()
    bb = load_backbone("tiny-sd")
    state = compile_backbone(bb, backend="aot_eager")
    yield bb, state
    uncompile_backbone(bb)
    dynamo.reset()
    import gc

    gc.collect()
    assert all(m._compiled_call_impl is None for m in regions(bb).values())


def test_compiled_pipeline_gives_the_eager_labels_and_keeps_every_sharing_path(compiled_sd):
    bb, state = compiled_sd
    frames = _frames()
    # attention sharing forced on (the CPU default needs >= 8 runs; here 7): the swapped processors run too
    settings = _settings(share_attention=True)
    eager, _ = segment_video(load_backbone("tiny-sd"), frames, settings)  # the same seeded weights, not compiled
    from vidseg_core.upsample import MaskedModulationUpsampler

    seen = {}
    original = MaskedModulationUpsampler.upsample

    def spy(self, *a, **k):
        out = original(self, *a, **k)
        seen.update(self.last_result.stats)
        return out

    from torch._dynamo.utils import counters

    assert state.active and len(state.regions) == len(regions(bb)) and state.excluded
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback or a recompile-limit hit would warn
        MaskedModulationUpsampler.upsample = spy
        try:
            compiled, _ = segment_video(bb, frames, settings)
        finally:
            MaskedModulationUpsampler.upsample = original
    assert torch.equal(compiled, eager)
    assert state.active and not state.limit_hits
    # the prefix driver took over at t_m with the compiled blocks (not the fallback forward)
    assert seen["prefix"]["prefix"] >= 1
    assert counters["stats"]["unique_graphs"] > len(state.regions) // 2  # the blocks really were compiled
    # the only graph breaks are the modules kept eager on purpose (hookable attention, the CPU feed-forward's
    # row loop)
    assert counters["graph_break"]
    # (torch 2.5 words it "call torch._dynamo.disable() wrapped function ...", newer torch "torch.compiler.disable")
    assert all("torch.compiler.disable" in reason or "torch._dynamo.disable()" in reason
               for reason in counters["graph_break"]), counters["graph_break"]


def _rows_coarse(present2: int, present3: int) -> torch.Tensor:
    """Coarse maps of ``_frames()`` (feature grid 8x12): labels 0 and 1 in every frame, label 2 in the first
    ``present2`` frames, label 3 in the last ``present3``: 2·(6 + present2 + present3) compacted rows."""
    c = torch.zeros(3, 8, 12, dtype=torch.long)
    c[:, :, 6:] = 1
    c[:present2, :3, :3] = 2
    c[3 - present3:, 5:, 9:] = 3
    return c


def test_compacted_rows_do_not_recompile_per_row_count(compiled_sd):
    """SD's compacted rows change the UNet batch from chunk to chunk and batch to batch: after the first two
    batch sizes (static, then dynamic shapes) a new row count compiles nothing (labels equal eager, no limit
    hit).  Before the feed-forward's row loop was kept out of the graph, every new row count recompiled."""
    from torch._dynamo.utils import counters

    from vidseg_core.features import prepare_batch
    from vidseg_core.modulation import modulate_batch
    from vidseg_core.modulation.reference import reference_pass

    bb, state = compiled_sd
    eager_bb = load_backbone("tiny-sd")
    with torch.inference_mode():
        inputs = prepare_batch(eager_bb, _frames())
        _, _, store = reference_pass(eager_bb, inputs)
    cases = [  # (coarse, settings, store given): two warm-up batches, then new row counts and chunkings
        (_rows_coarse(1, 0), {}, True),  # 14 rows in one chunk
        (_rows_coarse(1, 1), dict(max_runs_per_chunk=1), True),  # 16 rows in chunks of 3 (and 1)
        (_rows_coarse(2, 1), {}, True),  # 18 rows in one chunk
        (_rows_coarse(2, 2), dict(reference_pass="store", max_runs_per_chunk=2), False),  # store built, 20 rows by 6
    ]
    graphs, rows = [], []
    for coarse, kw, given in cases:
        st = ModulationSettings(**kw)
        ref = store if given else None
        eager = modulate_batch(eager_bb, inputs, coarse, None, None, st, reference_store=ref)
        before = counters["stats"]["unique_graphs"]
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # a fallback or a recompile-limit hit would warn
            res = modulate_batch(bb, inputs, coarse, None, None, st, reference_store=ref)
        graphs.append(counters["stats"]["unique_graphs"] - before)
        rows.append((res.stats["compacted_rows"], tuple(res.stats["chunks"])))
        assert torch.equal(res.labels, eager.labels)
    assert len({n for n, _ in rows}) == 4 and all(n is not None for n, _ in rows), rows
    assert state.active and not state.limit_hits
    assert graphs[2:] == [0] * (len(cases) - 2), (graphs, rows)


def test_failing_compilation_falls_back_to_eager_with_a_warning(monkeypatch):
    bb = load_backbone("tiny-sd")
    frames = _frames()
    settings = SegmentSettings(mode="fast", num_clusters=3, n_init=1)
    eager, _ = segment_video(bb, frames, settings)

    def broken_compile(fn, **kwargs):
        def run(*a, **k):
            raise RuntimeError("backend exploded")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    state = compile_backbone(bb, backend="inductor")
    with pytest.warns(RuntimeWarning, match="backend exploded"):
        labels, _ = segment_video(bb, frames, settings)
    assert torch.equal(labels, eager)
    assert not state.active and "backend exploded" in state.fallback
    assert all(m._compiled_call_impl is None for m in regions(bb).values())


def test_the_early_exit_exception_is_not_mistaken_for_a_compile_failure(monkeypatch):
    from vidseg_core.backbones.attention import CaptureComplete

    bb = load_backbone("tiny-sd")

    def passthrough_compile(fn, **kwargs):
        return fn

    monkeypatch.setattr(torch, "compile", passthrough_compile)
    state = compile_backbone(bb, backend="inductor")
    module = next(iter(regions(bb).values()))

    def raise_capture(*a, **k):
        raise CaptureComplete()

    module._compiled_call_impl.compiled = raise_capture
    with pytest.raises(CaptureComplete):
        module(torch.zeros(1))
    assert state.active
    uncompile_backbone(bb)


def test_no_c_compiler_means_eager_with_a_warning(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert "C compiler" in inductor_available(torch.device("cpu"))
    bb = load_backbone("tiny-sd")
    with pytest.warns(RuntimeWarning, match="C compiler"):
        state = compile_backbone(bb, backend="inductor")
    assert not state.active
    assert all(m._compiled_call_impl is None for m in regions(bb).values())


def test_compile_choice_is_checked():
    assert resolve_compile("on") and not resolve_compile("off") and not resolve_compile(None)
    with pytest.raises(InputError, match="compile"):
        resolve_compile("sometimes")
