"""Node declarations, written once, turned into ComfyUI node classes of either node API.

A node module declares each node as a plain class with a ``declare()`` classmethod
returning a :class:`Node` (id, display name, category, description, inputs, outputs,
the name of the method doing the work) and that method itself, which returns a
tuple of outputs or ``{"ui": ..., "result": (...)}``::

    class VidSegSelectLabels:
        @classmethod
        def declare(cls) -> Node:
            return Node("VidSegSelectLabels", "Select Labels as Mask (VidSeg)", "VidSeg/masks", "...",
                        inputs=(Socket("labels", VIDSEG_LABELS, "..."), String("select", "1", "...")),
                        outputs=(Out("mask", "MASK", "..."),), function="select")

        def select(self, labels, select="1"): ...

An optional ``validate_inputs`` classmethod checks widget values before a run.

:func:`comfy_classes` makes the classes ComfyUI registers:

* V3 (``comfy_api.latest``; tested on ComfyUI v0.3.64 and 0.33.0): subclasses of
  ``io.ComfyNode`` whose ``define_schema`` builds an ``io.Schema`` from the declaration
  and whose ``execute`` runs the work method and returns an ``io.NodeOutput``.  Options
  an older V3 API lacks are left out with one log line each: ``advanced`` (expert inputs
  that newer frontends fold away; older ones show them) and ``search_aliases``.
* V1 (no ``comfy_api.latest``, or a V3 API that refuses the declarations): classes
  with ``INPUT_TYPES`` / ``RETURN_TYPES`` / ``FUNCTION``..., logged once.

Both give the same ``/object_info`` inputs and outputs (names, order, types, defaults,
ranges, tooltips), so saved workflows load either way.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
from typing import Any, Optional, Sequence, Tuple

log = logging.getLogger("vidseg")

#: socket types with a class of their own in ``comfy_api.latest.io`` (others: ``io.Custom``)
CORE_SOCKETS = {"IMAGE": "Image", "MASK": "Mask", "LATENT": "Latent", "MODEL": "Model", "VAE": "Vae",
                "CLIP": "Clip", "CLIP_VISION": "ClipVision", "VIDEO": "Video", "AUDIO": "Audio"}
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


@dataclasses.dataclass(frozen=True)
class In:
    """One input.  ``type``: a widget type (INT, FLOAT, STRING, BOOLEAN, COMBO) or a socket type.
    ``advanced``: an expert setting the frontend may fold away (it still has its widget and value)."""

    name: str
    type: str
    tooltip: str
    optional: bool = False
    default: Any = None
    min: Any = None
    max: Any = None
    step: Any = None
    options: Tuple[str, ...] = ()
    multiline: Optional[bool] = None
    control_after_generate: Optional[bool] = None
    advanced: bool = False

    @property
    def widget(self) -> bool:
        return self.type in WIDGET_TYPES


def Int(name, default, min, max, tooltip, step=1, **kw) -> In:  # noqa: N802 - reads like the V3 API
    return In(name, "INT", tooltip, default=default, min=min, max=max, step=step, **kw)


def Float(name, default, min, max, step, tooltip, **kw) -> In:  # noqa: N802
    return In(name, "FLOAT", tooltip, default=default, min=min, max=max, step=step, **kw)


def String(name, default, tooltip, **kw) -> In:  # noqa: N802
    return In(name, "STRING", tooltip, default=default, **kw)


def Boolean(name, default, tooltip, **kw) -> In:  # noqa: N802
    return In(name, "BOOLEAN", tooltip, default=default, **kw)


def Combo(name, options: Sequence[str], tooltip, default=None, **kw) -> In:  # noqa: N802
    return In(name, "COMBO", tooltip, default=default, options=tuple(options), **kw)


def Socket(name, type, tooltip, optional=False) -> In:  # noqa: N802
    return In(name, type, tooltip, optional=optional)


@dataclasses.dataclass(frozen=True)
class Out:
    name: str
    type: str
    tooltip: str


@dataclasses.dataclass(frozen=True)
class Node:
    node_id: str
    display_name: str
    category: str
    description: str
    inputs: Tuple[In, ...]
    outputs: Tuple[Out, ...]
    function: str
    output_node: bool = False
    search_aliases: Tuple[str, ...] = ()


# ------------------------------------------------------------------ V1
def v1_entry(i: In) -> tuple:
    """The V1 ``INPUT_TYPES`` entry of one input."""
    opts = {"default": i.default, "min": i.min, "max": i.max, "step": i.step, "multiline": i.multiline,
            "control_after_generate": i.control_after_generate, "tooltip": i.tooltip}
    opts = {k: v for k, v in opts.items() if v is not None}
    return (list(i.options) if i.type == "COMBO" else i.type, opts)


def v1_input_types(node: Node) -> dict:
    types = {"required": {i.name: v1_entry(i) for i in node.inputs if not i.optional}}
    optional = {i.name: v1_entry(i) for i in node.inputs if i.optional}
    if optional:
        types["optional"] = optional
    return types


def v1_class(impl: type) -> type:
    """``impl`` as a V1 node class."""
    node = impl.declare()
    attrs = {"INPUT_TYPES": classmethod(lambda cls: v1_input_types(impl.declare())),
             "RETURN_TYPES": tuple(o.type for o in node.outputs), "RETURN_NAMES": tuple(o.name for o in node.outputs),
             "OUTPUT_TOOLTIPS": tuple(o.tooltip for o in node.outputs), "FUNCTION": node.function,
             "CATEGORY": node.category, "DESCRIPTION": node.description, "SEARCH_ALIASES": list(node.search_aliases),
             "__module__": impl.__module__, "__qualname__": impl.__qualname__, "__doc__": impl.__doc__}
    if node.output_node:
        attrs["OUTPUT_NODE"] = True
    if "validate_inputs" in vars(impl):
        attrs["VALIDATE_INPUTS"] = classmethod(vars(impl)["validate_inputs"].__func__)
    return type(impl.__name__, (impl,), attrs)


# ------------------------------------------------------------------ V3
class V3Builder:
    """Builds ``io.Schema`` objects with what the installed ``io`` supports."""

    def __init__(self, io):
        self.io = io
        self.advanced = "advanced" in inspect.signature(io.Int.Input.__init__).parameters
        self.search_aliases = "search_aliases" in {f.name for f in dataclasses.fields(io.Schema)}
        self._custom: dict = {}

    def missing(self) -> list:
        """What this V3 API lacks that the declarations use, as readable notes."""
        notes = []
        if not self.advanced:
            notes.append("no 'advanced' inputs (expert settings are shown like the others)")
        if not self.search_aliases:
            notes.append("no 'search_aliases' (the nodes are found by their names only)")
        return notes

    def socket(self, type_name: str):
        core = CORE_SOCKETS.get(type_name)
        if core and hasattr(self.io, core):
            return getattr(self.io, core)
        if type_name not in self._custom:  # same socket type string either way
            self._custom[type_name] = self.io.Custom(type_name)
        return self._custom[type_name]

    def input(self, i: In):
        io = self.io
        kw = {"tooltip": i.tooltip, "optional": i.optional}
        if i.advanced and self.advanced:
            kw["advanced"] = True
        if not i.widget:
            return self.socket(i.type).Input(i.name, **kw)
        if i.default is not None:
            kw["default"] = i.default
        if i.type == "COMBO":
            return io.Combo.Input(i.name, options=list(i.options), **kw)
        if i.type in ("INT", "FLOAT"):
            kw.update(min=i.min, max=i.max, step=i.step)
            if i.control_after_generate is not None:
                kw["control_after_generate"] = i.control_after_generate
            return (io.Int if i.type == "INT" else io.Float).Input(i.name, **kw)
        if i.type == "STRING":
            return io.String.Input(i.name, multiline=bool(i.multiline), **kw)
        return io.Boolean.Input(i.name, **kw)

    def schema(self, node: Node):
        """``io.Schema`` of ``node``.  Output ids are the output names, except where an input has the same
        name (0.3.64 refuses an id used twice); the names users see are the display names."""
        inputs = {i.name for i in node.inputs}
        outputs = [self.socket(o.type).Output(o.name + "_out" if o.name in inputs else o.name, display_name=o.name,
                                              tooltip=o.tooltip) for o in node.outputs]
        kw = {}
        if node.search_aliases and self.search_aliases:
            kw["search_aliases"] = list(node.search_aliases)
        return self.io.Schema(node_id=node.node_id, display_name=node.display_name, category=node.category,
                              description=node.description, inputs=[self.input(i) for i in node.inputs],
                              outputs=outputs, is_output_node=node.output_node, **kw)


def node_output(io, out):
    """A work method's tuple / ``{"ui", "result"}`` dict as an ``io.NodeOutput``."""
    if isinstance(out, dict):
        return io.NodeOutput(*(out.get("result") or ()), ui=out.get("ui"))
    return io.NodeOutput(*out)


