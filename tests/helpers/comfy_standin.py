"""Stand-ins for ComfyUI's loader objects over the tiny diffusers models (tests only, no ComfyUI).

ComfyUI recognises model families from the shapes of real checkpoints, so the
tiny test models cannot go through its loaders.  These stand-ins reproduce the
*contract* the adapter (``nodes/comfy_adapters/native.py``) relies on, written from
ComfyUI v0.3.64's behaviour (docs/design/comfyui_integration.md#the-models-comfyui-loads-the-native-path), not its code:

* :class:`ModelPatcher`: ``clone()`` deep-copies ``model_options`` (``generation = "0.33"``: newer
  ComfyUI's ``clone(disable_dynamic, model_override, force_deepcopy)`` copying only dicts and lists);
  ``set_model_patch`` / ``set_model_patch_replace`` store patches as ComfyUI does;
* the model's ``apply_model(x, σ, c_concat, c_crossattn, transformer_options, **conds)``
  returns the denoised latent (EPS / v-EDM maths, σ -> nearest DDPM timestep for SD);
* every decoder attention (LDM output blocks 3..11) calls the patches as
  ``BasicTransformerBlock`` does: replace patch ``(q, k, v, extra_options)`` looked
  up as ``("output", b, 0)`` then ``("output", b)``, then ``to_out``, then the
  ``attnN_output_patch`` list; SVD's spatial block before its temporal block;
* VAE (``first_stage_model`` with ``encoder`` / ``quant_conv`` / ``decode``,
  ``patcher``, ``device``, ``vae_dtype``), CLIP (``tokenize`` /
  ``encode_from_tokens``) and CLIP_VISION (``model(pixel_values, intermediate_output)``).
"""
from __future__ import annotations

import copy
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from vidseg_core.backbones.config import SD21Config
from vidseg_core.backbones.sd21 import EMPTY_PROMPT_IDS, build_tiny_sd_parts, ddpm_alphas_cumprod, tiny_word_ids
from vidseg_core.backbones.svd import build_tiny_svd

CPU = torch.device("cpu")


def optimized_attention(q, k, v, heads, mask=None, attn_precision=None, **kwargs):
    """``[B, N, heads·d]`` attention, as ComfyUI's ``optimized_attention`` (no reshape flags)."""
    b, _, inner = q.shape
    d = inner // heads
    qh, kh, vh = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, -1, heads * d)


def copy_dicts_and_lists(value):
    """Newer ComfyUI's copy of ``model_options`` on clone: dicts and lists copied, everything else shared."""
    if isinstance(value, dict):
        return {k: copy_dicts_and_lists(v) for k, v in value.items()}
    if isinstance(value, list):
        return [copy_dicts_and_lists(v) for v in value]
    return value


class ModelPatcher:
    #: ``"0.3.64"``: ``clone()`` deep-copies ``model_options``; ``"0.33"``: ``clone(disable_dynamic=False,
    #: model_override=None, force_deepcopy=False)`` copies only its dicts and lists (set by tests)
    generation = "0.3.64"

    def __init__(self, model, load_device=CPU, offload_device=CPU):
        self.model, self.load_device, self.offload_device = model, load_device, offload_device
        self.model_options = {"transformer_options": {}}

    def clone(self, *args, **kwargs):
        if self.generation == "0.3.64":
            if args or kwargs:
                raise TypeError("clone() takes 1 positional argument")
            options = copy.deepcopy(self.model_options)
        else:
            allowed = ("disable_dynamic", "model_override", "force_deepcopy")
            if len(args) > len(allowed) or set(kwargs) - set(allowed):
                raise TypeError(f"clone() takes {allowed}")
            options = copy_dicts_and_lists(self.model_options)
        n = type(self)(self.model, self.load_device, self.offload_device)
        n.model_options = options
        return n

    def set_model_patch(self, patch, name):
        to = self.model_options["transformer_options"]
        patches = to.setdefault("patches", {})
        patches[name] = patches.get(name, []) + [patch]

    def set_model_patch_replace(self, patch, name, block_name, number, transformer_index=None):
        to = self.model_options["transformer_options"].copy()
        replace = dict(to.get("patches_replace", {}))
        table = dict(replace.get(name, {}))
        table[(block_name, number, transformer_index) if transformer_index is not None else (block_name, number)] = patch
        replace[name] = table
        to["patches_replace"] = replace
        self.model_options["transformer_options"] = to

    def get_model_object(self, name):
        return getattr(self.model, name)


