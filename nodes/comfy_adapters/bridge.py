"""The one place where the node pack talks to ComfyUI.

Imports of ``comfy`` and ``folder_paths`` happen here, lazily, so every node
module stays a thin, declarative wrapper and ``vidseg_core`` never sees ComfyUI.

* devices: :func:`torch_device`, :func:`offload_device`, :func:`intermediate_device`;
* :func:`model_on_device`: the loader -> compute-node pattern (move the model to
  the compute device for the work, then :func:`release_model` unless
  ``keep_model_loaded``), also on errors and interrupts;
* :class:`Progress`: ComfyUI's progress bar with an interrupt check on every update;
  :func:`cancel_check`: the ``cancel()`` callback the core polls per step;
* model folders: :func:`register_model_folder`, :func:`list_models`, :func:`resolve_model`;
* :func:`node_api`: the V3 node API, if this ComfyUI has one.
* output and temp folders: :func:`output_directory`, :func:`temp_directory`.

The core VIDEO type (``comfy_api``) is met in :mod:`.video`.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator, List

import torch

log = logging.getLogger("vidseg")

#: extensions of single-file checkpoints listed by the loader
CHECKPOINT_EXTENSIONS = {".safetensors", ".ckpt", ".pt", ".pth"}
#: ComfyUI model-folder keys the loader lists (``vidseg`` is registered by the pack)
MODEL_FOLDER_KEYS = ("checkpoints", "vidseg", "diffusers")


def _mm():
    import comfy.model_management as mm

    return mm


def optimized_attention():
    """ComfyUI's attention function ``(q, k, v, heads, mask=None, attn_precision=None)`` for replace patches."""
    from comfy.ldm.modules.attention import optimized_attention as attention

    return attention


def node_api():
    """``(io, ComfyExtension)`` of ComfyUI's V3 node API (``comfy_api.latest``), or None (logged) when this
    ComfyUI has none: the nodes are then declared the V1 way."""
    try:
        from comfy_api.latest import ComfyExtension, io
    except Exception as exc:  # noqa: BLE001 - an older ComfyUI, or one whose V3 API does not import
        log.info("[VidSeg] This ComfyUI has no usable V3 node API (comfy_api.latest: %s: %s); the nodes are "
                 "declared with the V1 node API (same inputs and outputs).", type(exc).__name__, exc)
        return None
    return io, ComfyExtension


def torch_device() -> torch.device:
    return _mm().get_torch_device()


def offload_device() -> torch.device:
    return _mm().unet_offload_device()


def intermediate_device() -> torch.device:
    return _mm().intermediate_device()


def soft_empty_cache() -> None:
    _mm().soft_empty_cache()


def check_interrupt() -> None:
    """Raise ComfyUI's interrupt exception if the user pressed cancel."""
    _mm().throw_exception_if_processing_interrupted()


def cancel_check() -> bool:
    """A core ``cancel()`` callback: raises ComfyUI's interrupt exception itself, else returns False."""
    check_interrupt()
    return False


class Progress:
    """ComfyUI progress bar over ``total`` units, with an interrupt check per update.

    Call it as ``progress(done, total)`` (the core's callback signature); extra
    positional arguments (the pipeline's stage name) are ignored.
    """

    def __init__(self, total: int):
        import comfy.utils

        self.total = max(1, int(total))
        self.bar = comfy.utils.ProgressBar(self.total)

    def __call__(self, done: int, total: int | None = None, *_stage) -> None:
        check_interrupt()
        if total is not None and int(total) != self.total:
            self.total = max(1, int(total))
        self.bar.update_absolute(min(int(done), self.total), self.total)

    def fraction(self, done: int, total: int, *_stage) -> None:
        """Report ``done / total`` of the whole bar (for callers whose totals change between calls)."""
        frac = min(max(float(done), 0.0), float(max(1, int(total)))) / max(1, int(total))
        self(int(round(frac * self.total)), self.total)

    def sub(self, index: int, count: int):
        """A ``(done, total)`` callback for part ``index`` of ``count`` equal parts of this bar
        (e.g. one batch of many): the part's fraction is mapped into the bar's units."""
        unit = self.total / max(1, int(count))

        def report(done: int, total: int, *_stage) -> None:
            frac = min(max(int(done), 0), max(1, int(total))) / max(1, int(total))
            self(int(round((index + frac) * unit)), self.total)

        return report


def move_model(backbone, device: torch.device) -> None:
    """Move a backbone unless it is already there (diffusers' dtype notice on every move is silenced)."""
    if backbone.device == torch.device(device):
        return
    quiet = logging.getLogger("diffusers")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        backbone.to(device)
    finally:
        quiet.setLevel(level)


@contextlib.contextmanager
def model_on_device(handle, keep_model_loaded: bool) -> Iterator:
    """Move the handle's backbone to its compute device for the block; afterwards (also after an
    error or an interrupt) move it to ComfyUI's offload device and free the cache, unless
    ``keep_model_loaded``.  Yields the backbone."""
    backbone = handle.backbone
    move_model(backbone, handle.device)
    try:
        yield backbone
    finally:
        if not keep_model_loaded:
            release_model(backbone)