def v3_class(impl: type, builder: V3Builder) -> type:
    """``impl`` as a V3 node class (``io.ComfyNode``)."""
    function = impl.declare().function

    def define_schema(cls):
        return builder.schema(impl.declare())

    def execute(cls, **inputs):  # ComfyUI runs this on a locked copy of the class: the work runs on ``impl``
        return node_output(builder.io, getattr(impl(), function)(**inputs))

    attrs = {"define_schema": classmethod(define_schema), "execute": classmethod(execute),
             "__module__": impl.__module__, "__qualname__": impl.__qualname__, "__doc__": impl.__doc__}
    return type(impl.__name__, (impl, builder.io.ComfyNode), attrs)


# ------------------------------------------------------------------ both
def comfy_classes(impls: Sequence[type], api) -> Tuple[str, list]:
    """``("v3" | "v1", node classes)`` for the declared classes ``impls``.  ``api``: ``(io,
    ComfyExtension)`` of ComfyUI's V3 API, or None when it has none."""
    if api is not None:
        try:
            builder = V3Builder(api[0])
            classes = [v3_class(c, builder) for c in impls]
            for cls in classes:  # what ComfyUI does at registration: a refusal shows here, not in the graph
                cls.GET_SCHEMA()
        except Exception as exc:  # noqa: BLE001 - an API we do not know: fall back, keep the pack up
            log.warning("[VidSeg] ComfyUI's V3 node API refused the node declarations (%s: %s); the nodes are "
                        "registered with the V1 node API instead (same inputs and outputs).", type(exc).__name__, exc)
        else:
            for note in builder.missing():
                log.info("[VidSeg] This ComfyUI's V3 node API has %s.", note)
            return "v3", classes
    return "v1", [v1_class(c) for c in impls]


def extension_entrypoint(extension_base, classes: Sequence[type]):
    """``comfy_entrypoint`` of the pack: an async function returning a ``ComfyExtension`` listing ``classes``."""

    class VidSegExtension(extension_base):
        async def get_node_list(self):
            return list(classes)

    async def comfy_entrypoint():
        return VidSegExtension()

    return comfy_entrypoint
