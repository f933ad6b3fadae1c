"""Capture the core node specs the bundled workflows use from a running ComfyUI into a committed snapshot.

    python -m tools.capture_core_specs --comfyui COMFYUI_DIR [--url http://127.0.0.1:8188] [--check]

Reads ``GET /object_info`` of the server, keeps the core node types of ``tools/comfy_core_nodes.py``
(``CORE_NODE_TYPES``) and any other non-VidSeg type the workflows name, empties the combos that list files
of this machine (checkpoints, input images and videos; marked ``"dynamic": True``) and writes
``tools/comfy_specs/<version>.json`` with the version, commit and frontend from the ComfyUI folder
(``tools/comfy_runtime.py``) and ``/system_stats``.  ``--check``: write nothing, exit 1 when the committed
snapshot of that version differs from the server's reply (the snapshot is stale).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: (node, input) combos whose options are the capturing machine's files
FILE_COMBOS = {("LoadVideo", "file"), ("LoadImage", "image"), ("CheckpointLoaderSimple", "ckpt_name"),
               ("ImageOnlyCheckpointLoader", "ckpt_name")}


def workflow_core_types() -> set:
    """Core node types named by ``workflows/*.json``."""
    out = set()
    for path in (ROOT / "workflows").glob("*.json"):
        out |= {n["type"] for n in json.loads(path.read_text())["nodes"] if not n["type"].startswith("VidSeg")}
    return out


def normalise(name: str, info: dict) -> dict:
    """One ``/object_info`` entry without this machine's files in its combos."""
    info = json.loads(json.dumps(info))
    for section in ("required", "optional"):
        for inp, spec in (info.get("input", {}).get(section) or {}).items():
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else None
            upload = bool(opts and (opts.get("image_upload") or opts.get("video_upload") or opts.get("upload")))
            if (name, inp) in FILE_COMBOS or upload:
                if isinstance(spec[0], list):
                    spec[0] = []
                elif opts is not None and "options" in opts:
                    opts["options"] = []
                if opts is None:
                    spec.append({})
                    opts = spec[1]
                opts["dynamic"] = True
    return info


def snapshot(live: dict, stats: dict, ident: dict) -> dict:
    from tools.comfy_core_nodes import CORE_NODE_TYPES

    wanted = sorted(set(CORE_NODE_TYPES) | workflow_core_types())
    missing = [t for t in wanted if t not in live]
    if missing:
        raise SystemExit(f"the server does not know {missing}")
    return {"comfyui_version": ident["version"] or stats.get("system", {}).get("comfyui_version"),
            "commit": ident["commit"], "frontend": ident["frontend"],
            "captured_with": "python -m tools.capture_core_specs --comfyui COMFYUI_DIR --url URL",
            "nodes": {t: normalise(t, live[t]) for t in wanted}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8188")
    p.add_argument("--comfyui", type=Path, required=True, metavar="COMFYUI_DIR",
                   help="the running server's ComfyUI folder (version, commit, frontend)")
    p.add_argument("--check", action="store_true", help="compare with the committed snapshot, write nothing")
    args = p.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tools.comfy_core_nodes import SPEC_DIR
    from tools.comfy_runtime import banner, comfy_identity
    from tools.comfy_server import http_json

    ident = comfy_identity(args.comfyui)
    stats = http_json(f"{args.url}/system_stats")
    print(banner(ident, stats))
    served = stats.get("system", {}).get("comfyui_version")
    if served and ident["version"] and served != ident["version"]:
        raise SystemExit(f"the server at {args.url} runs ComfyUI {served}, not the folder's {ident['version']}")
    snap = snapshot(http_json(f"{args.url}/object_info"), stats, ident)
    path = SPEC_DIR / f"{snap['comfyui_version']}.json"
    text = json.dumps(snap, indent=1) + "\n"  # the server's key order (input order)
    if args.check:
        if not path.is_file():
            print(f"no committed snapshot {path.name}")
            return 1
        same = json.loads(path.read_text())["nodes"] == snap["nodes"]
        print(f"{path.name}: {'agrees with' if same else 'DIFFERS from'} the server's /object_info "
              f"({len(snap['nodes'])} core node types)")
        return 0 if same else 1
    SPEC_DIR.mkdir(exist_ok=True)
    path.write_text(text)
    print(f"wrote {path.relative_to(ROOT)}: {len(snap['nodes'])} core node types")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
