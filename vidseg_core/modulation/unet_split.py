"""Compute the part of a UNet evaluation shared by every run ONCE (reference notes §12).

At the modulation step t_m every run of a chunk (the reference and all
modulated runs) starts from the same noisy latent with the same
conditioning, so everything the UNet computes before the modulated layer is
identical across runs.  :class:`SplitUNet` re-implements the forward pass of
diffusers' ``UNet2DConditionModel`` (SD 2.1) and
``UNetSpatioTemporalConditionModel`` (SVD) from their module structure:

    time embedding -> conv_in -> down blocks -> mid block -> up blocks -> conv_norm_out/act/conv_out

split just before the attention module of the modulated decoder block
``b = 3k + j`` (``up_blocks[k].attentions[j]``, after ``resnets[j]``).  The
*prefix* runs on the rows of one run; its state (hidden states, the skip
connections still to be consumed, time embedding, conditioning) is then
repeated for all runs and the *suffix* continues on the full batch.  The
prefix is cached, so every chunk of a batch reuses it.

:func:`shared_prefix` installs the driver for the duration of a ``with`` block
by overriding ``unet.forward`` on the instance, so the backbone's
``denoised`` (CFG, scalings) is untouched.  The driver only takes over at the
chosen step when the runs really are identical (checked on the tensors, or
promised by the caller with ``trusted = True``: the modulation runner builds
every chunk from the one latent at t_m, so it skips the checks and their
host/device synchronisations); otherwise it calls the original forward.  ``SplitUNet.forward`` without a split equals
``unet(...)`` exactly (tested).
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch

from ..backbones.attention import RowLayout


class _Output(tuple):
    """Stand-in for diffusers' output dataclass: ``out.sample`` and ``out[0]``."""

    @property
    def sample(self):
        return self[0]


@dataclass
class SplitState:
    """Everything the suffix needs, for ``n`` rows (one run) or expanded to all runs."""

    hidden: torch.Tensor  # input of up_blocks[k].attentions[j]
    block_skips: Tuple[torch.Tensor, ...]  # skips still to be consumed by up_blocks[k]
    skips: Tuple[torch.Tensor, ...]  # skips for up_blocks[k+1:]
    emb: torch.Tensor
    context: Optional[torch.Tensor]
    indicator: Optional[torch.Tensor]  # SVD image_only_indicator [batch, frames]
    forward_upsample_size: bool
    batch: int  # SVD: videos; SD: rows
    frames: int  # SVD: frames per video; SD: 1
    extra: Dict[str, Any] = field(default_factory=dict)

    def expand(self, runs: int) -> "SplitState":
        """Repeat every per-row tensor ``runs`` times along the batch dimension."""
        def rep(t):
            if t is None:
                return None
            return t.unsqueeze(0).expand(runs, *t.shape).reshape(runs * t.shape[0], *t.shape[1:])

        return SplitState(rep(self.hidden), tuple(rep(s) for s in self.block_skips), tuple(rep(s) for s in self.skips),
                          rep(self.emb), rep(self.context), rep(self.indicator), self.forward_upsample_size,
                          self.batch * runs, self.frames, dict(self.extra))

    def select(self, index: torch.Tensor) -> "SplitState":
        """Rows ``index`` of every per-row tensor (SD: a row is one frame of one guidance half)."""
        def sel(t):
            return None if t is None else t.index_select(0, index)

        return SplitState(sel(self.hidden), tuple(sel(s) for s in self.block_skips), tuple(sel(s) for s in self.skips),
                          sel(self.emb), sel(self.context), sel(self.indicator), self.forward_upsample_size,
                          int(index.shape[0]), self.frames, dict(self.extra))


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
        fus = any(int(s) % factor != 0 for s in sample.shape[-2:])
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


# ---------------------------------------------------------------- the splitter contract
@dataclass
class UNetCall:
    """One UNet call as a splitter hands it to the driver (:class:`PrefixSharingForward`).

    ``rows``: the per-row inputs, the sample first (dim 0 = rows: runs x halves x frames for SD; a 0-d tensor or
    None is shared by all rows); the driver slices them all alike for the prefix.  ``original()``: the whole UNet
    on this call, unchanged.  ``wrap(out)``: an output tensor in the forward's return type.  ``refusal``: why this
    call must run whole (an input the splitter does not handle), None when it can be split.  ``options``: the
    splitter's own (ComfyUI: the call's ``transformer_options``)."""

    rows: Dict[str, Optional[torch.Tensor]]
    original: Callable[[], Any]
    wrap: Callable[[torch.Tensor], Any]
    refusal: Optional[str] = None
    options: Any = None


