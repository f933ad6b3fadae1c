"""SD 2.1 backbone: schedule, denoiser maths, tiny model, offline loading (single file + diffusers folder), errors.

Everything runs on the tiny random model (no real weights, no network).
"""
from __future__ import annotations

import json
import math
import shutil
import socket

import pytest
import torch

from tests.helpers.ldm_layout import (clip_text_to_open_clip, fake_family_checkpoint, save_safetensors, sd_ldm_state,
                                      write_sd_checkpoint)
from vidseg_core.backbones import CaptureQueries, LayerId, SD21Config, load_backbone
from vidseg_core.backbones import sd21, sd21_files
from vidseg_core.errors import DeviceError, InputError, ModelLoadError

H, W = 128, 192  # -> latent 16x24 -> blocks 6-8 at 8x12


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def parts():
    """The original tiny (unet, vae, text_encoder), seed 0."""
    return sd21.build_tiny_sd_parts(0)


@pytest.fixture(scope="module")
def tiny():
    return sd21.build_tiny_sd("cpu", torch.float32)


@pytest.fixture(scope="module")
def ldm_file(parts, tmp_path_factory):
    """The tiny SD written as one original-layout (LDM) .safetensors."""
    return write_sd_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-sd21.safetensors", *parts)


@pytest.fixture(scope="module")
def diffusers_folder(parts, tmp_path_factory):
    unet, vae, te = parts
    d = tmp_path_factory.mktemp("folders") / "tiny-sd21-diffusers"
    unet.save_pretrained(d / "unet")
    vae.save_pretrained(d / "vae")
    te.save_pretrained(d / "text_encoder")
    (d / "scheduler").mkdir()
    (d / "scheduler" / "scheduler_config.json").write_text(json.dumps(
        {"_class_name": "DDIMScheduler", "prediction_type": "v_prediction", "beta_schedule": "scaled_linear"}))
    (d / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
         "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"]}))
    return d


def _frames(seed=0, t=2):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(t, 3, H, W, generator=g) * 2 - 1


def _unet_out(unet, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 4, 8, 12, generator=g)
    ctx = torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        return unet(x, torch.tensor(119), encoder_hidden_states=ctx).sample


def _vae_out(vae, seed=2):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        enc = vae.encode(x).latent_dist
        return enc.mean, enc.std, vae.decode(enc.mean).sample


def _assert_same_models(bb, parts, atol=1e-5):
    unet, vae, te = parts
    assert torch.allclose(_unet_out(bb.unet), _unet_out(unet), atol=atol)
    for a, b in zip(_vae_out(bb.vae), _vae_out(vae)):
        assert torch.allclose(a, b, atol=atol)
    assert torch.equal(bb.empty_embedding, sd21.empty_prompt_embedding(te))


# ------------------------------------------------------------------ schedule (docs/design/authors_code.md#schedule-and-noise-levels)
def test_schedule_matches_reference_values():
    cfg = SD21Config()
    s = sd21.schedule_sigmas(cfg)
    ts = sd21.step_timesteps(cfg)
    assert s.dtype == torch.float64 and s.shape == (26,) and s[-1] == 0
    assert torch.all(s[:-1] > s[1:])
    assert ts == [999 - 40 * i for i in range(25)]
    for step, t, sigma in [(17, 319, 0.889), (22, 119, 0.387), (24, 39, 0.196)]:
        assert ts[step] == t
        assert abs(float(s[step]) - sigma) < 5e-4
    # independent source: diffusers' scaled_linear betas
    from diffusers import DDIMScheduler

    ref = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").alphas_cumprod
    assert torch.allclose(sd21.ddpm_alphas_cumprod(cfg).float(), ref, rtol=1e-5)


def test_backbone_sigmas_cached_and_timesteps(tiny):
    assert tiny.sigmas() is tiny.sigmas()
    assert tiny.timesteps()[22] == 119


