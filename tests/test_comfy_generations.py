"""The ComfyUI adapter on both generations of ComfyUI's patcher and cancel (stand-ins, no ComfyUI).

ComfyUI 0.3.64: ``ModelPatcher.clone()`` deep-copies ``model_options``; ``InterruptProcessingException``
is an ``Exception``.  ComfyUI 0.33: ``clone(disable_dynamic=False, model_override=None,
force_deepcopy=False)`` copies only the dicts and lists of ``model_options`` (patch objects are shared);
``InterruptProcessingException`` is a ``BaseException``, so ``except Exception`` no longer catches a cancel.
On both: the adapter's results equal the pack's loader, the input MODEL is left as it was, and a cancel
stops a run as ComfyUI's own exception (never swallowed, never turned into another error).
"""
from __future__ import annotations

import sys

import pytest
import torch

from tests.helpers import comfy_standin
from tests.helpers.comfy_standin import standin_sd, standin_svd
from tools.pack_loader import load_pack, pack_nodes

PACK = load_pack()
NODES = pack_nodes(PACK)
mm = sys.modules["comfy.model_management"]
core = PACK.vidseg_core


class NewerInterrupt(BaseException):
    """ComfyUI 0.33's ``InterruptProcessingException`` (a ``BaseException``)."""


@pytest.fixture(params=["0.3.64", "0.33"])
def generation(request, monkeypatch):
    monkeypatch.setattr(comfy_standin.ModelPatcher, "generation", request.param)
    if request.param == "0.33":
        monkeypatch.setattr(mm, "InterruptProcessingException", NewerInterrupt)

        def throw():
            mm.interrupt_checks += 1
            if mm.processing_interrupted():
                raise NewerInterrupt()

        monkeypatch.setattr(mm, "throw_exception_if_processing_interrupted", throw)
    return request.param


def _frames(seed=0, t=2):
    return torch.rand(t, 64, 128, 3, generator=torch.Generator().manual_seed(seed))


def _handle(model, vae, **enc):
    cls = NODES["VidSegModelFromComfy"]
    with torch.inference_mode():
        return getattr(cls(), cls.FUNCTION)(model=model, vae=vae, **enc)[0]


def test_the_newer_clone_refuses_the_old_call_shape_and_back():
    model, _, _ = standin_sd()
    model.generation = "0.33"
    model.clone(disable_dynamic=False)
    model.generation = "0.3.64"
    with pytest.raises(TypeError):
        model.clone(disable_dynamic=False)


@pytest.mark.parametrize("family", ["sd", "svd"])
def test_fast_run_on_both_generations_equals_the_packs_loader(generation, family):
    model, enc, vae = standin_sd() if family == "sd" else standin_svd()
    kw = {"clip": enc} if family == "sd" else {"clip_vision": enc}
    before = repr(model.model_options)
    seg = NODES["VidSegSegmentVideo"]()
    with torch.inference_mode():
        ours = seg.segment(model=_handle(model, vae, **kw), frames=_frames(), num_clusters=3, mode="fast")
        load = NODES["VidSegLoadModel"]()
        pack = getattr(load, load.FUNCTION)(model=f"tiny-{family}")[0]
        theirs = seg.segment(model=pack, frames=_frames(), num_clusters=3, mode="fast")
    assert torch.equal(ours[1], theirs[1]), "the selected mask differs from the pack's loader"
    assert repr(model.model_options) == before  # the input MODEL is untouched (patches went to the clone)


def test_cancel_stops_a_native_quality_run_on_both_generations(generation):
    model, clip, vae = standin_sd()
    handle = _handle(model, vae, clip=clip)
    mm.interrupt_checks, mm.interrupt_after_checks = 0, 3
    try:
        with pytest.raises(mm.InterruptProcessingException) as info, torch.inference_mode():
            NODES["VidSegSegmentVideo"]().segment(model=handle, frames=_frames(2), num_clusters=3, mode="quality")
    finally:
        mm.interrupt_after_checks = None
    assert type(info.value) is mm.InterruptProcessingException  # ComfyUI's own, not wrapped
    assert model.model_options["transformer_options"] == {}
    # the run after a cancel works (nothing left patched or half-installed)
    with torch.inference_mode():
        NODES["VidSegSegmentVideo"]().segment(model=handle, frames=_frames(2), num_clusters=3, mode="fast")


def test_cancel_through_a_compiled_block_is_a_cancel_on_both_generations(generation, monkeypatch):
    bb = comfy_standin.native_backbone("tiny-sd", ldm=True)
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
    assert state.active and not eager_runs and not state.fallback
    core.compile.uncompile_backbone(bb)
