"""What ComfyUI does with a node pack and its node classes, for tests without ComfyUI.

Written from the behaviour of ComfyUI v0.3.64 / 0.33.0 (``nodes.load_custom_node`` and
the executor), over the API stand-in of :mod:`tests.helpers.comfy_api_standin`:

* :func:`register_pack`: ``NODE_CLASS_MAPPINGS`` when the module has it (read first),
  else ``comfy_entrypoint`` (0.33 also awaits the extension's ``on_load``), each class
  registered under its schema's node id after ``GET_SCHEMA()``;
* :func:`validate`: a V3 node's ``validate_inputs`` only when it overrides the API's,
  called with the inputs its signature names (V1: ``VALIDATE_INPUTS``);
* :func:`run_node`: a V3 node runs ``FUNCTION`` on a locked copy of its class (nothing
  may be set on it or on its instances); a V1 node: ``getattr(cls(), cls.FUNCTION)``.
"""
from __future__ import annotations

import asyncio
import inspect
import sys
from typing import Optional

from tests.helpers.comfy_api_standin import current_profile, first_real_override


def register_pack(module, profile: Optional[str] = None) -> tuple:
    """What ComfyUI's custom-node loader registers from a pack module:
    ``("v1" | "v3", {node id: class}, {node id: display name})``.  V1 mappings are read
    first; only without them is ``comfy_entrypoint`` called (0.33 also awaits ``on_load``)."""
    mappings = getattr(module, "NODE_CLASS_MAPPINGS", None)
    if mappings is not None:
        return "v1", dict(mappings), dict(getattr(module, "NODE_DISPLAY_NAME_MAPPINGS", None) or {})
    entry = getattr(module, "comfy_entrypoint", None)
    if entry is None:
        raise LookupError("the pack has neither NODE_CLASS_MAPPINGS nor comfy_entrypoint")
    extension_base = sys.modules["comfy_api.latest"].ComfyExtension

    async def load():
        ext = await entry() if inspect.iscoroutinefunction(entry) else entry()
        assert isinstance(ext, extension_base), "comfy_entrypoint did not return a ComfyExtension"
        if (profile or current_profile()) == "0.33":
            await ext.on_load()
        return await ext.get_node_list()

    classes, names = {}, {}
    for cls in asyncio.run(load()):
        schema = cls.GET_SCHEMA()
        classes[schema.node_id] = cls
        if schema.display_name is not None:
            names[schema.node_id] = schema.display_name
    return "v3", classes, names


def is_v3(cls) -> bool:
    return hasattr(cls, "GET_SCHEMA") and hasattr(cls, "define_schema")


def validate(cls, **inputs):
    """The node's own input validation as the executor calls it (True, or the message)."""
    if is_v3(cls):
        fn = first_real_override(cls, "validate_inputs")
    else:
        fn = getattr(cls, "VALIDATE_INPUTS", None)
    if fn is None:
        return True
    wanted = inspect.getfullargspec(fn).args
    return fn(**{k: v for k, v in inputs.items() if k in wanted})


def run_node(cls, **inputs) -> tuple:
    """Execute one node as ComfyUI's executor does: ``(outputs tuple, ui dict or None)``.

    V3: a locked copy of the class (no attribute may be set on it or its instances)
    runs ``FUNCTION`` (``EXECUTE_NORMALIZED``); V1: ``getattr(cls(), cls.FUNCTION)``."""
    if is_v3(cls):
        locked = _locked(cls)
        out = getattr(cls, cls.FUNCTION).__func__(locked, **inputs)
        return tuple(out.args), out.ui
    out = getattr(cls(), cls.FUNCTION)(**inputs)
    if isinstance(out, dict):
        return tuple(out.get("result") or ()), out.get("ui")
    return tuple(out), None


def _locked(cls):
    def refuse_instance(self, name, value):
        raise AttributeError(f"Cannot set attribute '{name}' on immutable instance of {type(self).__name__}")

    class LockedMeta(type(cls)):
        def __setattr__(cls_, name, value):
            raise AttributeError(f"Cannot modify class attribute '{name}' on locked class '{cls_.__name__}'")

    clone = type(f"{cls.__name__}Clone", (cls,) + cls.__bases__, dict(cls.__dict__))
    return LockedMeta(clone.__name__, clone.__bases__, {**clone.__dict__, "__setattr__": refuse_instance})
