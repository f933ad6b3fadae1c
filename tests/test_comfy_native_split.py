"""Prefix sharing on ComfyUI's own SD / SVD UNet layout (``nodes/comfy_adapters/native_split.py``), without ComfyUI.

Over the stand-in of ComfyUI's ``UNetModel`` layout (``tests/helpers/comfy_unet_standin.py``, the tiny SD
and SVD twins' own modules regrouped): the stand-in equals the diffusers UNet, the split equals the whole UNet, the
native modulation gives the same labels and maps with the split on and off (one run's prefix expanded, and the
compacted rows' prefix gathered), and what the split does not handle runs whole and says so.  Real ComfyUI:
``tools/check_native_split.py``.
"""
from __future__ import annotations

import sys

import pytest
import torch

from tests.helpers.comfy_standin import standin_sd, standin_svd
from tools.pack_loader import load_pack

PACK = load_pack()
native = sys.modules["vidseg_pack.nodes.comfy_adapters.native"]
core = PACK.vidseg_core
T, H, W = 2, 64, 128


def _backbone(**patches):
    model, clip, vae = standin_sd(ldm=True)
    for name, fn in patches.items():
        model.set_model_patch_replace(fn, name, "output", 7)
    return native.backbone_from_comfy(model, vae, clip=clip)


def _frames(seed=3):
    return torch.rand(T, H, W, 3, generator=torch.Generator().manual_seed(seed))


@torch.inference_mode()
def test_ldm_standin_equals_the_diffusers_unet_and_the_split_equals_the_whole():
    bb = _backbone()
    u = bb.unet
    assert type(u).__name__ == "UNetModel"
    g = torch.Generator().manual_seed(0)
    x, ctx, t = torch.randn(4, 4, 8, 16, generator=g), torch.randn(4, 77, 32, generator=g), torch.full((4,), 119.)
    from vidseg_core.backbones.sd21 import build_tiny_sd_parts

    ref = build_tiny_sd_parts(0)[0](x, t, encoder_hidden_states=ctx).sample
    whole = u(x, t, context=ctx, transformer_options={})
    torch.testing.assert_close(whole, ref, rtol=0, atol=1e-5)
    sp = bb.prefix_splitter(7)
    call = core.backbones.split.UNetCall({"x": x, "timesteps": t, "context": ctx, "sigmas": None},
                                         None, None, None, {})
    assert torch.equal(sp.suffix(sp.prefix(call, call.rows), call), whole)
    # the first run's prefix (2 rows) expanded to 2 runs == the whole UNet on 2 identical runs
    rep = {k: None if v is None else torch.cat([v[:2]] * 2) for k, v in call.rows.items()}
    call2 = core.backbones.split.UNetCall(rep, None, None, None, {})
    one = sp.prefix(call2, {k: None if v is None else v[:2] for k, v in rep.items()})
    torch.testing.assert_close(sp.suffix(one.expand(2), call2), u(rep["x"], rep["timesteps"], context=rep["context"],
                                                                  transformer_options={}), rtol=0, atol=1e-5)


