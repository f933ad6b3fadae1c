"""ComfyUI nodes of the VidSeg pack: thin wrappers over ``vidseg_core``, one module per stage.

Each module declares its nodes once (``NODES``: classes with ``declare()``, see
:mod:`.schema`) and is imported on its own: a module that fails to import (e.g. a
missing optional dependency) is logged and skipped, the rest of the pack loads.
The declarations become V3 node classes (``io.ComfyNode``) when ComfyUI has the V3
node API, else V1 classes (:data:`API` says which).
"""
from __future__ import annotations

import importlib
import logging

log = logging.getLogger("vidseg")

#: node modules in menu order
NODE_MODULES = (
    "model_from_comfy", "load_model", "detect_cuts", "extract_features", "kmeans_init", "assign_labels", "cbr_refine",
    "context_model", "masked_modulation", "guided_upsample", "segment_video", "select_labels", "visualize",
    "save_labels", "evaluate",
)

#: node id -> the class ComfyUI registers
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
#: module name -> "ExceptionType: message" of modules that failed to import
FAILED_MODULES: dict = {}


def _load():
    """Import the node modules, fill the mappings; returns ``(API, comfy_entrypoint)``."""
    from . import schema
    from .comfy_adapters import bridge

    try:
        bridge.register_model_folder()
    except Exception as exc:  # noqa: BLE001 - never take ComfyUI down
        log.warning("[VidSeg] could not register the models/vidseg folder: %s", exc)
    declared = []
    for name in NODE_MODULES:
        try:
            mod = importlib.import_module(f".{name}", __name__)
            nodes = [(c, c.declare()) for c in mod.NODES]
        except Exception as exc:  # noqa: BLE001 - isolate one broken module
            FAILED_MODULES[name] = f"{type(exc).__name__}: {exc}"
            log.exception("[VidSeg] node module %s failed to import", name)
            continue
        declared.extend(nodes)
    api = bridge.node_api()
    kind, classes = schema.comfy_classes([c for c, _ in declared], api)
    for cls, (_, node) in zip(classes, declared):
        NODE_CLASS_MAPPINGS[node.node_id] = cls
        NODE_DISPLAY_NAME_MAPPINGS[node.node_id] = node.display_name
    entrypoint = schema.extension_entrypoint(api[1], classes) if kind == "v3" else None
    if FAILED_MODULES:
        log.warning("[VidSeg] loaded %d nodes; %d module(s) failed: %s", len(NODE_CLASS_MAPPINGS),
                    len(FAILED_MODULES), ", ".join(f"{k} ({v})" for k, v in FAILED_MODULES.items()))
    else:
        log.info("[VidSeg] loaded %d nodes (%s node API)", len(NODE_CLASS_MAPPINGS), kind.upper())
    return kind, entrypoint


#: "v3" (``comfy_entrypoint``, V3 node classes) or "v1" (``NODE_CLASS_MAPPINGS``): how the pack registers its
#: nodes; ``comfy_entrypoint`` is None for "v1"
API, comfy_entrypoint = _load()
