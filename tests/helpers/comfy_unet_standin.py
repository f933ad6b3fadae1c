"""A stand-in of ComfyUI's SD ``UNetModel`` layout over the tiny diffusers SD UNet's own modules (tests only).

The pack's prefix split for ComfyUI (``nodes/comfy_adapters/native_split.py``) walks ComfyUI's module tree, which the
plain stand-ins (``comfy_standin.py``, a diffusers UNet behind ``DiffusionModel``) do not have.  This module
regroups the SAME modules (no copy, same weights) into the attribute layout of ComfyUI v0.3.64's
``openaimodel.UNetModel`` (docs/design/comfyui_integration.md#what-the-core-loaders-hand-over), written from its documented behaviour, not its code:

* ``time_embed`` over the module-level :func:`timestep_embedding` (cos half first, as ComfyUI's);
* ``input_blocks`` = ``[conv_in]`` + per level ``(ResBlock, SpatialTransformer)`` x layers + ``(Downsample)``;
  ``middle_block`` = ``(ResBlock, SpatialTransformer, ResBlock)``; ``output_blocks`` = per level
  ``(ResBlock, SpatialTransformer[, Upsample])`` x (layers + 1); ``out`` = norm, SiLU, conv;
* :class:`TimestepEmbedSequential` dispatches per layer type (ResBlock gets ``emb``, SpatialTransformer
  ``context`` and ``transformer_options`` and counts ``transformer_index``, Upsample ``output_shape``);
* :meth:`UNetModel.forward` keeps ``original_shape``, ``transformer_index`` and ``block`` in
  ``transformer_options`` and concatenates the skips in the decoder, as ``_forward`` does.

SVD (``video=True``, over the tiny diffusers SVD UNet): ComfyUI's video ``UNetModel`` on flat rows
``[videos·frames, C, h, w]`` with ``num_video_frames``: ``VideoResBlock`` / ``SpatialVideoTransformer`` (subclasses
of ``ResBlock`` / ``SpatialTransformer``, dispatched first, given ``num_video_frames`` and
``image_only_indicator``), ``num_classes = "sequential"`` and ``emb += label_emb(y)`` per row.

Its whole forward equals the diffusers UNet's (tested), so a split of it that equals its forward is a split of
the same network; real ComfyUI is checked by ``tools/check_native_split.py``.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(timesteps, dim, max_period=10000, repeat_only=False):
    """Sinusoidal embedding ``[N, dim]``: cos of the frequencies, then sin (ComfyUI's order)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float32, device=timesteps.device)
                      / half)
    angles = timesteps[:, None].float() * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, resnet):
        super().__init__()
        self.resnet = resnet

    def forward(self, x, emb):
        return self.resnet(x, emb)


class SpatialTransformer(nn.Module):
    """A diffusers Transformer2D; its attention processors read ``holder.transformer_options`` (the patches)."""

    def __init__(self, transformer, holder):
        super().__init__()
        self.transformer = transformer
        self.__dict__["holder"] = holder  # not a submodule

    @property
    def transformer_blocks(self):
        """ComfyUI's path to the blocks (``output_blocks.b.1.transformer_blocks.0.attn2``)."""
        return self.transformer.transformer_blocks

    def forward(self, x, context=None, transformer_options={}):
        before, self.holder.transformer_options = self.holder.transformer_options, transformer_options
        try:
            return self.transformer(x, encoder_hidden_states=context, return_dict=False)[0]
        finally:
            self.holder.transformer_options = before


