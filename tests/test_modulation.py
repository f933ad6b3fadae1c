"""Masked modulation (paper §4.3; docs/design/authors_code.md#masked-modulation-as-published, #the-equivalent-design-the-pack-implements) on the tiny SD and SVD backbones.

The batched implementation is checked against the sequential oracle
(``tests/oracles/modulation_sequential.py``), the authors' one-pass-at-a-time
structure.  Frames are tiny (64x128 -> 4x8 feature grid, 2 frames, 3 labels).
"""
from __future__ import annotations

import warnings

import pytest
import torch

from oracles.modulation_sequential import sequential_modulation
from vidseg_core.backbones import LayerId, load_backbone
from vidseg_core.errors import InputError, OutOfMemoryError
from vidseg_core.features import prepare_batch
from vidseg_core.modulation import ModulationCancelled, ModulationSettings, modulate_batch
from vidseg_core.modulation.hooks import ModulationHook
from vidseg_core.modulation.runner import _BatchModulation, is_out_of_memory
from vidseg_core.modulation.shared_attention import SharedAttentionProcessor, sharing_attention
from vidseg_core.backbones.diffusers_split import SplitUNet
from vidseg_core.modulation.unet_split import shared_prefix

FRAME = (77, 131)  # odd "original" size; the working size is 64x128


