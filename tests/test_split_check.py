"""The once-per-model check of the UNet split (``vidseg_core/modulation/split_check.py``).

* contract, over every splitter (diffusers SD 2.1 / SVD, ComfyUI's SD / SVD layout): ``sub_call`` restricts a
  call to selected rows and its ``original()`` (the UNet's own forward) equals prefix + suffix on them;
* a split that drifted from the UNet's forward (simulated: a suffix off by 5 %) is caught at the first
  prefix: that call and every later one run whole (same labels and maps as without sharing), said once, and
  the next batch does not try again;
* a split that agrees is checked once per backbone (the relative difference in ``stats["prefix"]["checked"]``).
"""
from __future__ import annotations

import logging
import sys

import pytest
import torch

from tests.helpers.comfy_standin import standin_sd, standin_svd
from tools.pack_loader import load_pack
from vidseg_core.backbones import load_backbone
from vidseg_core.features import prepare_batch
from vidseg_core.backbones.diffusers_split import DiffusersSplitter
from vidseg_core.backbones.split import UNetCall
from vidseg_core.modulation import ModulationSettings, modulate_batch, split_check, unet_split

PACK = load_pack()
native = sys.modules["vidseg_pack.nodes.comfy_adapters.native"]


def _diffusers(name):
    bb = load_backbone(name)
    g = torch.Generator().manual_seed(0)
    if name == "tiny-sd":
        rows = {"sample": torch.randn(2, 4, 8, 16, generator=g), "timestep": torch.tensor(300),
                "context": torch.randn(2, 77, 32, generator=g), "added": None}
    else:
        rows = {"sample": torch.randn(2, 3, 8, 8, 16, generator=g), "timestep": torch.tensor(0.4),
                "context": torch.randn(2, 1, 32, generator=g), "added": torch.tensor([[5., 127., .02]] * 2)}
    return bb.prefix_splitter(7), rows


def _comfy(family):
    g = torch.Generator().manual_seed(0)
    if family == "sd":
        model, clip, vae = standin_sd(ldm=True)
        bb = native.backbone_from_comfy(model, vae, clip=clip)
        rows = {"x": torch.randn(2, 4, 8, 16, generator=g), "timesteps": torch.full((2,), 300.),
                "context": torch.randn(2, 77, 32, generator=g), "y": None, "sigmas": None, "num_video_frames": None}
    else:
        model, clip_vision, vae = standin_svd(ldm=True)
        bb = native.backbone_from_comfy(model, vae, clip_vision=clip_vision)
        rows = {"x": torch.randn(6, 8, 8, 16, generator=g), "timesteps": torch.full((6,), 0.3),
                "context": torch.randn(2, 1, 32, generator=g).repeat_interleave(3, 0),
                "y": torch.tensor([[5., 127., .02]] * 6), "sigmas": None, "num_video_frames": 3}
    return bb.prefix_splitter(7), rows


SPLITTERS = {"diffusers-sd": lambda: _diffusers("tiny-sd"), "diffusers-svd": lambda: _diffusers("tiny-svd"),
             "comfy-sd": lambda: _comfy("sd"), "comfy-svd": lambda: _comfy("svd")}


@pytest.mark.parametrize("name", list(SPLITTERS))
@torch.inference_mode()
def test_every_splitter_sub_call_runs_the_unets_own_forward_on_the_selected_rows(name):
    sp, rows = SPLITTERS[name]()
    call = UNetCall(rows, None, None, None, {})
    sub = sp.sub_call(call, rows)
    whole = sub.original()
    assert torch.is_tensor(whole) and whole.abs().max() > 0
    torch.testing.assert_close(sp.suffix(sp.prefix(sub, sub.rows), sub), whole, rtol=0, atol=1e-5)
    # the comparison the driver makes: passes here, and a drifted suffix is caught
    holder = type("Backbone", (), {})()
    assert split_check.check_split(holder, 7, sp, call, rows, sp.prefix(call, rows)) <= 1e-5
    assert split_check.check_split(holder, 7, sp, call, rows, None) is None  # once per backbone and block
    meta = type("State", (), {"hidden": torch.empty(1, device="meta")})()
    assert split_check.check_split(type("Backbone", (), {})(), 7, sp, call, rows, meta) is None  # FLOP counting


FRAMES = torch.rand(2, 64, 128, 3, generator=torch.Generator().manual_seed(3))
COARSE = (torch.arange(8) * 3 // 8).expand(2, 4, 8).clone()


def _modulate(bb, share=True, coarse=COARSE):
    with torch.inference_mode():
        inputs = prepare_batch(bb, FRAMES)
        return modulate_batch(bb, inputs, coarse, None, (64, 128),
                              ModulationSettings(share_prefix=share, return_difference_maps=True))


@pytest.mark.parametrize("compact", [False, True], ids=["expanded", "compacted-rows"])
def test_a_split_that_drifted_from_the_unet_is_caught_once_and_runs_whole(monkeypatch, caplog, compact):
    bb = load_backbone("tiny-sd")
    coarse = COARSE.clone()
    if compact:
        coarse[-1][coarse[-1] == 2] = 1  # label 2 absent from the last frame: compacted rows
    original_suffix = DiffusersSplitter.suffix
    calls = []

    def drifted(self, state, call):  # e.g. a newer diffusers adding a term the split does not know
        calls.append(1)
        return original_suffix(self, state, call) * 1.05

    monkeypatch.setattr(DiffusersSplitter, "suffix", drifted)
    monkeypatch.setattr(unet_split, "_LOGGED", set())  # said once per process: this test's own line
    off = _modulate(bb, share=False, coarse=coarse)
    with caplog.at_level(logging.WARNING, logger="vidseg"):
        on = _modulate(bb, coarse=coarse)
    assert (on.stats["compacted_rows"] is not None) == compact
    assert torch.equal(on.labels, off.labels) and torch.equal(on.difference_maps, off.difference_maps)
    (reason,) = on.stats["prefix"]["refused"]
    assert "differs from the UNet's own forward" in reason and on.stats["prefix"]["prefix"] == 0
    assert "checked" not in on.stats["prefix"] and len(calls) == 1  # only the check ran the suffix
    assert on.stats["prefix"]["reused"] == 0 and on.stats["prefix"]["fallback"] >= 2  # t_m and later steps whole
    assert sum(reason in r.getMessage() for r in caplog.records) == 1
    again = _modulate(bb, coarse=coarse)  # the next batch does not split (nor check) again
    assert again.stats["prefix"] == {"shared": False, "reason": reason} and len(calls) == 1
    assert torch.equal(again.labels, off.labels)


def test_a_split_that_agrees_is_checked_once_per_backbone(monkeypatch):
    bb = load_backbone("tiny-sd")
    checks = []
    original = split_check.check_split

    def counted(*a, **k):
        out = original(*a, **k)
        checks.append(out)
        return out

    monkeypatch.setattr(unet_split, "check_split", counted)
    first, second = _modulate(bb), _modulate(bb)
    assert 0 <= first.stats["prefix"]["checked"] <= split_check.tolerance(torch.float32)
    assert "checked" not in second.stats["prefix"] and second.stats["prefix"]["prefix"] >= 1
    assert [type(c) for c in checks] == [float, type(None)]
    assert torch.equal(first.labels, second.labels)