# ------------------------------------------------------------------ denoiser maths (docs/design/authors_code.md#effective-settings)
class _RecordingUNet(torch.nn.Module):
    """Stands in for the UNet: out = 2·input + mean(context row); records its inputs."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.calls = []

    def forward(self, sample, timestep, encoder_hidden_states=None, return_dict=True):
        self.calls.append((sample.clone(), timestep.clone(), encoder_hidden_states.clone()))
        out = 2 * sample + encoder_hidden_states.mean(dim=(1, 2))[:, None, None, None]
        return (out,)


@pytest.mark.parametrize("ptype", ["epsilon", "v_prediction"])
def test_denoised_scaling_cfg_and_row_layout(parts, ptype):
    emb = torch.randn(1, 77, 32, generator=torch.Generator().manual_seed(3)) + 0.5
    fake = _RecordingUNet()
    bb = sd21.SD21Backbone("fake", SD21Config(prediction_type=ptype), fake, parts[1], torch.device("cpu"),
                           torch.float32, emb)
    x = torch.randn(2, 3, 4, 2, 3, generator=torch.Generator().manual_seed(4))  # R=2 runs, T=3 frames
    step = 22
    cond = bb.condition(torch.zeros(3, 3, 64, 64), bb.generator())
    d = bb.denoised(x, step, cond)

    sigma = float(bb.sigmas()[step])
    c_in = 1 / math.sqrt(sigma ** 2 + 1)
    sample, timestep, ctx = fake.calls[0]
    assert int(timestep) == 119
    rows = sample.view(2, 2, 3, 4, 2, 3)  # [run, half, frame]
    for h in range(2):
        assert torch.allclose(rows[:, h], x * c_in, atol=1e-6)
    ctx = ctx.view(2, 2, 3, 77, 32)
    assert torch.all(ctx[:, 0] == 0)  # uncond = zeroed embedding
    assert torch.allclose(ctx[:, 1], emb.expand(2, 3, 77, 32))
    assert bb.controller.layout.runs == 2 and bb.controller.layout.frames == 3
    assert bb.controller.latent_grid == (2, 3) and bb.controller.step == step

    outs = [2 * x * c_in, 2 * x * c_in + float(emb.mean())]  # uncond, cond
    if ptype == "epsilon":
        ds = [x - sigma * o for o in outs]
    else:
        ds = [x / (sigma ** 2 + 1) - sigma / math.sqrt(sigma ** 2 + 1) * o for o in outs]
    expect = ds[0] + 5.0 * (ds[1] - ds[0])
    assert torch.allclose(d, expect, atol=1e-5)


def test_denoised_rejects_bad_inputs(tiny):
    cond = tiny.condition(_frames(), tiny.generator())
    with pytest.raises(InputError, match="R,T,4,h,w"):
        tiny.denoised(torch.zeros(2, 4, 8, 8), 22, cond)
    with pytest.raises(InputError, match="outside"):
        tiny.denoised(torch.zeros(1, 2, 4, 8, 8), 25, cond)
    with pytest.raises(InputError, match="condition"):
        tiny.denoised(torch.zeros(1, 2, 4, 8, 8), 22, object())
    with pytest.raises(InputError, match="multiples of 8"):
        tiny.encode(torch.zeros(1, 3, 60, 64), tiny.generator())
    with pytest.raises(InputError, match=r"\[N,4,h,w\]"):
        tiny.decode(torch.zeros(1, 3, 8, 8))


# ------------------------------------------------------------------ tiny model
def test_tiny_build_is_seeded_and_leaves_global_rng(tiny):
    before = torch.get_rng_state()
    a = sd21.build_tiny_sd("cpu", torch.float32, seed=0)
    b = sd21.build_tiny_sd("cpu", torch.float32, seed=1)
    assert torch.equal(torch.get_rng_state(), before)
    assert a.name == "tiny-sd" and a.family == "sd"
    for (ka, va), (kt, vt) in zip(a.unet.state_dict().items(), tiny.unet.state_dict().items()):
        assert ka == kt and torch.equal(va, vt)
    assert torch.equal(a.empty_embedding, tiny.empty_embedding)
    assert not torch.equal(a.unet.conv_in.weight, b.unet.conv_in.weight)
    assert a.empty_embedding.shape == (1, 77, 32)
    assert set(a.modules()) == {"unet", "vae"}  # text encoder dropped after computing the embedding


def test_tiny_via_load_backbone_and_fp16_refused():
    bb = load_backbone("tiny-sd", device="cpu", precision="fp32")
    assert isinstance(bb, sd21.SD21Backbone) and bb.dtype == torch.float32
    with pytest.raises(DeviceError, match="fp16"):
        load_backbone("tiny-sd", device="cpu", precision="fp16")


def test_attention_layers_real_block_layout(tiny):
    layers = tiny.attention_layers()
    assert sorted(layers) == sorted(LayerId(b, k) for b in range(3, 12) for k in ("spatial_self", "spatial_cross"))
    assert layers[LayerId(7, "spatial_cross")] is tiny.unet.up_blocks[2].attentions[1].transformer_blocks[0].attn2
    assert layers[LayerId(9, "spatial_self")] is tiny.unet.up_blocks[3].attentions[0].transformer_blocks[0].attn1


def test_short_run_shapes_and_determinism(tiny):
    frames = _frames()

    def run(seed):
        g = tiny.generator(seed)
        z0 = tiny.encode(frames, g)
        assert z0.shape == (2, 4, 16, 24)
        cond = tiny.condition(frames, g)
        x = tiny.add_noise(z0, 22, tiny.randn(z0.shape, g))[None]
        x = tiny.denoise(x, cond, 22)
        return z0, tiny.decode(x[0])

    z1, out1 = run(1)
    z2, out2 = run(1)
    z3, out3 = run(2)
    assert out1.shape == (2, 3, H, W) and out1.dtype == torch.float32
    assert out1.min() >= 0 and out1.max() <= 1
    assert torch.equal(z1, z2) and torch.equal(out1, out2)
    assert not torch.allclose(z1, z3)


def test_encode_is_posterior_sample_times_scaling(tiny):
    frames = _frames(t=1)
    z = tiny.encode(frames, tiny.generator(5))
    with torch.no_grad():
        dist = tiny.vae.encode(frames).latent_dist
    noise = torch.randn(dist.mean.shape, generator=tiny.generator(5))
    assert torch.allclose(z, (dist.mean + dist.std * noise) * 0.18215, atol=1e-6)
    dec = tiny.decode(z)
    with torch.no_grad():
        ref = ((tiny.vae.decode(z / 0.18215).sample + 1) / 2).clamp(0, 1)
    assert torch.allclose(dec, ref, atol=1e-6)


def test_decode_chunking_gives_same_result(tiny):
    chunked = sd21.build_tiny_sd("cpu", torch.float32, config=SD21Config(decode_chunk=1))
    z = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(chunked.decode(z), tiny.decode(z), atol=1e-5)


def test_hooked_processors_equal_default():
    bb = sd21.build_tiny_sd("cpu", torch.float32)
    frames = _frames()
    g = bb.generator()
    z0 = bb.encode(frames, g)
    x = bb.add_noise(z0, 22, bb.randn(z0.shape, g))[None].repeat(2, 1, 1, 1, 1)
    cond = bb.condition(frames, g)
    default = bb.denoised(x, 22, cond)
    procs = {type(m.processor).__name__ for m in bb.attention_layers().values()}
    bb.install_processors()
    assert {type(m.processor).__name__ for m in bb.attention_layers().values()} == {"HookedAttnProcessor"}
    assert procs != {"HookedAttnProcessor"}
    hooked = bb.denoised(x, 22, cond)
    assert torch.allclose(hooked, default, atol=1e-5)


def test_block_mapping_queries_at_one_sixteenth(tiny):
    frames = _frames()
    g = tiny.generator()
    z0 = tiny.encode(frames, g)
    cond = tiny.condition(frames, g)
    x = tiny.add_noise(z0, 22, tiny.randn(z0.shape, g))[None]
    seen = {}
    handles = [tiny.unet.up_blocks[2].attentions[j].transformer_blocks[0].attn1.to_q.register_forward_hook(
        lambda m, i, o, j=j: seen.__setitem__(j, o.detach().clone())) for j in range(3)]
    layers = [LayerId(b, "spatial_self") for b in (3, 6, 7, 8, 11)]
    cap = CaptureQueries(layers, steps=[24])
    try:
        with tiny.hooks(cap):
            tiny.denoise(x, cond, 24)
    finally:
        for h in handles:
            h.remove()
    for j, b in enumerate((6, 7, 8)):
        q = cap.captured[(24, LayerId(b, "spatial_self"))]
        assert q.shape == (2, 8 * 12, 64)
        assert torch.allclose(q, seen[j].view(2, 2, 96, 64)[1])  # conditional half of the to_q output
    assert cap.captured[(24, LayerId(3, "spatial_self"))].shape == (2, 4 * 6, 64)
    assert cap.captured[(24, LayerId(11, "spatial_self"))].shape == (2, 16 * 24, 32)


# ------------------------------------------------------------------ text tower conversion
def test_open_clip_conversion_both_ways(parts):
    _, _, te = parts
    ldm = clip_text_to_open_clip(te.state_dict())
    # the installed transformers' own layout ("text_model." before 5.6), as the loader picks it
    back = sd21_files.open_clip_text_to_clip(ldm, num_layers=2, prefix=sd21_files._text_prefix(te))
    own = {k: v for k, v in te.state_dict().items() if not k.endswith("position_ids")}
    assert back.keys() == own.keys()
    assert all(torch.equal(back[k], own[k]) for k in own)
    pre = sd21_files.open_clip_text_to_clip(ldm, num_layers=2, prefix="text_model.")  # transformers < 5.6 layout
    assert all(k.startswith("text_model.") for k in pre)
    bare = sd21_files.open_clip_text_to_clip(ldm, num_layers=2)  # transformers >= 5.6 layout
    assert {"text_model." + k for k in bare} == pre.keys()


def test_in_proj_split_matches_torch_multihead_attention():
    """The q/k/v order of OpenCLIP's fused in_proj, checked against torch's MultiheadAttention."""
    from transformers import CLIPTextConfig
    from transformers.models.clip.modeling_clip import CLIPAttention

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        mha = torch.nn.MultiheadAttention(32, 2, batch_first=True)
        for p in mha.parameters():
            torch.nn.init.normal_(p, std=0.3)
        x = torch.randn(1, 5, 32)
    state = {"cond_stage_model.model.transformer.resblocks.0.attn." + k: v for k, v in mha.state_dict().items()}
    q, k, v = state["cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"].chunk(3)
    cfg = CLIPTextConfig(hidden_size=32, num_attention_heads=2, intermediate_size=64)
    cfg._attn_implementation = "eager"
    att = CLIPAttention(cfg)
    full = {**{f"cond_stage_model.model.{n}": torch.zeros(1) for n in
               ("token_embedding.weight", "positional_embedding", "ln_final.weight", "ln_final.bias")}}
    for n in ("ln_1", "ln_2", "mlp.c_fc", "mlp.c_proj"):
        for p in ("weight", "bias"):
            full[f"cond_stage_model.model.transformer.resblocks.0.{n}.{p}"] = torch.zeros(1)
    full.update(state)
    out = sd21_files.open_clip_text_to_clip(full, num_layers=1)
    att.load_state_dict({n.split("self_attn.", 1)[1]: t for n, t in out.items() if ".self_attn." in n})
    with torch.no_grad():
        ref = mha(x, x, x, need_weights=False)[0]
        got = att(x)[0]
    assert torch.allclose(got, ref, atol=1e-5)
    assert torch.equal(out["encoder.layers.0.self_attn.q_proj.weight"], q)


# ------------------------------------------------------------------ single-file loading
def test_single_file_equals_original_tiny(ldm_file, parts):
    bb = load_backbone(str(ldm_file), device="cpu", precision="fp32")
    assert isinstance(bb, sd21.SD21Backbone)
    assert bb.name == ldm_file.name and bb.config.prediction_type == "epsilon"
    for (ka, va), (kb, vb) in zip(bb.unet.state_dict().items(), parts[0].state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    _assert_same_models(bb, parts)


def test_single_file_bf16(ldm_file):
    bb = load_backbone(str(ldm_file), device="cpu", precision="bf16")
    assert bb.dtype == torch.bfloat16
    assert next(bb.unet.parameters()).dtype == torch.bfloat16
    assert bb.empty_embedding.dtype == torch.float32


def test_loading_with_network_blocked(monkeypatch, ldm_file, diffusers_folder):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    import huggingface_hub.constants as hub_constants  # read once at import: undo the conftest's offline mode too

    if hasattr(hub_constants, "HF_HUB_OFFLINE"):
        monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    a = load_backbone(str(ldm_file), device="cpu", precision="fp32")
    b = load_backbone(str(diffusers_folder), device="cpu", precision="fp32")
    assert attempts == []
    assert torch.equal(a.empty_embedding, b.empty_embedding)


@pytest.mark.parametrize("name,expected", [
    ("v2-1_768-ema-pruned.safetensors", "v_prediction"),
    ("v2-1_512-ema-pruned.safetensors", "epsilon"),
    ("sd21-v.safetensors", "v_prediction"),
    ("stable-diffusion-v2-1-base.ckpt", "epsilon"),
    ("768-v-ema.ckpt", "v_prediction"),
    ("my_model_vpred.safetensors", "v_prediction"),
])
def test_prediction_type_from_name(name, expected):
    assert sd21.prediction_type_from_name(name) == expected


def test_prediction_type_by_file_name_and_override(ldm_file, tmp_path):
    v_file = tmp_path / "v2-1_768-ema-pruned.safetensors"
    shutil.copy(ldm_file, v_file)
    assert load_backbone(str(v_file)).config.prediction_type == "v_prediction"
    assert load_backbone(str(v_file), prediction_type="epsilon").config.prediction_type == "epsilon"
    assert load_backbone(str(ldm_file), prediction_type="v").config.prediction_type == "v_prediction"
    with pytest.raises(InputError, match="prediction type"):
        load_backbone(str(ldm_file), prediction_type="sample")


def test_config_override_is_kept(ldm_file):
    bb = load_backbone(str(ldm_file), config=SD21Config(batch_size=4, guidance_scale=3.0))
    assert bb.config.batch_size == 4 and bb.config.guidance_scale == 3.0


def test_real_v_model_gets_768_unet_config():
    shapes = {sd21.LDM_UNET_PREFIX + "input_blocks.0.0.weight": (320, 4, 3, 3)}
    unet, vae, text = sd21_files._single_file_variant(shapes, "x", "v_prediction")
    assert unet == {"sample_size": 96, "upcast_attention": True} and vae == {}
    assert text["num_hidden_layers"] == 23 and text["hidden_size"] == 1024
    assert sd21_files._single_file_variant(shapes, "x", "epsilon")[0] == {}


def test_shipped_configs_are_real_sd21():
    """Built on the meta device (no memory): the published parameter counts."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    d = sd21.CONFIG_DIR
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(d / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(d / "vae"))
        te = CLIPTextModel(CLIPTextConfig.from_json_file(str(d / "text_encoder" / "config.json")))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert (count(unet), count(vae), count(te)) == (865_910_724, 83_653_863, 340_387_840)
    assert vae.config.scaling_factor == 0.18215


