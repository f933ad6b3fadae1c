"""ComfyUI workflow tooling for the pack (developer side; ComfyUI never imports this).

* :func:`object_info` -- ``/object_info``-style entries built from V1 node classes
  (the pack's ``NODE_CLASS_MAPPINGS``), so the same code handles our nodes and the
  core specs captured from real servers (:mod:`tools.comfy_core_nodes`) or a live reply;
* :class:`Graph` -- builds UI-format workflows (what Save / Export writes,
  docs/design/comfyui_integration.md#example-workflows) with widget values in the positional order the frontend uses;
* :func:`ui_to_api` -- the UI -> API converter (docs/design/comfyui_integration.md#running-a-workflow-without-the-browser).

Frontend rules reproduced here: an INT input named ``seed`` / ``noise_seed`` gets a
"control after generate" widget unless its spec sets ``control_after_generate``
to false (or it is true); that widget's value follows the seed in
``widgets_values``; upload combos (``image_upload`` / ``video_upload``) are
followed by an ``"image"`` upload-button value; a dynamic combo (V3 ``DynamicCombo``) is
followed by the widgets of its chosen option (:func:`widget_layout`).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


# ------------------------------------------------------------------ specs
def node_info(cls, name: str, display_name: Optional[str] = None) -> dict:
    """The ``/object_info`` entry of one V1 node class (as ComfyUI's ``server.node_info`` builds it)."""
    types = cls.INPUT_TYPES()
    info = {"input": {}, "input_order": {}}
    for section in ("required", "optional"):
        if section in types:
            info["input"][section] = {k: [v[0], dict(v[1]) if len(v) > 1 else {}] for k, v in types[section].items()}
            info["input_order"][section] = list(types[section])
    if "hidden" in types:
        info["input_order"]["hidden"] = list(types["hidden"])
    info["output"] = list(cls.RETURN_TYPES)
    info["output_name"] = list(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES)
    info["output_is_list"] = list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)))
    info["output_tooltips"] = list(getattr(cls, "OUTPUT_TOOLTIPS", ()))
    info["name"] = name
    info["display_name"] = display_name or name
    info["description"] = getattr(cls, "DESCRIPTION", "")
    info["category"] = getattr(cls, "CATEGORY", "")
    info["output_node"] = bool(getattr(cls, "OUTPUT_NODE", False))
    return info


def object_info(mappings: Dict[str, type], display_names: Optional[Dict[str, str]] = None,
                extra: Optional[Dict[str, dict]] = None) -> Dict[str, dict]:
    """``/object_info`` for ``mappings`` (node id -> class), plus already-made entries in ``extra``."""
    out = {k: node_info(c, k, (display_names or {}).get(k)) for k, c in mappings.items()}
    for k, v in (extra or {}).items():
        out.setdefault(k, copy.deepcopy(v))
    return out


#: a V3 ``DynamicCombo`` (newer ComfyUI, e.g. core Save Video's ``codec``): a combo whose chosen option adds
#: its own inputs, named ``<combo>.<input>`` in the prompt
DYNAMIC_COMBO = "COMFY_DYNAMICCOMBO_V3"


def input_kind(spec: list) -> str:
    """``COMBO`` for option lists (legacy list, V3 ``["COMBO", {...}]`` or a dynamic combo), else the type."""
    t = spec[0]
    if isinstance(t, list) or t == DYNAMIC_COMBO:
        return "COMBO"
    return str(t)


def combo_options(spec: list) -> List[Any]:
    t = spec[0]
    if isinstance(t, list):
        return list(t)
    return [o["key"] if isinstance(o, dict) else o for o in (spec[1] if len(spec) > 1 else {}).get("options", [])]


def dynamic_inputs(spec: list, value) -> List[Tuple[str, str, list]]:
    """The inputs a dynamic combo adds for the option ``value`` (``(section, name, spec)``, unprefixed)."""
    if spec[0] != DYNAMIC_COMBO:
        return []
    for option in (spec[1] if len(spec) > 1 else {}).get("options", []):
        if isinstance(option, dict) and option.get("key") == value:
            inputs = option.get("inputs") or {}
            return [(section, name, sp) for section in ("required", "optional")
                    for name, sp in (inputs.get(section) or {}).items()]
    return []


def is_widget(spec: list) -> bool:
    opts = spec[1] if len(spec) > 1 else {}
    return input_kind(spec) in WIDGET_TYPES and not opts.get("forceInput", False)


def has_control_widget(name: str, spec: list) -> bool:
    """Whether the frontend adds a "control after generate" widget after this input."""
    if input_kind(spec) not in ("INT", "FLOAT", "COMBO"):
        return False
    opts = spec[1] if len(spec) > 1 else {}
    flag = opts.get("control_after_generate")
    if flag is None:
        return input_kind(spec) == "INT" and name in ("seed", "noise_seed")
    return bool(flag)


