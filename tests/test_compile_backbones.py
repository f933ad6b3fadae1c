"""torch.compile over every backbone (``vidseg_core/compile.py``), the ComfyUI adapter included.

* one contract for every backbone: its compiled regions are disjoint blocks of its UNet and VAE holding
  (almost) all of the UNet's weights, the VAE's encoder and decoder among them, and every hook call happens
  inside one of its exclusions (what compilation keeps out of its graphs);
* the ComfyUI adapter (``nodes/comfy_adapters/native_base.py``) compiles ComfyUI's own blocks, active only during
  VidSeg's calls (the MODEL is shared with ComfyUI's samplers), with the eager labels and no recompilation
  on a second batch;
* the nodes: ``VidSeg Model from ComfyUI`` honours a TorchCompileModel node on the MODEL ("auto"), the
  loader's ``compile`` input.

Dynamo's ``eager`` backend (tracing, guards and graph breaks, no code generation) keeps this fast.
"""
from __future__ import annotations

import logging
import sys
import warnings

import pytest
import torch

from tests.helpers.comfy_standin import native_backbone, standin_sd
from tools.pack_loader import load_pack
from vidseg_core.backbones import AttentionHook, load_backbone

dynamo = pytest.importorskip("torch._dynamo")
PACK = load_pack()
NODES = PACK.nodes.NODE_CLASS_MAPPINGS
core = PACK.vidseg_core  # the adapter imports the core under the pack's name: its exceptions are those
BACKBONES = ["tiny-sd", "tiny-svd", "comfy-ldm-tiny-sd", "comfy-ldm-tiny-svd"]


def _backbone(name: str):
    if name.startswith("comfy-ldm-"):
        return native_backbone(name[len("comfy-ldm-"):], ldm=True)
    return load_backbone(name, device="cpu", precision="fp32")


