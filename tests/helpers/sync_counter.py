"""Count host/device synchronisation points on the CPU (no GPU needed).

On a CUDA device these operations make the host wait for the device: reading a
value (``.item()``, ``bool(t)``, ``int(t)``, ``float(t)``, ``torch.equal``),
results whose *size* depends on the data (``nonzero``, ``unique``,
``masked_select``, boolean-mask indexing), and copies to the host (``.cpu()``,
``.to("cpu")``, ``.numpy()``, ``.tolist()``; see :func:`_is_host_target`).  On the CPU they cost nothing,
so a loop can hide one per iteration unnoticed; :class:`SyncCounter` counts
them anyway (a ``TorchDispatchMode`` sees every aten call, and the few host
copies that bypass the dispatcher are counted by wrapping those ``Tensor``
methods), with the ``vidseg_core`` line that caused each one.

    with SyncCounter() as sc:
        model.predict(tokens)
    assert sc.total <= 3, sc.report()
"""
from __future__ import annotations

import collections
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode

_aten = torch.ops.aten
#: aten ops that read a value on the host or have a data-dependent output size
SYNC_OPS = {
    _aten._local_scalar_dense.default,  # item(), bool(), int(), float()
    _aten.is_nonzero.default,
    _aten.equal.default,
    _aten.nonzero.default,
    _aten.nonzero_static.default,
    _aten.masked_select.default,
    _aten._unique.default,
    _aten._unique2.default,
    _aten.unique_dim.default,
    _aten.unique_consecutive.default,
    _aten.repeat_interleave.Tensor,
}
_HOST_METHODS = ("cpu", "numpy", "tolist")


def _site() -> str:
    """``file:line`` of the innermost ``vidseg_core`` frame on the stack (or the caller's)."""
    f = sys._getframe(2)
    fallback = None
    while f is not None:
        name = f.f_code.co_filename
        if "vidseg_core" in name and "sync_counter" not in name:
            return f"{name.split('vidseg_core')[-1].lstrip('/')}:{f.f_lineno}"
        if fallback is None and "torch" not in name and "sync_counter" not in name:
            fallback = f"{name.rsplit('/', 1)[-1]}:{f.f_lineno}"
        f = f.f_back
    return fallback or "?"


def _is_host_target(args, kwargs) -> bool:
    """``.to("cpu", ...)`` / ``.to(device="cpu")`` written as a literal string: a copy to the host.

    A ``torch.device`` object (``.to(self.device)``) is the compute device, which is the CPU in the tests
    but the GPU in use: the convention in ``vidseg_core`` is ``.cpu()`` or ``.to("cpu")`` for host copies.
    """
    targets = [a for a in args if isinstance(a, str)] + [kwargs.get("device")]
    return any(isinstance(d, str) and d.startswith("cpu") for d in targets)


class SyncCounter(TorchDispatchMode):
    """Counts synchronising operations while active; ``events`` maps ``(kind, site)`` to a count."""

    def __init__(self):
        super().__init__()
        self.events = collections.Counter()
        self._saved = {}

    # aten level
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in SYNC_OPS:
            self.events[(str(func.overloadpacket.__name__), _site())] += 1
        elif func in (_aten.index.Tensor, _aten.index_put.default, _aten.index_put_.default):
            idx = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in idx):
                self.events[("bool_mask_index", _site())] += 1
        return func(*args, **kwargs)

    # host copies that do not reach the dispatcher as such
    def __enter__(self):
        counter = self

        def wrap(name, orig):
            def method(t, *args, **kwargs):
                if name != "to" or _is_host_target(args, kwargs):
                    counter.events[(f"to_host.{name}", _site())] += 1
                return orig(t, *args, **kwargs)
            return method

        for name in _HOST_METHODS + ("to",):
            self._saved[name] = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, wrap(name, self._saved[name]))
        return super().__enter__()

    def __exit__(self, *exc):
        for name, orig in self._saved.items():
            setattr(torch.Tensor, name, orig)
        self._saved.clear()
        return super().__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.events.values())

    def report(self) -> str:
        return "\n".join(f"{n:5d}  {kind:22s} {site}" for (kind, site), n in self.events.most_common())