def has_upload_widget(spec: list) -> bool:
    opts = spec[1] if len(spec) > 1 else {}
    return bool(opts.get("image_upload") or opts.get("video_upload"))


def ordered_inputs(info: dict) -> List[Tuple[str, str, list]]:
    """``(section, name, spec)`` in ``input_order`` (required, then optional)."""
    out = []
    for section in ("required", "optional"):
        specs = info["input"].get(section, {})
        for name in info.get("input_order", {}).get(section, list(specs)):
            out.append((section, name, specs[name]))
    return out


def widget_layout(info: dict, values: Optional[List[Any]] = None) -> List[Tuple[str, list, str]]:
    """The frontend's ``widgets_values`` slots of a node: ``(input name, spec, role)`` in order, role
    ``value`` / ``control`` (after a seed) / ``upload`` (after an upload combo).  A dynamic combo's chosen
    option (from ``values`` at its slot, else its default) adds its own inputs right after it, named
    ``<combo>.<input>``."""
    out: List[Tuple[str, list, str]] = []

    def walk(entries, prefix):
        for _, name, spec in entries:
            if not is_widget(spec):
                continue
            full = prefix + name
            slot = len(out)
            out.append((full, spec, "value"))
            if has_control_widget(name, spec):
                out.append((full, spec, "control"))
            if has_upload_widget(spec):
                out.append((full, spec, "upload"))
            if spec[0] == DYNAMIC_COMBO:
                chosen = values[slot] if values is not None and slot < len(values) else default_value(spec)
                walk(dynamic_inputs(spec, chosen), full + ".")

    walk(ordered_inputs(info), "")
    return out


def default_value(spec: list):
    opts = spec[1] if len(spec) > 1 else {}
    if "default" in opts:
        return opts["default"]
    kind = input_kind(spec)
    if kind == "COMBO":
        options = combo_options(spec)
        return options[0] if options else ""
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}.get(kind)


