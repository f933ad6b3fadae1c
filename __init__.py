"""VidSeg node pack for ComfyUI.

ComfyUI imports this file; it only exposes the node mappings.  All logic lives
in ``vidseg_core`` (no ComfyUI imports there) and the thin wrappers in ``nodes``.
"""
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = None
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