# ------------------------------------------------------------------ diffusers folders
def test_diffusers_folder_round_trip(diffusers_folder, parts):
    bb = load_backbone(str(diffusers_folder), device="cpu", precision="fp32")
    assert bb.name == diffusers_folder.name
    assert bb.config.prediction_type == "v_prediction"  # from scheduler_config.json
    _assert_same_models(bb, parts)
    assert load_backbone(str(diffusers_folder), prediction_type="epsilon").config.prediction_type == "epsilon"


def test_diffusers_folder_old_text_layout(diffusers_folder, parts, tmp_path):
    """A text encoder saved with the pre-5.6 ``text_model.`` key prefix loads the same."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    d = tmp_path / "old-layout"
    shutil.copytree(diffusers_folder, d)
    f = d / "text_encoder" / "model.safetensors"
    with safe_open(str(f), framework="pt") as h:
        meta = h.metadata()  # {"format": "pt"}, as save_pretrained writes it (transformers 4.x requires it)
    save_file({"text_model." + k.removeprefix("text_model."): v for k, v in load_file(str(f)).items()}, str(f),
              metadata=meta)
    bb = load_backbone(str(d))
    assert torch.equal(bb.empty_embedding, sd21.empty_prompt_embedding(parts[2]))


def test_loading_prints_no_empty_float32_warning(ldm_file, diffusers_folder):
    """diffusers warns on every ``torch_dtype`` load that modules "should be kept in float32", naming none:
    two meaningless lines per model load in ComfyUI's console.  ``load_backbone`` drops that empty form."""
    from tests.helpers.diffusers_log import diffusers_warnings

    with diffusers_warnings() as seen:
        for model in (ldm_file, diffusers_folder):
            for precision in ("fp32", "bf16"):
                load_backbone(str(model), device="cpu", precision=precision)
    assert not [m for m in seen if "kept in float32: []" in m]