# ------------------------------------------------------------------ UI graph
class Graph:
    """Builds one UI-format workflow from node specs (``object_info``-style dict)."""

    def __init__(self, specs: Dict[str, dict], cnr: Optional[Dict[str, Tuple[str, str]]] = None):
        self.specs = specs
        self.cnr = cnr or {}
        self.nodes: List[dict] = []
        self.links: List[list] = []
        self.groups: List[dict] = []

    def _node(self, node_id: int) -> dict:
        return next(n for n in self.nodes if n["id"] == node_id)

    def add(self, node_type: str, pos=(0, 0), widgets: Optional[Dict[str, Any]] = None, title: Optional[str] = None,
            size=None) -> int:
        """Add a node; ``widgets`` overrides widget defaults by input name."""
        if node_type not in self.specs:
            raise KeyError(f"unknown node type {node_type}")
        info = self.specs[node_type]
        widgets = dict(widgets or {})
        inputs, values = [], []
        for section, name, spec in ordered_inputs(info):
            if not is_widget(spec):
                entry = {"name": name, "type": input_kind(spec), "link": None}
                if section == "optional":
                    entry["shape"] = 7
                inputs.append(entry)
        layout = widget_layout(info)
        for name in widgets:  # a dynamic combo's choice decides which widgets follow it
            if any(n == name and sp[0] == DYNAMIC_COMBO for n, sp, _ in layout):
                layout = widget_layout(info, [widgets.get(n, default_value(sp)) if r == "value" else None
                                              for n, sp, r in layout])
        for name, spec, role in layout:
            if role == "value":
                values.append(widgets.pop(name) if name in widgets else default_value(spec))
            else:
                values.append("fixed" if role == "control" else "image")
        if widgets:
            raise KeyError(f"{node_type} has no widget(s) {sorted(widgets)}")
        outputs = [{"name": n, "type": t, "links": [], "slot_index": i}
                   for i, (t, n) in enumerate(zip(info["output"], info["output_name"]))]
        node_id = len(self.nodes) + 1
        pack, ver = self.cnr.get(node_type, ("comfy-core", "0.3.64"))
        rows = len(values) + max(len(inputs), len(outputs))
        node = {"id": node_id, "type": node_type, "pos": [float(pos[0]), float(pos[1])],
                "size": list(size or (320.0, 46.0 + 24.0 * rows)), "flags": {}, "order": 0, "mode": 0,
                "inputs": inputs, "outputs": outputs,
                "properties": {"Node name for S&R": node_type, "cnr_id": pack, "ver": ver},
                "widgets_values": values}
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node_id

    def link(self, src: int, src_output, dst: int, dst_input: str) -> int:
        """Connect output ``src_output`` (name or index) of ``src`` to input ``dst_input`` of ``dst``."""
        s, d = self._node(src), self._node(dst)
        slot = src_output if isinstance(src_output, int) else \
            next(i for i, o in enumerate(s["outputs"]) if o["name"] == src_output)
        out = s["outputs"][slot]
        try:
            j = next(i for i, x in enumerate(d["inputs"]) if x["name"] == dst_input)
        except StopIteration:  # a widget converted to an input
            spec = dict((n, sp) for _, n, sp in ordered_inputs(self.specs[d["type"]]))[dst_input]
            d["inputs"].append({"name": dst_input, "type": input_kind(spec), "widget": {"name": dst_input},
                                "link": None})
            j = len(d["inputs"]) - 1
        if d["inputs"][j]["link"] is not None:
            raise ValueError(f"input {dst_input} of node {dst} is already linked")
        if out["type"] != d["inputs"][j]["type"]:
            raise TypeError(f"{s['type']}.{out['name']} ({out['type']}) -> {d['type']}.{dst_input} "
                            f"({d['inputs'][j]['type']})")
        link_id = len(self.links) + 1
        self.links.append([link_id, src, slot, dst, j, out["type"]])
        out["links"].append(link_id)
        d["inputs"][j]["link"] = link_id
        return link_id

    def group(self, title: str, bounding, color: str = "#3f789e") -> None:
        self.groups.append({"id": len(self.groups) + 1, "title": title, "bounding": list(bounding), "color": color,
                            "font_size": 24, "flags": {}})

    def _orders(self) -> None:
        deps = {n["id"]: set() for n in self.nodes}
        for _, src, _, dst, _, _ in self.links:
            deps[dst].add(src)
        done: List[int] = []
        while len(done) < len(self.nodes):
            ready = sorted(i for i, d in deps.items() if i not in done and d <= set(done))
            if not ready:
                raise ValueError("the graph has a cycle")
            done.extend(ready)
        for order, i in enumerate(done):
            self._node(i)["order"] = order

    def to_ui(self, extra: Optional[dict] = None) -> dict:
        self._orders()
        nodes = copy.deepcopy(self.nodes)
        for n in nodes:
            for o in n["outputs"]:
                if not o["links"]:
                    o["links"] = None  # what the frontend writes for unconnected outputs
        wf = {"id": "00000000-0000-4000-8000-000000000000", "revision": 0,
              "last_node_id": len(self.nodes), "last_link_id": len(self.links),
              "nodes": nodes, "links": copy.deepcopy(self.links), "groups": copy.deepcopy(self.groups),
              "config": {}, "extra": {"ds": {"scale": 0.75, "offset": [40.0, 40.0]}, "frontendVersion": "1.27.10"},
              "version": 0.4}
        if extra:
            wf["extra"].update(extra)
        return wf


# ------------------------------------------------------------------ UI -> API
def ui_to_api(workflow: dict, specs: Dict[str, dict]) -> Dict[str, dict]:
    """Convert a UI-format workflow to the API prompt of ``POST /prompt`` (docs/design/comfyui_integration.md#running-a-workflow-without-the-browser)."""
    links = {l[0]: l for l in workflow.get("links", [])}
    api: Dict[str, dict] = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) in (2, 4):
            continue
        ntype = node["type"]
        if ntype not in specs:
            raise KeyError(f"node {node['id']}: unknown node type {ntype!r}")
        info = specs[ntype]
        inputs: Dict[str, Any] = {}
        linked = set()
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                l = links[inp["link"]]
                inputs[inp["name"]] = [str(l[1]), l[2]]
                linked.add(inp["name"])
        values = node.get("widgets_values") or []
        if isinstance(values, dict):
            values = []
        for k, (name, spec, role) in enumerate(widget_layout(info, values)):
            if role == "value" and name not in linked:
                # a value the file lacks (the node gained the widget later): the frontend's default
                inputs[name] = values[k] if k < len(values) else default_value(spec)
        entry = {"class_type": ntype, "inputs": inputs}
        if node.get("title"):
            entry["_meta"] = {"title": node["title"]}
        api[str(node["id"])] = entry
    return api


#: combos whose options are the user's files (any string is accepted by the checks)
DYNAMIC_COMBOS = {("VidSegLoadModel", "model")}