class UNetSplitter:
    """What :func:`shared_prefix` asks of a backbone (``backbone.prefix_splitter(block)``): one UNet split just
    before the attention module of decoder block ``block`` (the modulated layer).

    * construction raises ``TypeError`` / ``ValueError`` (with the reason) for a UNet it cannot split;
    * ``unsupported``: features that make every call run whole (None: none);
    * :meth:`blocked`: why the UNet's calls cannot be routed at all (e.g. a forward already wrapped), or None;
    * :meth:`route`: while the ``with`` block is open, each UNet call becomes ``handler(call)`` (:class:`UNetCall`)
      and the UNet is restored afterwards;
    * :meth:`prefix` (on the rows the driver selected) -> :class:`SplitState`; :meth:`suffix` (state expanded or
      selected to the call's rows) -> the UNet output tensor, equal to ``call.original()``'s.
    """

    family = "sd"
    unsupported: Optional[str] = None

    def blocked(self) -> Optional[str]:
        return None

    def route(self, handler: Callable[[UNetCall], Any]):
        raise NotImplementedError

    def prefix(self, call: UNetCall, rows: Dict[str, Optional[torch.Tensor]]) -> SplitState:
        raise NotImplementedError

    def suffix(self, state: SplitState, call: UNetCall) -> torch.Tensor:
        raise NotImplementedError


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

    def prefix(self, call, rows):
        return self.split.prefix(rows["sample"], rows["timestep"], rows["context"], rows["added"])

    def suffix(self, state, call):
        return self.split.suffix(state)


# ---------------------------------------------------------------- the driver
def _rows_identical(t: Optional[torch.Tensor], runs: int) -> bool:
    if t is None or not torch.is_tensor(t) or t.ndim == 0 or t.shape[0] % runs:
        return True
    if t.device.type == "meta":
        return True  # FLOP counting on meta tensors: trust the construction
    v = t.reshape(runs, -1)
    return bool((v[1:] == v[:1]).all())


