"""ComfyUI nodes of the VidSeg pack: thin wrappers over ``vidseg_core``, one module per stage.

Each module is imported on its own: a module that fails to import (e.g. a
missing optional dependency) is logged and skipped, the rest of the pack loads.
"""
from __future__ import annotations

import importlib
import logging

log = logging.getLogger("vidseg")

#: node modules in menu order
NODE_MODULES = (
    "model_from_comfy", "load_model", "extract_features", "kmeans_init", "assign_labels", "cbr_refine", "context_model",
    "masked_modulation", "guided_upsample", "segment_video", "select_labels", "visualize", "save_labels", "evaluate",
)

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
#: module name -> "ExceptionType: message" of modules that failed to import
FAILED_MODULES: dict = {}


def _load() -> None:
    try:
        from . import comfy_bridge

        comfy_bridge.register_model_folder()
    except Exception as exc:  # noqa: BLE001 - never take ComfyUI down
        log.warning("[VidSeg] could not register the models/vidseg folder: %s", exc)
    for name in NODE_MODULES:
        try:
            mod = importlib.import_module(f".{name}", __name__)
        except Exception as exc:  # noqa: BLE001 - isolate one broken module
            FAILED_MODULES[name] = f"{type(exc).__name__}: {exc}"
            log.exception("[VidSeg] node module %s failed to import", name)
            continue
        NODE_CLASS_MAPPINGS.update(getattr(mod, "NODE_CLASS_MAPPINGS", {}))
        NODE_DISPLAY_NAME_MAPPINGS.update(getattr(mod, "NODE_DISPLAY_NAME_MAPPINGS", {}))
    if FAILED_MODULES:
        log.warning("[VidSeg] loaded %d nodes; %d module(s) failed: %s", len(NODE_CLASS_MAPPINGS),
                    len(FAILED_MODULES), ", ".join(f"{k} ({v})" for k, v in FAILED_MODULES.items()))
    else:
        log.info("[VidSeg] loaded %d nodes", len(NODE_CLASS_MAPPINGS))


_load()
