"""Diffusers' SD 2.1 / SVD UNets split for prefix sharing (:mod:`vidseg_core.modulation.unet_split`,
contract :class:`~.split.UNetSplitter`).

:class:`SplitUNet` re-implements the forward pass of diffusers' ``UNet2DConditionModel`` (SD 2.1) and
``UNetSpatioTemporalConditionModel`` (SVD) from their module structure:

    time embedding -> conv_in -> down blocks -> mid block -> up blocks -> conv_norm_out/act/conv_out

split just before the attention module of the modulated decoder block ``b = 3k + j``
(``up_blocks[k].attentions[j]``, after ``resnets[j]``); ``SplitUNet.forward`` without a split equals
``unet(...)`` exactly (tested).  :class:`DiffusersSplitter` puts it behind the splitter contract, routing the
UNet's calls by overriding ``unet.forward`` on the instance.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Optional, Tuple

import torch

from .split import SplitState, UNetCall, UNetSplitter


class _Output(tuple):
    """Stand-in for diffusers' output dataclass: ``out.sample`` and ``out[0]``."""

    @property
    def sample(self):
        return self[0]




class SplitUNet:
    """Forward pieces of an SD 2.1 / SVD diffusers UNet, split before ``up_blocks[k].attentions[j]``."""

    def __init__(self, unet, split_block: Optional[int] = None):
        self.unet = unet
        cls = type(unet).__name__
        if cls == "UNet2DConditionModel":
            self.family = "sd"
        elif cls == "UNetSpatioTemporalConditionModel":
            self.family = "svd"
        else:
            raise TypeError(f"unsupported UNet class {cls}")
        self.unsupported = self._unsupported_reason()
        self.k, self.j = (None, None) if split_block is None else divmod(int(split_block), 3)
        if self.k is not None:
            ub = unet.up_blocks[self.k]
            if getattr(ub, "attentions", None) is None or self.j >= len(ub.attentions):
                raise ValueError(f"decoder block {split_block} has no attention module to split before")

    def _unsupported_reason(self) -> Optional[str]:
        u, c = self.unet, self.unet.config
        if self.family == "sd":
            checks = {
                "class embedding": getattr(u, "class_embedding", None) is not None,
                "addition embedding": getattr(c, "addition_embed_type", None) is not None,
                "time_embed_act": getattr(u, "time_embed_act", None) is not None,
                "encoder_hid_proj": getattr(u, "encoder_hid_proj", None) is not None,
                "center_input_sample": bool(getattr(c, "center_input_sample", False)),
            }
        else:
            checks = {}
        for blk in list(u.up_blocks):
            if all(getattr(blk, a, None) for a in ("s1", "s2", "b1", "b2")):
                checks["FreeU"] = True
        bad = [k for k, v in checks.items() if v]
        return ", ".join(bad) if bad else None

    # ------------------------------------------------------------ pieces
    def _timesteps(self, timestep, sample: torch.Tensor, batch: int) -> torch.Tensor:
        t = timestep
        if not torch.is_tensor(t):
            dtype = torch.float64 if isinstance(t, float) else torch.int64
            if sample.device.type == "mps":
                dtype = torch.float32 if dtype == torch.float64 else torch.int32
            t = torch.tensor([t], dtype=dtype, device=sample.device)
        elif t.ndim == 0:
            t = t[None].to(sample.device)
        return t.expand(batch)

    def prefix(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
               added_time_ids: Optional[torch.Tensor] = None, stop: Optional[Tuple[int, int]] = None) -> SplitState:
        """Run up to (not including) ``up_blocks[k].attentions[j]``; ``stop=None`` uses the configured split."""
        u = self.unet
        k, j = stop if stop is not None else (self.k, self.j)
        factor = 2 ** u.num_upsamplers
        fus = any(int(side) % factor != 0 for side in sample.shape[-2:])
        indicator = None
        if self.family == "sd":
            batch, frames = sample.shape[0], 1
            t_emb = u.time_proj(self._timesteps(timestep, sample, batch)).to(sample.dtype)
            emb = u.time_embedding(t_emb)
            context = encoder_hidden_states
            h = u.conv_in(sample)
        else:
            batch, frames = sample.shape[:2]
            t_emb = u.time_proj(self._timesteps(timestep, sample, batch)).to(sample.dtype)
            emb = u.time_embedding(t_emb)
            added = u.add_time_proj(added_time_ids.flatten()).reshape(batch, -1).to(emb.dtype)
            emb = emb + u.add_embedding(added)
            emb = emb.repeat_interleave(frames, dim=0)
            context = encoder_hidden_states.repeat_interleave(frames, dim=0)
            h = u.conv_in(sample.flatten(0, 1))
            indicator = torch.zeros(batch, frames, dtype=h.dtype, device=h.device)

        skips = (h,)
        for down in u.down_blocks:
            h, res = down(**self._block_kwargs(down, h, emb, context, indicator))
            skips += res
        h = u.mid_block(**self._block_kwargs(u.mid_block, h, emb, context, indicator))

        n_up = len(u.up_blocks)
        last = n_up if k is None else k
        for i in range(last):
            blk = u.up_blocks[i]
            res, skips = skips[-len(blk.resnets):], skips[:-len(blk.resnets)]
            h = self._up_block(blk, h, res, emb, context, indicator, self._upsample_size(i, skips, fus))
        if k is None:
            return SplitState(h, (), skips, emb, context, indicator, fus, batch, frames)
        blk = u.up_blocks[k]
        res, skips = skips[-len(blk.resnets):], skips[:-len(blk.resnets)]
        for jj in range(j + 1):
            h = torch.cat([h, res[-1]], dim=1)
            res = res[:-1]
            h = self._resnet(blk.resnets[jj], h, emb, indicator)
            if jj < j:
                h = self._attention(blk.attentions[jj], h, context, indicator)
        return SplitState(h, res, skips, emb, context, indicator, fus, batch, frames)

    def suffix(self, st: SplitState, start: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """Continue from a :class:`SplitState` (possibly expanded) to the UNet output."""
        u = self.unet
        k, j = start if start is not None else (self.k, self.j)
        h, skips = st.hidden, st.skips
        if k is not None:
            blk = u.up_blocks[k]
            h = self._attention(blk.attentions[j], h, st.context, st.indicator)
            res = st.block_skips
            for jj in range(j + 1, len(blk.resnets)):
                h = torch.cat([h, res[-1]], dim=1)
                res = res[:-1]
                h = self._resnet(blk.resnets[jj], h, st.emb, st.indicator)
                h = self._attention(blk.attentions[jj], h, st.context, st.indicator)
            if blk.upsamplers is not None:
                size = self._upsample_size(k, skips, st.forward_upsample_size)
                for up in blk.upsamplers:
                    h = up(h, size)
            first = k + 1
        else:
            first = len(u.up_blocks)
        for i in range(first, len(u.up_blocks)):
            blk = u.up_blocks[i]
            res, skips = skips[-len(blk.resnets):], skips[:-len(blk.resnets)]
            size = self._upsample_size(i, skips, st.forward_upsample_size)
            h = self._up_block(blk, h, res, st.emb, st.context, st.indicator, size)
        if u.conv_norm_out is not None:
            h = u.conv_norm_out(h)
            h = u.conv_act(h)
        h = u.conv_out(h)
        if self.family == "svd":
            h = h.reshape(st.batch, st.frames, *h.shape[1:])
        return h

    def forward(self, sample, timestep, encoder_hidden_states, added_time_ids=None) -> torch.Tensor:
        """The whole UNet, no split (equals ``unet(...).sample``)."""
        st = self.prefix(sample, timestep, encoder_hidden_states, added_time_ids, stop=(None, None))
        return self.suffix(st, start=(None, None))

    # ------------------------------------------------------------ helpers
    def _upsample_size(self, i: int, remaining_skips, fus: bool):
        if fus and i < len(self.unet.up_blocks) - 1 and remaining_skips:
            return remaining_skips[-1].shape[2:]
        return None

    def _block_kwargs(self, blk, h, emb, context, indicator) -> Dict[str, Any]:
        kw: Dict[str, Any] = {"hidden_states": h, "temb": emb}
        if getattr(blk, "has_cross_attention", False):
            kw["encoder_hidden_states"] = context
        if self.family == "svd":
            kw["image_only_indicator"] = indicator
        return kw

    def _up_block(self, blk, h, res, emb, context, indicator, upsample_size):
        kw = self._block_kwargs(blk, h, emb, context, indicator)
        kw["res_hidden_states_tuple"] = res
        if upsample_size is not None:
            kw["upsample_size"] = upsample_size
        return blk(**kw)

    def _resnet(self, resnet, h, emb, indicator):
        if self.family == "svd":
            return resnet(h, emb, image_only_indicator=indicator)
        return resnet(h, emb)

    def _attention(self, attn, h, context, indicator):
        if self.family == "svd":
            return attn(h, encoder_hidden_states=context, image_only_indicator=indicator, return_dict=False)[0]
        return attn(h, encoder_hidden_states=context, return_dict=False)[0]


class DiffusersSplitter(UNetSplitter):
    """:class:`SplitUNet` behind the contract: calls routed by overriding ``unet.forward`` on the instance."""

    def __init__(self, unet, split_block: int):
        self.unet = unet
        self.split = SplitUNet(unet, split_block)
        self.family, self.unsupported = self.split.family, self.split.unsupported

    def blocked(self) -> Optional[str]:
        u = self.unet
        if "forward" in u.__dict__ or hasattr(u, "_hf_hook") or hasattr(u, "_orig_mod"):
            return "the UNet's forward is already wrapped"
        return None

    @contextlib.contextmanager
    def route(self, handler):
        unet = self.unet
        unet.forward = lambda *args, **kwargs: handler(self._call(args, kwargs))
        try:
            yield
        finally:
            del unet.forward

    def _call(self, args, kwargs) -> UNetCall:
        sample, args = args[0], args[1:]
        timestep = args[0] if args else kwargs.pop("timestep")
        args = args[1:]
        ehs = args[0] if args else kwargs.pop("encoder_hidden_states", None)
        args = args[1:]
        return_dict = kwargs.pop("return_dict", True)
        added = kwargs.pop("added_time_ids", None)
        if args and self.family == "svd" and added is None:
            added, args = args[0], args[1:]
        unet = self.unet
        extra = [k for k, v in kwargs.items() if not (v is None or (isinstance(v, dict) and not v))]
        refusal = "positional arguments" if args else (f"inputs {', '.join(extra)}" if extra else None)

        def original():
            kw = dict(kwargs, added_time_ids=added) if added is not None else kwargs
            return type(unet).forward(unet, sample, timestep, ehs, *args, return_dict=return_dict, **kw)

        return UNetCall({"sample": sample, "timestep": timestep, "context": ehs, "added": added}, original,
                        lambda out: _Output((out,)) if return_dict else (out,), refusal)

    def sub_call(self, call, rows) -> UNetCall:
        unet = self.unet

        def original():  # diffusers' own forward (the class's, not the routed one) on these rows
            kw = {} if rows.get("added") is None else {"added_time_ids": rows["added"]}
            return type(unet).forward(unet, rows["sample"], rows["timestep"], rows["context"], return_dict=False,
                                      **kw)[0]

        return UNetCall(dict(rows), original, lambda out: out)

    def prefix(self, call, rows):
        return self.split.prefix(rows["sample"], rows["timestep"], rows["context"], rows["added"])

    def suffix(self, state, call):
        return self.split.suffix(state)
