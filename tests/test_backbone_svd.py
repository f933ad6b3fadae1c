"""Stable Video Diffusion backbone: schedule, denoiser, conditioning, conversion, loading, hooks.

Everything runs on the tiny random-weight SVD (docs/design/backbones.md#tiny-test-models); real key
names and real-size shapes are checked on models built on the meta device.
"""
import copy
import json
import math
import socket

import pytest
import torch

from vidseg_core.backbones import CaptureQueries, LayerId, SVDConfig, load_backbone
from vidseg_core.backbones import svd_convert as conv
from vidseg_core.backbones.svd import SVDCondition, build_tiny_svd, clip_preprocess, edm_sigmas, real_configs
from vidseg_core.backbones.svd_files import match_architecture
from vidseg_core.errors import InputError, ModelLoadError

safetensors_torch = pytest.importorskip("safetensors.torch")


# ------------------------------------------------------------------ helpers / fixtures
def sgm_state(bb, cond_encoder=None):
    """The backbone's weights in the original sgm single-file layout (independent tensors, ready to save)."""
    sd = conv.diffusers_to_sgm(bb.unet.state_dict(), bb.vae.state_dict(), bb.image_encoder.state_dict(),
                               cond_encoder)
    return {k: v.detach().clone().contiguous() for k, v in sd.items()}


