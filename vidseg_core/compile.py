"""Optional ``torch.compile`` of a backbone's UNet and VAE (regional compilation), with an eager fallback.

What is compiled: every repeated block of the UNet (each ResNet block,
transformer / attention block, down- and upsampler of the down, mid and up
blocks) and the VAE's encoder and decoder, each in place
(``nn.Module.compile``); the backbone names them
(:meth:`~.backbones.base.Backbone.compile_regions`: diffusers' layout here,
ComfyUI's ``input_blocks`` / ``middle_block`` / ``output_blocks`` layers in the
pack's ComfyUI adapter) and what must stay out of the graphs
(:meth:`~.backbones.base.Backbone.compile_exclusions`).  A backbone whose
modules someone else also runs (``compile_scoped``: ComfyUI's MODEL, which its
samplers run too) gets the compiled blocks only inside
:func:`compiled_scope`, around its own UNet / VAE calls.  The Python glue
around them stays eager, so every path of the pipeline calls the compiled
blocks:

* **prefix sharing** (:mod:`.modulation.unet_split`) calls the UNet's blocks
  one by one and overrides ``unet.forward``; compiling the whole UNet would
  either be bypassed there or trace the driver's data-dependent checks, so the
  blocks are compiled instead and the driver calls them;
* **attention processors** (:class:`~.backbones.attention.HookedAttnProcessor`
  and the modulation's shared-attention processor) run the hooks, read the
  step and are swapped per batch; traced, every step and every swap would be a
  recompilation and the limit (8 per code object) would silently turn the
  block back to eager.  The hookable attention modules are therefore kept out
  of the graph (``torch.compiler.disable``): a clean graph break around a
  projection + fused SDPA call, which compilation would not speed up anyway,
  while the norms, feed-forwards and ResNet blocks around them are compiled
  (in ComfyUI's layout: the adapter's attention patches, the hooks' only
  entry; ComfyUI's attention around them is compiled);
* the **early-exit exception** (:class:`~.backbones.attention.CaptureComplete`,
  raised from such a hook) then propagates from eager code through the
  compiled block like any exception, and is re-raised untouched.

**Batch sizes**: SD's compacted rows (:mod:`.modulation.rows`) change the
UNet's batch from chunk to chunk and batch to batch.  Dynamo's automatic
dynamic shapes compile a block with static shapes first and, at the first
other batch size, once more with a symbolic batch dimension, which later row
counts reuse; only unusually small batches (a chunk of a few rows) add one
variant.  What did recompile at every new row count was the CPU
feed-forward's row loop (:func:`~.cpu_memory.feed_forward_by_rows`: its trip
count, batch // rows, was a guarded constant): that loop runs eagerly and each
slice's feed-forward is compiled.  Neither marking dimensions dynamic up front
nor padding rows to bucket sizes is needed (counts in ``docs/benchmarks.md``,
tested in ``tests/test_compile.py``).

Dynamo keeps one cache per code object, shared by every instance of a block
class (e.g. the 22 ResNet blocks of SD 2.1); the recompile limit is raised to
fit them, and a hit of the limit (which would silently fall back to eager) is
turned into a warning.  When compilation fails (no C compiler for the CPU
backend, an unsupported op, ...) the block that failed is re-run eagerly, a
warning says so, and compilation is switched off for the whole backbone.
Measured graph breaks on the tiny models are in ``docs/benchmarks.md``.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import torch

from .backbones.attention import CaptureComplete
from .errors import InputError, VidSegError

COMPILE_CHOICES = ("off", "on")
#: cache entries allowed per block instance (guarded variants: static then dynamic shapes, a few spares)
ENTRIES_PER_REGION = 4


@dataclass
class CompileState:
    """What :func:`compile_backbone` did; ``fallback`` is set when it gave up and went back to eager."""

    backend: str
    mode: Optional[str]
    regions: List[str] = field(default_factory=list)
    excluded: List[str] = field(default_factory=list)  # hookable attention modules kept eager
    fallback: Optional[str] = None
    limit_hits: List[str] = field(default_factory=list)

    @property
    def active(self) -> bool:
        return self.fallback is None and bool(self.regions)

    def to_dict(self) -> dict:
        return {"backend": self.backend, "mode": self.mode, "regions": len(self.regions),
                "eager_attention_modules": len(self.excluded), "active": self.active, "fallback": self.fallback,
                "recompile_limit_hits": list(self.limit_hits)}


def regions(backbone) -> Dict[str, torch.nn.Module]:
    """The modules compiled in place, by qualified name (:meth:`Backbone.compile_regions`)."""
    return backbone.compile_regions()


def inductor_available(device: torch.device) -> Optional[str]:
    """``None`` if the inductor backend can run on ``device``, else why not."""
    if device.type == "cpu" and not (shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")):
        return "the CPU inductor backend needs a C compiler (cc / gcc / clang) on PATH"
    if device.type == "mps":
        return "torch.compile is not supported for MPS here"
    return None


class _LimitWatcher(logging.Handler):
    """Turns dynamo's 'hit config.recompile_limit' log line (the block silently goes eager) into a warning."""

    def __init__(self, state: CompileState):
        super().__init__(logging.WARNING)
        self.state = state

    def emit(self, record):
        msg = record.getMessage()
        if "recompile_limit" in msg or "cache_size_limit" in msg:
            line = msg.splitlines()[0][:200]
            self.state.limit_hits.append(line)
            warnings.warn(f"torch.compile stopped compiling a block ({line}); that block runs eagerly from now on.",
                          RuntimeWarning, stacklevel=2)


