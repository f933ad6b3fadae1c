"""After a run (keep_model_loaded off) VidSeg frees what it held as ComfyUI's model management expects:
its own model offloaded, a MODEL from ComfyUI unloaded from the GPU through ComfyUI (0.33's
``unload_model_and_clones``, or ``free_memory`` keeping every other model on 0.3.64), garbage collected and
the C heap trimmed."""
from __future__ import annotations

import sys
from types import SimpleNamespace

import pytest
import torch

from tools.pack_loader import load_pack

load_pack()
cb = sys.modules["vidseg_pack.nodes.comfy_adapters.bridge"]
cpu_memory = sys.modules["vidseg_pack.vidseg_core.cpu_memory"]
mm = sys.modules["comfy.model_management"]


class Patcher:
    """A ModelPatcher as far as unloading goes: its weights (``model``) and load device."""

    def __init__(self, model, device="cuda"):
        self.model, self.load_device = model, torch.device(device)

    def is_clone(self, other):
        return getattr(other, "model", None) is self.model


def _loaded(*patchers):
    return [SimpleNamespace(model=p) for p in patchers]


def test_an_old_comfyui_unloads_the_clone_and_keeps_every_other_model(monkeypatch):
    weights, other = object(), object()
    ours, original, foreign = Patcher(weights), Patcher(weights), Patcher(other)
    calls = []
    monkeypatch.setattr(mm, "current_loaded_models", _loaded(ours, original, foreign), raising=False)
    monkeypatch.setattr(mm, "free_memory", lambda mem, dev, keep_loaded=[]: calls.append((dev, keep_loaded)),
                        raising=False)
    monkeypatch.delattr(mm, "unload_model_and_clones", raising=False)
    assert cb.unload_comfy_model(ours)
    (dev, keep), = calls
    assert dev == torch.device("cuda") and [m.model for m in keep] == [foreign]  # the shared weights go


def test_comfyui_033_uses_unload_model_and_clones(monkeypatch):
    calls = []
    monkeypatch.setattr(mm, "unload_model_and_clones", lambda p, unload_additional_models=True:
                        calls.append((p, unload_additional_models)), raising=False)
    ours = Patcher(object())
    assert cb.unload_comfy_model(ours) and calls == [(ours, False)]
    assert not cb.unload_comfy_model(Patcher(object(), "cpu")) and len(calls) == 1  # nothing to do on the CPU


def test_release_model_offloads_unloads_collects_and_empties(monkeypatch):
    events = []
    bb = SimpleNamespace(device=torch.device("cuda"), patched=Patcher(object()),
                         to=lambda device=None, dtype=None: events.append(("to", torch.device(device))))
    monkeypatch.setattr(cb, "unload_comfy_model", lambda p: events.append(("unload", p)))
    monkeypatch.setattr(cpu_memory, "release_freed_memory", lambda: events.append(("trim",)) or True)
    monkeypatch.setattr(mm, "soft_empty_cache", lambda force=False: events.append(("empty",)))
    cb.release_model(bb)
    assert [e[0] for e in events] == ["to", "unload", "trim", "empty"]


def _rss_mb():
    import os

    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def test_freed_heap_memory_is_handed_back():
    if not sys.platform.startswith("linux"):
        pytest.skip("malloc_trim is glibc's")
    blocks = [bytes(2000) + bytes([i % 256]) for i in range(100_000)]  # ~200 MB of heap (below mmap size)
    pinned = blocks[::1000]  # a few stay alive above the freed ones: the heap cannot shrink by itself
    del blocks
    before = _rss_mb()
    assert cpu_memory.release_freed_memory() is True
    assert _rss_mb() < before - 100, "the freed heap pages went back to the system"
    del pinned
