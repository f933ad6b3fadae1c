"""Write tiny checkpoints in the ORIGINAL single-file (LDM / Stability) key layout.

This is the inverse of the diffusers conversion, written from the key facts
(docs/design/backbones.md#weight-keys, #offline-loading-of-sd-21-single-files): diffusers ``UNet2DConditionModel`` / ``AutoencoderKL``
/ ``CLIPTextModel`` state dicts -> ``model.diffusion_model.*``,
``first_stage_model.*`` (mid attention as 1x1 convs) and
``cond_stage_model.model.*`` (OpenCLIP text tower with fused ``in_proj``), plus
the DDPM schedule buffers.  Used to test single-file loading without real weights.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Optional

import torch

Tensor = torch.Tensor

_UNET_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}


def _resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_UNET_RESNET[head]}.{tail}"


def unet_to_ldm(state: Dict[str, Tensor], config) -> Dict[str, Tensor]:
    """diffusers UNet2DConditionModel state -> ``model.diffusion_model.*`` (SD 1/2 UNet layout)."""
    lpb = config["layers_per_block"] if isinstance(config, dict) else config.layers_per_block
    up_types = config["up_block_types"] if isinstance(config, dict) else config.up_block_types
    out = {}
    for key, v in state.items():
        m = None
        if key.startswith("time_embedding.linear_1."):
            new = "time_embed.0." + key.rsplit(".", 1)[1]
        elif key.startswith("time_embedding.linear_2."):
            new = "time_embed.2." + key.rsplit(".", 1)[1]
        elif key.startswith("conv_in."):
            new = "input_blocks.0.0." + key.split(".", 1)[1]
        elif key.startswith("conv_norm_out."):
            new = "out.0." + key.split(".", 1)[1]
        elif key.startswith("conv_out."):
            new = "out.2." + key.split(".", 1)[1]
        elif (m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key)):
            i, j, rest = int(m[1]), int(m[2]), m[3]
            new = f"input_blocks.{i * (lpb + 1) + j + 1}.0.{_resnet(rest)}"
        elif (m := re.match(r"down_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key)):
            i, j, rest = int(m[1]), int(m[2]), m[3]
            new = f"input_blocks.{i * (lpb + 1) + j + 1}.1.{rest}"
        elif (m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", key)):
            new = f"input_blocks.{(int(m[1]) + 1) * (lpb + 1)}.0.op.{m[2]}"
        elif (m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", key)):
            new = f"middle_block.{2 * int(m[1])}.{_resnet(m[2])}"
        elif (m := re.match(r"mid_block\.attentions\.0\.(.*)", key)):
            new = f"middle_block.1.{m[1]}"
        elif (m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", key)):
            i, j, rest = int(m[1]), int(m[2]), m[3]
            new = f"output_blocks.{i * (lpb + 1) + j}.0.{_resnet(rest)}"
        elif (m := re.match(r"up_blocks\.(\d+)\.attentions\.(\d+)\.(.*)", key)):
            i, j, rest = int(m[1]), int(m[2]), m[3]
            new = f"output_blocks.{i * (lpb + 1) + j}.1.{rest}"
        elif (m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", key)):
            i = int(m[1])
            slot = 2 if up_types[i].startswith("CrossAttn") else 1
            new = f"output_blocks.{i * (lpb + 1) + lpb}.{slot}.conv.{m[2]}"
        else:
            raise KeyError(f"unmapped UNet key {key}")
        out["model.diffusion_model." + new] = v.clone()
    return out


_VAE_RESNET = {"conv_shortcut": "nin_shortcut"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def _vae_resnet(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_VAE_RESNET.get(head, head)}.{tail}"


def vae_to_ldm(state: Dict[str, Tensor], num_levels: int = 4) -> Dict[str, Tensor]:
    """diffusers AutoencoderKL state -> ``first_stage_model.*`` (decoder levels reversed, mid attention as 1x1 convs)."""
    out = {}
    for key, v in state.items():
        v = v.clone()
        side, _, rest = key.partition(".")
        m = None
        if key.startswith(("quant_conv.", "post_quant_conv.")):
            new = key
        elif rest.startswith(("conv_in.", "conv_out.")):
            new = key
        elif rest.startswith("conv_norm_out."):
            new = f"{side}.norm_out.{rest.split('.', 1)[1]}"
        elif (m := re.match(r"down_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", rest)):
            new = f"{side}.down.{m[1]}.block.{m[2]}.{_vae_resnet(m[3])}"
        elif (m := re.match(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*)", rest)):
            new = f"{side}.down.{m[1]}.downsample.conv.{m[2]}"
        elif (m := re.match(r"up_blocks\.(\d+)\.resnets\.(\d+)\.(.*)", rest)):
            new = f"{side}.up.{num_levels - 1 - int(m[1])}.block.{m[2]}.{_vae_resnet(m[3])}"
        elif (m := re.match(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*)", rest)):
            new = f"{side}.up.{num_levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
        elif (m := re.match(r"mid_block\.resnets\.(\d+)\.(.*)", rest)):
            new = f"{side}.mid.block_{int(m[1]) + 1}.{_vae_resnet(m[2])}"
        elif (m := re.match(r"mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(.*)", rest)):
            new = f"{side}.mid.attn_1.{_VAE_ATTN[m[1]]}.{m[2]}"
            if m[1] != "group_norm" and m[2] == "weight":
                v = v[:, :, None, None]  # linear -> 1x1 conv
        else:
            raise KeyError(f"unmapped VAE key {key}")
        out["first_stage_model." + new] = v
    return out


def clip_text_to_open_clip(state: Dict[str, Tensor], extra_layer: bool = True, seed: int = 123,
                           projection_dim: Optional[int] = None) -> Dict[str, Tensor]:
    """CLIPTextModel state (either transformers layout) -> ``cond_stage_model.model.*`` OpenCLIP text tower.

    With ``extra_layer`` one more random resblock is appended (SD 2.x checkpoints
    hold all 24 OpenCLIP layers; the "penultimate" output skips the last), plus
    ``text_projection`` and ``logit_scale`` like the real files.
    """
    sd = {k[len("text_model."):] if k.startswith("text_model.") else k: v for k, v in state.items()}
    sd.pop("embeddings.position_ids", None)
    p = "cond_stage_model.model."
    out = {p + "token_embedding.weight": sd["embeddings.token_embedding.weight"].clone(),
           p + "positional_embedding": sd["embeddings.position_embedding.weight"].clone(),
           p + "ln_final.weight": sd["final_layer_norm.weight"].clone(),
           p + "ln_final.bias": sd["final_layer_norm.bias"].clone()}
    layers = sorted({int(m[1]) for k in sd for m in [re.match(r"encoder\.layers\.(\d+)\.", k)] if m})
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    for i in layers:
        s, d = f"encoder.layers.{i}.", f"{p}transformer.resblocks.{i}."
        for a, b in names.items():
            for q in ("weight", "bias"):
                out[f"{d}{b}.{q}"] = sd[f"{s}{a}.{q}"].clone()
        for q in ("weight", "bias"):
            out[f"{d}attn.in_proj_{q}"] = torch.cat([sd[f"{s}self_attn.{n}_proj.{q}"] for n in "qkv"]).clone()
    width = out[p + "ln_final.weight"].shape[0]
    g = torch.Generator().manual_seed(seed)
    if extra_layer:
        n = len(layers)
        first = {k[len(f"{p}transformer.resblocks.0."):]: v for k, v in out.items()
                 if k.startswith(f"{p}transformer.resblocks.0.")}
        for k, v in first.items():
            out[f"{p}transformer.resblocks.{n}.{k}"] = torch.randn(v.shape, generator=g) * 0.5
    out[p + "text_projection"] = torch.randn(width, projection_dim or width, generator=g)
    out[p + "logit_scale"] = torch.tensor(4.6052)
    return out


def schedule_buffers(n: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> Dict[str, Tensor]:
    """The LDM DDPM buffers stored in SD single files (``betas``, ``alphas_cumprod``, ...)."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, n, dtype=torch.float64) ** 2
    acp = torch.cumprod(1 - betas, 0)
    return {"betas": betas.float(), "alphas_cumprod": acp.float(),
            "alphas_cumprod_prev": torch.cat([acp.new_ones(1), acp[:-1]]).float(),
            "sqrt_alphas_cumprod": acp.sqrt().float()}


