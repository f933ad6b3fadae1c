"""A minimal stand-in of ComfyUI's V3 node API (``comfy_api.latest``), for tests without ComfyUI.

Written from the behaviour of the real API (ComfyUI v0.3.64 and 0.33.0), not its code,
and only for what the pack uses:

* ``io.ComfyNode``: ``define_schema`` / ``execute`` classmethods; the V1 view ComfyUI's
  server and executor read (``GET_SCHEMA``, ``GET_NODE_INFO_V1``, ``INPUT_TYPES``,
  ``RETURN_TYPES`` ...); ``validate_inputs`` counts only when overridden;
* ``io.Schema`` (a dataclass: an unknown field is a ``TypeError``): ``finalize`` gives
  output nodes the hidden prompt / extra_pnginfo inputs, ``validate`` refuses repeated
  ids (0.3.64 also an output id equal to an input id), ``get_v1_info``;
* inputs / outputs: Boolean, Int, Float, String, Combo (V1 entry ``("COMBO", {"options":
  [...], "multiselect": False, ...})``), the socket types, ``io.Custom``; ``None``
  options are left out (``prune_dict``); 0.3.64's outputs have no display name unless
  given (the V1 ``output_name`` is then the type), 0.33's default to their id;
* ``io.NodeOutput``; ``ComfyExtension`` (async ``on_load`` / ``get_node_list``).

Two profiles: ``"0.33"`` and ``"0.3.64"`` (no ``advanced`` inputs, no ``search_aliases``,
fewer V1 info fields, an attribute set on every new node instance).  :func:`install`
puts one in ``sys.modules``.  What ComfyUI does with a pack and its node classes
(registration, validation, execution) is in :mod:`tests.helpers.comfy_executor_standin`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import inspect
import sys
import types
from abc import ABC, abstractmethod
from typing import Optional

PROFILES = ("0.33", "0.3.64")


def prune_dict(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


class classproperty:
    def __init__(self, f):
        self.f = f

    def __get__(self, obj, owner):
        return self.f(owner)


def first_real_override(cls, name: str):
    """``cls``'s own ``name`` if some class below the API base defines it, else None."""
    base = cls.GET_BASE_CLASS()
    base_func = getattr(base, name).__func__
    for c in cls.mro():
        if c is base:
            break
        if name in c.__dict__ and getattr(c, name).__func__ is not base_func:
            return getattr(cls, name)
    return None


def _without(init, dropped):
    """``init`` as a version whose signature lacks the keyword ``dropped`` (an older API)."""
    sig = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        if dropped in kwargs:
            raise TypeError(f"__init__() got an unexpected keyword argument '{dropped}'")
        return init(self, *args, **kwargs)

    wrapper.__signature__ = sig.replace(parameters=[p for n, p in sig.parameters.items() if n != dropped])
    return wrapper


