"""Prefix sharing on ComfyUI's own SD / SVD UNet (``openaimodel.UNetModel``), behind the core's splitter contract.

At the modulation step t_m every run starts from the same latent with the same conditioning, so the UNet up to
the modulated layer is computed once (:mod:`vidseg_core.modulation.unet_split`).  :class:`ComfyUNetSplitter`
follows the control flow of ComfyUI's ``UNetModel._forward`` over its module tree

    time_embed(timestep_embedding(t)) [+ label_emb(y)] -> input_blocks (skips kept) -> middle_block
    -> output_blocks[i] on cat(h, skip) -> out

and splits ``output_blocks[b]`` (``ResBlock, SpatialTransformer[, Upsample]``; SVD: ``VideoResBlock,
SpatialVideoTransformer[, Upsample]``) before its transformer: the prefix ends after the ResBlock, the suffix
starts at the transformer.  Each whole block (and each half of block ``b``) is still run by ComfyUI's own
``TimestepEmbedSequential`` dispatch, the sinusoidal embedding by the UNet module's own ``timestep_embedding``,
and ``transformer_options`` gets the keys ``_forward`` keeps there (``original_shape``, ``transformer_index``,
``block``), so the patches see what they see in a whole pass.

SVD: ComfyUI's video UNet works on flat rows ``[videos·frames, ...]`` with ``num_video_frames``; the adapter's
rows are ``[run, half, frame]``, so one run's rows are two whole videos (the guidance halves) and the temporal
layers of the prefix mix exactly the frames they mix in a whole pass.  ``y`` (SVD's ``encode_adm`` vector, one
per row) goes through ``label_emb`` as in ``_forward``.

Handled: what the adapter's ``apply_model`` passes for SD 2.x (``x``, ``timesteps``, ``context``,
``transformer_options``) and SVD (also ``y`` and ``num_video_frames``) with only the adapter's own attention
patches.  Refused (the call runs whole, the reason is counted and logged once): ``control`` (ControlNet / T2I
adapters), ``y`` on a UNet without ``label_emb``, other inputs (``time_context``, ``image_only_indicator``, ...),
``DIFFUSION_MODEL`` wrappers, any other patch (block patches, FreeU, foreign attention patches, a replace patch
the adapter composes).  Not split at all: class-conditional (``num_classes`` other than ``"sequential"``) and
codebook UNets, a UNet whose forward is already replaced.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Dict, List, Optional

import torch

from ...vidseg_core.backbones.split import SplitState, UNetCall, UNetSplitter

#: patch names the adapter sets itself (``AttentionOutput``) and replace tables it fills (``AttentionReplace``)
_OWN_PATCHES = ("attn1_output_patch", "attn2_output_patch")
_OWN_REPLACE = ("attn1", "attn2")


def foreign_patches(to: dict, owns_patch) -> List[str]:
    """The patches in ``transformer_options`` that are not the adapter's own (``owns_patch``; an own patch
    composing a foreign one counts as foreign), by name."""
    foreign = sorted(name for name, ps in (to.get("patches") or {}).items()
                     if ps and (name not in _OWN_PATCHES or not all(owns_patch(p) for p in ps)))
    foreign += sorted(f"{name} replace" for name, table in (to.get("patches_replace") or {}).items()
                      if table and (name not in _OWN_REPLACE or not all(owns_patch(p) for p in table.values())))
    return foreign


#: the attention modules a decoder block is split before (SD, SVD)
_TRANSFORMERS = ("SpatialTransformer", "SpatialVideoTransformer")


def _family(unet) -> str:
    temporal = getattr(unet, "use_temporal_resblocks", False) or any(
        type(m).__name__ in ("VideoResBlock", "SpatialVideoTransformer") for m in unet.modules())
    return "svd" if temporal else "sd"


def _layout_reason(unet) -> Optional[str]:
    """Why ``unet`` is not ComfyUI's SD / SVD ``UNetModel`` layout, or None."""
    name = type(unet).__name__
    missing = [a for a in ("time_embed", "input_blocks", "middle_block", "output_blocks", "out", "model_channels")
               if not hasattr(unet, a)]
    if name != "UNetModel" or missing:
        return f"unsupported UNet class {name}: not ComfyUI's UNetModel layout"
    classes = getattr(unet, "num_classes", None)
    if classes is not None and (classes != "sequential" or not hasattr(unet, "label_emb")):
        return "a class-conditional ComfyUI UNet (num_classes) is not split"
    if getattr(unet, "predict_codebook_ids", False):
        return "a codebook-predicting ComfyUI UNet is not split"
    if not callable(getattr(sys.modules.get(type(unet).__module__), "timestep_embedding", None)):
        return "the UNet's module has no timestep_embedding"
    return None