def _frames(t=2, h=64, w=128, seed=3):
    return torch.rand(t, h, w, 3, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", BACKBONES)
@torch.inference_mode()
def test_compile_plan_contract(name):
    bb = _backbone(name)
    regions = bb.compile_regions()
    assert {"vae.encoder", "vae.decoder"} <= set(regions)
    assert regions["vae.encoder"] is bb.vae.encoder and regions["vae.decoder"] is bb.vae.decoder
    seen = set()
    for rname, module in regions.items():
        ids = {id(p) for p in module.parameters()}
        assert ids and not ids & seen, f"{rname} is empty or overlaps another region"
        seen |= ids
    unet = list(bb.unet.parameters())
    share = sum(p.numel() for p in unet if id(p) in seen) / sum(p.numel() for p in unet)
    assert share > 0.9, f"the regions hold only {share:.0%} of the UNet's weights"

    # every hook call runs inside an exclusion's forward, replaced as compile_backbone replaces it
    exclusions = bb.compile_exclusions()
    assert exclusions and all(callable(getattr(type(o), "forward", None)) for o in exclusions.values())
    depth = [0]

    def boundary(obj):
        inner = type(obj).forward.__get__(obj)

        def forward(*args, **kwargs):
            depth[0] += 1
            try:
                return inner(*args, **kwargs)
            finally:
                depth[0] -= 1
        return forward

    class Spy(AttentionHook):
        def __init__(self):
            self.depths = []

        def wants(self, layer, ctx):
            self.depths.append(depth[0])
            return False

    spy = Spy()
    bb.install_processors()
    for obj in exclusions.values():
        obj.forward = boundary(obj)
    try:
        gen = bb.generator(1)
        prepared = bb.prepare_frames(_frames())
        z0, cond = bb.encode(prepared, gen), bb.condition(prepared, gen)
        step = bb.config.modulation_step
        with bb.hooks(spy):
            bb.denoised(bb.add_noise(z0, step, bb.randn(tuple(z0.shape), gen))[None], step, cond)
    finally:
        for obj in exclusions.values():
            obj.__dict__.pop("forward", None)
    assert len(spy.depths) >= len(bb.attention_layers()) and all(d > 0 for d in spy.depths), spy.depths


def _coarse(inputs, labels: int, one_frame: bool):
    """``labels`` vertical bands in every frame (whole runs, 1 + 2 x labels of them), plus a label in the first
    frame only (compacted rows) when ``one_frame``."""
    lh, lw = inputs.latent_hw
    c = (torch.arange(lw // 2) * labels // (lw // 2)).expand(inputs.z0.shape[0], lh // 2, lw // 2).clone()
    if one_frame:
        c[0, :2, :2] = labels
    return c


def test_native_compiled_blocks_run_only_in_vidsegs_calls_and_give_the_eager_labels():
    """ComfyUI's UNet and VAE blocks compiled, installed only around the adapter's own UNet / VAE calls: the
    modulation's labels and maps equal eager (prefix sharing and its check included), a third batch size
    compiles nothing (its run count differs too: ``cond_or_uncond``, 2 x runs long, is not in the options
    without a foreign patch), and the MODEL's modules are left as they were (ComfyUI's samplers run them
    eagerly)."""
    from torch._dynamo.utils import counters

    dynamo.reset()
    counters.clear()
    eager, bb = native_backbone("tiny-sd", ldm=True), native_backbone("tiny-sd", ldm=True)
    state = core.compile.compile_backbone(bb, backend="eager")
    regions = bb.compile_regions()
    assert state.active and bb.compile_scoped and len(state.regions) == len(regions)
    assert len(state.excluded) == len(bb.compile_exclusions())
    during = []

    class Spy(AttentionHook):
        def wants(self, layer, ctx):
            during.append(sum(m._compiled_call_impl is not None for m in regions.values()))
            return False

    settings = core.modulation.ModulationSettings(return_difference_maps=True)
    frames = _frames()
    with torch.inference_mode():
        ins_e, ins_c = core.features.prepare_batch(eager, frames), core.features.prepare_batch(bb, frames)
        assert torch.equal(ins_e.z0, ins_c.z0)
        graphs = []
        for coarse in (_coarse(ins_e, 3, True), _coarse(ins_e, 2, False), _coarse(ins_e, 4, False)):
            want = core.modulation.modulate_batch(eager, ins_e, coarse, None, None, settings)
            before = counters["stats"]["unique_graphs"]
            with warnings.catch_warnings():
                warnings.simplefilter("error", RuntimeWarning)  # a fallback or a recompile-limit hit would warn
                with bb.hooks(Spy()):
                    got = core.modulation.modulate_batch(bb, ins_c, coarse, None, None, settings)
            graphs.append(counters["stats"]["unique_graphs"] - before)
            assert torch.equal(got.labels, want.labels)
            torch.testing.assert_close(got.difference_maps, want.difference_maps, rtol=0, atol=1e-6)
            assert got.stats["prefix"]["prefix"] >= 1
    assert graphs[0] > len(regions) // 2 and graphs[2] == 0, graphs
    assert during and all(n == len(regions) for n in during)
    assert all(m._compiled_call_impl is None for m in regions.values())  # the MODEL as it was
    assert state.active and not state.limit_hits
    core.compile.uncompile_backbone(bb)
    dynamo.reset()


def test_the_scope_leaves_a_block_someone_else_compiled_alone():
    bb = native_backbone("tiny-sd", ldm=True)

    def passthrough(fn, **kwargs):
        return fn

    original = torch.compile
    torch.compile = passthrough
    try:
        state = core.compile.compile_backbone(bb, backend="eager")
    finally:
        torch.compile = original
    regions = list(bb.compile_regions().values())
    theirs = object()
    regions[0]._compiled_call_impl = theirs
    with core.compile.compiled_scope(bb):
        with core.compile.compiled_scope(bb):  # re-entrant
            assert regions[0]._compiled_call_impl is theirs
            assert all(m._compiled_call_impl is not None for m in regions[1:])
        assert all(m._compiled_call_impl is not None for m in regions[1:])
    assert regions[0]._compiled_call_impl is theirs
    assert all(m._compiled_call_impl is None for m in regions[1:])
    assert state.active
    regions[0]._compiled_call_impl = None


def test_a_dropped_backbone_takes_its_log_watcher_with_it(monkeypatch):
    import gc

    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    handlers = logging.getLogger("torch._dynamo").handlers
    bb = native_backbone("tiny-sd", ldm=True)
    core.compile.compile_backbone(bb, backend="eager")
    watcher = bb.compiled.watcher
    assert watcher in handlers
    del bb
    gc.collect()
    assert watcher not in handlers


def test_comfys_interrupt_through_a_compiled_block_is_a_cancel_not_a_compile_failure(monkeypatch):
    mm = sys.modules["comfy.model_management"]
    bb = native_backbone("tiny-sd", ldm=True)
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: fn)
    state = core.compile.compile_backbone(bb, backend="eager")
    name, module = next(iter(bb.compile_regions().items()))
    eager_runs = []
    monkeypatch.setattr(module, "_call_impl", lambda *a, **k: eager_runs.append(1))

    def cancelled(*a, **k):
        raise mm.InterruptProcessingException()

    bb.compiled.calls[name].compiled = cancelled
    with pytest.raises(mm.InterruptProcessingException), core.compile.compiled_scope(bb):
        module(torch.zeros(1))
    assert state.active and not eager_runs  # re-raised as it is: no eager re-run, compilation stays on
    core.compile.uncompile_backbone(bb)


# ------------------------------------------------------------------ nodes
def _convert(model, vae, clip, **kw):
    cls = NODES["VidSegModelFromComfy"]
    with torch.inference_mode():
        return getattr(cls(), cls.FUNCTION)(model=model, vae=vae, clip=clip, **kw)[0].backbone


def _torch_compile_model(model, backend):
    """What ComfyUI's TorchCompileModel node leaves on a MODEL (comfy_api.torch_helpers, v0.3.64)."""
    model.wrappers = {"apply_model": {"torch.compile": [lambda executor, *a, **k: executor(*a, **k)]}}
    model.model_options["torch_compile_kwargs"] = {"backend": backend, "options": None, "mode": None,
                                                   "fullgraph": False, "dynamic": None}


def test_model_from_comfy_honours_torch_compile_model(caplog, monkeypatch):
    model, clip, vae = standin_sd(ldm=True)
    said = lambda: [r.getMessage() for r in caplog.records if "ComfyUI's samplers apply" in r.getMessage()]  # noqa: E731
    with caplog.at_level(logging.INFO, logger="vidseg"):
        assert getattr(_convert(model, vae, clip), "compiled", None) is None  # auto, nothing asked: eager
        _torch_compile_model(model, "eager")
        model.model_options["sampler_cfg_function"] = lambda args: args["cond"]
        bb = _convert(model, vae, clip)  # auto: TorchCompileModel's request, VidSeg's way
        assert bb.compiled.state.active and bb.compiled.state.backend == "eager"
        assert len(said()) == 1 and "torch.compile" not in said()[0] and "sampler_cfg_function" in said()[0]
        assert any("compiled regionally" in r.getMessage() for r in caplog.records)
        caplog.clear()
        assert getattr(_convert(model, vae, clip, compile="off"), "compiled", None) is None
        assert len(said()) == 1 and "apply_model wrapper 'torch.compile'" in said()[0]
        assert "honoured only with compile 'auto' / 'on'" in said()[0]
    core.compile.uncompile_backbone(bb)

    # "on" without TorchCompileModel: inductor's defaults (not compiled here: recorded)
    asked = []
    module = sys.modules[PACK.__name__ + ".nodes.model_from_comfy"]
    monkeypatch.setattr(module, "compile_backbone", lambda bb, **kw: asked.append(kw) or core.compile.CompileState(
        kw["backend"], kw["mode"]))
    plain, clip, vae = standin_sd(ldm=True)
    _convert(plain, vae, clip, compile="on")
    assert asked == [{"backend": "inductor", "mode": None, "dynamic": None, "options": None}]
    with pytest.raises(PACK.vidseg_core.errors.InputError, match="compile choice"):
        _convert(plain, vae, clip, compile="always")


def test_model_from_comfy_on_a_unet_of_unknown_layout_stays_eager_and_says_why(caplog):
    model, clip, vae = standin_sd()  # a diffusers UNet behind ComfyUI's MODEL: not ComfyUI's block layout
    _torch_compile_model(model, "eager")
    with pytest.warns(RuntimeWarning, match="not ComfyUI's UNetModel layout"):
        with caplog.at_level(logging.WARNING, logger="vidseg"):
            bb = _convert(model, vae, clip)
    assert not bb.compiled.state.active
    # the request was handled (the warning says why it runs eagerly): not also listed as an unused wrapper
    assert not [r for r in caplog.records if "torch.compile" in r.getMessage()]


def test_loader_compile_input(monkeypatch):
    module = sys.modules[PACK.__name__ + ".nodes.load_model"]
    asked = []
    monkeypatch.setattr(module, "compile_backbone", lambda bb, **kw: asked.append(bb))
    node = NODES["VidSegLoadModel"]()
    assert NODES["VidSegLoadModel"].INPUT_TYPES()["optional"]["compile"][1]["default"] == "off"
    node.load("tiny-sd", "fp32", "cpu")
    assert asked == []
    (handle,) = node.load("tiny-sd", "fp32", "cpu", compile="on")
    assert asked == [handle.backbone]
    with pytest.raises(PACK.vidseg_core.errors.InputError, match="compile"):
        node.load("tiny-sd", "fp32", "cpu", compile="sometimes")
