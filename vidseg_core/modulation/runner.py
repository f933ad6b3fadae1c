"""Masked modulation of one batch, batched over labels and signs (paper §3.2, §4.3;
docs/design/authors_code.md#masked-modulation-as-published, #the-equivalent-design-the-pack-implements).

The authors run, per batch, a reference pass and then 2·L modulated passes one
after another (one label, one sign each), exchanging q/k and latents through
the disk.  Here every pass of a batch is a *run* of one batched computation
(``x [R,T,4,h,w]``, :meth:`Backbone.denoise`):

* a chunk holds the reference run (index 0) and up to ``R − 1`` modulated runs
  ``[(l₀,+), (l₀,−), (l₁,+), ...]``; a :class:`~.hooks.ModulationHook` adds
  ``±λ·M_l`` at step t_m and copies the reference rows' q/k into every run of
  the same UNet evaluation (no storage); latent blending reads the reference
  run of the same chunk;
* steps before t_m (when t_m > the noising step) and, at step t_m, the part of
  the UNet before the modulated block are computed once on the reference
  alone (:mod:`.unet_split`);
* chunks are sized from free memory; a chunk that runs out of memory is retried
  with half as many runs (with a warning).  The reference comes from a
  :class:`~.reference.ReferenceStore` (its per-step q/k and latents) when the
  caller hands one in (the pipeline's feature pass records it: the reference
  trajectory is computed once per batch) or when storing it costs less than
  repeating it in every chunk (:mod:`.memory`); otherwise it is run 0 of every
  chunk;
* SD 2.1 (frames independent) denoises only the *rows* (run, frame) whose
  label is present in the frame (:mod:`.rows`, ``skip_absent_rows``, exact:
  an absent frame IS the reference): a chunk is then one run of ``N`` rows
  ``[1,N,4,h,w]`` whose offsets, blending masks, reference q/k / latents and
  shared prefix are gathered by frame; chunk sizes and the OOM retry count
  rows, and finished rows are scattered back into per-run latents (absent
  frames are never decoded).  SVD keeps whole runs;
* after each chunk the finished ± pairs are decoded and reduced at once to
  difference maps and folded into a running argmax (:class:`~.folding.PairFolder`),
  so memory does not grow with the number of labels; the reference run is
  never decoded.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..cpu_memory import feed_forward_by_rows
from ..errors import VidSegError
from .difference import labels_from_difference_maps  # noqa: F401
from .folding import PairFolder
from .hooks import ModulationHook
from .inputs import check_inputs
from .masks import coarse_present, label_masks, resize_nearest
from .memory import (available_bytes, choose_reference_mode, estimate_run_bytes, estimate_store_bytes,
                     free_memory as _free_memory, host_available_bytes, initial_capacity, is_out_of_memory,
                     shrink_after_oom)
from . import rows
from .reference import ReferenceStore, record_reference
from .settings import ModulationPlan, ModulationSettings
from .shared_attention import CPU_MIN_RUNS, resolve_mode, sharing_attention
from .unet_split import shared_prefix

#: progress(done_runs, total_runs) -> None; may raise to cancel
Progress = Callable[[int, int], None]


class ModulationCancelled(VidSegError):
    """The caller's ``cancel()`` asked to stop."""


@dataclass
class ModulationResult:
    """Label map of one batch at the requested frame size, plus optional maps and run statistics."""

    labels: torch.Tensor  # [T,H,W] long label ids (CPU)
    label_ids: torch.Tensor  # [L] the modulated labels, ascending
    difference_maps: Optional[torch.Tensor] = None  # [L,T,H,W] normalised, unfiltered (CPU; float64 with compat)
    stats: Dict[str, object] = field(default_factory=dict)