class PatchedAttention:
    """Diffusers attention processor calling ComfyUI-style patches (see module doc)."""

    def __init__(self, owner, block: int, name: str):
        self.owner, self.block, self.name = owner, block, name

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        to = self.owner.transformer_options
        eo = {k: v for k, v in to.items() if k not in ("patches", "patches_replace")}
        eo.update(block=("output", self.block), block_index=0, n_heads=attn.heads,
                  dim_head=attn.to_q.out_features // attn.heads, attn_precision=None)
        ctx = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        q, k, v = attn.to_q(hidden_states), attn.to_k(ctx), attn.to_v(ctx)
        table = to.get("patches_replace", {}).get(self.name, {})
        key = ("output", self.block, 0) if ("output", self.block, 0) in table else ("output", self.block)
        out = table[key](q, k, v, eo) if key in table else optimized_attention(q, k, v, attn.heads)
        out = attn.to_out[1](attn.to_out[0](out))
        for p in to.get("patches", {}).get(f"{self.name}_output_patch", []):
            out = p(out, eo)
        return out


def _patch_decoder(owner, unet, temporal: bool) -> None:
    for b in range(3, 12):
        att = unet.up_blocks[b // 3].attentions[b % 3]
        stacks = [att.transformer_blocks[0]] + ([att.temporal_transformer_blocks[0]] if temporal else [])
        for blk in stacks:
            blk.attn1.set_processor(PatchedAttention(owner, b, "attn1"))
            blk.attn2.set_processor(PatchedAttention(owner, b, "attn2"))


class DiffusionModel(torch.nn.Module):
    """The UNet as ComfyUI holds it: a plain module (no diffusers ``config``), so the adapter cannot lean on it."""

    def __init__(self, unet):
        super().__init__()
        self.inner = unet

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs)


def _config(name: str, **unet_config):
    return type(name, (), {"unet_config": unet_config})()


class BaseModel(torch.nn.Module):
    """SD 2.x stand-in (``EPS``): ``apply_model`` -> denoised.  ``ldm=True``: the UNet in ComfyUI's own module
    layout (:mod:`.comfy_unet_standin`), called as ComfyUI's ``_apply_model`` calls it."""

    def __init__(self, unet, ldm: bool = False):
        super().__init__()
        self.ldm = ldm
        if ldm:
            from tests.helpers.comfy_unet_standin import UNetModel

            self.diffusion_model = UNetModel(unet, holder=self)
        else:
            self.diffusion_model = DiffusionModel(unet)
        self.model_config = _config("SD20", context_dim=1024, model_channels=320, in_channels=4,
                                    adm_in_channels=None, use_temporal_attention=False)
        self.model_type = "ModelType.EPS"
        self.latent_format = SimpleNamespace(scale_factor=0.18215)
        acp = ddpm_alphas_cumprod(SD21Config())
        self.model_sampling = SimpleNamespace(sigmas=((1 - acp) / acp).sqrt().float())
        self.transformer_options = {}
        _patch_decoder(self, unet, temporal=False)

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        sigma = t.float()
        log_sig = self.model_sampling.sigmas.log()
        timestep = (sigma.log()[:, None] - log_sig[None]).abs().argmin(dim=1)
        s = sigma.view(-1, 1, 1, 1)
        self.transformer_options = transformer_options
        try:
            xc = x / (s ** 2 + 1).sqrt()
            if self.ldm:
                eps = self.diffusion_model(xc, timestep.float(), context=c_crossattn, control=control,
                                           transformer_options=transformer_options, **kwargs)
            else:
                eps = self.diffusion_model(xc, timestep, encoder_hidden_states=c_crossattn).sample
        finally:
            self.transformer_options = {}
        return x - eps.float() * s


class SVD_img2vid(torch.nn.Module):  # noqa: N801 - ComfyUI's class name is what the adapter detects
    """SVD stand-in (``V_PREDICTION_EDM``): ``apply_model`` with ``c_concat``, ``y``, ``num_video_frames``.
    ``ldm=True``: the UNet in ComfyUI's video ``UNetModel`` layout, called on flat rows as ``_apply_model`` calls it."""

    def __init__(self, unet, ldm: bool = False):
        super().__init__()
        self.ldm = ldm
        if ldm:
            from tests.helpers.comfy_unet_standin import UNetModel

            self.diffusion_model = UNetModel(unet, holder=self, video=True)
        else:
            self.diffusion_model = DiffusionModel(unet)
        self.model_config = _config("SVD_img2vid", context_dim=1024, model_channels=320, in_channels=8,
                                    adm_in_channels=768, use_temporal_attention=True)
        self.model_type = "ModelType.V_PREDICTION_EDM"
        self.latent_format = SimpleNamespace(scale_factor=0.18215)
        self.transformer_options = {}
        _patch_decoder(self, unet, temporal=True)

    def encode_adm(self, fps=6, motion_bucket_id=127, augmentation_level=0.0, **kwargs):
        # the tiny diffusers UNet embeds the raw ids itself; ComfyUI's "fps - 1" convention is kept
        return torch.tensor([[fps - 1, motion_bucket_id, augmentation_level]], dtype=torch.float32)

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={},
                    y=None, num_video_frames=None, **kwargs):
        T = int(num_video_frames)
        s = t.float().view(-1, 1, 1, 1)
        xc = torch.cat([x / (s ** 2 + 1).sqrt(), c_concat.to(x.dtype)], dim=1)
        sample = xc.view(x.shape[0] // T, T, *xc.shape[1:])
        self.transformer_options = transformer_options
        try:
            if self.ldm:
                out = self.diffusion_model(xc, 0.25 * t.float().log(), context=c_crossattn, y=y, control=control,
                                           transformer_options=transformer_options, num_video_frames=T, **kwargs)
            else:
                out = self.diffusion_model(sample, 0.25 * t[::T].float().log(), encoder_hidden_states=c_crossattn[::T],
                                           added_time_ids=y[::T]).sample.reshape(x.shape)
        finally:
            self.transformer_options = {}
        return x / (s ** 2 + 1) - out.float() * s / (s ** 2 + 1).sqrt()


class FirstStage(torch.nn.Module):
    def __init__(self, vae, temporal: bool):
        super().__init__()
        self.inner, self.temporal = vae, temporal
        self.encoder, self.quant_conv, self.decoder = vae.encoder, vae.quant_conv, vae.decoder

    def decode(self, z):  # as ComfyUI's first stage: no clip-length argument (a temporal decoder takes the call as one clip)
        return self.inner.decode(z, num_frames=z.shape[0]).sample if self.temporal else self.inner.decode(z).sample


class VAE:
    def __init__(self, vae, temporal: bool):
        self.first_stage_model = FirstStage(vae, temporal)
        self.patcher = ModelPatcher(self.first_stage_model)
        self.device, self.vae_dtype, self.downscale_ratio = CPU, torch.float32, 8


class CLIP:
    def __init__(self, text_encoder):
        self.te = text_encoder
        self.patcher = ModelPatcher(text_encoder)

    def tokenize(self, text):
        """OpenCLIP's layout, as ComfyUI's SD 2.x tokenizer: start, the words (the tiny model's word ids),
        end, zero padding to 77, each with weight 1."""
        words = tiny_word_ids(text)
        ids = (EMPTY_PROMPT_IDS[0], *words, EMPTY_PROMPT_IDS[1]) + (0,) * (75 - len(words))
        return {"h": [[(i, 1.0) for i in ids]]}

    def encode_from_tokens(self, tokens, return_pooled=False):
        ids = torch.tensor([[i for i, _ in tokens["h"][0]]])
        with torch.no_grad():
            out = self.te(input_ids=ids).last_hidden_state
        return (out, None) if return_pooled else out


class VisionModel(torch.nn.Module):
    def __init__(self, encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, pixel_values, intermediate_output=None):
        out = self.encoder(pixel_values=pixel_values)
        return out.last_hidden_state, None, out.image_embeds, None


class CLIPVision:
    def __init__(self, encoder):
        self.model = VisionModel(encoder)
        self.patcher = ModelPatcher(self.model)
        self.load_device, self.image_size = CPU, int(encoder.config.image_size)


def standin_sd(seed: int = 0, ldm: bool = False):
    """``(MODEL, CLIP, VAE)`` as Load Checkpoint would give them, over the tiny SD 2.1 twin (same weights);
    ``ldm``: the UNet in ComfyUI's ``UNetModel`` layout (same modules)."""
    unet, vae, te = build_tiny_sd_parts(seed)
    return ModelPatcher(BaseModel(unet, ldm)), CLIP(te), VAE(vae, temporal=False)


def standin_svd(seed: int = 0, ldm: bool = False):
    """``(MODEL, CLIP_VISION, VAE)`` as Image Only Checkpoint Loader would give them, over the tiny SVD twin;
    ``ldm``: the UNet in ComfyUI's video ``UNetModel`` layout (same modules)."""
    bb = build_tiny_svd(seed=seed)
    return ModelPatcher(SVD_img2vid(bb.unet, ldm)), CLIPVision(bb.image_encoder), VAE(bb.vae, temporal=True)


def standin_foreign(name: str = "SDXL"):
    """A MODEL of a family VidSeg does not support (only its config is looked at)."""
    inner = torch.nn.Module()
    inner.model_config = _config(name, context_dim=2048, model_channels=320, in_channels=4, adm_in_channels=2816,
                                 use_temporal_attention=False)
    inner.apply_model = lambda *a, **k: None
    inner.diffusion_model = torch.nn.Linear(1, 1)
    return ModelPatcher(inner)


def native_backbone(family: str, seed: int = 0, name: str | None = None, ldm: bool = False):
    """The pack's ComfyUI adapter over the stand-ins (``family`` "tiny-sd" / "tiny-svd"), as the node builds it;
    ``ldm``: the UNet in ComfyUI's own module layout."""
    from tools.pack_loader import load_pack

    load_pack()
    import sys

    native = sys.modules["vidseg_pack.nodes.comfy_adapters.native"]
    if family == "tiny-sd":
        model, clip, vae = standin_sd(seed, ldm=ldm)
        return native.backbone_from_comfy(model, vae, clip=clip, name=name or "comfy-tiny-sd")
    model, clip_vision, vae = standin_svd(seed, ldm=ldm)
    return native.backbone_from_comfy(model, vae, clip_vision=clip_vision, name=name or "comfy-tiny-svd")
