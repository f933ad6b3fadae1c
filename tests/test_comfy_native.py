"""The ComfyUI adapter ("VidSeg Model from ComfyUI", ``nodes/comfy_adapters/native.py``) without ComfyUI.

Over stand-ins of ComfyUI's loader objects wrapping the tiny twins
(``tests/helpers/comfy_standin.py``):

* the adapter and the pack's own loader give the same latents, queries, D and
  labels on the same weights (the full-size check in real ComfyUI is
  ``tools/check_native.py``);
* unsupported MODELs and missing CLIP / CLIP_VISION are refused with a clear message;
* the input MODEL's options are unchanged after a run, the computation goes
  through ``load_models_gpu`` with the patched clone, a replace patch already on
  the MODEL is called (composed), and an interrupt stops the run.
"""
from __future__ import annotations

import copy
import sys

import pytest
import torch

from tests.helpers.comfy_standin import standin_foreign, standin_sd, standin_svd
from tools.pack_loader import load_pack
from vidseg_core.backbones import CaptureQueries, load_backbone

PACK = load_pack()
NODES = PACK.nodes.NODE_CLASS_MAPPINGS
native = sys.modules["vidseg_pack.nodes.comfy_adapters.native"]
PackInputError = PACK.vidseg_core.errors.InputError
mm = sys.modules["comfy.model_management"]
T, H, W = 2, 64, 128


def _frames(seed=0):
    return torch.rand(T, H, W, 3, generator=torch.Generator().manual_seed(seed))


def _node(model, vae, clip=None, clip_vision=None, **kw):
    cls = NODES["VidSegModelFromComfy"]
    with torch.inference_mode():
        return getattr(cls(), cls.FUNCTION)(model=model, vae=vae, clip=clip, clip_vision=clip_vision, **kw)[0]


@pytest.mark.parametrize("family", ["sd", "svd"])
@torch.inference_mode()
def test_adapter_equals_the_packs_loader_on_the_same_weights(family):
    model, enc, vae = standin_sd() if family == "sd" else standin_svd()
    kw = {"clip": enc} if family == "sd" else {"clip_vision": enc}
    nb = _node(model, vae, **kw).backbone
    pb = load_backbone(f"tiny-{family}", device="cpu", precision="fp32")
    assert nb.family == pb.family and torch.equal(nb.sigmas(), pb.sigmas())
    out = []
    for bb in (nb, pb):
        g = bb.generator(1)
        x = bb.prepare_frames(_frames())
        z0, cond = bb.encode(x, g), bb.condition(x, g)
        noise = bb.randn(tuple(z0.shape), g)
        step = bb.config.modulation_step
        cap = CaptureQueries(set(bb.attention_layers()), steps={step})
        with bb.hooks(cap):
            d = bb.denoised(bb.add_noise(z0, step, noise)[None], step, cond)
        out.append((z0, d, cap.captured, bb.decode(z0)))
    (z_a, d_a, c_a, i_a), (z_b, d_b, c_b, i_b) = out
    torch.testing.assert_close(z_a, z_b, rtol=0, atol=1e-6)
    torch.testing.assert_close(d_a, d_b, rtol=1e-4, atol=1e-4)
    assert {(s, str(l)) for s, l in c_a} == {(s, str(l)) for s, l in c_b}
    for (s, layer), q in c_b.items():
        qa = next(v for (sa, la), v in c_a.items() if sa == s and str(la) == str(layer))
        torch.testing.assert_close(qa, q, rtol=1e-4, atol=1e-4, msg=str(layer))
    torch.testing.assert_close(i_a, i_b, rtol=0, atol=1e-6)