# ------------------------------------------------------------------ bad inputs
def test_corrupt_file(tmp_path):
    p = tmp_path / "v2-1_512-ema-pruned.safetensors"
    p.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        load_backbone(str(p))


def test_truncated_file(ldm_file, tmp_path):
    p = tmp_path / "cut.safetensors"
    data = ldm_file.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="corrupt or truncated"):
        load_backbone(str(p))


@pytest.mark.parametrize("family,words", [("sd1", "Stable Diffusion 1.x"), ("sdxl", "Stable Diffusion XL"),
                                          ("flux", "Flux")])
def test_other_families_refused(tmp_path, family, words):
    p = fake_family_checkpoint(tmp_path / f"{family}.safetensors", family)
    with pytest.raises(ModelLoadError, match=words):
        load_backbone(str(p))


def test_missing_file_names_the_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="models/checkpoints"):
        load_backbone(str(tmp_path / "v2-1_512-ema-pruned.safetensors"))


def test_incomplete_single_files(parts, tmp_path):
    state = sd_ldm_state(*parts)
    cases = {"first_stage_model.decoder.conv_out.weight": "vae weights .* incomplete",
             "model.diffusion_model.out.2.weight": "unet weights .* incomplete",
             "cond_stage_model.model.ln_final.weight": "text encoder is incomplete"}
    for drop, words in cases.items():
        p = save_safetensors({k: v for k, v in state.items() if k != drop}, tmp_path / "part.safetensors")
        with pytest.raises(ModelLoadError, match=words):
            load_backbone(str(p))
    p = save_safetensors({k: v for k, v in state.items() if not k.startswith("cond_stage_model.")},
                         tmp_path / "unet_vae_only.safetensors")
    with pytest.raises(ModelLoadError, match="no OpenCLIP text encoder"):
        load_backbone(str(p))