def release_model(backbone) -> None:
    """Free what a run held, as ComfyUI's model management expects: the pack's own model goes to the offload
    device; a MODEL from ComfyUI (the adapter's patched clone) is unloaded from its GPU through ComfyUI
    (:func:`unload_comfy_model`); then garbage cycles are collected, the device cache emptied and the C heap's
    free pages handed back to the system."""
    from ...vidseg_core.cpu_memory import release_freed_memory

    move_model(backbone, offload_device())  # a no-op for the adapter: ComfyUI places its models
    patcher = getattr(backbone, "patched", None)
    if patcher is not None:
        unload_comfy_model(patcher)
    release_freed_memory()
    soft_empty_cache()


def unload_comfy_model(patcher) -> bool:
    """Unload ``patcher`` (and its clones: they share the weights) from its GPU through ComfyUI's model
    management; other loaded models stay.  ComfyUI 0.33 has ``unload_model_and_clones``; older versions get the
    same through ``free_memory`` with every other loaded model kept.  Nothing happens on the CPU.  Returns
    whether an unload was asked for."""
    mm = _mm()
    device = torch.device(getattr(patcher, "load_device", "cpu"))
    if device.type == "cpu":
        return False
    unload = getattr(mm, "unload_model_and_clones", None)
    if unload is not None:
        unload(patcher, unload_additional_models=False)
        return True
    same = getattr(patcher, "is_clone", None)
    loaded = list(getattr(mm, "current_loaded_models", []))
    if same is None or not hasattr(mm, "free_memory"):
        return False
    keep = [m for m in loaded if m.model is not None and m.model is not patcher and not same(m.model)]
    mm.free_memory(1e30, device, keep_loaded=keep)
    return True


def outputs_device(x: torch.Tensor) -> torch.Tensor:
    """An output tensor on ComfyUI's intermediate device (the CPU unless --gpu-only)."""
    return x.to(intermediate_device())


# ---------------------------------------------------------------- model folders
def register_model_folder() -> None:
    """Register ``models/vidseg`` (checkpoints or diffusers folders) with ComfyUI, once."""
    try:
        import folder_paths
    except ImportError:  # not inside ComfyUI
        return
    path = os.path.join(folder_paths.models_dir, "vidseg")
    entry = folder_paths.folder_names_and_paths.get("vidseg")
    if entry is None:
        folder_paths.folder_names_and_paths["vidseg"] = ([path], set(CHECKPOINT_EXTENSIONS) | {"folder"})
    elif path not in entry[0]:
        entry[0].append(path)


def model_folders(key: str) -> List[str]:
    try:
        import folder_paths

        return list(folder_paths.get_folder_paths(key))
    except Exception:  # not inside ComfyUI, or an unknown key
        return []


def all_model_folders() -> List[str]:
    return [p for key in MODEL_FOLDER_KEYS for p in model_folders(key)]


def list_models() -> List[str]:
    """Single files in ``checkpoints`` / ``vidseg`` and diffusers folders in ``diffusers`` / ``vidseg``.

    Entries are ``"<folder key>/<relative name>"`` so that the loader can find
    them again; SD 2.1 / SVD-looking names come first.  Empty outside ComfyUI.
    """
    found = []
    for key in MODEL_FOLDER_KEYS:
        for base in model_folders(key):
            if not os.path.isdir(base):
                continue
            for root, dirs, files in os.walk(base, followlinks=True):
                dirs.sort()
                if "model_index.json" in files:
                    found.append(f"{key}/{os.path.relpath(root, base)}".replace(os.sep, "/"))
                    dirs[:] = []
                    continue
                for f in files:
                    if os.path.splitext(f)[1].lower() in CHECKPOINT_EXTENSIONS and key != "diffusers":
                        found.append(f"{key}/{os.path.relpath(os.path.join(root, f), base)}".replace(os.sep, "/"))
    likely = ("v2-1", "v2_1", "sd21", "sd2.1", "sd_2", "svd", "stable-diffusion-2", "stable-video")
    return sorted(set(found), key=lambda n: (not any(s in n.lower() for s in likely), n.lower()))


def resolve_model(name: str) -> str:
    """Full path of an entry of :func:`list_models` (or the name itself for tiny models / absolute paths)."""
    key, _, rel = name.partition("/")
    if key in MODEL_FOLDER_KEYS and rel:
        for base in model_folders(key):
            p = os.path.join(base, rel)
            if os.path.exists(p):
                return p
        return rel  # not found: the core's loader reports the folders it looked in
    return name


def output_directory() -> str:
    import folder_paths

    return folder_paths.get_output_directory()


def temp_directory() -> str:
    """ComfyUI's temp folder (emptied when ComfyUI starts)."""
    import folder_paths

    return folder_paths.get_temp_directory()
