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


def test_compiled_pipeline_gives_the_eager_labels_and_keeps_every_sharing_path():
    bb = load_backbone("tiny-sd")
    frames = _frames()
    # attention sharing forced on (the CPU default needs >= 8 runs; here 7): the swapped processors run too
    settings = _settings(share_attention=True)
    eager, _ = segment_video(bb, frames, settings)
    from vidseg_core.upsample import MaskedModulationUpsampler

    seen = {}
    original = MaskedModulationUpsampler.upsample

    def spy(self, *a, **k):
        out = original(self, *a, **k)
        seen.update(self.last_result.stats)
        return out

    dynamo.reset()
    from torch._dynamo.utils import counters

    counters.clear()
    state = compile_backbone(bb, backend="aot_eager")
    try:
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
        # the only graph breaks are the hookable attention modules kept eager on purpose
        assert counters["graph_break"]
        assert all("torch.compiler.disable" in reason for reason in counters["graph_break"])
    finally:
        uncompile_backbone(bb)
        dynamo.reset()
        import gc

        gc.collect()
    assert all(m._compiled_call_impl is None for m in regions(bb).values())


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