def _keeps_going(exc: BaseException, backbone=None) -> bool:
    """Exceptions that belong to the run, not to compilation: re-raised as they are (with the backbone's own
    ``run_exceptions``, e.g. ComfyUI's interrupt)."""
    from .modulation.runner import is_out_of_memory

    own = tuple(getattr(backbone, "run_exceptions", ()) or ())
    return isinstance(exc, (CaptureComplete, VidSegError, KeyboardInterrupt) + own) or is_out_of_memory(exc)


class _GuardedCompiled:
    """The compiled ``_call_impl`` of one block; on a compilation failure re-runs the block eagerly and switches
    compilation off for the whole backbone (with a warning)."""

    def __init__(self, compiled, module: torch.nn.Module, owner: "_Compiled", name: str):
        self.compiled, self.module, self.owner, self.name = compiled, module, owner, name

    def __call__(self, *args, **kwargs):
        try:
            return self.compiled(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - sorted below
            if _keeps_going(exc, self.owner.backbone):
                raise
            out = self.module._call_impl(*args, **kwargs)  # eager: if this fails too, its error is the real one
            self.owner.give_up(f"{self.name}: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}")
            return out


class _Compiled:
    """Bookkeeping of one compiled backbone (kept on it as ``backbone.compiled``).

    ``scoped`` (backbones whose modules someone else also runs, ``Backbone.compile_scoped``): the compiled
    blocks are installed only inside :meth:`scope`, around the backbone's own UNet / VAE calls, and the
    modules are left as they were after each call."""

    def __init__(self, backbone, state: CompileState, scoped: bool = False):
        self.backbone, self.state, self.scoped = backbone, state, scoped
        self.modules: Dict[str, torch.nn.Module] = {}
        self.calls: Dict[str, _GuardedCompiled] = {}
        self.disabled: Dict[str, object] = {}
        self.watcher = _LimitWatcher(state)
        self._depth = 0
        self._saved: Dict[str, object] = {}

    def install(self, name: str, module: torch.nn.Module, call: "_GuardedCompiled") -> None:
        self.modules[name], self.calls[name] = module, call
        if not self.scoped:
            module._compiled_call_impl = call

    @contextlib.contextmanager
    def scope(self):
        """The compiled blocks active for the duration (re-entrant); a block somebody else compiled is left
        alone, and every module gets back what it had."""
        if not self.scoped or not self.calls:
            yield
            return
        if self._depth == 0:
            for name, module in self.modules.items():
                if module._compiled_call_impl is None:
                    self._saved[name] = module
                    module._compiled_call_impl = self.calls[name]
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0:
                self._restore()

    def _restore(self) -> None:
        for name, module in self._saved.items():
            if module._compiled_call_impl is self.calls.get(name):
                module._compiled_call_impl = None
        self._saved = {}

    def give_up(self, reason: str) -> None:
        if self.state.fallback is None:
            self.state.fallback = reason
            warnings.warn(f"torch.compile failed ({reason}); running the backbone eagerly instead.", RuntimeWarning,
                          stacklevel=3)
        self.remove()

    def remove(self) -> None:
        for name, m in self.modules.items():
            if m._compiled_call_impl is self.calls.get(name):
                m._compiled_call_impl = None
        for obj in self.disabled.values():
            obj.__dict__.pop("forward", None)
        logging.getLogger("torch._dynamo").removeHandler(self.watcher)
        self.modules, self.calls, self.disabled, self._saved = {}, {}, {}, {}


def compiled_scope(backbone):
    """Context in which ``backbone``'s compiled blocks run: needed only around the calls of a scoped backbone
    (``Backbone.compile_scoped``, e.g. ComfyUI's MODEL, shared with ComfyUI's samplers); a no-op otherwise."""
    job = getattr(backbone, "compiled", None)
    return job.scope() if job is not None else contextlib.nullcontext()


def compile_backbone(backbone, backend: str = "inductor", mode: Optional[str] = None,
                     dynamic: Optional[bool] = None, options: Optional[dict] = None) -> CompileState:
    """Compile ``backbone``'s UNet and VAE blocks in place (see the module doc); returns the :class:`CompileState`
    (also kept as ``backbone.compiled.state``).  Falls back to eager with a warning when compilation is not
    possible; compiling an already compiled backbone returns its state."""
    existing = getattr(backbone, "compiled", None)
    if existing is not None and existing.state.active:
        return existing.state
    state = CompileState(backend, mode)
    job = _Compiled(backbone, state, scoped=bool(getattr(backbone, "compile_scoped", False)))
    backbone.compiled = job  # its state tells the summary what happened, fallback included
    if not hasattr(torch, "compile"):
        state.fallback = "this torch has no torch.compile"
    elif backend == "inductor":
        state.fallback = inductor_available(backbone.device)
    if state.fallback is not None:
        warnings.warn(f"torch.compile is not used: {state.fallback}; running eagerly.", RuntimeWarning, stacklevel=2)
        return state
    try:
        for name, obj in backbone.compile_exclusions().items():
            # hooks, step reads and processor swaps stay out of the graph (see the module doc)
            obj.forward = torch.compiler.disable(type(obj).forward.__get__(obj), recursive=True)
            job.disabled[name] = obj
            state.excluded.append(name)
        for name, module in regions(backbone).items():
            compiled = torch.compile(module._call_impl, backend=backend, mode=mode, dynamic=dynamic,
                                     **({"options": options} if options else {}))
            job.install(name, module, _GuardedCompiled(compiled, module, job, name))
            state.regions.append(name)
    except Exception as exc:  # noqa: BLE001 - any failure here means: stay eager
        job.give_up(f"{type(exc).__name__}: {exc}")
        return state
    import torch._dynamo.config as dynamo_config

    needed = ENTRIES_PER_REGION * len(state.regions)
    for names, value in ((("recompile_limit", "cache_size_limit"), needed),  # the second name: older torch
                         (("accumulated_recompile_limit", "accumulated_cache_size_limit"), 2 * needed)):
        name = next((n for n in names if hasattr(dynamo_config, n)), None)
        if name is not None and getattr(dynamo_config, name) < value:
            setattr(dynamo_config, name, value)
    logging.getLogger("torch._dynamo").addHandler(job.watcher)
    # a node run builds a new backbone each time: its watcher goes with it
    weakref.finalize(backbone, logging.getLogger("torch._dynamo").removeHandler, job.watcher)
    return state


def uncompile_backbone(backbone) -> None:
    """Back to eager (the compiled code is dropped)."""
    job = getattr(backbone, "compiled", None)
    if job is not None:
        job.remove()
        backbone.compiled = None


def resolve_compile(choice) -> bool:
    """``"on"`` / ``"off"`` (or a bool) -> bool, with a readable error."""
    if isinstance(choice, bool):
        return choice
    key = str(choice or "off").strip().lower()
    if key not in COMPILE_CHOICES:
        raise InputError(f"Unknown compile choice {choice!r}.", "Use 'off' (default) or 'on'.")
    return key == "on"