def save_folder(bb, folder):
    folder.mkdir(parents=True, exist_ok=True)
    bb.unet.save_pretrained(folder / "unet")
    bb.vae.save_pretrained(folder / "vae")
    bb.image_encoder.save_pretrained(folder / "image_encoder")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "StableVideoDiffusionPipeline", "unet": ["diffusers", "UNetSpatioTemporalConditionModel"],
        "vae": ["diffusers", "AutoencoderKLTemporalDecoder"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"]}))
    return folder


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_svd(device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def sgm_file(tiny, tmp_path_factory):
    path = tmp_path_factory.mktemp("svd_single") / "tiny_svd.safetensors"
    safetensors_torch.save_file(sgm_state(tiny), str(path))
    return path


@pytest.fixture(scope="module")
def folder(tiny, tmp_path_factory):
    return save_folder(tiny, tmp_path_factory.mktemp("svd_folder") / "tiny-svd-diffusers")


def frames_of(t, h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(t, h, w, 3, generator=g)


def run_inputs(bb, frames, seed=1, step=22):
    gen = bb.generator(seed)
    x = bb.prepare_frames(frames)
    z0 = bb.encode(x, gen)
    cond = bb.condition(x, gen)
    noise = bb.randn(tuple(z0.shape), gen)
    return x, z0, cond, bb.add_noise(z0, step, noise)[None]


def assert_same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert set(sa) == set(sb)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


# ------------------------------------------------------------------ schedule, denoiser, guidance
def test_schedule_values():
    s = edm_sigmas(SVDConfig())
    assert s.dtype == torch.float64 and len(s) == 26 and s[-1] == 0 and s[0] == pytest.approx(700.0)
    assert float(s[17]) == pytest.approx(1.273, abs=5e-4)
    assert float(s[22]) == pytest.approx(0.0248, abs=5e-5)
    assert float(s[24]) == pytest.approx(0.002, rel=1e-9)
    rho, lo, hi = 7.0, 0.002 ** (1 / 7), 700.0 ** (1 / 7)
    for i in range(25):
        assert float(s[i]) == pytest.approx((hi + i / 24 * (lo - hi)) ** rho, rel=1e-12)


class _StubUNet:
    """Records the UNet inputs; predicts 0 for the uncond half and 1 for the cond half."""

    def __call__(self, sample, timestep, encoder_hidden_states, added_time_ids, return_dict=False):
        self.seen = dict(sample=sample, timestep=timestep, emb=encoder_hidden_states, ids=added_time_ids)
        b, t, _, h, w = sample.shape
        half = torch.arange(b).remainder(2).float().view(b, 1, 1, 1, 1)
        return (half.expand(b, t, 4, h, w).clone(),)


@torch.inference_mode()
def test_denoiser_scalings_concat_and_linear_guidance(tiny):
    _, _, cond, xt = run_inputs(tiny, frames_of(3, 64, 64))
    bb = copy.copy(tiny)
    bb.unet = _StubUNet()
    step, r = 20, 2
    x = torch.cat([xt, 2 * xt])  # R = 2 runs
    d = bb.denoised(x, step, cond)
    sigma = float(bb.sigmas()[step])
    seen = bb.unet.seen
    assert seen["sample"].shape == (r * 2, 3, 8, 8, 8)
    c_in = 1 / math.sqrt(sigma ** 2 + 1)
    rows = seen["sample"].view(r, 2, 3, 8, 8, 8)
    for run in range(r):
        for half in range(2):
            torch.testing.assert_close(rows[run, half, :, :4], x[run] * c_in)
        assert torch.equal(rows[run, 0, :, 4:], torch.zeros_like(rows[run, 0, :, 4:]))  # uncond: zero latent
        for f in range(3):
            assert torch.equal(rows[run, 1, f, 4:], cond.concat_latent[1])  # cond latent on every frame
    assert float(seen["timestep"]) == pytest.approx(0.25 * math.log(sigma), rel=1e-6)
    emb = seen["emb"].view(r, 2, 1, -1)
    assert torch.equal(emb[:, 0], torch.zeros_like(emb[:, 0])) and torch.equal(emb[0, 1], cond.image_embeds[1])
    assert seen["ids"].tolist() == [[14.0, 127.0, pytest.approx(0.02)]] * (r * 2)
    # D_u = c_skip·x, D_c = c_skip·x + c_out  ->  D = c_skip·x + s_f·c_out with s_f = 1.0 .. 2.5 over frames
    c_skip, c_out = 1 / (sigma ** 2 + 1), -sigma / math.sqrt(sigma ** 2 + 1)
    s = torch.tensor([1.0, 1.75, 2.5]).view(1, 3, 1, 1, 1)
    torch.testing.assert_close(d, c_skip * x + s * c_out)


@torch.inference_mode()
def test_condition_uses_first_frame_unscaled_mode_and_zero_uncond(tiny):
    frames = frames_of(3, 64, 128)
    x = tiny.prepare_frames(frames)
    cond = tiny.condition(x, tiny.generator(5))
    assert isinstance(cond, SVDCondition) and cond.frames == 3
    assert cond.concat_latent.shape == (2, 4, 8, 16) and cond.image_embeds.shape == (2, 1, 32)
    assert not cond.image_embeds[0].any() and not cond.concat_latent[0].any()
    assert cond.added_time_ids.tolist() == [[14.0, 127.0, pytest.approx(0.02)]] * 2
    torch.testing.assert_close(cond.guidance, torch.tensor([1.0, 1.75, 2.5]))
    # the conditional half: mode (not a sample) of the first frame + 0.02·N(0,1), NOT times 0.18215
    noise = tiny.randn((1, 3, 64, 128), tiny.generator(5))
    expected = tiny.vae.encode(x[:1] + 0.02 * noise).latent_dist.mode()
    torch.testing.assert_close(cond.concat_latent[1:], expected)
    expected_emb = tiny.image_encoder(pixel_values=clip_preprocess(x[:1])).image_embeds
    torch.testing.assert_close(cond.image_embeds[1], expected_emb)
    # only frame 0 matters
    other = x.clone()
    other[1:] = -other[1:]
    cond2 = tiny.condition(other, tiny.generator(5))
    assert torch.equal(cond2.concat_latent, cond.concat_latent) and torch.equal(cond2.image_embeds, cond.image_embeds)
    other[0] = -other[0]
    assert not torch.equal(tiny.condition(other, tiny.generator(5)).image_embeds, cond.image_embeds)


def test_clip_preprocess():
    img = torch.full((1, 3, 64, 96), 0.5)  # -1..1 value 0.5 -> 0.75
    px = clip_preprocess(img)
    assert px.shape == (1, 3, 224, 224)
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])
    torch.testing.assert_close(px[0, :, 100, 100], (0.75 - mean) / std)


@torch.inference_mode()
def test_short_run_is_deterministic(tiny):
    frames = frames_of(4, 128, 192)

    def run():
        _, z0, cond, xt = run_inputs(tiny, frames, step=22)
        out = tiny.denoise(xt, cond, 22)
        return z0, out, tiny.decode(out[0])

    z0, lat, img = run()
    assert z0.shape == (4, 4, 16, 24) and lat.shape == (1, 4, 4, 16, 24)
    assert img.shape == (4, 3, 128, 192) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    z0b, latb, imgb = run()
    assert torch.equal(z0, z0b) and torch.equal(lat, latb) and torch.equal(img, imgb)


@torch.inference_mode()
def test_decode_chunks_follow_config(tiny):
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    one = tiny.decode(z)  # decode_chunk = 1: the authors' one frame at a time
    assert one.shape == (3, 3, 64, 64)
    torch.testing.assert_close(tiny.decode(z[1:2]), one[1:2])
    allatonce = copy.copy(tiny)
    allatonce.config = tiny.config.with_(decode_chunk=None)
    both = allatonce.decode(z)
    assert both.shape == one.shape and not torch.allclose(both, one)  # the temporal decoder mixes frames


# ------------------------------------------------------------------ hooks and block mapping
def test_attention_layers_map_ldm_blocks(tiny):
    layers = tiny.attention_layers()
    kinds = ("spatial_self", "spatial_cross", "temporal_self", "temporal_cross")
    assert set(layers) == {LayerId(b, k) for b in range(3, 12) for k in kinds}
    att = tiny.unet.up_blocks[2].attentions[2]
    assert layers[LayerId(8, "spatial_self")] is att.transformer_blocks[0].attn1
    assert layers[LayerId(8, "temporal_self")] is att.temporal_transformer_blocks[0].attn1
    assert layers[LayerId(3, "temporal_cross")] is tiny.unet.up_blocks[1].attentions[0].temporal_transformer_blocks[0].attn2


@torch.inference_mode()
def test_hooked_processors_equal_default_and_capture_at_one_sixteenth():
    bb = build_tiny_svd()  # fresh: default diffusers processors
    _, _, cond, xt = run_inputs(bb, frames_of(2, 128, 192), step=17)
    before = bb.denoised(xt, 17, cond)
    layers = {LayerId(b, "spatial_self") for b in (6, 7, 8)} | {LayerId(b, "temporal_self") for b in (3, 8, 11)}
    cap = CaptureQueries(layers, steps={17})
    with bb.hooks(cap):
        after = bb.denoised(xt, 17, cond)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    for b in (6, 7, 8):
        assert cap.captured[(17, LayerId(b, "spatial_self"))].shape == (2, 8 * 12, 64)
    assert cap.captured[(17, LayerId(8, "temporal_self"))].shape == (2, 8 * 12, 64)
    assert cap.captured[(17, LayerId(3, "temporal_self"))].shape == (2, 4 * 6, 64)
    assert cap.captured[(17, LayerId(11, "temporal_self"))].shape == (2, 16 * 24, 32)


# ------------------------------------------------------------------ conversion
#: real key names of svd.safetensors, each verified in public sources (module doc of svd_keymap)
REAL_KEYS = [
    "model.diffusion_model.input_blocks.0.0.weight",
    "model.diffusion_model.input_blocks.1.0.time_stack.in_layers.0.weight",
    "model.diffusion_model.input_blocks.1.0.time_stack.emb_layers.1.weight",
    "model.diffusion_model.input_blocks.1.0.time_mixer.mix_factor",
    "model.diffusion_model.input_blocks.1.1.time_stack.0.ff_in.net.0.proj.weight",
    "model.diffusion_model.input_blocks.1.1.time_stack.0.norm_in.weight",
    "model.diffusion_model.input_blocks.1.1.time_pos_embed.0.weight",
    "model.diffusion_model.input_blocks.1.1.time_pos_embed.2.bias",
    "model.diffusion_model.input_blocks.1.1.time_mixer.mix_factor",
    "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",
    "model.diffusion_model.input_blocks.3.0.op.weight",
    "model.diffusion_model.middle_block.1.transformer_blocks.0.attn1.to_out.0.weight",
    "model.diffusion_model.output_blocks.2.1.conv.weight",
    "model.diffusion_model.output_blocks.0.0.in_layers.2.weight",
    "model.diffusion_model.output_blocks.5.0.time_stack.out_layers.3.weight",
    "model.diffusion_model.output_blocks.5.1.time_stack.0.attn1.to_q.weight",
    "model.diffusion_model.output_blocks.5.2.conv.weight",
    "model.diffusion_model.output_blocks.6.0.skip_connection.weight",
    "model.diffusion_model.output_blocks.6.1.time_stack.0.attn1.to_q.weight",
    "model.diffusion_model.output_blocks.6.1.proj_out.weight",
    "model.diffusion_model.out.2.weight",
    "first_stage_model.decoder.mid.block_1.mix_factor",
    "first_stage_model.decoder.mid.block_1.time_stack.in_layers.0.weight",
    "first_stage_model.decoder.mid.block_2.time_stack.out_layers.3.bias",
    "first_stage_model.decoder.mid.attn_1.q.weight",
    "first_stage_model.decoder.mid.attn_1.proj_out.weight",
    "first_stage_model.decoder.conv_out.time_mix_conv.weight",
    "first_stage_model.decoder.up.1.block.0.nin_shortcut.weight",
    "first_stage_model.decoder.up.1.block.2.mix_factor",
    "first_stage_model.decoder.up.1.upsample.conv.weight",
    "first_stage_model.decoder.norm_out.weight",
    "conditioner.embedders.3.encoder.quant_conv.weight",
    "conditioner.embedders.3.encoder.encoder.mid.block_2.norm2.weight",
    "conditioner.embedders.3.encoder.encoder.norm_out.bias",
    "conditioner.embedders.0.open_clip.model.visual.class_embedding",
    "conditioner.embedders.0.open_clip.model.visual.conv1.weight",
    "conditioner.embedders.0.open_clip.model.visual.positional_embedding",
    "conditioner.embedders.0.open_clip.model.visual.ln_pre.weight",
    "conditioner.embedders.0.open_clip.model.visual.ln_post.bias",
    "conditioner.embedders.0.open_clip.model.visual.proj",
    "conditioner.embedders.0.open_clip.model.visual.transformer.resblocks.0.attn.in_proj_weight",
    "conditioner.embedders.0.open_clip.model.visual.transformer.resblocks.1.attn.in_proj_bias",
    "conditioner.embedders.0.open_clip.model.visual.transformer.resblocks.1.mlp.c_fc.weight",
    "conditioner.embedders.0.open_clip.model.visual.transformer.resblocks.0.ln_2.weight",
]


def test_key_layout_looks_like_the_real_file(tiny):
    sd = sgm_state(tiny)
    missing = [k for k in REAL_KEYS if k not in sd]
    assert not missing
    assert not any(k.startswith("first_stage_model.quant_conv") or "post_quant_conv" in k for k in sd)
    assert sd["first_stage_model.decoder.mid.attn_1.q.weight"].shape == (64, 64, 1, 1)  # 1x1 conv, not linear
    assert sd["conditioner.embedders.0.open_clip.model.visual.proj"].shape == (32, 32)


def test_real_size_layout_matches_published_facts():
    """The shipped configs, built on the meta device, convert to the real file's counts and shapes."""
    from vidseg_core.backbones.svd import _build_parts

    unet, vae, enc = _build_parts(*real_configs(), meta=True)
    assert sum(p.numel() for p in unet.parameters()) == 1_524_623_082
    assert sum(p.numel() for p in vae.parameters()) == 97_742_847
    assert sum(p.numel() for p in enc.parameters()) == 632_076_800
    sd = conv.diffusers_to_sgm(unet.state_dict(), vae.state_dict(), enc.state_dict())
    assert sum(k.startswith("first_stage_model.encoder.") for k in sd) == 106  # asserted on the official file
    shapes = {
        "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
        "model.diffusion_model.input_blocks.0.0.weight": (320, 8, 3, 3),
        "model.diffusion_model.label_emb.0.0.weight": (1280, 768),
        "model.diffusion_model.input_blocks.1.0.time_stack.in_layers.2.weight": (320, 320, 3, 1, 1),
        "model.diffusion_model.output_blocks.8.1.time_stack.0.attn2.to_k.weight": (640, 1024),
        "first_stage_model.decoder.conv_out.time_mix_conv.weight": (3, 3, 3, 1, 1),
        "first_stage_model.decoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "conditioner.embedders.0.open_clip.model.visual.proj": (1280, 1024),
        "conditioner.embedders.0.open_clip.model.visual.positional_embedding": (257, 1280),
        "conditioner.embedders.0.open_clip.model.visual.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
    }
    for k, shape in shapes.items():
        assert tuple(sd[k].shape) == shape, k
    # and the architecture matcher picks the real configs for those shapes (svd_xt: 25 frames)
    got = match_architecture({k: tuple(v.shape) for k, v in sd.items()}, num_frames=25)
    assert got[3] == {"unet": "real", "vae": "real", "image_encoder": "real"} and got[0]["num_frames"] == 25


def test_conversion_round_trip_diffusers_sgm_diffusers(tiny):
    parts = {"unet": tiny.unet.state_dict(), "vae": tiny.vae.state_dict(), "clip": tiny.image_encoder.state_dict()}
    sgm = conv.diffusers_to_sgm(parts["unet"], parts["vae"], parts["clip"])
    back = conv.sgm_to_diffusers(sgm, parts["unet"].keys(), parts["vae"].keys(), parts["clip"].keys())
    assert back.cond_encoder is None and back.ignored == []  # every key consumed, nothing left over
    for name, got in (("unet", back.unet), ("vae", back.vae), ("clip", back.image_encoder)):
        assert set(got) == set(parts[name])
        for k, v in parts[name].items():
            assert torch.equal(got[k], v), (name, k)


def test_conversion_round_trip_sgm_diffusers_sgm_with_independent_tensors(tiny):
    """Random tensors in the original layout (so the two VAE encoders disagree) survive the round trip."""
    g = torch.Generator().manual_seed(3)
    sgm = {k: torch.randn(v.shape, generator=g) for k, v in sgm_state(tiny).items()}
    keys = [m.state_dict().keys() for m in (tiny.unet, tiny.vae, tiny.image_encoder)]
    back = conv.sgm_to_diffusers(sgm, *keys)
    assert back.cond_encoder is not None and set(back.cond_encoder) == {
        k for k in tiny.vae.state_dict() if k.startswith(("encoder.", "quant_conv."))}
    # the VAE got the first-stage encoder with an identity quant_conv
    assert torch.equal(back.vae["quant_conv.weight"].flatten(1), torch.eye(8))
    again = conv.diffusers_to_sgm(back.unet, back.vae, back.image_encoder, back.cond_encoder)
    assert set(again) == set(sgm)
    for k, v in sgm.items():
        assert torch.equal(again[k], v), k


def test_conversion_reports_missing_unknown_and_ignored_keys(tiny):
    keys = [m.state_dict().keys() for m in (tiny.unet, tiny.vae, tiny.image_encoder)]
    sgm = sgm_state(tiny)
    extra = dict(sgm)
    extra["conditioner.embedders.0.open_clip.model.logit_scale"] = torch.ones(())
    extra["conditioner.embedders.3.encoder.decoder.conv_in.weight"] = torch.ones(1)
    assert conv.sgm_to_diffusers(extra, *keys).ignored == [
        "conditioner.embedders.0.open_clip.model.logit_scale", "conditioner.embedders.3.encoder.decoder.conv_in.weight"]
    unknown = dict(sgm)
    unknown["model.diffusion_model.output_blocks.8.1.lora_up.weight"] = torch.ones(1)
    with pytest.raises(ModelLoadError, match="does not know: model.diffusion_model.output_blocks.8.1.lora_up"):
        conv.sgm_to_diffusers(unknown, *keys)
    missing = dict(sgm)
    del missing["first_stage_model.decoder.conv_out.time_mix_conv.weight"]
    with pytest.raises(ModelLoadError, match="incomplete.*conv_out.time_mix_conv.weight"):
        conv.sgm_to_diffusers(missing, *keys)
    # without the conditioning-encoder copy the first-stage encoder is used, with an identity quant_conv
    no_cond = {k: v for k, v in sgm.items() if not k.startswith(conv.COND_VAE_PREFIX)}
    got = conv.sgm_to_diffusers(no_cond, *keys)
    assert got.cond_encoder is None and torch.equal(got.vae["quant_conv.bias"], torch.zeros(8))


# ------------------------------------------------------------------ loading
@torch.inference_mode()
def test_single_file_equals_diffusers_built_model(tiny, sgm_file):
    bb = load_backbone(str(sgm_file), device="cpu", precision="fp32")
    assert bb.family == "svd" and bb.name == "tiny_svd" and bb.cond_encoder is None
    assert bb.unet.config.num_frames == 14
    for a, b in ((bb.unet, tiny.unet), (bb.vae, tiny.vae), (bb.image_encoder, tiny.image_encoder)):
        assert_same_weights(a, b)
    frames = frames_of(2, 64, 64)
    _, z0a, ca, xa = run_inputs(bb, frames)
    _, z0b, cb, xb = run_inputs(tiny, frames)
    assert torch.equal(z0a, z0b) and torch.equal(ca.concat_latent, cb.concat_latent)
    assert torch.equal(ca.image_embeds, cb.image_embeds)
    torch.testing.assert_close(bb.denoised(xa, 22, ca), tiny.denoised(xb, 22, cb), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(bb.decode(z0a), tiny.decode(z0b), rtol=1e-5, atol=1e-6)


@torch.inference_mode()
def test_single_file_with_its_own_conditioning_encoder(tiny, tmp_path):
    sd = sgm_state(tiny)
    key = "conditioner.embedders.3.encoder.encoder.conv_in.weight"
    sd[key] = sd[key] * 1.5  # the conditioning encoder now differs from the first-stage one
    path = tmp_path / "svd_xt.safetensors"
    safetensors_torch.save_file(sd, str(path))
    bb = load_backbone(str(path), device="cpu", precision="fp32")
    assert bb.unet.config.num_frames == 25  # svd_xt by name
    assert bb.cond_encoder is not None and "cond_encoder" in bb.modules()
    assert_same_weights(bb.vae.decoder, tiny.vae.decoder)
    assert torch.equal(bb.vae.quant_conv.weight.flatten(1), torch.eye(8))  # first-stage encoder, quant_conv folded
    torch.testing.assert_close(bb.cond_encoder.encoder.conv_in.weight, tiny.vae.encoder.conv_in.weight * 1.5)
    x = bb.prepare_frames(frames_of(2, 64, 64))
    ca, cb = bb.condition(x, bb.generator(1)), tiny.condition(x, tiny.generator(1))
    assert torch.equal(ca.image_embeds, cb.image_embeds) and not torch.allclose(ca.concat_latent, cb.concat_latent)
    # frame latents still come from the first-stage encoder (== the tiny VAE with quant_conv folded in)
    torch.testing.assert_close(bb.encode(x, bb.generator(1)), tiny.encode(x, tiny.generator(1)), rtol=1e-4, atol=1e-5)


@torch.inference_mode()
def test_diffusers_folder_round_trip(tiny, folder):
    bb = load_backbone(str(folder), device="cpu", precision="fp32")
    assert bb.family == "svd" and bb.name == folder.name
    for a, b in ((bb.unet, tiny.unet), (bb.vae, tiny.vae), (bb.image_encoder, tiny.image_encoder)):
        assert_same_weights(a, b)
    _, _, ca, xa = run_inputs(bb, frames_of(2, 64, 64))
    _, _, cb, xb = run_inputs(tiny, frames_of(2, 64, 64))
    torch.testing.assert_close(bb.denoised(xa, 23, ca), tiny.denoised(xb, 23, cb), rtol=1e-5, atol=1e-6)


def test_loading_works_with_the_network_blocked(sgm_file, folder, monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted during an offline load")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    import huggingface_hub.constants as hub_constants  # read at import time: undo the conftest's offline mode too

    if hasattr(hub_constants, "HF_HUB_OFFLINE"):
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    assert load_backbone(str(sgm_file), device="cpu", precision="fp32").family == "svd"
    assert load_backbone(str(folder), device="cpu", precision="fp32").family == "svd"
    assert load_backbone("tiny-svd", device="cpu", precision="fp32").name == "tiny-svd"
    assert attempts == []
    with pytest.raises(OSError):  # the block itself works
        socket.create_connection(("127.0.0.1", 9))


def test_bad_model_files_and_folders(tiny, sgm_file, folder, tmp_path):
    import shutil

    broken = tmp_path / "no_unet"
    shutil.copytree(folder, broken)
    shutil.rmtree(broken / "unet")
    with pytest.raises(ModelLoadError, match="incomplete: missing unet"):
        load_backbone(str(broken), device="cpu")
    truncated = tmp_path / "svd.safetensors"
    truncated.write_bytes(sgm_file.read_bytes()[: sgm_file.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        load_backbone(str(truncated), device="cpu")
    # SVD keys, but layer shapes of neither the real nor the tiny model
    sd = sgm_state(tiny)
    k = "model.diffusion_model.input_blocks.0.0.weight"
    sd[k] = torch.zeros(32, 4, 3, 3)
    odd = tmp_path / "odd_svd.safetensors"
    safetensors_torch.save_file(sd, str(odd))
    with pytest.raises(ModelLoadError, match="does not have the SVD / SVD-XT layer shapes.*input_blocks.0.0.weight"):
        load_backbone(str(odd), device="cpu")


@torch.inference_mode()
def test_bad_inputs(tiny):
    with pytest.raises(InputError, match=r"\[T,3,H,W\]"):
        tiny.encode(torch.zeros(2, 64, 64, 3), tiny.generator())
    with pytest.raises(InputError, match="multiples of 8"):
        tiny.condition(torch.zeros(1, 3, 60, 64), tiny.generator())
    with pytest.raises(InputError, match=r"decode expects"):
        tiny.decode(torch.zeros(1, 3, 8, 8))
    x = tiny.prepare_frames(frames_of(2, 64, 64))
    cond = tiny.condition(x, tiny.generator())
    with pytest.raises(InputError, match="do not match the conditioning"):
        tiny.denoised(torch.zeros(1, 3, 4, 8, 8), 22, cond)
    with pytest.raises(InputError, match="outside"):
        tiny.denoised(torch.zeros(1, 2, 4, 8, 8), 25, cond)
    with pytest.raises(InputError, match="SVDBackbone.condition"):
        tiny.denoised(torch.zeros(1, 2, 4, 8, 8), 22, object())
    with pytest.raises(InputError, match="SVDConfig"):
        build_tiny_svd(config=object())


def test_tiny_build_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_tiny_svd()
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = build_tiny_svd()
    assert_same_weights(a.unet, b.unet)
    c = build_tiny_svd(seed=1)
    assert not torch.equal(a.unet.conv_in.weight, c.unet.conv_in.weight)
