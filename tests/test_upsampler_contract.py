"""The contract every :class:`~vidseg_core.upsample.Upsampler` must satisfy, parametrised over all of them.

Exactly one label per pixel, taken from the coarse label set, at the input
size (odd sizes included), deterministic, inputs untouched, a single label and
a label absent from some frames handled.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vidseg_core.backbones import load_backbone
from vidseg_core.errors import InputError
from vidseg_core.features import prepare_batch
from vidseg_core.upsample import (UPSAMPLERS, GuidedFilterUpsampler, MaskedModulationUpsampler, UpsampleContext,
                                  make_upsampler)

H, W = 77, 131  # odd: the working size is 64x128, the feature grid 4x8


@pytest.fixture(scope="module")
def tiny_sd():
    return load_backbone("tiny-sd")


@pytest.fixture(params=sorted(UPSAMPLERS))
def upsampler_and_context(request, tiny_sd):
    up = UPSAMPLERS[request.param]()
    return up, UpsampleContext(backbone=tiny_sd)


def _frames(T=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(T, H, W, 3, generator=g)


def test_every_upsampler_is_tested():
    assert set(UPSAMPLERS) == {"masked_modulation", "guided_filter"}
    assert isinstance(make_upsampler("guided_filter", eps=1e-3), GuidedFilterUpsampler)
    with pytest.raises(InputError):
        make_upsampler("bicubic")


def test_contract_odd_size_labels_determinism_and_inputs_untouched(upsampler_and_context):
    up, ctx = upsampler_and_context
    frames = _frames()
    coarse = torch.tensor([[[3, 3, 3, 5, 5, 5, 9, 9]] * 4,
                           [[3, 3, 3, 3, 5, 5, 5, 5]] * 4])  # label 9 absent from frame 1
    label_ids = [9, 3, 5]  # unsorted on purpose
    f0, c0 = frames.clone(), coarse.clone()
    out = up.upsample(frames, coarse, label_ids, ctx)
    assert out.shape == (2, H, W) and out.dtype == torch.long
    assert set(out.unique().tolist()) <= {3, 5, 9}
    assert torch.equal(frames, f0) and torch.equal(coarse, c0)
    again = up.upsample(frames, coarse, label_ids, ctx)
    assert torch.equal(out, again)
    # the labels follow the coarse layout: far from the boundaries the coarse label wins
    assert out[0, 38, 10].item() == 3 and out[0, 38, 120].item() == 9 and out[1, 38, 120].item() == 5


def test_contract_single_label(upsampler_and_context):
    up, ctx = upsampler_and_context
    out = up.upsample(_frames(1, seed=1), torch.full((1, 4, 8), 7), None, ctx)
    assert torch.equal(out, torch.full((1, H, W), 7))


def test_contract_rejects_bad_inputs(upsampler_and_context):
    up, ctx = upsampler_and_context
    coarse = torch.zeros(2, 4, 8, dtype=torch.long)
    with pytest.raises(InputError):
        up.upsample(_frames()[..., :2], coarse, None, ctx)
    with pytest.raises(InputError):
        up.upsample(_frames(), coarse[:1], None, ctx)
    with pytest.raises(InputError):
        up.upsample(_frames(), coarse.float(), None, ctx)
    with pytest.raises(InputError):
        up.upsample(_frames(), coarse + 1, [0], ctx)


def test_masked_modulation_reuses_the_batch_inputs(tiny_sd):
    frames = _frames()
    coarse = torch.tensor([[[0, 0, 1, 1, 1, 2, 2, 2]] * 4] * 2)
    inputs = prepare_batch(tiny_sd, frames)
    up = MaskedModulationUpsampler()
    a = up.upsample(frames, coarse, None, UpsampleContext(backbone=tiny_sd, inputs=inputs))
    b = up.upsample(frames, coarse, None, UpsampleContext(backbone=tiny_sd))
    assert torch.equal(a, b)
    with pytest.raises(InputError, match="backbone"):
        up.upsample(frames, coarse, None, None)


def test_guided_filter_snaps_to_image_edges():
    """A sharp diagonal edge: the guided filter recovers it much better than nearest / bilinear upsampling."""
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    truth = (xx > 0.9 * yy + 40).long()
    frames = torch.where(truth.bool()[..., None], torch.tensor([0.9, 0.8, 0.2]), torch.tensor([0.1, 0.2, 0.6]))[None]
    coarse = F.interpolate(truth[None, None].float(), (4, 8), mode="area")[0].round().long()
    near = F.interpolate(coarse[None].float(), (H, W), mode="nearest-exact")[0].long()
    out = GuidedFilterUpsampler().upsample(frames, coarse)
    err_gf = (out[0] != truth).float().mean().item()
    err_near = (near[0] != truth).float().mean().item()
    assert err_gf < 0.5 * err_near


def test_guided_filter_float32_window_sums_equal_float64_cumulative_sums(blackswan_frames, blackswan_masks):
    """The GPU default (float32 direct window sums) gives the CPU default's labels (float64 cumulative sums).

    Real frames at full size, the swan plus five bands as labels; the box means agree to float32 rounding.
    """
    from vidseg_core.upsample import box_mean

    frames = blackswan_frames[:2]
    mask = F.interpolate(torch.as_tensor(blackswan_masks[:2, None]).float(), (60, 106), mode="nearest")[:, 0]
    bands = (torch.arange(106) * 5 // 106).expand(2, 60, 106)
    coarse = torch.where(mask > 0, 10, bands)
    for kw in ({}, {"radius": 16, "eps": 1e-3}):
        a = GuidedFilterUpsampler(box_precision="float64", **kw).upsample(frames, coarse)
        b = GuidedFilterUpsampler(box_precision="float32", **kw).upsample(frames, coarse)
        assert torch.equal(a, b), (kw, (a != b).sum())
    assert GuidedFilterUpsampler().box_precision == "auto"
    x = torch.rand(2, 3, 37, 53, generator=torch.Generator().manual_seed(0))
    for r in (1, 4, 30):  # 30: the window is clipped on every side
        assert torch.allclose(box_mean(x, r, "float32"), box_mean(x, r, "float64"), rtol=0, atol=1e-6)
        assert torch.equal(box_mean(x, r), box_mean(x, r, "float64"))  # the CPU keeps float64
    with pytest.raises(InputError, match="box_precision"):
        GuidedFilterUpsampler(box_precision="half")
