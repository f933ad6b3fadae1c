"""One contract, every backbone (modelled on diffusers' scheduler contract tests).

Each implementation of :class:`vidseg_core.backbones.Backbone` must pass every
test here; a new backbone is added to ``BACKBONES`` and nothing else.
"""
import logging

import pytest
import torch

from vidseg_core.backbones import Backbone, CaptureQueries, LayerId, load_backbone
from tests.helpers.diffusers_log import CAST_LOG, diffusers_warnings
from tools.pack_loader import load_pack
from vidseg_core.errors import InputError as CoreInputError

#: the adapter lives in the pack's node package, which imports the core under the pack's own name
InputError = (CoreInputError, load_pack().vidseg_core.errors.InputError)

#: the pack's own tiny twins, and the ComfyUI adapter (nodes/comfy_adapters/native.py) over stand-ins of ComfyUI's
#: loader objects wrapping the same tiny models (tests/helpers/comfy_standin.py)
BACKBONES = ["tiny-sd", "tiny-svd", "comfy-tiny-sd", "comfy-tiny-svd"]
T, H, W = 2, 128, 192  # frames of 128x192 -> latent 16x24 -> blocks 6-8 at 8x12


def make_backbone(name: str) -> Backbone:
    if name.startswith("comfy-"):
        from tests.helpers.comfy_standin import native_backbone

        return native_backbone(name[len("comfy-"):])
    return load_backbone(name, device="cpu", precision="fp32")


@pytest.fixture(scope="module", params=BACKBONES)
def backbone(request) -> Backbone:
    return make_backbone(request.param)


@pytest.fixture(scope="module")
def frames():
    g = torch.Generator().manual_seed(0)
    return torch.rand(T, H, W, 3, generator=g)


def _inputs(bb, frames, seed=1):
    gen = bb.generator(seed)
    prepared = bb.prepare_frames(frames)
    z0 = bb.encode(prepared, gen)
    cond = bb.condition(prepared, gen)
    noise = bb.randn(tuple(z0.shape), gen)
    return prepared, z0, cond, noise


def test_identity(backbone):
    assert backbone.family in ("sd", "svd")
    assert backbone.name in BACKBONES
    assert backbone.device == torch.device("cpu") and backbone.dtype == torch.float32
    assert {"unet", "vae"} <= set(backbone.modules())


def test_schedule(backbone):
    s = backbone.sigmas()
    assert s.dtype == torch.float64 and len(s) == backbone.config.num_steps + 1
    assert s[-1] == 0 and bool((s[:-1] > 0).all()) and bool((s[1:] < s[:-1]).all())
    assert backbone.sigmas() is s or torch.equal(backbone.sigmas(), s)


def test_prepare_frames_rounds_down_to_64(backbone):
    x = backbone.prepare_frames(torch.rand(1, 130, 200, 3))
    assert x.shape == (1, 3, 128, 192) and -1 <= float(x.min()) and float(x.max()) <= 1
    with pytest.raises(InputError, match="too small"):
        backbone.prepare_frames(torch.rand(1, 40, 200, 3))
    with pytest.raises(InputError):
        backbone.prepare_frames(torch.rand(1, 64, 64))