@pytest.mark.parametrize("absent", [False, True], ids=["expanded", "compacted-rows"])
def test_native_modulation_with_the_split_equals_without(absent):
    bb = _backbone()
    coarse = (torch.arange(8) * 3 // 8).expand(T, 4, 8).clone()  # three labels in bands
    if absent:
        coarse[-1][coarse[-1] == 2] = 1  # label 2 absent from the last frame: compacted rows
    with torch.inference_mode():
        inputs = core.features.prepare_batch(bb, _frames())
        res = {share: core.modulation.modulate_batch(bb, inputs, coarse, None, (H, W), core.modulation.ModulationSettings(
            share_prefix=share, return_difference_maps=True)) for share in (True, False)}
    on, off = res[True], res[False]
    assert torch.equal(on.labels, off.labels)
    scale = off.difference_maps.abs().max()
    assert scale > 0 and (on.difference_maps - off.difference_maps).abs().max() <= 1e-4 * scale  # batch-size rounding only
    assert on.stats["prefix"]["prefix"] >= 1 and "refused" not in on.stats["prefix"]
    assert (on.stats["compacted_rows"] is not None) == absent
    assert "forward" not in bb.unet.__dict__  # routing undone


def test_native_rows_with_the_store_built_compute_the_prefix_once():
    """Compacted rows in chunks with the reference store built in the batch: the store build's prefix is every
    frame's (the same driver as diffusers' UNets), so ComfyUI's UNet computes the prefix once per batch."""
    bb = _backbone()
    coarse = (torch.arange(8) * 3 // 8).expand(T, 4, 8).clone()
    coarse[-1][coarse[-1] == 2] = 1  # label 2 absent from the last frame: 2·(2 + 2 + 1) = 10 rows
    sp = bb.prefix_splitter(7)
    real, prefix_rows = type(sp).prefix, []

    def counted(self, call, rows):
        prefix_rows.append(rows["x"].shape[0])
        return real(self, call, rows)
    with torch.inference_mode():
        inputs = core.features.prepare_batch(bb, _frames())
        settings = core.modulation.ModulationSettings(reference_pass="store", max_runs_per_chunk=1,
                                                      return_difference_maps=True)
        off = core.modulation.modulate_batch(bb, inputs, coarse, None, (H, W), settings.with_(share_prefix=False))
        type(sp).prefix = counted
        try:
            on = core.modulation.modulate_batch(bb, inputs, coarse, None, (H, W), settings)
        finally:
            type(sp).prefix = real
    assert on.stats["compacted_rows"] == 10 and on.stats["chunks"] == [2, 2, 2, 2, 2]
    assert prefix_rows == [2 * T] and on.stats["prefix"]["prefix"] == 1 and on.stats["prefix"]["reused"] == 5
    assert torch.equal(on.labels, off.labels)
    assert (on.difference_maps - off.difference_maps).abs().max() <= 1e-4 * off.difference_maps.abs().max()


def test_native_split_refuses_foreign_patches_and_svd_visibly(caplog):
    import logging

    calls = []

    def foreign(q, k, v, extra_options):
        calls.append(1)
        return native._optimized_attention()(q, k, v, extra_options["n_heads"])

    bb = _backbone(attn1=foreign)
    coarse = (torch.arange(8) * 2 // 8).expand(T, 4, 8)
    split = core.modulation.unet_split
    split._LOGGED.discard("this UNet call has patches attn1 replace")
    with caplog.at_level(logging.WARNING, logger="vidseg"), torch.inference_mode():
        inputs = core.features.prepare_batch(bb, _frames())
        res = core.modulation.modulate_batch(bb, inputs, coarse, None, (H, W))
    assert res.stats["prefix"]["prefix"] == 0 and res.stats["prefix"]["refused"] == {"patches attn1 replace": 1}
    assert calls and any("patches attn1 replace" in r.getMessage() for r in caplog.records)
    # layouts the split does not handle are refused at construction, with the reason
    u = bb.unet
    u.num_classes = 10
    try:
        with pytest.raises(TypeError, match="class-conditional"):
            bb.prefix_splitter(7)
    finally:
        u.num_classes = None
    with pytest.raises(ValueError, match="no attention module"):
        bb.prefix_splitter(2)  # output_blocks[2] = (ResBlock, Upsample) in SD's layout
    sp = bb.prefix_splitter(7)
    assert sp.refusal(None, {"output": []}, {}, {}) == "a ControlNet / adapter input (control)"
    assert sp.refusal(torch.zeros(1), None, {}, {}) == "a class / ADM input (y)"
    assert sp.refusal(None, None, {"wrappers": {"diffusion_model": {"k": [print]}}}, {}) == "DIFFUSION_MODEL wrappers"
    assert sp.refusal(None, None, {"patches": {"output_block_patch": [print]}}, {}) == "patches output_block_patch"


# ---------------------------------------------------------------- SVD (ComfyUI's video UNet on flat rows)
def _svd_rows(videos, frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = videos * frames
    return {"x": torch.randn(n, 8, 8, 16, generator=g), "timesteps": torch.full((n,), 0.3),
            "context": torch.randn(videos, 1, 32, generator=g).repeat_interleave(frames, 0),
            "y": torch.tensor([[5., 127., 0.02]]).expand(n, 3), "sigmas": None, "num_video_frames": frames}


@torch.inference_mode()
def test_svd_ldm_standin_equals_the_diffusers_unet_and_the_split_equals_the_whole():
    split = core.backbones.split
    (ldm, _, _), (plain, _, _) = standin_svd(ldm=True), standin_svd()
    assert type(ldm.model.diffusion_model).__name__ == "UNetModel"
    r = _svd_rows(4, 3)
    x, t = torch.randn(12, 4, 8, 16, generator=torch.Generator().manual_seed(1)), torch.full((12,), 3.0)
    kw = dict(c_concat=r["x"][:, 4:], c_crossattn=r["context"], transformer_options={}, y=r["y"], num_video_frames=3)
    torch.testing.assert_close(ldm.model.apply_model(x, t, **kw), plain.model.apply_model(x, t, **kw),
                               rtol=0, atol=1e-5)
    sp = native.backbone_from_comfy(ldm, standin_svd()[2], clip_vision=standin_svd()[1]).prefix_splitter(7)
    assert sp.family == "svd"
    u = sp.unet
    whole = u(r["x"], r["timesteps"], context=r["context"], y=r["y"], transformer_options={}, num_video_frames=3)
    call = split.UNetCall(r, None, None, None, {})
    assert torch.equal(sp.suffix(sp.prefix(call, r), call), whole)
    # one run (2 videos: the guidance halves) of prefix, expanded to 2 runs == the whole UNet on 2 identical runs
    one = {k: v[:6] if torch.is_tensor(v) else v for k, v in r.items()}
    rep = {k: torch.cat([v] * 2) if torch.is_tensor(v) else v for k, v in one.items()}
    call2 = split.UNetCall(rep, None, None, None, {})
    out = sp.suffix(sp.prefix(call2, one).expand(2), call2)
    torch.testing.assert_close(out, u(rep["x"], rep["timesteps"], context=rep["context"], y=rep["y"],
                                      transformer_options={}, num_video_frames=3), rtol=0, atol=1e-5)
    # the frames of a video mix (temporal layers): the split is not a per-frame computation
    assert not torch.allclose(out[:3], sp.suffix(sp.prefix(call2, {**one, "num_video_frames": 1}).expand(2), call2)[:3])
    assert sp.refusal(r["y"], None, {}, {"time_context": r["context"]}, r["x"]) == "inputs time_context"
    assert sp.refusal(r["y"], None, {}, {"num_video_frames": 3}, r["x"]) is None
    assert sp.refusal(None, None, {}, {"num_video_frames": 3}, r["x"]) == "no ADM input (y) on SVD's UNet"


def test_native_svd_modulation_with_the_split_equals_without():
    model, clip_vision, vae = standin_svd(ldm=True)
    bb = native.backbone_from_comfy(model, vae, clip_vision=clip_vision)
    frames = torch.rand(3, H, W, 3, generator=torch.Generator().manual_seed(3))
    coarse = (torch.arange(8) * 3 // 8).expand(3, 4, 8).clone()
    with torch.inference_mode():
        inputs = core.features.prepare_batch(bb, frames)
        res = {share: core.modulation.modulate_batch(bb, inputs, coarse, None, (H, W), core.modulation.ModulationSettings(
            share_prefix=share, return_difference_maps=True)) for share in (True, False)}
    on, off = res[True], res[False]
    assert torch.equal(on.labels, off.labels)
    scale = off.difference_maps.abs().max()
    assert scale > 0 and (on.difference_maps - off.difference_maps).abs().max() <= 1e-4 * scale
    assert on.stats["prefix"]["prefix"] == 1 and "refused" not in on.stats["prefix"]
    assert on.stats["prefix"].get("shared", True) and off.stats["prefix"]["shared"] is False
    assert "forward" not in bb.unet.__dict__