def build(profile: str = "0.33"):
    """``(io, ComfyExtension)`` of one API profile."""
    if profile not in PROFILES:
        raise ValueError(profile)
    new = profile == "0.33"
    io = types.ModuleType("comfy_api.latest.io")

    class Input:
        io_type: str = None

        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, advanced=None):
            self.id, self.display_name, self.optional, self.tooltip = id, display_name, optional, tooltip
            self.lazy, self.advanced = lazy, advanced

        def as_dict(self):
            return prune_dict({"display_name": self.display_name, "optional": self.optional, "tooltip": self.tooltip,
                               "lazy": self.lazy, "advanced": self.advanced})

        def get_io_type(self):
            return self.io_type

    class WidgetInput(Input):
        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None,
                     socketless=None, force_input=None, advanced=None):
            super().__init__(id, display_name, optional, tooltip, lazy, advanced)
            self.default, self.socketless, self.force_input = default, socketless, force_input

        def as_dict(self):
            return {**super().as_dict(), **prune_dict({"default": self.default, "socketless": self.socketless,
                                                       "forceInput": self.force_input})}

    class Output:
        io_type: str = None

        def __init__(self, id=None, display_name=None, tooltip=None, is_output_list=False):
            self.id, self.tooltip, self.is_output_list = id, tooltip, is_output_list
            self.display_name = display_name if (display_name or not new) else id

    def comfytype(io_type: str, inputs=Input):
        def decorate(cls):
            cls.io_type = io_type
            if "Input" not in cls.__dict__:
                cls.Input = type("Input", (inputs,), {})
            if "Output" not in cls.__dict__:
                cls.Output = type("Output", (Output,), {})
            cls.Input.io_type = cls.Output.io_type = io_type
            if not new and "advanced" in inspect.signature(cls.Input.__init__).parameters:
                cls.Input.__init__ = _without(cls.Input.__init__, "advanced")
            return cls
        return decorate

    @comfytype("BOOLEAN")
    class Boolean:
        class Input(WidgetInput):
            def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None,
                         label_on=None, label_off=None, socketless=None, force_input=None, advanced=None):
                super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, force_input, advanced)
                self.label_on, self.label_off = label_on, label_off

            def as_dict(self):
                return {**super().as_dict(), **prune_dict({"label_on": self.label_on, "label_off": self.label_off})}

    class _Number(WidgetInput):
        def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, min=None,
                     max=None, step=None, control_after_generate=None, socketless=None, force_input=None,
                     advanced=None):
            super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, force_input, advanced)
            self.min, self.max, self.step, self.control_after_generate = min, max, step, control_after_generate

        def as_dict(self):
            return {**super().as_dict(), **prune_dict({"min": self.min, "max": self.max, "step": self.step,
                                                       "control_after_generate": self.control_after_generate})}

    @comfytype("INT")
    class Int:
        class Input(_Number):
            pass

    @comfytype("FLOAT")
    class Float:
        class Input(_Number):
            def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, default=None, min=None,
                         max=None, step=None, round=None, socketless=None, force_input=None, advanced=None):
                super().__init__(id, display_name, optional, tooltip, lazy, default, min, max, step, None, socketless,
                                 force_input, advanced)
                self.round = round

            def as_dict(self):
                return {**super().as_dict(), **prune_dict({"round": self.round})}

    @comfytype("STRING")
    class String:
        class Input(WidgetInput):
            def __init__(self, id, display_name=None, optional=False, tooltip=None, lazy=None, multiline=False,
                         placeholder=None, default=None, dynamic_prompts=None, socketless=None, force_input=None,
                         advanced=None):
                super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, force_input, advanced)
                self.multiline, self.placeholder, self.dynamic_prompts = multiline, placeholder, dynamic_prompts

            def as_dict(self):
                return {**super().as_dict(), **prune_dict({"multiline": self.multiline, "placeholder": self.placeholder,
                                                           "dynamicPrompts": self.dynamic_prompts})}

    @comfytype("COMBO")
    class Combo:
        class Input(WidgetInput):
            def __init__(self, id, options=None, display_name=None, optional=False, tooltip=None, lazy=None,
                         default=None, control_after_generate=None, upload=None, socketless=None, advanced=None):
                if isinstance(options, type) and issubclass(options, enum.Enum):
                    options = [v.value for v in options]
                super().__init__(id, display_name, optional, tooltip, lazy, default, socketless, None, advanced)
                self.options, self.control_after_generate, self.multiselect = options, control_after_generate, False

            def as_dict(self):
                return {**super().as_dict(), **prune_dict({"multiselect": self.multiselect, "options": self.options,
                                                           "control_after_generate": self.control_after_generate})}

    sockets = {"Image": "IMAGE", "Mask": "MASK", "Latent": "LATENT", "Model": "MODEL", "Vae": "VAE", "Clip": "CLIP",
               "ClipVision": "CLIP_VISION", "Video": "VIDEO", "Audio": "AUDIO"}
    for attr, io_type in sockets.items():
        setattr(io, attr, comfytype(io_type)(type(attr, (), {})))

    def Custom(io_type: str):  # noqa: N802 - the real API's name
        return comfytype(io_type)(type("CustomComfyType", (), {}))

    class Hidden(str, enum.Enum):
        unique_id = "UNIQUE_ID"
        prompt = "PROMPT"
        extra_pnginfo = "EXTRA_PNGINFO"
        dynprompt = "DYNPROMPT"

    fields = dict(node_id=(str, dataclasses.MISSING), display_name=(str, None), category=(str, "sd"),
                  inputs=(list, None), outputs=(list, None), hidden=(list, None), description=(str, ""))
    if new:
        fields["search_aliases"] = (list, None)
    fields.update(is_input_list=(bool, False), is_output_node=(bool, False), is_deprecated=(bool, False),
                  is_experimental=(bool, False), is_api_node=(bool, False), not_idempotent=(bool, False),
                  enable_expand=(bool, False))

    def finalize(self):
        self.inputs, self.outputs, self.hidden = list(self.inputs or []), list(self.outputs or []), \
            list(self.hidden or [])
        if new and self.search_aliases is None:
            self.search_aliases = []
        if self.is_output_node:
            for h in (Hidden.prompt, Hidden.extra_pnginfo):
                if h not in self.hidden:
                    self.hidden.append(h)
        for i, o in enumerate(self.outputs):
            if o.id is None:
                o.id = f"_{i}_{o.io_type}_"

    def validate(self):
        ins, outs = [i.id for i in self.inputs], [o.id for o in self.outputs]
        issues = []
        if len(set(ins)) != len(ins):
            issues.append(f"Input ids must be unique: {ins}")
        if len(set(outs)) != len(outs):
            issues.append(f"Output ids must be unique: {outs}")
        if not new and set(ins) & set(outs):
            issues.append(f"Ids must be unique between inputs and outputs, but {set(ins) & set(outs)} are not.")
        if issues:
            raise ValueError("\n".join(issues))

    def get_v1_info(self, cls) -> dict:
        inputs = {"required": {}}
        for i in self.inputs:
            d = i.as_dict()
            d.pop("optional", None)
            inputs.setdefault("optional" if i.optional else "required", {})[i.id] = (i.get_io_type(), d)
        for h in self.hidden:
            inputs.setdefault("hidden", {})[h.name] = (h.value,)
        info = dict(input=inputs, input_order={k: list(v) for k, v in inputs.items()},
                    output=[o.io_type for o in self.outputs], output_is_list=[o.is_output_list for o in self.outputs],
                    output_name=[o.display_name or o.io_type for o in self.outputs],
                    output_tooltips=[o.tooltip or None for o in self.outputs], name=self.node_id,
                    display_name=self.display_name, description=self.description,
                    python_module=getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"), category=self.category,
                    output_node=self.is_output_node, deprecated=self.is_deprecated,
                    experimental=self.is_experimental, api_node=self.is_api_node)
        if new:
            info.update(is_input_list=self.is_input_list, search_aliases=self.search_aliases or None)
        return info

    Schema = dataclasses.make_dataclass(
        "Schema", [(k, t) if d is dataclasses.MISSING else (k, t, dataclasses.field(default=d))
                   for k, (t, d) in fields.items()],
        namespace={"finalize": finalize, "validate": validate, "get_v1_info": get_v1_info})

    class NodeOutput:
        def __init__(self, *args, ui=None, expand=None, block_execution=None):
            self.args, self.ui, self.expand, self.block_execution = args, ui, expand, block_execution

        @property
        def result(self):
            return self.args if self.args else None

        def __getitem__(self, index):
            return self.args[index]

    class ComfyNode:
        SCHEMA = None
        RELATIVE_PYTHON_MODULE = None

        @classmethod
        def define_schema(cls):
            raise NotImplementedError

        @classmethod
        def execute(cls, **kwargs):
            raise NotImplementedError

        @classmethod
        def validate_inputs(cls, **kwargs):
            raise NotImplementedError

        @classmethod
        def fingerprint_inputs(cls, **kwargs):
            raise NotImplementedError

        @classmethod
        def check_lazy_status(cls, **kwargs):
            return [k for k, v in kwargs.items() if v is None]

        @classmethod
        def GET_BASE_CLASS(cls):  # noqa: N802
            return ComfyNode

        def __init__(self):
            self.VALIDATE_CLASS()
            if not new:  # 0.3.64 keeps per-instance state (its resources)
                self.local_resources = None

        @classmethod
        def VALIDATE_CLASS(cls):  # noqa: N802
            for name in ("define_schema", "execute"):
                if first_real_override(cls, name) is None:
                    raise Exception(f"No {name} function was defined for node class {cls.__name__}.")

        @classmethod
        def FINALIZE_SCHEMA(cls):  # noqa: N802
            schema = cls.define_schema()
            schema.finalize()
            return schema

        @classmethod
        def GET_SCHEMA(cls):  # noqa: N802
            cls.VALIDATE_CLASS()
            schema = cls.FINALIZE_SCHEMA()
            schema.validate()
            cls.SCHEMA = schema
            return schema

        @classmethod
        def GET_NODE_INFO_V1(cls):  # noqa: N802
            return cls.GET_SCHEMA().get_v1_info(cls)

        @classmethod
        def INPUT_TYPES(cls):  # noqa: N802
            return cls.FINALIZE_SCHEMA().get_v1_info(cls)["input"]

        @classmethod
        def EXECUTE_NORMALIZED(cls, *args, **kwargs):  # noqa: N802
            out = cls.execute(*args, **kwargs)
            if out is None:
                return NodeOutput()
            if isinstance(out, NodeOutput):
                return out
            if isinstance(out, tuple):
                return NodeOutput(*out)
            if isinstance(out, dict):
                return NodeOutput(*(out.get("result") or ()), ui=out.get("ui"), expand=out.get("expand"))
            raise Exception(f"Invalid return type from node: {type(out)}")

        FUNCTION = "EXECUTE_NORMALIZED"

    def _v1_view(key):
        return classproperty(lambda cls: key(cls.GET_SCHEMA()))

    ComfyNode.DESCRIPTION = _v1_view(lambda s: s.description)
    ComfyNode.CATEGORY = _v1_view(lambda s: s.category)
    ComfyNode.OUTPUT_NODE = _v1_view(lambda s: s.is_output_node)
    ComfyNode.RETURN_TYPES = _v1_view(lambda s: [o.io_type for o in s.outputs])
    ComfyNode.RETURN_NAMES = _v1_view(lambda s: [o.display_name or o.io_type for o in s.outputs])
    ComfyNode.OUTPUT_TOOLTIPS = _v1_view(lambda s: [o.tooltip or None for o in s.outputs])
    ComfyNode.OUTPUT_IS_LIST = _v1_view(lambda s: [o.is_output_list for o in s.outputs])

    for name, value in dict(Input=Input, WidgetInput=WidgetInput, Output=Output, comfytype=comfytype,
                            Boolean=Boolean, Int=Int, Float=Float, String=String, Combo=Combo, Custom=Custom,
                            Hidden=Hidden, Schema=Schema, NodeOutput=NodeOutput, ComfyNode=ComfyNode).items():
        setattr(io, name, value)

    class ComfyExtension(ABC):
        async def on_load(self) -> None:
            pass

        @abstractmethod
        async def get_node_list(self) -> list:
            ...

    return io, ComfyExtension