def _first_run(t: Optional[torch.Tensor], runs: int):
    if t is None or not torch.is_tensor(t) or t.ndim == 0:
        return t
    return t[: t.shape[0] // runs]


def _select(t: Optional[torch.Tensor], index: torch.Tensor):
    if t is None or not torch.is_tensor(t) or t.ndim == 0:
        return t
    return t.index_select(0, index)


class PrefixSharingForward:
    """Handler of every UNet call while a modulation batch runs (see module docstring)."""

    def __init__(self, backbone, splitter: UNetSplitter, step: int):
        self.backbone = backbone
        self.splitter = splitter
        self.step = int(step)
        self.cache: Optional[Tuple[torch.Tensor, SplitState]] = None
        self.stats: Dict[str, Any] = {"prefix": 0, "reused": 0, "fallback": 0}
        #: the caller guarantees that at ``step`` every run's input (and conditioning) is the same, for the
        #: whole ``with`` block: no tensor comparisons (no host/device synchronisation)
        self.trusted = False
        #: compacted rows (:mod:`.rows`, SD): ``(first, expand)`` device indices: the prefix runs on the rows
        #: ``first`` of the sample (one per distinct frame and half) and is expanded to every row by ``expand``
        self.rows: Optional[Tuple[torch.Tensor, torch.Tensor]] = None

    def _refused(self, reason: str) -> None:
        refused = self.stats.setdefault("refused", {})
        refused[reason] = refused.get(reason, 0) + 1
        _unavailable(None, f"this UNet call has {reason}", "that call runs the whole UNet per run")

    def __call__(self, call: UNetCall):
        ctrl = self.backbone.controller
        usable = ctrl.step == self.step and self.splitter.unsupported is None and ctrl.layout is not None
        if usable and call.refusal is not None:
            self._refused(call.refusal)
            usable = False
        if usable and not self.trusted:
            runs = ctrl.layout.runs
            usable = all(_rows_identical(t, runs) for t in call.rows.values())
        if not usable:
            self.stats["fallback"] += 1
            return call.original()

        runs, layout = ctrl.layout.runs, ctrl.layout
        if self.rows is not None:
            return call.wrap(self._rows_call(call))
        first = {k: _first_run(v, runs) for k, v in call.rows.items()}
        sample = next(iter(first.values()))
        state = None
        if self.cache is not None:
            key, cached = self.cache
            if key.shape == sample.shape and (self.trusted or key.device.type == "meta" or torch.equal(key, sample)):
                state = cached
                self.stats["reused"] += 1
        if state is None:
            hooks = ctrl.hooks
            ctrl.hooks, ctrl.layout = [], RowLayout(1, layout.frames, layout.halves)
            try:
                state = self.splitter.prefix(call, first)
            finally:
                ctrl.hooks, ctrl.layout = hooks, layout
            key = torch.empty(sample.shape, device="meta") if self.trusted else sample.detach().clone()
            self.cache = (key, state)
            self.stats["prefix"] += 1
        return call.wrap(self.splitter.suffix(state.expand(runs) if runs > 1 else state, call))

    def _rows_call(self, call: UNetCall) -> torch.Tensor:
        """Compacted rows: every row starts from its frame's reference latent, so the prefix of the chunk's
        distinct frames is computed once and gathered per row (cached until ``rows`` changes)."""
        first, expand = self.rows
        if self.cache is None or self.cache[0] is not first:
            ctrl = self.backbone.controller
            hooks, layout = ctrl.hooks, ctrl.layout
            ctrl.hooks, ctrl.layout = [], RowLayout(1, first.shape[0] // layout.halves, layout.halves)
            try:
                state = self.splitter.prefix(call, {k: _select(v, first) for k, v in call.rows.items()})
            finally:
                ctrl.hooks, ctrl.layout = hooks, layout
            self.cache = (first, state)
            self.stats["prefix"] += 1
        else:
            self.stats["reused"] += 1
        return self.splitter.suffix(self.cache[1].select(expand), call)


#: reasons already logged in this process (one line each, not one per batch)
_LOGGED: set = set()


def _unavailable(stats: Optional[dict], reason: str, detail: str) -> None:
    """Say once per process why the prefix is not shared, and record it in ``stats["prefix"]``."""
    if stats is not None:
        stats["prefix"] = {"shared": False, "reason": reason}
    if reason not in _LOGGED:
        _LOGGED.add(reason)
        logging.getLogger("vidseg").warning("VidSeg: masked modulation runs without prefix sharing (%s): %s; "
                                            "the labels are the same, the step t_m costs more.", reason, detail)


def prefix_splitter(backbone, split_block: int) -> UNetSplitter:
    """The backbone's splitter (``backbone.prefix_splitter``), else the diffusers one over ``backbone.unet``."""
    make = getattr(backbone, "prefix_splitter", None)
    return make(split_block) if make is not None else DiffusersSplitter(backbone.unet, split_block)


@contextlib.contextmanager
def shared_prefix(backbone, split_block: int, step: int, enabled: bool = True,
                  stats: Optional[dict] = None) -> Iterator[Optional[PrefixSharingForward]]:
    """Route ``backbone``'s UNet calls through :class:`PrefixSharingForward` inside the ``with`` block.

    The split comes from the backbone (:func:`prefix_splitter`, contract :class:`UNetSplitter`): diffusers' UNets
    here, ComfyUI's SD ``UNetModel`` in the pack's native adapter.  Yields None where the prefix cannot be
    shared; then ``stats["prefix"]`` (if ``stats`` is given) says why (``{"shared": False, "reason": ...}``) and
    the reason is logged once per process (logger ``vidseg``).  A call the splitter refuses (e.g. a ControlNet
    input) runs whole and is counted in the driver's ``stats["refused"]`` (logged once per reason).
    """
    if not enabled:
        if stats is not None:
            stats["prefix"] = {"shared": False, "reason": "off (share_prefix=False)"}
        yield None
        return
    try:
        splitter = prefix_splitter(backbone, split_block)
    except (TypeError, ValueError) as exc:
        _unavailable(stats, str(exc), "the whole UNet runs at step t_m for every run")
        yield None
        return
    blocked = splitter.blocked()
    if blocked is not None:
        # someone already wraps the forward (accelerate offloading, torch.compile, ...): do not bypass it
        _unavailable(stats, blocked, "a wrapped forward (offloading, compilation) is not bypassed")
        yield None
        return
    if splitter.unsupported is not None:
        _unavailable(None, f"unsupported UNet features: {splitter.unsupported}", "the whole UNet runs per run")
    driver = PrefixSharingForward(backbone, splitter, step)
    with splitter.route(driver):
        yield driver