# ------------------------------------------------------------------ runner
class _BatchModulation:
    """State of one :func:`modulate_batch` call: the runs (or rows) chunk by chunk, with the out-of-memory
    retry and progress; the finished pairs go to its :class:`~.folding.PairFolder`.

    Everything the loops decide on the host (which frames / labels are present)
    is computed here once, so the loops over steps, layers and chunks read no
    tensor value back (no host/device synchronisation; tested by counting).
    """

    def __init__(self, backbone, inputs, coarse, ids, frame_size, plan: ModulationPlan, progress, cancel,
                 reference_store: Optional[ReferenceStore] = None):
        self.backbone, self.inputs, self.plan = backbone, inputs, plan
        self.settings = plan.settings
        self.frame_size = frame_size
        self.progress, self.cancel = progress, cancel
        dev = backbone.device
        self.ids = ids
        coarse_cpu = coarse.cpu()
        self.masks = label_masks(coarse_cpu, ids).to(dev)  # [L,T,h,w] float
        self.L, self.T = self.masks.shape[0], self.masks.shape[1]
        self.latent_hw = inputs.latent_hw
        self.present_cpu = coarse_present(coarse_cpu, ids)  # [L,T] bool
        self.present_host = self.present_cpu.tolist()  # [L][T] (one host read)
        self.folder = PairFolder(backbone, plan, self.masks, self.present_cpu, self.present_host, self.latent_hw,
                                 frame_size, self._check_cancel, self._pair_decoded)
        self.active = self.folder.active  # labels present in at least one frame
        self.given = reference_store if reference_store is not None and reference_store.matches(plan) else None
        self.store: Optional[ReferenceStore] = self.given
        self.store_device: Optional[torch.device] = None  # None: the compute device
        self.finished: Dict[int, torch.Tensor] = {}
        self.assembler: Optional[rows.RowAssembler] = None  # compacted rows: runs with rows still pending
        self.compact = False
        self.units = self.total_units = 0
        self.stats: Dict[str, object] = {"chunks": [], "oom_retries": 0, "reference_pass": None,
                                         "reference_given": self.given is not None}

    # -------------------------------------------------------- helpers
    def _check_cancel(self):
        if self.cancel is not None and self.cancel():
            raise ModulationCancelled("Modulation was cancelled.", "Run again when ready.")

    def advance(self, units: int) -> None:
        """A denoising step of ``units`` modulated runs (or rows) is done: stop if cancelled, report progress."""
        self._check_cancel()
        if units:
            self.units += units
            self._report()

    def run_spec(self, run: int) -> Tuple[int, float]:
        """Modulated run ``i`` -> (label position, sign): (0,+), (0,−), (1,+), ..."""
        return run // 2, (1.0 if run % 2 == 0 else -1.0)

    def _offsets(self, runs: Sequence[Optional[int]]) -> torch.Tensor:
        lam = float(self.settings.lam)
        rows = []
        for r in runs:
            if r is None:
                rows.append(torch.zeros_like(self.masks[0]))
            else:
                l, sign = self.run_spec(r)
                rows.append(self.masks[l] * (sign * lam))
        return torch.stack(rows)  # [R,T,h,w]

    def _latent_masks(self, runs: Sequence[Optional[int]], dtype) -> torch.Tensor:
        rows = []
        for r in runs:
            if r is None:
                rows.append(torch.ones_like(self.masks[0]))
            else:
                rows.append(self.masks[self.run_spec(r)[0]])
        m = resize_nearest(torch.stack(rows), self.latent_hw)  # [R,T,lh,lw]
        return m.unsqueeze(2).to(dtype)

    def _callback(self, latent_masks, reference_run: Optional[int], runs_done_per_step: int = 0):
        plan = self.plan

        def callback(step: int, x: torch.Tensor) -> torch.Tensor:
            self.advance(runs_done_per_step)
            if plan.blends(step):
                ref = x[reference_run] if reference_run is not None else \
                    self.store.latents[step].to(x.device, x.dtype, non_blocking=True)
                x = x * latent_masks + ref.unsqueeze(0) * (1 - latent_masks)
            return x
        return callback

    # -------------------------------------------------------- passes
    def shared_start(self) -> torch.Tensor:
        """Latents at t_m: steps start..t_m−1 are identical for every run, done once on the reference."""
        if self.given is not None and self.given.x_tm is not None:
            return self.given.x_tm.to(self.backbone.device, non_blocking=True)
        x = self.inputs.x_start
        if self.plan.t_m > self.plan.start:
            x = self.backbone.denoise(x[None], self.inputs.cond, self.plan.start, self.plan.t_m - 1)[0]
        return x

    def build_store(self, x_tm: torch.Tensor) -> None:
        """The reference run alone from t_m, its q/k and latents kept (on the host when ``store_device`` says)."""
        self.store, _ = record_reference(self.backbone, self.inputs, self.plan, self.store_device, x=x_tm[None],
                                         start=self.plan.t_m)
        self.stats["store_bytes"] = self.store.nbytes()

    def run_chunk(self, x_tm: torch.Tensor, chunk: List[int], with_reference: bool) -> torch.Tensor:
        """Denoise one chunk from t_m to the end; returns the modulated runs' final latents ``[n,T,4,h,w]``."""
        runs: List[Optional[int]] = ([None] if with_reference else []) + list(chunk)
        R = len(runs)
        ref = 0 if with_reference else None
        hook = ModulationHook(self._offsets(runs), self.plan.t_m, self.plan.modulated, self.plan.injected,
                              reference_run=ref, store=None if with_reference else self.store)
        lm = self._latent_masks(runs, x_tm.dtype)
        x = x_tm.unsqueeze(0).expand(R, *x_tm.shape).clone()
        with self.backbone.hooks(hook):
            out = self.backbone.denoise(x, self.inputs.cond, self.plan.t_m, None,
                                  self._callback(lm, ref, runs_done_per_step=len(chunk)))
        return out[1:] if with_reference else out

    # -------------------------------------------------------- progress
    def _pair_decoded(self, l: int) -> None:
        """Label ``l``'s ± pair is decoded and folded: two runs (or their present rows) through one decode."""
        self.units += 2 * (sum(self.present_host[l]) if self.compact else 1)
        self._report()

    def _report(self):
        """progress(done, total) in units of one modulated run through one step or one decode."""
        if self.progress is not None:
            self.progress(min(self.units, self.total_units), self.total_units)

    # -------------------------------------------------------- main loop
    def reference_mode(self, runs: int, max_runs: int) -> str:
        """The documented rule of :func:`~.memory.choose_reference_mode`; sets where a store built here lives."""
        dev = self.backbone.device
        ctx_tokens = getattr(getattr(self.inputs.cond, "context", None), "shape", (0, 1))[1]
        store_bytes = estimate_store_bytes(self.backbone, self.plan, self.T, self.latent_hw, ctx_tokens)
        device_budget = None if self.settings.max_runs_per_chunk is not None else available_bytes(dev)
        mode, where = choose_reference_mode(self.settings.reference_pass, self.given is not None, runs, max_runs,
                                            store_bytes, device_budget,
                                            estimate_run_bytes(self.backbone, self.T, self.latent_hw),
                                            host_available_bytes())
        if mode == "store" and where == "host" and dev.type != "cpu":
            self.store_device = torch.device("cpu")
        self.stats["store_estimate_bytes"] = store_bytes
        return mode

    def compacts_rows(self) -> bool:
        """Denoise only the present (label, frame) rows (:mod:`.rows`)?  SD only (frames independent), and only
        when some active label is absent from some frame."""
        return (bool(self.settings.skip_absent_rows) and self.backbone.family == "sd"
                and not all(e for a, e in zip(self.active, self.folder.everywhere) if a))

    def run(self) -> ModulationResult:
        t0 = time.perf_counter()
        pending = self._pending()
        unit = self.T if self.compact else 1  # chunk capacity in rows (frames) or in runs
        self.units, self.total_units = 0, len(pending) * (self.plan.last - self.plan.t_m + 2)
        max_runs = initial_capacity(self.backbone, self.T, self.latent_hw, 2 * self.L + 1,
                                    self.settings.max_runs_per_chunk)
        mode = self.reference_mode(-(-len(pending) // unit), max_runs)
        max_runs *= unit
        self.stats["compacted_rows"] = len(pending) if self.compact else None
        if mode == "repeat":
            self.store = None
        with self._sharing() as driver:
            mode = self._run_chunks(pending, mode, max_runs, driver)
        self.folder.fold(self.finished)
        if self.folder.next_label != self.L:
            raise RuntimeError(f"internal error: {self.folder.next_label} of {self.L} labels folded")
        self.stats["reference_pass"] = mode
        self.stats["seconds"] = round(time.perf_counter() - t0, 3)
        return self._result()

    def _pending(self) -> list:
        """The modulated runs of the present labels, or their present (run, frame) rows when rows are compacted."""
        runs = [r for r in range(2 * self.L) if self.active[r // 2]]
        self.compact = self.compacts_rows()
        if not self.compact:
            return runs
        pending = rows.present_rows(self.present_host, runs)
        self.assembler = rows.RowAssembler(pending)
        return pending

    @contextlib.contextmanager
    def _sharing(self):
        """The shared prefix at t_m, shared attention and (CPU) the feed-forward by rows, for the whole batch;
        yields the prefix driver (None: not shared)."""
        share = resolve_mode(self.settings.share_attention, self.backbone.device)
        on_cpu = self.backbone.device.type == "cpu"  # CPU memory: the feed-forward one run's rows at a time
        with shared_prefix(self.backbone, self.plan.block, self.plan.t_m, enabled=self.settings.share_prefix,
                           stats=self.stats) as driver, \
                sharing_attention(self.backbone, self.plan.injected, share, CPU_MIN_RUNS), \
                feed_forward_by_rows(self.backbone.unet, 2 * self.T, enabled=on_cpu):
            if driver is not None:
                driver.trusted = True  # every chunk starts from the one x_tm with the batch's conditioning
            yield driver
            if driver is not None:
                self.stats["prefix"] = dict(driver.stats)

    def _run_chunks(self, pending: list, mode: str, max_runs: int, driver) -> str:
        """Every pending run (or row) chunk by chunk, each folded into the argmax as soon as its pairs are
        finished; a chunk that runs out of memory is retried smaller.  Returns the final reference mode."""
        x_tm = self.shared_start()
        self.folder.fold(self.finished)
        while pending:
            self._check_cancel()
            chunk, size = self._next_chunk(pending, mode, max_runs)
            final, oom = self._try_chunk(x_tm, chunk, mode, driver)
            if oom is not None:
                mode, max_runs = self._shrink_after_oom(oom, size, mode)
                continue
            self.stats["chunks"].append(size)
            for r, z in zip(chunk, final):
                self.finished[r] = z.detach()
            del final
            pending = pending[len(chunk):]
            self.folder.fold(self.finished)
        return mode

    def _next_chunk(self, pending: list, mode: str, max_runs: int) -> Tuple[list, int]:
        """The next chunk of ``pending`` and its size (runs or rows, the reference's included)."""
        if self.compact:
            chunk = rows.take_rows(pending, max_runs, mode == "repeat")
            return chunk, len(chunk) + (len({f for _, f in chunk}) if mode == "repeat" else 0)
        per_chunk = max_runs - 1 if mode == "repeat" else max_runs
        if per_chunk >= 2 and per_chunk % 2:
            per_chunk -= 1
        chunk = pending[:max(1, per_chunk)]
        return chunk, len(chunk) + (1 if mode == "repeat" else 0)

    def _compute_chunk(self, x_tm: torch.Tensor, chunk: list, mode: str, driver) -> list:
        """One chunk denoised (the reference store built first when needed); the finished runs' final latents
        (compacted rows: none here, finished runs go to ``finished`` as their last rows come in)."""
        if mode == "store" and self.store is None:
            self.build_store(x_tm)
            if self.compact and driver is not None:
                driver.keep_frames(range(self.T))  # its prefix at t_m is every frame's: not again
        if self.compact:
            out = rows.run_rows(self, x_tm, chunk, mode == "repeat", driver)
            self.finished.update(self.assembler.add(chunk, out, x_tm))
            return []
        return self.run_chunk(x_tm, chunk, with_reference=(mode == "repeat"))

    def _try_chunk(self, x_tm: torch.Tensor, chunk: list, mode: str, driver) -> Tuple[list, Optional[str]]:
        """(:meth:`_compute_chunk`'s latents, None), or ([], the error) when the chunk ran out of memory: its
        progress is taken back and the memory freed."""
        units_before = self.units
        try:
            return self._compute_chunk(x_tm, chunk, mode, driver), None
        except Exception as exc:  # noqa: BLE001 - only OOM is handled
            if not is_out_of_memory(exc):
                raise
            msg = f"{type(exc).__name__}: {str(exc)[:200]}"
            del exc
            self.units = units_before
            _free_memory()
            return [], msg

    def _shrink_after_oom(self, msg: str, size: int, mode: str) -> Tuple[str, int]:
        """The reference mode and chunk capacity to retry with after a chunk of ``size`` ran out of memory."""
        self.stats["oom_retries"] = int(self.stats["oom_retries"]) + 1
        smaller, max_runs = shrink_after_oom(msg, size, mode, "rows" if self.compact else "runs",
                                             self.settings.reference_pass)
        if smaller != mode and self.backbone.device.type != "cpu":
            self.store_device = torch.device("cpu")  # the store goes to the host then
        return smaller, max_runs

    def _result(self) -> ModulationResult:
        """The labels (a NaN difference map is an error), the difference maps when asked, the statistics."""
        labels = self.folder.labels(self.ids)
        return ModulationResult(labels, self.ids.clone(), self.folder.difference_maps(), self.stats)


def modulate_batch(backbone, inputs, coarse: torch.Tensor, label_ids=None, frame_size: Optional[Tuple[int, int]] = None,
                   settings: Optional[ModulationSettings] = None, progress: Optional[Progress] = None,
                   cancel: Optional[Callable[[], bool]] = None,
                   reference_store: Optional[ReferenceStore] = None) -> ModulationResult:
    """Full-resolution label map of one batch by masked modulation (paper §4.3).

    ``inputs``: the batch's :class:`~vidseg_core.features.BatchInputs` (the same
    noisy latents as the feature pass); ``coarse``: ``[T,h,w]`` label ids at the
    feature grid (1/16 of the working size); ``label_ids``: the labels to
    modulate (default: those in ``coarse``; must contain every coarse label);
    ``frame_size``: ``(H, W)`` of the ORIGINAL frames (default: working size).
    ``reference_store``: the batch's :class:`~.reference.ReferenceStore` from
    :func:`~.reference.reference_pass` (the feature pass): the reference
    trajectory is then not computed again (ignored when recorded for other
    settings, or with ``settings.reference_pass == "repeat"``).
    Returns ``labels [T,H,W]`` with values from ``label_ids``.
    """
    settings = settings or ModulationSettings()
    plan = settings.resolve(backbone)
    coarse, ids, frame_size = check_inputs(backbone, inputs, coarse, label_ids, frame_size)
    if ids.numel() == 1 and not settings.return_difference_maps:
        # argmax over a single label is that label: no pass can change it
        T = coarse.shape[0]
        labels = torch.full((T,) + tuple(frame_size), int(ids[0]), dtype=torch.long)
        return ModulationResult(labels, ids.clone(), None, {"chunks": [], "skipped": "single label"})
    with torch.inference_mode():
        job = _BatchModulation(backbone, inputs, coarse, ids, frame_size, plan, progress, cancel, reference_store)
        return job.run()