def widget_values_problems(workflow: dict, specs: Dict[str, dict], dynamic=DYNAMIC_COMBOS,
                           missing_optional_ok: bool = False) -> List[str]:
    """Count / type / range problems of every node's ``widgets_values`` (empty list = valid).

    Combo values must be among the options unless the combo lists the user's files
    (``dynamic`` pairs, or specs marked ``"dynamic"`` / ``"partial"``).  ``missing_optional_ok``: a node
    may lack trailing values of *optional* inputs (a workflow saved by an older ComfyUI, before the node
    gained them: the frontend gives them their defaults)."""
    problems = []
    for node in workflow["nodes"]:
        info = specs.get(node["type"])
        if info is None:
            problems.append(f"node {node['id']}: unknown type {node['type']}")
            continue
        values = list(node.get("widgets_values") or [])
        expected = []
        for name, spec, role in widget_layout(info, values):
            if role == "value":
                expected.append((name, spec))
            elif role == "control":
                expected.append((name + ":control", ["COMBO", {"options": ["fixed", "increment", "decrement",
                                                                           "randomize"]}]))
            else:
                expected.append((name + ":upload", ["STRING", {}]))
        optional = set(info["input"].get("optional", {}))
        if (missing_optional_ok and len(values) < len(expected)
                and all(name.split(":")[0].split(".")[0] in optional for name, _ in expected[len(values):])):
            expected = expected[:len(values)]
        if len(values) != len(expected):
            problems.append(f"node {node['id']} {node['type']}: {len(values)} widget values, expected "
                            f"{len(expected)} ({[n for n, _ in expected]})")
            continue
        for (name, spec), v in zip(expected, values):
            kind, opts = input_kind(spec), (spec[1] if len(spec) > 1 else {})
            where = f"node {node['id']} {node['type']}.{name} = {v!r}"
            if kind == "INT":
                if not isinstance(v, int) or isinstance(v, bool):
                    problems.append(f"{where}: not an integer")
                elif not opts.get("min", v) <= v <= opts.get("max", v):
                    problems.append(f"{where}: outside {opts.get('min')}..{opts.get('max')}")
            elif kind == "FLOAT":
                if not isinstance(v, (int, float)) or isinstance(v, bool):
                    problems.append(f"{where}: not a number")
                elif not opts.get("min", v) <= v <= opts.get("max", v):
                    problems.append(f"{where}: outside {opts.get('min')}..{opts.get('max')}")
            elif kind == "STRING":
                if not isinstance(v, str):
                    problems.append(f"{where}: not a string")
            elif kind == "BOOLEAN":
                if not isinstance(v, bool):
                    problems.append(f"{where}: not a boolean")
            elif kind == "COMBO":
                options = combo_options(spec)
                if not isinstance(v, str):
                    problems.append(f"{where}: not a string")
                elif (v not in options and not opts.get("partial") and not opts.get("dynamic")
                      and (node["type"], name) not in dynamic):
                    problems.append(f"{where}: not one of {options}")
    return problems


def link_problems(workflow: dict, specs: Dict[str, dict]) -> List[str]:
    """Links whose ends do not exist or whose types disagree with the node specs."""
    nodes = {n["id"]: n for n in workflow["nodes"]}
    problems = []
    for link_id, src, slot, dst, dslot, ltype in workflow.get("links", []):
        if src not in nodes or dst not in nodes:
            problems.append(f"link {link_id}: missing node")
            continue
        s_info = specs.get(nodes[src]["type"])
        if s_info is None:
            continue
        if slot >= len(s_info["output"]) or s_info["output"][slot] != ltype:
            problems.append(f"link {link_id}: output {slot} of {nodes[src]['type']} is not {ltype}")
        d_inp = nodes[dst]["inputs"][dslot] if dslot < len(nodes[dst]["inputs"]) else None
        if d_inp is None or d_inp.get("link") != link_id:
            problems.append(f"link {link_id}: input slot {dslot} of node {dst} does not point back to it")
            continue
        spec = dict((n, sp) for _, n, sp in ordered_inputs(specs[nodes[dst]["type"]])).get(d_inp["name"])
        if spec is None or input_kind(spec) != ltype:
            problems.append(f"link {link_id}: {nodes[dst]['type']}.{d_inp['name']} does not take {ltype}")
    return problems


def topological_order(api: Dict[str, dict]) -> List[str]:
    """Node ids of an API prompt, each after all nodes it takes inputs from."""
    deps = {k: {v[0] for v in n["inputs"].values() if isinstance(v, list) and len(v) == 2 and isinstance(v[0], str)}
            for k, n in api.items()}
    order: List[str] = []
    while len(order) < len(api):
        ready = sorted((k for k, d in deps.items() if k not in order and d <= set(order)), key=int)
        if not ready:
            raise ValueError("the prompt has a cycle or a dangling link")
        order.extend(ready)
    return order


def required_missing(api: Dict[str, dict], specs: Dict[str, dict]) -> List[str]:
    """Required inputs absent from an API prompt."""
    out = []
    for k, n in api.items():
        for name in specs[n["class_type"]]["input"].get("required", {}):
            if name not in n["inputs"]:
                out.append(f"node {k} {n['class_type']}: required input {name} is missing")
    return out