def _indicator(x, frames, indicator):
    """SVD's ``image_only_indicator`` ``[videos, frames]`` (zeros unless given) for flat rows ``x``."""
    if indicator is not None:
        return indicator
    return torch.zeros(x.shape[0] // int(frames), int(frames), dtype=x.dtype, device=x.device)


class VideoResBlock(ResBlock):
    """A diffusers ``SpatioTemporalResBlock`` (spatial ResNet, then the temporal one mixing each video's frames)."""

    def forward(self, x, emb, num_video_frames=None, image_only_indicator=None):
        return self.resnet(x, emb, image_only_indicator=_indicator(x, num_video_frames, image_only_indicator))


class SpatialVideoTransformer(SpatialTransformer):
    """A diffusers ``TransformerSpatioTemporalModel`` (spatial then temporal attention per layer)."""

    def forward(self, x, context=None, time_context=None, num_video_frames=None, image_only_indicator=None,
                transformer_options={}):
        before, self.holder.transformer_options = self.holder.transformer_options, transformer_options
        try:
            return self.transformer(x, encoder_hidden_states=context, return_dict=False,
                                    image_only_indicator=_indicator(x, num_video_frames, image_only_indicator))[0]
        finally:
            self.holder.transformer_options = before


class LabelEmbedding(nn.Module):
    """``label_emb(y)``: the tiny SVD's ``add_time_proj`` + ``add_embedding`` on the raw ids its ``encode_adm``
    returns (ComfyUI's ``y`` is already the 768-wide sinusoidal vector; the tiny twin embeds the ids itself)."""

    def __init__(self, unet):
        super().__init__()
        self.proj, self.embedding = unet.add_time_proj, unet.add_embedding

    def forward(self, y):
        return self.embedding(self.proj(y.flatten()).reshape(y.shape[0], -1).to(y.dtype))


class Upsample(nn.Module):
    def __init__(self, up):
        super().__init__()
        self.up = up

    def forward(self, x, output_shape=None):
        return self.up(x, None if output_shape is None else tuple(output_shape[2:]))


class TimestepEmbedSequential(nn.Sequential):
    def forward(self, x, emb, context=None, transformer_options={}, output_shape=None, time_context=None,
                num_video_frames=None, image_only_indicator=None):
        for layer in self:
            if isinstance(layer, VideoResBlock):
                x = layer(x, emb, num_video_frames, image_only_indicator)
            elif isinstance(layer, SpatialVideoTransformer):
                x = layer(x, context, time_context, num_video_frames, image_only_indicator, transformer_options)
                if "transformer_index" in transformer_options:
                    transformer_options["transformer_index"] += 1
            elif isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, SpatialTransformer):
                x = layer(x, context, transformer_options)
                if "transformer_index" in transformer_options:
                    transformer_options["transformer_index"] += 1
            elif isinstance(layer, Upsample):
                x = layer(x, output_shape=output_shape)
            else:
                x = layer(x)
        return x


class UNetModel(nn.Module):
    """ComfyUI's SD (or, ``video``, SVD) UNet layout over a diffusers UNet's modules (module doc)."""

    def __init__(self, unet, holder, video: bool = False):
        super().__init__()
        res, tr = (VideoResBlock, SpatialVideoTransformer) if video else (ResBlock, SpatialTransformer)
        self.model_channels = unet.config.block_out_channels[0]
        self.num_classes, self.predict_codebook_ids = ("sequential" if video else None), False
        self.use_temporal_resblocks, self.default_num_video_frames = video, 25
        self.time_embed = unet.time_embedding
        if video:
            self.label_emb = LabelEmbedding(unet)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(unet.conv_in)])
        for down in unet.down_blocks:
            attns = getattr(down, "attentions", None)
            for j, resnet in enumerate(down.resnets):
                parts = [res(resnet)] + ([tr(attns[j], holder)] if attns is not None else [])
                self.input_blocks.append(TimestepEmbedSequential(*parts))
            if down.downsamplers is not None:
                self.input_blocks.append(TimestepEmbedSequential(down.downsamplers[0]))
        mid = unet.mid_block
        self.middle_block = TimestepEmbedSequential(res(mid.resnets[0]), tr(mid.attentions[0], holder),
                                                    res(mid.resnets[1]))
        self.output_blocks = nn.ModuleList()
        for up in unet.up_blocks:
            attns = getattr(up, "attentions", None)
            for j, resnet in enumerate(up.resnets):
                parts = [res(resnet)] + ([tr(attns[j], holder)] if attns is not None else [])
                if j == len(up.resnets) - 1 and up.upsamplers is not None:
                    parts.append(Upsample(up.upsamplers[0]))
                self.output_blocks.append(TimestepEmbedSequential(*parts))
        self.out = nn.Sequential(unet.conv_norm_out, nn.SiLU(), unet.conv_out)

    def forward(self, x, timesteps=None, context=None, y=None, control=None, transformer_options={}, **kwargs):
        to = transformer_options
        to["original_shape"], to["transformer_index"] = list(x.shape), 0
        video = {"time_context": kwargs.get("time_context"), "image_only_indicator": kwargs.get("image_only_indicator"),
                 "num_video_frames": kwargs.get("num_video_frames", self.default_num_video_frames)}
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels).to(x.dtype))
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        h, skips = x, []
        for i, blk in enumerate(self.input_blocks):
            to["block"] = ("input", i)
            h = blk(h, emb, context, to, **video)
            skips.append(h)
        to["block"] = ("middle", 0)
        h = self.middle_block(h, emb, context, to, **video)
        for i, blk in enumerate(self.output_blocks):
            to["block"] = ("output", i)
            h = torch.cat([h, skips.pop()], dim=1)
            h = blk(h, emb, context, to, skips[-1].shape if skips else None, **video)
        return self.out(h.type(x.dtype))
