"""Stable Video Diffusion: the key mapping between the original (sgm) single-file layout and diffusers /
transformers (the conversions themselves are in :mod:`.svd_convert`).

One rule per *diffusers* key (:func:`unet_rule`, :func:`vae_rule`,
:func:`clip_rule`) gives its original key and the tensor operation between
the two layouts; both conversions of :mod:`.svd_convert` are driven by these
rules, so they cannot drift apart.

Facts the mapping rests on
--------------------------
Read from the published model code (``Stability-AI/generative-models``:
``scripts/sampling/configs/svd.yaml``, ``sgm/modules/diffusionmodules/video_model.py``,
``openaimodel.py``, ``model.py``, ``sgm/modules/video_attention.py``,
``sgm/modules/autoencoding/temporal_ae.py``, ``sgm/models/autoencoder.py``,
``sgm/modules/encoders/modules.py``), the installed diffusers / transformers
modules, and checked against real key names listed in public converters of
the real file (DiffSynth-Studio's SVD ``from_civitai`` rename tables, a public
script asserting 106 ``first_stage_model.encoder.*`` tensors in the official
``svd.safetensors``, ComfyUI's SVD model / VAE detection, the new diffusers
temporal-VAE single-file rules).  No weights were downloaded.

``model.diffusion_model.*`` — ``VideoUNet``:

* ``time_embed.{0,2}`` = ``time_embedding.linear_{1,2}``; ``label_emb.0.{0,2}``
  (the 768-d fps/motion/cond_aug vector) = ``add_embedding.linear_{1,2}``;
  ``input_blocks.0.0`` = ``conv_in``; ``out.{0,2}`` = ``conv_norm_out`` / ``conv_out``.
* ``input_blocks.n``: n = 1 + k·(L+1) + j is ``down_blocks[k]`` layer j
  (``.0`` resnet, ``.1`` transformer); n = 1 + k·(L+1) + L is the downsampler
  ``.0.op`` (L = layers per block = 2).  ``middle_block.{0,1,2}`` =
  ``mid_block.resnets[0]``, ``.attentions[0]``, ``.resnets[1]``.
  ``output_blocks.{3k+j}``: ``.0`` = ``up_blocks[k].resnets[j]``, ``.1`` =
  ``.attentions[j]``; the upsampler of up-block k is ``output_blocks.{3k+2}.1.conv``
  when the block has no transformer (k = 0) else ``.2.conv``.
* Resnet (``VideoResBlock``): ``in_layers.0/.2``, ``emb_layers.1``,
  ``out_layers.0/.3``, ``skip_connection`` = ``spatial_res_block.norm1/conv1``,
  ``time_emb_proj``, ``norm2/conv2``, ``conv_shortcut``; the same names under
  ``time_stack.`` are ``temporal_res_block.*`` (Conv3d kernel (3,1,1) on both
  sides, shapes equal); ``time_mixer.mix_factor`` keeps its name.
* Transformer (``SpatialVideoTransformer``): ``norm``, ``proj_in``/``proj_out``
  (linear), ``transformer_blocks.0.*`` and ``time_mixer.mix_factor`` keep their
  names; ``time_stack.0.*`` (``norm_in``, ``ff_in.net.{0.proj,2}``, ``attn1``,
  ``attn2``, ``norm1..3``, ``ff.net.*``) = ``temporal_transformer_blocks.0.*``;
  ``time_pos_embed.{0,2}`` = ``time_pos_embed.linear_{1,2}``.

``first_stage_model.*`` — ``AutoencodingEngine`` (no ``quant_conv``) with the
LDM ``Encoder`` and the ``VideoDecoder`` (``time_mode="conv-only"``):

* ``{en,de}coder.conv_in``, ``norm_out`` (= ``conv_norm_out``), ``conv_out``;
  ``encoder.down.i.block.j`` = ``encoder.down_blocks[i].resnets[j]``
  (``nin_shortcut`` = ``conv_shortcut``), ``encoder.down.i.downsample.conv``;
  ``decoder.up.(N-1-k)`` = ``decoder.up_blocks[k]`` (LDM counts up-levels from
  the highest resolution), ``.upsample.conv`` = ``.upsamplers[0].conv``;
  ``mid.block_{1,2}`` = ``mid_block.resnets[0,1]``.
* ``mid.attn_1.{norm,q,k,v,proj_out}`` are 1x1 **convolutions** ``[C,C,1,1]``;
  diffusers' ``group_norm, to_q, to_k, to_v, to_out.0`` are linear ``[C,C]``.
* Decoder resnets (``VideoResBlock``): the spatial part keeps the LDM names
  (-> ``spatial_res_block.*``), ``time_stack.{in_layers.0,in_layers.2,
  out_layers.0,out_layers.3}`` = ``temporal_res_block.{norm1,conv1,norm2,conv2}``
  (no time embedding), ``mix_factor`` = ``time_mixer.mix_factor``;
  ``decoder.conv_out.time_mix_conv`` (``AE3DConv``) = ``decoder.time_conv_out``.
  The decoder's conv_in and mid attention have no temporal part.
* The blend conventions agree, so every ``mix_factor`` is copied unchanged:
  VAE — sgm ``VideoResBlock`` ``σ(m)·temporal + (1−σ(m))·spatial``, diffusers
  ``AlphaBlender(switch_spatial_to_temporal_mix=True)`` the same; UNet — sgm
  and diffusers ``AlphaBlender`` both ``σ(m)·spatial + (1−σ(m))·temporal``
  (``learned_with_images``; ``image_only_indicator`` = 0).

``conditioner.embedders.3.encoder.*`` — the ``cond_frames`` embedder's own
``AutoencoderKLModeOnly`` (``encoder.*`` plus ``quant_conv``; its ``decoder.*`` /
``post_quant_conv`` are never used and are ignored).  diffusers' single VAE has
``encoder`` + ``quant_conv``; the authors encode frames with
``first_stage_model.encoder`` (no ``quant_conv``) and the conditioning image with
this one.  Rule (see :func:`~.svd_convert.sgm_to_diffusers`): when the first-stage encoder
equals this encoder with ``quant_conv`` folded into its ``conv_out`` (an exact
linear identity), the VAE takes this encoder + ``quant_conv`` (the diffusers
convention) and nothing is lost; otherwise the VAE gets the first-stage encoder
with an identity ``quant_conv`` and this encoder is kept separately for the
conditioning.  :func:`~.svd_convert.diffusers_to_sgm` writes both (folded / unfolded).

``conditioner.embedders.0.open_clip.model.visual.*`` — OpenCLIP ViT-H/14 visual
tower (``FrozenOpenCLIPImageEmbedder``; the text transformer is deleted, other
text-side remnants under ``open_clip.model.`` are ignored):
``class_embedding`` [C] = ``embeddings.class_embedding``; ``conv1.weight`` =
``patch_embedding.weight`` (no bias); ``positional_embedding`` [257,C] =
``position_embedding.weight``; ``ln_pre`` = ``pre_layrnorm``; ``ln_post`` =
``post_layernorm``; ``transformer.resblocks.i.{ln_1, ln_2, attn.out_proj,
mlp.c_fc, mlp.c_proj}`` = ``encoder.layers.i.{layer_norm1, layer_norm2,
self_attn.out_proj, mlp.fc1, mlp.fc2}``; ``attn.in_proj_{weight,bias}``
[3C,C]/[3C] = q, k, v projections stacked in that order; ``proj`` [C,D] (used
as ``x @ proj``) = ``visual_projection.weight`` [D,C] transposed.

How it was checked: the tests convert the tiny model both ways (identical
tensors, every key consumed), load a tiny original-layout file through
``load_backbone`` and compare outputs with the diffusers-built model, spot-check
the real key names above, and convert the *real-size* configs built on the meta
device to compare shapes and counts with the published facts (e.g. 106
first-stage encoder tensors, ``out.2.weight`` [4,320,3,3],
``conv_out.time_mix_conv.weight`` [3,3,3,1,1]).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, List, Tuple

import torch

from ..errors import ModelLoadError

UNET_PREFIX = "model.diffusion_model."
VAE_PREFIX = "first_stage_model."
COND_VAE_PREFIX = "conditioner.embedders.3.encoder."
CLIP_PREFIX = "conditioner.embedders.0.open_clip.model.visual."
#: parts of original files that hold nothing VidSeg uses (reported as ``ignored``)
UNUSED_PREFIXES = (COND_VAE_PREFIX + "decoder.", COND_VAE_PREFIX + "post_quant_conv.",
                   "conditioner.embedders.0.open_clip.model.")

#: tensor operations of a rule: diffusers -> sgm (the inverse is applied when loading)
COPY, CONV1X1, TRANSPOSE = "copy", "conv1x1", "transpose"
QKV = ("q", "k", "v")

Rule = Tuple[str, str]  # (sgm key without component prefix, op)


# ------------------------------------------------------------------ UNet
@dataclass(frozen=True)
class UNetLayout:
    """What the LDM block numbering depends on: layers per block and which up-blocks have transformers."""

    layers_per_block: int
    up_with_attention: frozenset

    @classmethod
    def from_keys(cls, keys: Iterable[str]) -> "UNetLayout":
        keys = list(keys)
        resnets = {int(m.group(1)) for k in keys if (m := re.match(r"down_blocks\.0\.resnets\.(\d+)\.", k))}
        if not resnets:
            raise ModelLoadError("The UNet state dict has no down_blocks.0 resnets.", "Use an SVD UNet.")
        attn = {int(m.group(1)) for k in keys if (m := re.match(r"up_blocks\.(\d+)\.attentions\.", k))}
        return cls(max(resnets) + 1, frozenset(attn))


_UNET_RES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
             "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
_TOP_UNET = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
             "time_embedding.linear_2": "time_embed.2", "add_embedding.linear_1": "label_emb.0.0",
             "add_embedding.linear_2": "label_emb.0.2", "conv_norm_out": "out.0", "conv_out": "out.2"}


def _split_param(rest: str) -> Tuple[str, str]:
    layer, _, param = rest.rpartition(".")
    return layer, param


def _unet_resnet(rest: str) -> str:
    if rest == "time_mixer.mix_factor":
        return rest
    part, _, tail = rest.partition(".")
    layer, param = _split_param(tail)
    if part not in ("spatial_res_block", "temporal_res_block") or layer not in _UNET_RES:
        raise KeyError(rest)
    new = f"{_UNET_RES[layer]}.{param}"
    return new if part == "spatial_res_block" else "time_stack." + new


def _unet_transformer(rest: str) -> str:
    if rest.startswith("temporal_transformer_blocks."):
        return "time_stack." + rest[len("temporal_transformer_blocks."):]
    if rest.startswith("time_pos_embed.linear_1."):
        return "time_pos_embed.0." + rest.rpartition(".")[2]
    if rest.startswith("time_pos_embed.linear_2."):
        return "time_pos_embed.2." + rest.rpartition(".")[2]
    return rest


def unet_rule(key: str, layout: UNetLayout) -> Rule:
    """sgm key (without ``model.diffusion_model.``) of a diffusers UNet key."""
    layer, param = _split_param(key)
    if layer in _TOP_UNET:
        return f"{_TOP_UNET[layer]}.{param}", COPY
    per = layout.layers_per_block + 1
    m = re.match(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.+)", key)
    if m:
        k, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        if kind == "downsamplers":
            if not rest.startswith("conv."):
                raise KeyError(key)
            return f"input_blocks.{1 + k * per + layout.layers_per_block}.0.op.{rest[5:]}", COPY
        n = 1 + k * per + j
        if kind == "resnets":
            return f"input_blocks.{n}.0.{_unet_resnet(rest)}", COPY
        return f"input_blocks.{n}.1.{_unet_transformer(rest)}", COPY
    m = re.match(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        kind, j, rest = m.group(1), int(m.group(2)), m.group(3)
        if kind == "attentions":
            return f"middle_block.1.{_unet_transformer(rest)}", COPY
        return f"middle_block.{2 * j}.{_unet_resnet(rest)}", COPY
    m = re.match(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.+)", key)
    if m:
        k, kind, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        if kind == "upsamplers":
            slot = 2 if k in layout.up_with_attention else 1
            return f"output_blocks.{k * per + per - 1}.{slot}.{rest}", COPY
        n = k * per + j
        if kind == "resnets":
            return f"output_blocks.{n}.0.{_unet_resnet(rest)}", COPY
        return f"output_blocks.{n}.1.{_unet_transformer(rest)}", COPY
    raise KeyError(key)


# ------------------------------------------------------------------ VAE
_VAE_RES = {"norm1": "norm1", "conv1": "conv1", "norm2": "norm2", "conv2": "conv2", "conv_shortcut": "nin_shortcut"}
_VAE_TIME = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3"}
_VAE_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_VAE_TOP = {"conv_in": "conv_in", "conv_norm_out": "norm_out", "conv_out": "conv_out"}


def _vae_resnet(rest: str) -> str:
    if rest == "time_mixer.mix_factor":
        return "mix_factor"
    if rest.startswith("spatial_res_block."):
        rest = rest[len("spatial_res_block."):]
    elif rest.startswith("temporal_res_block."):
        layer, param = _split_param(rest[len("temporal_res_block."):])
        return f"time_stack.{_VAE_TIME[layer]}.{param}"
    layer, param = _split_param(rest)
    return f"{_VAE_RES[layer]}.{param}"


def vae_rule(key: str, levels: int) -> Rule:
    """LDM key (without ``first_stage_model.``) of a diffusers ``encoder.*`` / ``decoder.*`` key."""
    side, _, rest = key.partition(".")
    if side not in ("encoder", "decoder"):
        raise KeyError(key)
    layer, param = _split_param(rest)
    if layer in _VAE_TOP:
        return f"{side}.{_VAE_TOP[layer]}.{param}", COPY
    if side == "decoder" and layer == "time_conv_out":
        return f"decoder.conv_out.time_mix_conv.{param}", COPY
    m = re.match(r"(down|up)_blocks\.(\d+)\.(resnets|downsamplers|upsamplers)\.(\d+)\.(.+)", rest)
    if m:
        updown, k, kind, j, tail = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        level = k if updown == "down" else levels - 1 - k
        if kind == "resnets":
            return f"{side}.{updown}.{level}.block.{j}.{_vae_resnet(tail)}", COPY
        sampler = "downsample" if kind == "downsamplers" else "upsample"
        return f"{side}.{updown}.{level}.{sampler}.{tail}", COPY
    m = re.match(r"mid_block\.resnets\.(\d+)\.(.+)", rest)
    if m:
        return f"{side}.mid.block_{int(m.group(1)) + 1}.{_vae_resnet(m.group(2))}", COPY
    m = re.match(r"mid_block\.attentions\.0\.(group_norm|to_q|to_k|to_v|to_out\.0)\.(weight|bias)", rest)
    if m:
        op = CONV1X1 if m.group(1) != "group_norm" and m.group(2) == "weight" else COPY
        return f"{side}.mid.attn_1.{_VAE_ATTN[m.group(1)]}.{m.group(2)}", op
    raise KeyError(key)


# ------------------------------------------------------------------ CLIP vision tower
_CLIP_TOP = {"embeddings.class_embedding": "class_embedding", "embeddings.patch_embedding.weight": "conv1.weight",
             "embeddings.position_embedding.weight": "positional_embedding"}
_CLIP_LAYER = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
               "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}


def clip_rule(key: str) -> Rule:
    """OpenCLIP ``visual.*`` key of a ``CLIPVisionModelWithProjection`` key (with or without ``vision_model.``)."""
    if key == "visual_projection.weight":
        return "proj", TRANSPOSE
    inner = key[len("vision_model."):] if key.startswith("vision_model.") else key
    if inner in _CLIP_TOP:
        return _CLIP_TOP[inner], COPY
    layer, param = _split_param(inner)
    if layer in ("pre_layrnorm", "post_layernorm"):
        return f"{'ln_pre' if layer == 'pre_layrnorm' else 'ln_post'}.{param}", COPY
    m = re.match(r"encoder\.layers\.(\d+)\.(.+)", layer)
    if m:
        i, sub = int(m.group(1)), m.group(2)
        qkv = re.match(r"self_attn\.([qkv])_proj", sub)
        if qkv:
            return f"transformer.resblocks.{i}.attn.in_proj_{param}", qkv.group(1)
        if sub in _CLIP_LAYER:
            return f"transformer.resblocks.{i}.{_CLIP_LAYER[sub]}.{param}", COPY
    raise KeyError(key)


# ------------------------------------------------------------------ helpers
def fold_quant_conv(conv_w: torch.Tensor, conv_b: torch.Tensor, quant_w: torch.Tensor, quant_b: torch.Tensor):
    """``quant_conv ∘ conv_out`` as one conv: ``W' = Q·W``, ``b' = Q·b + q`` (exact linear identity)."""
    q = quant_w.reshape(quant_w.shape[0], quant_w.shape[1])
    if conv_w.is_meta:
        return conv_w.new_empty((q.shape[0],) + tuple(conv_w.shape[1:])), conv_b.new_empty((q.shape[0],))
    w = torch.einsum("oi,ichw->ochw", q.double(), conv_w.double()).to(conv_w.dtype)
    b = (q.double() @ conv_b.double() + quant_b.double()).to(conv_b.dtype)
    return w, b


def identity_quant_conv(channels: int, like: torch.Tensor):
    """An identity 1x1 conv (weight, bias) for a VAE whose encoder output needs no ``quant_conv``."""
    w = torch.eye(channels, dtype=like.dtype, device=like.device).reshape(channels, channels, 1, 1)
    return w, torch.zeros(channels, dtype=like.dtype, device=like.device)


def to_sgm_tensor(t: torch.Tensor, op: str) -> torch.Tensor:
    """A diffusers tensor in the original layout (the rule's ``op``)."""
    if op == CONV1X1:
        return t.reshape(t.shape[0], t.shape[1], 1, 1)
    if op == TRANSPOSE:
        return t.t().contiguous()
    return t


def from_sgm_tensor(t: torch.Tensor, op: str) -> torch.Tensor:
    """An original-layout tensor in diffusers' layout (the inverse of the rule's ``op``)."""
    if op == CONV1X1:
        return t.reshape(t.shape[0], t.shape[1]) if t.ndim == 4 else t
    if op == TRANSPOSE:
        return t.t().contiguous()
    return t


def vae_levels(keys: Iterable[str]) -> int:
    """Up-block levels of a diffusers temporal VAE state dict."""
    ups = {int(m.group(1)) for k in keys if (m := re.match(r"decoder\.up_blocks\.(\d+)\.", k))}
    if not ups:
        raise ModelLoadError("The VAE state dict has no decoder up-blocks.", "Use an SVD temporal VAE.")
    return max(ups) + 1


def encoder_keys(vae_keys: Iterable[str]) -> List[str]:
    """The encoder's keys of a diffusers VAE state dict."""
    return [k for k in vae_keys if k.startswith("encoder.")]
