"""Compute the part of a UNet evaluation shared by every run ONCE (docs/design/authors_code.md#the-equivalent-design-the-pack-implements).

At the modulation step t_m every run of a chunk (the reference and all
modulated runs) starts from the same noisy latent with the same
conditioning, so everything the UNet computes before the modulated layer is
identical across runs.  A *splitter* cuts the UNet just before the modulated
attention module (diffusers: :mod:`vidseg_core.backbones.diffusers_split`).  The *prefix* runs on
the rows of one run; its state (hidden states, the skip connections still to
be consumed, time embedding, conditioning) is then
repeated for all runs and the *suffix* continues on the full batch.  The
prefix is cached, so every chunk of a batch reuses it.

The split is the backbone's (``backbone.prefix_splitter(block)``, contract
:class:`~vidseg_core.backbones.split.UNetSplitter`): :class:`~vidseg_core.backbones.diffusers_split.DiffusersSplitter`
for diffusers' UNets,
ComfyUI's own SD / SVD ``UNetModel`` in the pack's native adapter
(``nodes/comfy_adapters/native_split.py``; the core never imports ComfyUI).
:func:`shared_prefix` routes the UNet's calls to the driver
(:class:`PrefixSharingForward`) for the duration of a ``with`` block (the
splitters override ``unet.forward`` on the instance), so the backbone's
``denoised`` (CFG, scalings) is untouched.  The driver only takes over at the
chosen step when the runs really are identical (checked on the tensors, or
promised by the caller with ``trusted = True``: the modulation runner builds
every chunk from the one latent at t_m, so it skips the checks and their
host/device synchronisations); otherwise it calls the original forward.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import torch

from ..backbones.attention import RowLayout
from ..backbones.split import SplitState, UNetCall, UNetSplitter
from .split_check import check_split, known_failure


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

    def __init__(self, backbone, splitter: UNetSplitter, step: int, block: int = -1):
        self.backbone = backbone
        self.splitter = splitter
        self.step = int(step)
        self.block = int(block)  # the split block, the key of the once-per-model check (:mod:`.split_check`)
        #: why the split is off for the rest of the ``with`` block (its check failed), or None
        self.disabled: Optional[str] = None
        self.cache: Optional[Tuple[torch.Tensor, SplitState]] = None
        self.stats: Dict[str, Any] = {"prefix": 0, "reused": 0, "fallback": 0}
        #: the caller guarantees that at ``step`` every run's input (and conditioning) is the same, for the
        #: whole ``with`` block: no tensor comparisons (no host/device synchronisation)
        self.trusted = False
        #: compacted rows (:mod:`.rows`, SD): ``(first, expand, frames)``: the prefix runs on the rows ``first``
        #: of the sample (one per distinct frame and half, ``[half·S + source]``), is expanded to every row by
        #: ``expand``; ``frames[source]`` is the batch frame of each source
        self.rows: Optional[Tuple[torch.Tensor, torch.Tensor, List[int]]] = None
        #: compacted rows: the prefix of each batch frame (its 2 half rows), kept across chunks: every row of
        #: every chunk starts at step t_m from its frame's x_tm with the batch's conditioning; filled from the
        #: store build's prefix (:meth:`keep_frames`) or by the first chunk that needs a frame
        self.frame_prefix: Dict[int, SplitState] = {}

    def _refused(self, reason: str) -> None:
        refused = self.stats.setdefault("refused", {})
        refused[reason] = refused.get(reason, 0) + 1
        _unavailable(None, f"this UNet call has {reason}", "that call runs the whole UNet per run")

    def __call__(self, call: UNetCall):
        ctrl = self.backbone.controller
        usable = (ctrl.step == self.step and self.splitter.unsupported is None and ctrl.layout is not None
                  and self.disabled is None)
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
            out = self._rows_call(call)
            return call.original() if out is None else call.wrap(out)
        first = {k: _first_run(v, runs) for k, v in call.rows.items()}
        sample = next(iter(first.values()))
        state = None
        if self.cache is not None:
            key, cached = self.cache
            if key.shape == sample.shape and (self.trusted or key.device.type == "meta" or torch.equal(key, sample)):
                state = cached
                self.stats["reused"] += 1
        if state is None:
            state = self._prefix(call, first, RowLayout(1, layout.frames, layout.halves))
            if state is None:
                return call.original()
            key = torch.empty(sample.shape, device="meta") if self.trusted else sample.detach().clone()
            self.cache = (key, state)
            self.stats["prefix"] += 1
        return call.wrap(self.splitter.suffix(state.expand(runs) if runs > 1 else state, call))

    def _prefix(self, call: UNetCall, rows, layout: RowLayout) -> Optional[SplitState]:
        """The splitter's prefix on ``rows`` (one run of ``layout``) with the hooks off, checked once per model
        (:meth:`_check`); None when that check failed (the call then runs whole)."""
        ctrl = self.backbone.controller
        hooks, saved = ctrl.hooks, ctrl.layout
        ctrl.hooks, ctrl.layout = [], layout
        try:
            state = self.splitter.prefix(call, rows)
            failed = self._check(call, rows, state)
        finally:
            ctrl.hooks, ctrl.layout = hooks, saved
        return None if failed else state

    def _rows_call(self, call: UNetCall) -> Optional[torch.Tensor]:
        """Compacted rows: every row starts from its frame's reference latent, so the prefix of each batch frame
        is computed once per batch (for the frames a chunk is the first to need) and gathered per row.  None
        when the split's check failed (the call runs whole)."""
        first, expand, frames = self.rows
        if self.cache is None or self.cache[0] is not first:
            ctrl = self.backbone.controller
            halves, S = ctrl.layout.halves, len(frames)
            missing = [i for i, f in enumerate(frames) if f not in self.frame_prefix]
            if missing:
                M = len(missing)
                pick = first.view(halves, S)[:, torch.tensor(missing, device=first.device)].reshape(-1)
                state = self._prefix(call, {k: _select(v, pick) for k, v in call.rows.items()}, RowLayout(1, M, halves))
                if state is None:
                    return None
                self._keep(state, [frames[i] for i in missing], halves)
                self.stats["prefix"] += 1
            else:
                self.stats["reused"] += 1
            per_frame = SplitState.cat([self.frame_prefix[f] for f in frames])  # rows [source·halves + half]
            dev = per_frame.hidden.device
            order = torch.tensor([source * halves + h for h in range(halves) for source in range(S)], device=dev)
            self.cache = (first, per_frame.select(order))  # rows [half·S + source], as ``expand`` reads them
        else:
            self.stats["reused"] += 1
        return self.splitter.suffix(self.cache[1].select(expand), call)

    def _check(self, call: UNetCall, rows, state: SplitState) -> bool:
        """The once-per-model check of the split (:mod:`.split_check`, with the hooks off like the prefix);
        True when it failed: the split is off from now on and this call runs whole."""
        result = check_split(self.backbone, self.block, self.splitter, call, rows, state)
        if isinstance(result, float):
            self.stats["checked"] = result
        elif isinstance(result, str):
            self.disabled = result
            self.stats["refused"] = {result: 1}
            self.stats["fallback"] += 1  # this call runs whole
            _unavailable(None, result, "prefix sharing is off for this model; the whole UNet runs at step t_m")
            return True
        return False

    def _keep(self, state: SplitState, frames: Sequence[int], halves: int) -> None:
        """The rows ``[half·F + i]`` of ``state`` (one run over the batch frames ``frames``) as each frame's prefix."""
        dev, F = state.hidden.device, len(frames)
        for i, f in enumerate(frames):
            self.frame_prefix[f] = state.select(torch.tensor([h * F + i for h in range(halves)], device=dev))

    def keep_frames(self, frames: Sequence[int]) -> bool:
        """Compacted rows: keep the prefix of the last whole-run call as the prefix of each of ``frames`` (that
        call's frames, in order), so no chunk computes it again; False when there is none to keep.

        For the store build (:meth:`~.runner._BatchModulation.build_store`: the reference run alone from the
        batch's x_tm with its conditioning, both guidance halves) each frame's rows are exactly the rows a
        chunk would compute that frame's prefix on."""
        if self.cache is None or self.rows is not None or self.disabled is not None or self.splitter.family != "sd" \
                or not frames:
            return False
        state = self.cache[1]
        if state.batch % len(frames):
            return False
        self._keep(state, list(frames), state.batch // len(frames))
        return True

    def missing_frames(self, frames: Sequence[int]) -> int:
        """How many of ``frames`` have no prefix yet (the rows of the next prefix computation / halves)."""
        return sum(1 for f in frames if f not in self.frame_prefix)


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


@contextlib.contextmanager
def shared_prefix(backbone, split_block: int, step: int, enabled: bool = True,
                  stats: Optional[dict] = None) -> Iterator[Optional[PrefixSharingForward]]:
    """Route ``backbone``'s UNet calls through :class:`PrefixSharingForward` inside the ``with`` block.

    The split comes from the backbone (``backbone.prefix_splitter``, contract
    :class:`~vidseg_core.backbones.split.UNetSplitter`): diffusers' UNets
    here, ComfyUI's SD / SVD ``UNetModel`` in the pack's native adapter.  Yields None where the prefix cannot be
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
        splitter = backbone.prefix_splitter(split_block)
    except (TypeError, ValueError) as exc:
        _unavailable(stats, str(exc), "the whole UNet runs at step t_m for every run")
        yield None
        return
    failed = known_failure(backbone, split_block)
    if failed is not None:  # an earlier batch found that the split does not reproduce this UNet
        _unavailable(stats, failed, "prefix sharing is off for this model; the whole UNet runs at step t_m")
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
    driver = PrefixSharingForward(backbone, splitter, step, split_block)
    with splitter.route(driver):
        yield driver