@torch.inference_mode()
def test_encode_decode_shapes_and_determinism(backbone, frames):
    prepared, z0, _, _ = _inputs(backbone, frames)
    assert z0.shape == (T, 4, H // 8, W // 8)
    _, z0b, _, _ = _inputs(backbone, frames)
    assert torch.equal(z0, z0b)
    _, z0c, _, _ = _inputs(backbone, frames, seed=2)
    assert not torch.equal(z0, z0c)
    img = backbone.decode(z0)
    assert img.shape == (T, 3, H, W) and img.dtype == torch.float32
    assert 0 <= float(img.min()) and float(img.max()) <= 1


@torch.inference_mode()
def test_encoding_in_chunks_equals_all_at_once_and_bad_frames_are_refused(backbone, frames):
    """The posterior noise is drawn for the whole batch, so ``decode_chunk`` does not change the latents."""
    import copy

    prepared, z0, _, _ = _inputs(backbone, frames)
    whole = copy.copy(backbone)
    whole.config = backbone.config.with_(decode_chunk=None)
    torch.testing.assert_close(whole.encode(prepared, whole.generator(1)), z0, rtol=1e-5, atol=1e-5)
    one = copy.copy(backbone)
    one.config = backbone.config.with_(decode_chunk=1)
    torch.testing.assert_close(one.encode(prepared, one.generator(1)), z0, rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="multiples of 8"):
        backbone.encode(prepared[..., :-4], backbone.generator(1))
    with pytest.raises(InputError, match=r"\[T,3,H,W\]"):
        backbone.encode(prepared[:, :2], backbone.generator(1))
    with pytest.raises(InputError, match="decode expects latents"):
        backbone.decode(z0[:, :3])
    bad = copy.copy(backbone)
    bad.config = backbone.config.with_(decode_chunk=0)
    with pytest.raises(InputError, match="decode_chunk"):
        bad.decode(z0)


@torch.inference_mode()
def test_large_frames_are_encoded_fewer_a_call_with_the_same_latents(backbone, frames):
    """``encode_pixels`` caps the pixels of one encode call (never above ``decode_chunk`` frames, at least one)."""
    import copy

    prepared, z0, _, _ = _inputs(backbone, frames)
    t, _, h, w = prepared.shape
    capped = copy.copy(backbone)
    capped.config = backbone.config.with_(decode_chunk=4, encode_pixels=2 * h * w + 1)
    assert capped._encode_chunks(7, h, w) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    capped.config = backbone.config.with_(decode_chunk=4, encode_pixels=h * w - 1)
    assert capped._encode_chunks(3, h, w) == [(0, 1), (1, 2), (2, 3)]
    torch.testing.assert_close(capped.encode(prepared, capped.generator(1)), z0, rtol=1e-5, atol=1e-5)
    capped.config = backbone.config.with_(decode_chunk=3, encode_pixels=None)
    assert capped._encode_chunks(7, h, w) == [(0, 3), (3, 6), (6, 7)]
    capped.config = backbone.config.with_(decode_chunk=4, encode_pixels=100 * h * w)
    assert capped._encode_chunks(7, h, w) == [(0, 4), (4, 7)]
    capped.config = backbone.config.with_(encode_pixels=0)
    with pytest.raises(InputError, match="encode_pixels"):
        capped.encode(prepared, capped.generator(1))


def test_weights_variant_of_diffusers_part_folders(tmp_path):
    from vidseg_core.backbones.files import weights_variant

    stem = "diffusion_pytorch_model"
    assert weights_variant(tmp_path, stem) is None  # empty folder: no variant (the loader reports what is missing)
    (tmp_path / f"{stem}.fp16.safetensors").write_bytes(b"")
    assert weights_variant(tmp_path, stem) == "fp16"
    (tmp_path / f"{stem}.safetensors").write_bytes(b"")
    assert weights_variant(tmp_path, stem) is None  # the plain file wins
    other = tmp_path / "text_encoder"
    other.mkdir()
    (other / "model.bf16.bin").write_bytes(b"")
    assert weights_variant(other, "model") == "bf16"


@torch.inference_mode()
def test_denoised_refuses_a_step_outside_the_schedule_and_a_foreign_conditioning(backbone, frames):
    _, z0, cond, _ = _inputs(backbone, frames)
    n = len(backbone.sigmas()) - 1
    for step in (-1, n):
        with pytest.raises(InputError, match=f"outside the {n}-step schedule"):
            backbone.denoised(z0[None], step, cond)
    with pytest.raises(InputError, match=r"cond must come from \w+Backbone.condition\(\)"):
        backbone.denoised(z0[None], 0, object())


@torch.inference_mode()
def test_conditional_only_evaluation_equals_the_conditional_half(backbone, frames):
    """Queries of every decoder layer and the unguided conditional D equal those of the guided evaluation."""
    _, z0, cond, noise = _inputs(backbone, frames)
    step = backbone.config.modulation_step
    x = torch.stack([backbone.add_noise(z0, step, noise), backbone.add_noise(z0, step, torch.flip(noise, [0]))])
    layers = set(backbone.attention_layers())
    guided = CaptureQueries(layers, steps={step}, half=1, run=1)
    with backbone.hooks(guided):
        d = backbone.denoised(x, step, cond)
    alone = CaptureQueries(layers, steps={step}, half=1, run=1)
    with backbone.hooks(alone):
        d_cond = backbone.denoised(x, step, cond, conditional_only=True)
    assert backbone.controller.layout.halves == 1 and d_cond.shape == d.shape
    assert set(alone.captured) == set(guided.captured) == {(step, l) for l in layers}
    for key, q in guided.captured.items():
        torch.testing.assert_close(alone.captured[key], q, rtol=1e-4, atol=1e-5, msg=str(key))
    with pytest.raises(ValueError, match="unconditional half"):
        with backbone.hooks(CaptureQueries(layers, steps={step}, half=0)):
            backbone.denoised(x, step, cond, conditional_only=True)
    # frame 0 is guided with scale 1 for SVD (1.0 -> 2.5 over the frames); SD's CFG 5 mixes the halves
    if backbone.family == "svd":
        torch.testing.assert_close(d_cond[:, 0], d[:, 0], rtol=1e-4, atol=1e-5)
    else:
        assert not torch.allclose(d_cond, d)


@torch.inference_mode()
def test_runs_are_independent_and_batched_equals_single(backbone, frames):
    """R runs in one evaluation give what each run gives alone (the modulation relies on it)."""
    _, z0, cond, noise = _inputs(backbone, frames)
    step = backbone.config.modulation_step
    x1 = backbone.add_noise(z0, step, noise)[None]
    x2 = backbone.add_noise(z0, step, torch.flip(noise, [0]))[None]
    d1 = backbone.denoised(x1, step, cond)
    d2 = backbone.denoised(x2, step, cond)
    d12 = backbone.denoised(torch.cat([x1, x2]), step, cond)
    assert d1.shape == x1.shape
    torch.testing.assert_close(d12[0:1], d1, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(d12[1:2], d2, rtol=1e-4, atol=1e-5)


@torch.inference_mode()
def test_denoise_is_deterministic_and_returns_latents(backbone, frames):
    _, z0, cond, noise = _inputs(backbone, frames)
    step = backbone.config.num_steps - 2
    x = backbone.add_noise(z0, step, noise)[None]
    seen = []
    out = backbone.denoise(x, cond, step, callback=lambda i, v: (seen.append(i), v)[1])
    assert seen == [step, step + 1]
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert torch.equal(out, backbone.denoise(x, cond, step))


def test_attention_layers_cover_decoder_blocks_3_to_11(backbone):
    layers = backbone.attention_layers()
    kinds = {"spatial_self", "spatial_cross"} | ({"temporal_self", "temporal_cross"} if backbone.family == "svd" else set())
    assert set(layers) == {LayerId(b, k) for b in range(3, 12) for k in kinds}


@torch.inference_mode()
def test_hooked_processors_equal_default_and_capture_blocks_6_to_8_at_one_sixteenth(frames):
    for name in BACKBONES:
        bb = make_backbone(name)  # fresh: default processors
        _, z0, cond, noise = _inputs(bb, frames)
        step = bb.config.modulation_step
        x = bb.add_noise(z0, step, noise)[None]
        before = bb.denoised(x, step, cond)
        cap = CaptureQueries({LayerId(b, "spatial_self") for b in (6, 7, 8)}, steps={step})
        with bb.hooks(cap):
            after = bb.denoised(x, step, cond)
        torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
        for b in (6, 7, 8):
            q = cap.captured[(step, LayerId(b, "spatial_self"))]
            assert q.shape[:2] == (T, (H // 16) * (W // 16)), (name, b, q.shape)
        assert bb.controller.hooks == []  # hooks are removed after the block


def test_to_moves_and_keeps_interface(backbone):
    same = backbone.to("cpu", torch.float32)
    assert same is backbone and next(backbone.unet.parameters()).dtype == torch.float32
    assert isinstance(backbone, (Backbone, load_pack().vidseg_core.backbones.Backbone))


@pytest.mark.parametrize("name", [n for n in BACKBONES if not n.startswith("comfy-")])
def test_casting_to_bf16_leaves_only_meaningful_float32_warnings(name):
    """diffusers warns on every dtype cast that modules "should be kept in float32", naming none: the pack's
    casts drop that empty form (:func:`vidseg_core.backbones.base.cast_module`), never one naming modules.
    (The ComfyUI adapter casts nothing: ComfyUI owns its models' placement and dtype.)"""
    bb = make_backbone(name)
    with diffusers_warnings() as seen:
        bb.to(dtype=torch.bfloat16)
    assert {p.dtype for m in bb.modules().values() for p in m.parameters()} == {torch.bfloat16}
    assert not [m for m in seen if "kept in float32" in m]
    # only the empty form is dropped (checked on the filter itself: diffusers 0.30 never warns at all)
    from vidseg_core.backbones.base import _not_the_empty_fp32_warning as keep

    def record(modules):
        msg = f"There are modules in UNet2DConditionModel that should be kept in float32: {modules}. Casting ..."
        return logging.LogRecord(CAST_LOG, logging.WARNING, __file__, 0, msg, None, None)

    assert not keep(record([])) and keep(record(["conv_in"]))


def test_the_warning_filter_nests():
    """A cast inside a load (``Backbone.to`` inside ``load_backbone``) must not lift the load's filter."""
    from vidseg_core.backbones.base import without_empty_fp32_warning

    log = logging.getLogger(CAST_LOG)
    empty = "There are modules in AutoencoderKL that should be kept in float32: []. Casting directly ..."
    with diffusers_warnings() as seen:
        with without_empty_fp32_warning():
            with without_empty_fp32_warning():
                log.warning(empty)
            log.warning(empty)  # after the inner block: still inside the outer one
        log.warning(empty)  # outside both: shown
    assert seen == [empty]