def sd_ldm_state(unet, vae, text_encoder, extra_text_layer: bool = True) -> Dict[str, Tensor]:
    """A whole SD 2.x single-file state dict in the original layout."""
    state = {}
    state.update(unet_to_ldm(unet.state_dict(), unet.config))
    state.update(vae_to_ldm(vae.state_dict(), len(vae.config.block_out_channels)))
    state.update(clip_text_to_open_clip(text_encoder.state_dict(), extra_layer=extra_text_layer))
    state.update(schedule_buffers())
    return state


def save_safetensors(state: Dict[str, Tensor], path: Path) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


def write_sd_checkpoint(path: Path, unet, vae, text_encoder, extra_text_layer: bool = True) -> Path:
    """Write tiny SD parts as one ``.safetensors`` in the original LDM layout."""
    return save_safetensors(sd_ldm_state(unet, vae, text_encoder, extra_text_layer), path)


def fake_family_checkpoint(path: Path, family: str) -> Path:
    """A tiny file whose keys look like another family (``sd1``, ``sdxl``, ``flux``), values random."""
    z = lambda *s: torch.zeros(*s)  # noqa: E731
    u = "model.diffusion_model."
    if family == "sd1":
        state = {u + "input_blocks.0.0.weight": z(32, 4, 3, 3),
                 u + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": z(32, 768),
                 "cond_stage_model.transformer.text_model.final_layer_norm.weight": z(768)}
    elif family == "sdxl":
        state = {u + "input_blocks.0.0.weight": z(32, 4, 3, 3), u + "label_emb.0.0.weight": z(32, 2816),
                 u + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": z(32, 2048),
                 "conditioner.embedders.1.model.ln_final.weight": z(1280)}
    elif family == "flux":
        state = {u + "double_blocks.0.img_attn.qkv.weight": z(96, 32), u + "img_in.weight": z(32, 64)}
    else:
        raise ValueError(family)
    return save_safetensors(state, path)