def _coarse(T=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    c = torch.randint(0, 3, (T, 4, 8), generator=g)
    c[:, :2, :3] = 0  # every label present, with some structure
    c[:, 2:, 5:] = 2
    c[0, 0, 7] = 1
    return c


@pytest.fixture(scope="module", params=["tiny-sd", "tiny-svd"])
def setup(request):
    bb = load_backbone(request.param)
    g = torch.Generator().manual_seed(1)
    frames = torch.rand(2, 64, 128, 3, generator=g)
    inputs = prepare_batch(bb, frames)
    return bb, inputs, _coarse()


@pytest.fixture(scope="module")
def sd_setup():
    bb = load_backbone("tiny-sd")
    g = torch.Generator().manual_seed(2)
    inputs = prepare_batch(bb, torch.rand(2, 64, 128, 3, generator=g))
    return bb, inputs, _coarse(seed=3)


@pytest.fixture(scope="module")
def sd_baseline(sd_setup):
    bb, inputs, coarse = sd_setup
    return modulate_batch(bb, inputs, coarse, None, FRAME, ModulationSettings(return_difference_maps=True))


def _agree(a, b):
    return (a == b).float().mean().item()


# ------------------------------------------------------------------ the split UNet
def test_split_unet_equals_unet_exactly(setup):
    bb, inputs, _ = setup
    bb.install_processors()
    u = bb.unet
    g = torch.Generator().manual_seed(0)
    lh, lw = inputs.latent_hw
    if bb.family == "sd":
        x, ctx, extra = torch.randn(4, 4, lh, lw, generator=g), torch.randn(4, 77, 32, generator=g), {}
        t = torch.tensor(119)
    else:
        x, ctx = torch.randn(2, 2, 8, lh, lw, generator=g), torch.randn(2, 1, 32, generator=g)
        extra = {"added_time_ids": torch.randn(2, 3, generator=g)}
        t = torch.tensor(0.3)
    with torch.inference_mode():
        ref = u(x, t, encoder_hidden_states=ctx, return_dict=False, **extra)[0]
        split = SplitUNet(u, bb.config.modulation_block)
        ids = extra.get("added_time_ids")
        assert torch.equal(split.forward(x, t, ctx, ids), ref)
        assert torch.equal(split.suffix(split.prefix(x, t, ctx, ids)), ref)
        # one run's prefix expanded to 3 runs == the UNet on the 3 identical runs
        n = x.shape[0] // 2
        one = split.prefix(x[:n], t, ctx[:n], None if ids is None else ids[:n])
        rep = lambda v: None if v is None else torch.cat([v[:n]] * 3)  # noqa: E731
        full = u(rep(x), t, encoder_hidden_states=rep(ctx), return_dict=False,
                 **({} if ids is None else {"added_time_ids": rep(ids)}))[0]
        assert torch.allclose(split.suffix(one.expand(3)), full, atol=1e-5)


def test_prefix_driver_restores_forward_and_falls_back(sd_setup):
    bb, inputs, _ = sd_setup
    x = inputs.x_start[None]
    with torch.inference_mode():
        plain = bb.denoised(x.expand(2, *x.shape[1:]).clone(), 22, inputs.cond)
        with shared_prefix(bb, 7, 22) as drv:
            shared = bb.denoised(x.expand(2, *x.shape[1:]).clone(), 22, inputs.cond)
            other = bb.denoised(torch.cat([x, x + 0.1]), 22, inputs.cond)  # runs differ -> original forward
            again = bb.denoised(x.expand(2, *x.shape[1:]).clone(), 22, inputs.cond)
        assert "forward" not in bb.unet.__dict__
    checked = drv.stats.pop("checked", 0.0)  # the once-per-model split check (if this backbone's first)
    assert drv.stats == {"prefix": 1, "reused": 1, "fallback": 1} and 0 <= checked <= 1e-3
    assert torch.allclose(shared, plain, atol=1e-5) and torch.equal(shared, again)
    assert torch.allclose(other[0], plain[0], atol=1e-5)


def test_shared_attention_processors_are_restored(setup):
    bb, inputs, coarse = setup
    bb.install_processors()
    before = {l: m.processor for l, m in bb.attention_layers().items()}
    plan = ModulationSettings().resolve(bb)
    with sharing_attention(bb, plan.injected):
        swapped = {l for l, m in bb.attention_layers().items() if isinstance(m.processor, SharedAttentionProcessor)}
    assert swapped == set(plan.injected)
    assert {l: m.processor for l, m in bb.attention_layers().items()} == before


def test_prefix_driver_keeps_out_of_wrapped_forwards(sd_setup):
    bb, _, _ = sd_setup
    wrapped = bb.unet.forward
    bb.unet.forward = wrapped  # e.g. an offloading hook that replaced forward on the instance
    try:
        with shared_prefix(bb, 7, 22) as drv:
            assert drv is None and bb.unet.__dict__["forward"] is wrapped
    finally:
        del bb.unet.forward


# ------------------------------------------------------------------ batched == sequential
def test_batched_equals_sequential_oracle(setup):
    bb, inputs, coarse = setup
    labels_seq, maps_seq = sequential_modulation(bb, inputs, coarse, [0, 1, 2], FRAME)
    res = modulate_batch(bb, inputs, coarse, None, FRAME,
                         ModulationSettings(share_attention=True, return_difference_maps=True))
    assert res.labels.shape == (2,) + FRAME and res.labels.dtype == torch.long
    assert _agree(res.labels, labels_seq) >= 0.999
    assert (res.difference_maps - maps_seq).abs().max().item() <= 1e-4 * maps_seq.abs().max().item()
    assert maps_seq.abs().max() > 0.5  # the maps are not trivially zero
    assert res.stats["prefix"]["prefix"] == 1  # the shared part of step t_m was computed once


def test_absent_labels_equal_sequential_oracle(setup):
    """Label 1 is missing from frame 1 and label 5 from every frame: their difference there is exactly 0."""
    bb, inputs, coarse = setup
    coarse = coarse.clone()
    coarse[1][coarse[1] == 1] = 0
    labels_seq, maps_seq = sequential_modulation(bb, inputs, coarse, [0, 1, 2, 5], FRAME)
    res = modulate_batch(bb, inputs, coarse, [0, 1, 2, 5], FRAME, ModulationSettings(return_difference_maps=True))
    assert maps_seq[1, 1].abs().max() == 0 and maps_seq[3].abs().max() == 0  # the authors' structure gives 0 too
    assert res.difference_maps[1, 1].abs().max() == 0 and res.difference_maps[3].abs().max() == 0
    assert _agree(res.labels, labels_seq) >= 0.999
    assert (res.difference_maps - maps_seq).abs().max().item() <= 1e-4
    # label 5's runs are not computed at all; SD computes only the present rows (label 1 not in frame 1): 5 per
    # sign, plus the reference row of both frames
    assert res.stats["chunks"] == ([2 * 5 + 2] if bb.family == "sd" else [7])


def test_later_modulation_step_equals_sequential_oracle(sd_setup):
    bb, inputs, coarse = sd_setup
    labels_seq, maps_seq = sequential_modulation(bb, inputs, coarse, [0, 1, 2], FRAME, t_m=23, blend_steps=(23, 24))
    res = modulate_batch(bb, inputs, coarse, None, FRAME, ModulationSettings(step=23, return_difference_maps=True))
    assert _agree(res.labels, labels_seq) >= 0.999
    assert (res.difference_maps - maps_seq).abs().max().item() <= 1e-4


def test_chunked_and_store_modes_equal_one_chunk(sd_setup, sd_baseline):
    bb, inputs, coarse = sd_setup
    for st in (ModulationSettings(max_runs_per_chunk=3), ModulationSettings(max_runs_per_chunk=2),
               ModulationSettings(reference_pass="store", max_runs_per_chunk=2, share_attention=True),
               ModulationSettings(share_prefix=False), ModulationSettings(share_attention=True),
               ModulationSettings(share_attention=False)):
        res = modulate_batch(bb, inputs, coarse, None, FRAME, st.with_(return_difference_maps=True))
        assert _agree(res.labels, sd_baseline.labels) >= 0.999
        assert (res.difference_maps - sd_baseline.difference_maps).abs().max() <= 1e-4
    assert res.stats["chunks"] == [7]
    chunked = modulate_batch(bb, inputs, coarse, None, FRAME, ModulationSettings(max_runs_per_chunk=3, reference_pass="repeat"))
    assert chunked.stats["chunks"] == [3, 3, 3] and chunked.stats["prefix"]["reused"] == 2
    # "auto": repeating would cost 3 reference runs, storing 1 -> store, and each chunk holds modulated runs only
    auto = modulate_batch(bb, inputs, coarse, None, FRAME, ModulationSettings(max_runs_per_chunk=3))
    assert auto.stats["reference_pass"] == "store" and auto.stats["chunks"] == [2, 2, 2]


# ------------------------------------------------------------------ properties
def test_lambda_zero_gives_zero_difference_maps(setup):
    bb, inputs, coarse = setup
    res = modulate_batch(bb, inputs, coarse, None, FRAME, ModulationSettings(lam=0.0, return_difference_maps=True))
    assert res.difference_maps.abs().max().item() == 0.0
    assert torch.equal(res.labels, torch.zeros_like(res.labels))  # all ties -> lowest label


def _job(bb, inputs, coarse, ids, settings=None):
    plan = (settings or ModulationSettings()).resolve(bb)
    return _BatchModulation(bb, inputs, coarse, torch.tensor(ids), FRAME, plan, None, None)


def test_empty_mask_leaves_the_reference_unchanged(setup):
    bb, inputs, coarse = setup
    with torch.inference_mode():
        ref = bb.denoise(inputs.x_start[None], inputs.cond, bb.config.modulation_step)[0]
        job = _job(bb, inputs, coarse, [0, 1, 2, 7])  # label 7 is in no frame
        final = job.run_chunk(job.shared_start(), [6, 7], with_reference=True)  # (7,+), (7,-)
        assert torch.allclose(final[0], ref, atol=1e-5) and torch.allclose(final[1], ref, atol=1e-5)
        img_ref, img_mod = bb.decode(ref), bb.decode(final[0])
    assert (img_ref - img_mod).abs().max() < 1e-4


def test_latents_outside_the_mask_equal_the_reference_in_the_window(setup):
    bb, inputs, coarse = setup
    job = _job(bb, inputs, coarse, [0, 1, 2])
    seen = {}
    make = job._callback

    def recording(lm, ref, **kwargs):
        cb = make(lm, ref, **kwargs)

        def wrapped(step, x):
            x = cb(step, x)
            seen[step] = (x.clone(), lm)
            return x
        return wrapped
    job._callback = recording
    with torch.inference_mode():
        job.run_chunk(job.shared_start(), [0, 1, 2, 3], with_reference=True)
    window = job.plan.blend_window
    assert window == tuple(bb.config.blend_steps)
    for step, (x, lm) in seen.items():
        outside = (1 - lm).bool().expand_as(x)
        same = torch.equal(x[1:][outside[1:]], x[:1].expand_as(x)[1:][outside[1:]])
        if window[0] <= step <= window[1]:
            assert same, f"step {step}: modulated latents differ from the reference outside the mask"
        else:
            assert not same  # SD's final step is not blended: differences appear outside the mask
    assert (max(seen) == window[1]) == (bb.family == "svd")


def test_offset_is_added_once_in_the_modulated_layers(setup):
    bb, inputs, coarse = setup
    job = _job(bb, inputs, coarse, [0, 1, 2])
    hooks = []
    orig = ModulationHook.__init__

    def spy(self, *a, **k):
        orig(self, *a, **k)
        hooks.append(self)
    ModulationHook.__init__ = spy
    try:
        with torch.inference_mode():
            job.run_chunk(job.shared_start(), [0, 1], with_reference=True)
    finally:
        ModulationHook.__init__ = orig
    cfg = bb.config
    assert hooks[0].applied == {(cfg.modulation_step, LayerId(cfg.modulation_block, k)) for k in cfg.modulation_layers}


# ------------------------------------------------------------------ memory
def test_oom_in_the_first_chunk_is_retried_with_fewer_runs(sd_setup, sd_baseline, monkeypatch):
    bb, inputs, coarse = sd_setup
    real = type(bb).denoised
    calls = []

    def fake(self, x, step, cond):
        calls.append(x.shape[0])
        if x.shape[0] > 3:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, x, step, cond)
    monkeypatch.setattr(type(bb), "denoised", fake)
    with pytest.warns(RuntimeWarning, match="ran out of memory"):
        res = modulate_batch(bb, inputs, coarse, None, FRAME, ModulationSettings(max_runs_per_chunk=7))
    assert calls[0] == 7 and max(calls[1:]) <= 3
    assert res.stats["oom_retries"] == 1 and res.stats["chunks"] == [3, 3, 3]
    assert _agree(res.labels, sd_baseline.labels) >= 0.999