@pytest.mark.parametrize("family", ["sd", "svd"])
@torch.inference_mode()
def test_adapter_decodes_several_clips_as_the_packs_loader(family):
    """``decode_clips`` (the modulation decodes its +/- pairs with it) on the adapter: ComfyUI's temporal decoder
    takes a whole call as one clip, so several clips must never share a call."""
    model, enc, vae = standin_sd() if family == "sd" else standin_svd()
    kw = {"clip": enc} if family == "sd" else {"clip_vision": enc}
    nb = _node(model, vae, **kw).backbone
    pb = load_backbone(f"tiny-{family}", device="cpu", precision="fp32")
    z = torch.randn(3, T, 4, H // 8, W // 8, generator=torch.Generator().manual_seed(3))
    want = torch.stack([pb.decode(clip) for clip in z])
    torch.testing.assert_close(nb.decode_clips(z), want, rtol=0, atol=1e-5)
    torch.testing.assert_close(pb.decode_clips(z), want, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family", ["sd", "svd"])
def test_segment_video_on_the_adapter_gives_the_packs_labels_and_leaves_the_model_untouched(family):
    model, enc, vae = standin_sd() if family == "sd" else standin_svd()
    before = copy.deepcopy(model.model_options)
    kw = {"clip": enc} if family == "sd" else {"clip_vision": enc}
    handle = _node(model, vae, **kw)
    mm.loaded_models.clear()
    seg = NODES["VidSegSegmentVideo"]
    args = dict(frames=_frames(1), num_clusters=3, mode="fast")
    with torch.inference_mode():
        ours = seg().segment(model=handle, **args)
        theirs = seg().segment(model=NODES["VidSegLoadModel"]().load(f"tiny-{family}", "fp32")[0], **args)
    ours = ours["result"] if isinstance(ours, dict) else ours
    theirs = theirs["result"] if isinstance(theirs, dict) else theirs
    assert torch.equal(ours[0].labels, theirs[0].labels)
    assert model.model_options == before, "the input MODEL's options changed"
    assert model.model_options["transformer_options"] == {}
    patched = handle.backbone.patched
    assert patched is not model and any(m is patched for m in mm.loaded_models)
    assert not any(m is model for m in mm.loaded_models)


def test_unsupported_models_and_missing_encoders_are_refused():
    model, clip, vae = standin_sd()
    with pytest.raises(PackInputError, match=r"MODEL is SDXL .*supports Stable Diffusion 2\.x"):
        _node(standin_foreign("SDXL"), vae, clip=clip)
    with pytest.raises(PackInputError, match="MODEL is Flux"):
        _node(standin_foreign("Flux"), vae, clip=clip)
    with pytest.raises(PackInputError, match="not a ComfyUI MODEL"):
        _node(object(), vae, clip=clip)
    with pytest.raises(PackInputError, match="needs its CLIP"):
        _node(model, vae)
    with pytest.raises(PackInputError, match="not a ComfyUI VAE"):
        _node(model, None, clip=clip)
    svd_model, clip_vision, svd_vae = standin_svd()
    with pytest.raises(PackInputError, match="CLIP_VISION"):
        _node(svd_model, svd_vae, clip=clip)


@torch.inference_mode()
def test_a_replace_patch_already_on_the_model_is_composed_not_dropped():
    model, clip, vae = standin_sd()
    calls = []

    def previous(q, k, v, extra_options):
        calls.append(extra_options["block"])
        flags.append(extra_options.get("cond_or_uncond"))
        return native._optimized_attention()(q, k, v, extra_options["n_heads"])

    flags = []

    model.set_model_patch_replace(previous, "attn1", "output", 7)  # keyed without the transformer index
    bb = _node(model, vae, clip=clip).backbone
    g = bb.generator(1)
    x = bb.prepare_frames(_frames())
    z0, cond = bb.encode(x, g), bb.condition(x, g)
    step = bb.config.modulation_step
    cap = CaptureQueries({native.LayerId(7, "spatial_self")}, steps={step})
    with bb.hooks(cap):
        bb.denoised(bb.add_noise(z0, step, bb.randn(tuple(z0.shape), g))[None], step, cond)
    assert calls == [("output", 7)] and len(cap.captured) == 1
    assert list(model.model_options["transformer_options"]["patches_replace"]["attn1"]) == [("output", 7)]
    assert flags == [[1, 0]]  # ComfyUI's per-chunk cond / uncond flags: one run, two halves


def test_cond_or_uncond_is_given_to_foreign_patches_only():
    """ComfyUI's UNet and VidSeg's own patches do not read ``cond_or_uncond``; it is set only when a foreign
    patch or wrapper may (its length, 2 x runs, would make torch.compile recompile per run count)."""
    seen = []
    model, clip, vae = standin_sd()
    bb = _node(model, vae, clip=clip).backbone
    original = bb.patched.model.apply_model

    def spy(*a, transformer_options=None, **k):
        seen.append(transformer_options.get("cond_or_uncond"))
        return original(*a, transformer_options=transformer_options, **k)

    bb.patched.model.apply_model = spy
    try:
        g = bb.generator(1)
        x = bb.prepare_frames(_frames())
        z0, cond = bb.encode(x, g), bb.condition(x, g)
        with torch.inference_mode():
            bb.denoised(torch.stack([z0, z0, z0]), 20, cond)
        bb._foreign_readers = True  # as with a foreign patch (test above)
        with torch.inference_mode():
            bb.denoised(torch.stack([z0, z0, z0]), 20, cond)
    finally:
        del bb.patched.model.apply_model
    assert seen == [None, [1, 0] * 3]
    foreign, clip, vae = standin_sd()
    foreign.set_model_patch(lambda n, extra_options: n, "attn1_output_patch")
    assert _node(foreign, vae, clip=clip).backbone._foreign_readers
    assert not bb.__class__._read_by_others(bb, {"patches": bb.patched.model_options["transformer_options"]["patches"]})


def test_interrupt_stops_a_native_quality_run():
    model, clip, vae = standin_sd()
    handle = _node(model, vae, clip=clip)
    mm.interrupt_checks, mm.interrupt_after_checks = 0, 3
    try:
        with pytest.raises(mm.InterruptProcessingException), torch.inference_mode():
            NODES["VidSegSegmentVideo"]().segment(model=handle, frames=_frames(2), num_clusters=3, mode="quality")
    finally:
        mm.interrupt_after_checks = None
    assert model.model_options["transformer_options"] == {}


def test_native_unet_runs_without_prefix_sharing_and_says_why_once(caplog):
    """A UNet the native split does not handle (here the stand-in without ComfyUI's layout)
    falls back to whole UNet passes, visibly (the split itself: ``tests/test_comfy_native_split.py``)."""
    import logging

    core = PACK.vidseg_core
    split = sys.modules[core.__name__ + ".modulation.unet_split"]
    model, clip, vae = standin_sd()
    bb = _node(model, vae, clip=clip).backbone
    reason = f"unsupported UNet class {type(bb.unet).__name__}: not ComfyUI's UNetModel layout"
    split._LOGGED.discard(reason)  # another test may have logged it already
    coarse = (torch.arange(8) * 2 // 8).expand(T, 4, 8)  # two labels, left / right
    with caplog.at_level(logging.WARNING, logger="vidseg"), torch.inference_mode():
        inputs = core.features.prepare_batch(bb, _frames(3))
        res = core.modulation.modulate_batch(bb, inputs, coarse, None, (H, W))
        stats = {}
        with split.shared_prefix(bb, 7, 22, stats=stats) as again:  # the next batch: not said again
            assert again is None
        with split.shared_prefix(bb, 7, 22, enabled=False, stats=stats):
            assert stats["prefix"]["reason"] == "off (share_prefix=False)"
    assert res.stats["prefix"] == {"shared": False, "reason": reason}
    said = [r.getMessage() for r in caplog.records if "without prefix sharing" in r.getMessage()]
    assert len(said) == 1 and "the whole UNet runs at step t_m" in said[0], said  # once per process, not per batch


def test_wrappers_only_comfys_samplers_apply_are_said_not_silently_dropped(caplog):
    """ComfyUI merges the patcher's ``wrappers`` (TorchCompileModel's "torch.compile" one, for instance) and calls
    the sampler functions only inside its own samplers; VidSeg's sampler does not, and the node says so."""
    import logging

    model, clip, vae = standin_sd()
    with caplog.at_level(logging.WARNING, logger="vidseg"):
        _node(model, vae, clip=clip)
    assert not [r for r in caplog.records if "ComfyUI's samplers apply" in r.getMessage()]
    model.wrappers = {"apply_model": {"torch.compile": [lambda executor, *a, **k: executor(*a, **k)]},
                      "diffusion_model": {"empty": []}}
    model.model_options["sampler_cfg_function"] = lambda args: args["cond"]
    with caplog.at_level(logging.WARNING, logger="vidseg"):
        _node(model, vae, clip=clip, compile="off")  # TorchCompileModel's request: tests/test_compile_backbones.py
    said = [r.getMessage() for r in caplog.records if "ComfyUI's samplers apply" in r.getMessage()]
    assert len(said) == 1 and "apply_model wrapper 'torch.compile', sampler_cfg_function" in said[0], said
    assert "diffusion_model" not in said[0]  # an empty entry is nothing
