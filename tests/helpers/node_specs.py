"""The pack's nodes as ComfyUI's ``/object_info`` describes them, and the frozen V1 description.

``/object_info`` builds a node's entry one of two ways (ComfyUI's ``server.node_info``):
a V3 node (``io.ComfyNode``) answers ``GET_NODE_INFO_V1()`` from its schema; a V1
node is read from ``INPUT_TYPES()`` / ``RETURN_TYPES`` / ``RETURN_NAMES`` /
``OUTPUT_TOOLTIPS`` / ``CATEGORY`` / ``DESCRIPTION`` / ``OUTPUT_NODE``.
:func:`server_node_info` reproduces both, :func:`canonical` reduces an entry to
what the frontend and saved workflows depend on, so a V3 declaration can be
compared with the V1 one it replaced:

* a V1 combo ``[[options], {...}]`` and a V3 one ``["COMBO", {"options": [...],
  "multiselect": false}]`` are the same widget;
* V3 string inputs always send ``multiline`` (false = the V1 default);
* V3-only additions (``advanced``, ``search_aliases``, hidden inputs an output node
  gets, the extra flags) are left out here and tested on their own.

The frozen file ``tests/snapshots/v1_node_specs.json`` holds the pack's V1
declarations as they were before the V3 schema (the file lists for the loader's
``model`` combo are reduced to the tiny test models).  Regenerate it only for a
deliberate interface change:  ``python -m tests.helpers.node_specs --write``.
"""
from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

SNAPSHOT = Path(__file__).resolve().parents[1] / "snapshots" / "v1_node_specs.json"

#: the entry keys that V1 nodes and V3 nodes both send and saved workflows depend on
KEYS = ("input", "input_order", "output", "output_name", "output_is_list", "output_tooltips", "name",
        "display_name", "description", "category", "output_node")
#: combos listing the user's files: only the built-in choices are compared
FILE_COMBOS = {("VidSegLoadModel", "model"): ("tiny-sd", "tiny-svd")}
#: input options that only V3 sends (tested separately)
V3_ONLY_OPTIONS = ("advanced",)


def server_node_info(cls, node_id: str, display_names: dict) -> dict:
    """The ``/object_info`` entry ComfyUI's server builds for ``cls`` (V3: from its schema)."""
    if hasattr(cls, "GET_NODE_INFO_V1"):
        return copy.deepcopy(cls.GET_NODE_INFO_V1())
    types = cls.INPUT_TYPES()
    return {
        "input": types,
        "input_order": {k: list(v) for k, v in types.items()},
        "output": cls.RETURN_TYPES,
        "output_is_list": getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)),
        "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES),
        "name": node_id,
        "display_name": display_names.get(node_id, node_id),
        "description": getattr(cls, "DESCRIPTION", ""),
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
        "output_tooltips": getattr(cls, "OUTPUT_TOOLTIPS", []),
        "search_aliases": getattr(cls, "SEARCH_ALIASES", []),
    }


def _input(node_id: str, name: str, entry) -> list:
    kind, opts = entry[0], dict(entry[1]) if len(entry) > 1 else {}
    if isinstance(kind, (list, tuple)):  # V1 combo
        opts["options"] = list(kind)
        kind = "COMBO"
    if kind == "COMBO":
        opts["options"] = list(opts.get("options", []))
        if opts.get("multiselect") is False:
            del opts["multiselect"]
        keep = FILE_COMBOS.get((node_id, name))
        if keep:
            opts["options"] = [o for o in opts["options"] if o in keep]
    if kind == "STRING" and opts.get("multiline") is False:
        del opts["multiline"]
    for key in V3_ONLY_OPTIONS:
        opts.pop(key, None)
    return [str(kind), opts]


def canonical(info: dict) -> dict:
    """The comparable part of one ``/object_info`` entry (JSON types: tuples become lists)."""
    info = json.loads(json.dumps(info))
    node_id = info["name"]
    out = {k: info.get(k) for k in KEYS}
    out["input"] = {section: {n: _input(node_id, n, e) for n, e in entries.items()}
                    for section, entries in info["input"].items() if section != "hidden"}
    out["input_order"] = {s: v for s, v in info["input_order"].items() if s != "hidden"}
    out["output_tooltips"] = [t or None for t in (info.get("output_tooltips") or [])]
    return out


def pack_info(mappings: dict, display_names: dict) -> dict:
    """node id -> canonical entry for every node of the pack."""
    return {k: canonical(server_node_info(c, k, display_names)) for k, c in sorted(mappings.items())}


def load_snapshot() -> dict:
    return json.loads(SNAPSHOT.read_text())


def main(argv) -> int:
    root = Path(__file__).resolve().parents[2]
    sys.path.insert(0, str(root))
    import tests.conftest  # noqa: F401 - the ComfyUI stand-ins
    from tools.pack_loader import load_pack

    nodes = load_pack().nodes
    specs = pack_info(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)
    if "--write" in argv:
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(json.dumps(specs, indent=1, sort_keys=True) + "\n")
        print(f"wrote {SNAPSHOT} ({len(specs)} nodes)")
    else:
        print(json.dumps(specs, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