def install(profile: Optional[str] = "0.33") -> None:
    """Make ``comfy_api.latest`` importable as ``profile``; ``None``: a ComfyUI without it (import fails)."""
    for name in [m for m in sys.modules if m == "comfy_api" or m.startswith("comfy_api.")]:
        del sys.modules[name]
    if profile is None:
        sys.modules["comfy_api"] = None  # ``import comfy_api...`` raises ImportError
        return
    io, extension = build(profile)
    pkg, latest = types.ModuleType("comfy_api"), types.ModuleType("comfy_api.latest")
    pkg.__path__, latest.__path__ = [], []
    latest.io, latest.IO, latest.ComfyExtension, latest.PROFILE = io, io, extension, profile
    pkg.latest = latest
    sys.modules.update({"comfy_api": pkg, "comfy_api.latest": latest, "comfy_api.latest.io": io})


def current_profile() -> Optional[str]:
    latest = sys.modules.get("comfy_api.latest")
    return getattr(latest, "PROFILE", None)


@contextlib.contextmanager
def swapped(profile: Optional[str]):
    """``comfy_api.latest`` as ``profile`` inside the block, the previous modules (the same objects) after it."""
    saved = {k: v for k, v in sys.modules.items() if k == "comfy_api" or k.startswith("comfy_api.")}
    try:
        install(profile)
        yield
    finally:
        for name in [m for m in sys.modules if m == "comfy_api" or m.startswith("comfy_api.")]:
            del sys.modules[name]
        sys.modules.update(saved)
