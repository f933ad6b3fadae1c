"""The contract of a UNet split for prefix sharing (:mod:`vidseg_core.modulation.unet_split`).

A backbone cuts its UNet just before the modulated attention module (``backbone.prefix_splitter(block)``):
:class:`UNetSplitter` is what the driver asks of it, :class:`UNetCall` one UNet call as the splitter hands it
over, :class:`SplitState` what the suffix needs.  Implementations: diffusers' UNets
(:mod:`.diffusers_split`) and ComfyUI's own ``UNetModel`` in the pack's native adapter.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch


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

        return SplitState(rep(self.hidden), tuple(rep(skip) for skip in self.block_skips),
                          tuple(rep(skip) for skip in self.skips),
                          rep(self.emb), rep(self.context), rep(self.indicator), self.forward_upsample_size,
                          self.batch * runs, self.frames, dict(self.extra))

    @staticmethod
    def cat(states: "List[SplitState]") -> "SplitState":
        """The rows of ``states`` one after another (SD rows; every state from the same prefix computation)."""
        def cat(ts):
            return None if ts[0] is None else torch.cat(ts)

        first = states[0]
        return SplitState(cat([state.hidden for state in states]),
                          tuple(cat([state.block_skips[i] for state in states]) for i in range(len(first.block_skips))),
                          tuple(cat([state.skips[i] for state in states]) for i in range(len(first.skips))),
                          cat([state.emb for state in states]), cat([state.context for state in states]),
                          cat([state.indicator for state in states]), first.forward_upsample_size,
                          sum(state.batch for state in states), first.frames, dict(first.extra))

    def select(self, index: torch.Tensor) -> "SplitState":
        """Rows ``index`` of every per-row tensor (SD: a row is one frame of one guidance half)."""
        def sel(t):
            return None if t is None else t.index_select(0, index)

        return SplitState(sel(self.hidden), tuple(sel(skip) for skip in self.block_skips),
                          tuple(sel(skip) for skip in self.skips),
                          sel(self.emb), sel(self.context), sel(self.indicator), self.forward_upsample_size,
                          int(index.shape[0]), self.frames, dict(self.extra))


@dataclass
class UNetCall:
    """One UNet call as a splitter hands it to the driver
    (:class:`~vidseg_core.modulation.unet_split.PrefixSharingForward`).

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
    """What :func:`~vidseg_core.modulation.unet_split.shared_prefix` asks of a backbone
    (``backbone.prefix_splitter(block)``): one UNet split just before the attention module of decoder block
    ``block`` (the modulated layer).

    * construction raises ``TypeError`` / ``ValueError`` (with the reason) for a UNet it cannot split;
    * ``unsupported``: features that make every call run whole (None: none);
    * :meth:`blocked`: why the UNet's calls cannot be routed at all (e.g. a forward already wrapped), or None;
    * :meth:`route`: while the ``with`` block is open, each UNet call becomes ``handler(call)`` (:class:`UNetCall`)
      and the UNet is restored afterwards;
    * :meth:`prefix` (on the rows the driver selected) -> :class:`SplitState`; :meth:`suffix` (state expanded or
      selected to the call's rows) -> the UNet output tensor, equal to ``call.original()``'s;
    * :meth:`sub_call`: ``call`` restricted to such selected rows, its ``original()`` the UNet's own (unrouted)
      forward on them returning the output tensor (the once-per-model check,
      :mod:`vidseg_core.modulation.split_check`).
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

    def sub_call(self, call: UNetCall, rows: Dict[str, Optional[torch.Tensor]]) -> UNetCall:
        raise NotImplementedError
