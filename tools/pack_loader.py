"""Import the pack the way ComfyUI does (docs/design/comfyui_integration.md#how-comfyui-loads-a-pack, #testing-without-comfyui): as a package from the repo root's
``__init__.py`` with relative imports, under a private module name."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_pack(name: str = "vidseg_pack", root: Path = ROOT):
    """The pack module (cached in ``sys.modules[name]``); ComfyUI stand-ins must be installed first
    when ComfyUI itself is not loaded (``tests/conftest.py`` does that)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, root / "__init__.py", submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def pack_nodes(pack) -> dict:
    """node id -> node class of the pack (V3 or V1 classes; the pack module itself exposes either
    ``comfy_entrypoint`` or ``NODE_CLASS_MAPPINGS``, never both)."""
    return pack.nodes.NODE_CLASS_MAPPINGS


def pack_specs(pack, version: str = None) -> dict:
    """``/object_info`` entries of the pack's nodes plus the core specs a ComfyUI ``version`` reported
    (default: the oldest tested version; ``tools/comfy_core_nodes.py``)."""
    from .comfy_core_nodes import load_core_specs
    from .comfy_graph import object_info

    return object_info(pack_nodes(pack), pack.nodes.NODE_DISPLAY_NAME_MAPPINGS, load_core_specs(version))