class ComfyUNetSplitter(UNetSplitter):
    """ComfyUI SD / SVD ``UNetModel`` split before the transformer of ``output_blocks[split_block]`` (module doc)."""

    def __init__(self, unet, split_block: int, owns_patch):
        reason = _layout_reason(unet)
        if reason is not None:
            raise TypeError(reason)
        self.unet, self.b, self.owns_patch = unet, int(split_block), owns_patch
        self.family = _family(unet)
        if not 0 <= self.b < len(unet.output_blocks):
            raise ValueError(f"decoder block {split_block} does not exist")
        layers = list(unet.output_blocks[self.b])
        at = next((i for i, m in enumerate(layers) if type(m).__name__ in _TRANSFORMERS), None)
        if at is None or at == 0:
            raise ValueError(f"decoder block {split_block} has no attention module to split before")
        seq = type(unet.output_blocks[self.b])  # TimestepEmbedSequential: ComfyUI's own per-layer dispatch
        self.head, self.tail = seq(*layers[:at]), seq(*layers[at:])
        self.embedding = sys.modules[type(unet).__module__].timestep_embedding

    def blocked(self) -> Optional[str]:
        return "the UNet's forward is already wrapped" if "forward" in self.unet.__dict__ else None

    # ------------------------------------------------------------ routing
    @contextlib.contextmanager
    def route(self, handler):
        unet = self.unet

        def forward(x, timesteps=None, context=None, y=None, control=None, transformer_options={}, **kwargs):
            def original():
                return type(unet).forward(unet, x, timesteps, context, y, control, transformer_options, **kwargs)

            to = transformer_options
            sig = to.get("sigmas")
            rows = {"x": x, "timesteps": timesteps, "context": context, "y": y,
                    "sigmas": sig if torch.is_tensor(sig) and sig.ndim == 1 and sig.shape[0] == x.shape[0] else None,
                    # a constant, shared by every row (the driver passes non-tensors through)
                    "num_video_frames": kwargs.get("num_video_frames")}
            return handler(UNetCall(rows, original, lambda out: out, self.refusal(y, control, to, kwargs, x), to))

        unet.forward = forward
        try:
            yield
        finally:
            del unet.forward

    def refusal(self, y, control, to: dict, kwargs: dict, x: Optional[torch.Tensor] = None) -> Optional[str]:
        """Why this call must run whole (inputs or patches the split does not reproduce), or None."""
        if control is not None:
            return "a ControlNet / adapter input (control)"
        if y is not None and (getattr(self.unet, "num_classes", None) is None
                              or not torch.is_tensor(y) or (x is not None and y.shape[0] != x.shape[0])):
            return "a class / ADM input (y)"
        handled = ("num_video_frames",) if self.family == "svd" else ()
        extra = sorted(k for k, v in kwargs.items() if v is not None and k not in handled)
        if extra:
            return f"inputs {', '.join(extra)}"
        if self.family == "svd" and y is None:
            return "no ADM input (y) on SVD's UNet"
        if any(w for w in (to.get("wrappers") or {}).get("diffusion_model", {}).values()):
            return "DIFFUSION_MODEL wrappers"
        foreign = foreign_patches(to, self.owns_patch)
        return f"patches {', '.join(foreign)}" if foreign else None

    def sub_call(self, call: UNetCall, rows) -> UNetCall:
        unet = self.unet

        def original():  # ComfyUI's own forward (the class's, not the routed one) on these rows
            frames = rows.get("num_video_frames")
            kw = {} if frames is None else {"num_video_frames": frames}
            return type(unet).forward(unet, rows["x"], rows["timesteps"], rows["context"], rows.get("y"), None,
                                      self._options(call, rows), **kw)

        return UNetCall(dict(rows), original, lambda out: out, None, self._options(call, rows))

    # ------------------------------------------------------------ the two halves
    def _options(self, call: UNetCall, rows: Dict[str, Optional[torch.Tensor]]) -> dict:
        """The call's ``transformer_options`` for the prefix rows: per-row sigmas sliced; ``cond_or_uncond``
        (``[1, 0] * runs`` from the adapter) cut to its period, the one run of halves the prefix rows hold."""
        to = dict(call.options)
        if rows.get("sigmas") is not None:
            to["sigmas"] = rows["sigmas"]
        cu = to.get("cond_or_uncond")
        if isinstance(cu, list) and cu:
            period = next(p for p in range(1, len(cu) + 1) if len(cu) % p == 0 and cu == cu[:p] * (len(cu) // p))
            to["cond_or_uncond"] = cu[:period]
        return to

    def _video(self, rows) -> dict:
        """The video keywords ``_forward`` passes every block (SVD; nothing for SD)."""
        if self.family != "svd":
            return {}
        frames = rows.get("num_video_frames")
        return {"time_context": None, "image_only_indicator": None,
                "num_video_frames": frames if frames is not None else self.unet.default_num_video_frames}

    def _output_block(self, blk, i: int, h, hs: list, emb, context, to: dict, video: dict):
        to["block"] = ("output", i)
        h = torch.cat([h, hs.pop()], dim=1)
        return blk(h, emb, context, to, hs[-1].shape if hs else None, **video)

    def prefix(self, call: UNetCall, rows) -> SplitState:
        u, x, context = self.unet, rows["x"], rows["context"]
        to, video = self._options(call, rows), self._video(rows)
        to["original_shape"], to["transformer_index"] = list(x.shape), 0
        emb = u.time_embed(self.embedding(rows["timesteps"], u.model_channels, repeat_only=False).to(x.dtype))
        if getattr(u, "num_classes", None) is not None:
            emb = emb + u.label_emb(rows["y"])
        h, hs = x, []
        for i, blk in enumerate(u.input_blocks):
            to["block"] = ("input", i)
            h = blk(h, emb, context, to, **video)
            hs.append(h)
        to["block"] = ("middle", 0)
        if u.middle_block is not None:
            h = u.middle_block(h, emb, context, to, **video)
        for i in range(self.b):
            h = self._output_block(u.output_blocks[i], i, h, hs, emb, context, to, video)
        h = self._output_block(self.head, self.b, h, hs, emb, context, to, video)
        return SplitState(h, (), tuple(hs), emb, context, None, False, int(x.shape[0]), 1,
                          {"transformer_index": to["transformer_index"], "dtype": x.dtype})

    def suffix(self, state: SplitState, call: UNetCall) -> torch.Tensor:
        u, to = self.unet, call.options  # the call's own options, kept up to date as ``_forward`` does
        video = self._video(call.rows)
        to["original_shape"], to["transformer_index"] = list(call.rows["x"].shape), state.extra["transformer_index"]
        to["block"] = ("output", self.b)
        hs, context, emb = list(state.skips), state.context, state.emb
        h = self.tail(state.hidden, emb, context, to, hs[-1].shape if hs else None, **video)
        for i in range(self.b + 1, len(u.output_blocks)):
            h = self._output_block(u.output_blocks[i], i, h, hs, emb, context, to, video)
        return u.out(h.type(state.extra["dtype"]))