def test_oom_with_two_runs_switches_to_store_mode_then_gives_up(sd_setup, sd_baseline, monkeypatch):
    bb, inputs, coarse = sd_setup
    real = type(bb).denoised
    limit = {"runs": 1}

    def fake(self, x, step, cond):
        if x.shape[0] > limit["runs"]:
            raise MemoryError()
        return real(self, x, step, cond)
    monkeypatch.setattr(type(bb), "denoised", fake)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = modulate_batch(bb, inputs, coarse, None, FRAME, ModulationSettings(max_runs_per_chunk=7))
    assert any("store mode" in str(w.message) for w in caught)
    assert res.stats["reference_pass"] == "store" and _agree(res.labels, sd_baseline.labels) >= 0.999
    limit["runs"] = 0
    with pytest.raises(OutOfMemoryError, match="does not fit in memory"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            modulate_batch(bb, inputs, coarse, None, FRAME, ModulationSettings(max_runs_per_chunk=2))


def test_is_out_of_memory_classification():
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate"))
    assert is_out_of_memory(RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 bytes"))
    assert is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(OutOfMemoryError("final", "fix"))


# ------------------------------------------------------------------ options and errors
def test_compat_and_options_run(sd_setup, sd_baseline):
    bb, inputs, coarse = sd_setup
    wrap = modulate_batch(bb, inputs, coarse, None, FRAME, ModulationSettings(compat="wrap", return_difference_maps=True))
    assert wrap.difference_maps.max() <= 1.0 and set(wrap.labels.unique().tolist()) <= {0, 1, 2}
    off = modulate_batch(bb, inputs, coarse, None, FRAME,
                         ModulationSettings(blur_kernel=0, filter_s=1.0, blend=False, inject=False,
                                            absent_labels="skip"))
    assert off.labels.shape == sd_baseline.labels.shape
    assert _agree(off.labels, sd_baseline.labels) < 1.0  # the options change the result


@pytest.mark.parametrize("s", [1.0, 0.7])
def test_compat_assigns_labels_in_the_authors_float64(sd_setup, s):
    """With compat set the runner's labels are the float64 argmax (ties to the lowest label) of its float64 maps,
    filtered only for s < 1; a label absent from a frame (zero maps there) takes the same path."""
    import numpy as np

    from vidseg_core.modulation import labels_from_difference_maps

    bb, inputs, coarse = sd_setup
    coarse = coarse.clone()
    coarse[1][coarse[1] == 1] = 0  # label 1 absent from frame 1
    st = ModulationSettings(compat="wrap+jpeg", filter_s=s, return_difference_maps=True)
    res = modulate_batch(bb, inputs, coarse, None, FRAME, st)
    maps = res.difference_maps
    assert maps.dtype == torch.float64 and maps.device.type == "cpu"
    again = labels_from_difference_maps(maps, coarse, res.label_ids, FRAME, filter_s=s, compat="wrap+jpeg")
    assert torch.equal(res.labels, again)
    if s == 1.0:  # unfiltered: numpy's argmax of the maps themselves
        want = res.label_ids[torch.from_numpy(np.argmax(maps.numpy(), axis=0))]
        assert torch.equal(res.labels, want)


def test_progress_is_monotonic_and_complete(sd_setup):
    bb, inputs, coarse = sd_setup
    seen = []
    modulate_batch(bb, inputs, coarse, None, FRAME, ModulationSettings(max_runs_per_chunk=3),
                   progress=lambda done, total: seen.append((done, total)))
    done = [d for d, _ in seen]
    assert done == sorted(done) and seen[-1][0] == seen[-1][1] == 6 * 4  # 6 runs x (3 steps + decode)


def test_single_label_and_cancel(sd_setup):
    bb, inputs, coarse = sd_setup
    one = modulate_batch(bb, inputs, torch.full_like(coarse, 4), None, FRAME)
    assert torch.equal(one.labels, torch.full((2,) + FRAME, 4))
    with pytest.raises(ModulationCancelled):
        modulate_batch(bb, inputs, coarse, None, FRAME, cancel=lambda: True)


def test_bad_inputs_raise_readable_errors(sd_setup):
    bb, inputs, coarse = sd_setup
    with pytest.raises(InputError, match="feature grid"):
        modulate_batch(bb, inputs, coarse[:, :3], None, FRAME)
    with pytest.raises(InputError, match="not in label_ids"):
        modulate_batch(bb, inputs, coarse, [0, 1], FRAME)
    with pytest.raises(InputError, match="frames"):
        modulate_batch(bb, inputs, coarse[:1], None, FRAME)
    with pytest.raises(InputError, match="integer"):
        modulate_batch(bb, inputs, coarse.float(), None, FRAME)
    with pytest.raises(InputError, match="outside"):
        modulate_batch(bb, inputs, coarse, None, FRAME, ModulationSettings(step=3))
    with pytest.raises(InputError, match="do not exist"):
        modulate_batch(bb, inputs, coarse, None, FRAME, ModulationSettings(layers=("temporal_self",)))
    with pytest.raises(InputError, match="compat"):
        modulate_batch(bb, inputs, coarse, None, FRAME, ModulationSettings(compat="8bit"))


def test_nan_difference_maps_raise_a_numerical_error_naming_the_label(setup):
    """An overflow (fp16) gives NaN decodes; a NaN never wins the argmax, so it must not be skipped silently."""
    from vidseg_core.errors import NumericalError

    bb, inputs, coarse = setup
    original = bb._decode_call
    calls = []

    def nan_in_second_label(latents, clip_frames):
        out = original(latents, clip_frames)
        calls.append(out.shape[0])
        if len(calls) == 2:
            out[0, 0, 0, 0] = float("nan")  # one pixel of one decode
        return out

    bb._decode_call = nan_in_second_label
    try:
        with pytest.raises(NumericalError, match=r"NaN difference maps for label\(s\) \[\d\].*Fix: Run with "
                                                 r"precision 'bf16' or 'fp32'"):
            modulate_batch(bb, inputs, coarse, None, FRAME, ModulationSettings(max_runs_per_chunk=2))
    finally:
        del bb._decode_call
    assert len(calls) >= 2
    ok = modulate_batch(bb, inputs, coarse, None, FRAME, ModulationSettings(max_runs_per_chunk=2))
    assert ok.labels.shape == (2,) + FRAME