def test_unknown_width_refused(parts, tmp_path):
    state = sd_ldm_state(*parts)
    key = "model.diffusion_model.input_blocks.0.0.weight"
    state[key] = torch.zeros(48, 4, 3, 3)
    p = save_safetensors(state, tmp_path / "odd.safetensors")
    with pytest.raises(ModelLoadError, match="48 base channels"):
        load_backbone(str(p))
    state[key] = torch.zeros(32, 9, 3, 3)  # inpainting-style input
    p = save_safetensors(state, tmp_path / "inpaint.safetensors")
    with pytest.raises(ModelLoadError, match="9 input channels"):
        load_backbone(str(p))


def test_folder_missing_vae(diffusers_folder, tmp_path):
    d = tmp_path / "no-vae"
    shutil.copytree(diffusers_folder, d)
    shutil.rmtree(d / "vae")
    with pytest.raises(ModelLoadError, match="missing vae"):
        load_backbone(str(d))


def test_sd1_folder_refused(diffusers_folder, tmp_path):
    d = tmp_path / "sd15"
    shutil.copytree(diffusers_folder, d)
    cfg = json.loads((d / "unet" / "config.json").read_text())
    cfg["cross_attention_dim"] = 768
    (d / "unet" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="Stable Diffusion 1.x"):
        load_backbone(str(d))
