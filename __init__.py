"""VidSeg node pack for ComfyUI.

ComfyUI imports this file.  All logic lives in ``vidseg_core`` (no ComfyUI imports
there) and the thin wrappers in ``nodes``.

ComfyUI registers a pack's nodes one way: from ``NODE_CLASS_MAPPINGS`` when the
module has it (read first), else from ``comfy_entrypoint``.  With ComfyUI's V3 node
API the pack exposes only ``comfy_entrypoint`` (V3 nodes; the mappings would make
ComfyUI skip it); without it, only the V1 mappings.
"""
from . import nodes as _nodes

WEB_DIRECTORY = None

if _nodes.API == "v3":
    comfy_entrypoint = _nodes.comfy_entrypoint
    __all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
else:
    NODE_CLASS_MAPPINGS = _nodes.NODE_CLASS_MAPPINGS
    NODE_DISPLAY_NAME_MAPPINGS = _nodes.NODE_DISPLAY_NAME_MAPPINGS
    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
