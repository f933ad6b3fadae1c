"""Developer check against a running ComfyUI (not CI): node registration, core specs, bundled workflows.

    python -m tools.check_comfy --comfyui COMFYUI_DIR [--url http://127.0.0.1:8188] [--tiny] [--only STEM]
                                [--set Class.input=value ...]

0. prints the ComfyUI the server runs (``/system_stats``; version, commit and frontend of the
   ``--comfyui`` folder, ``tools/comfy_runtime.py``);
1. ``GET /object_info``: every VidSeg node is registered (from ``custom_nodes``), and the
   committed core-spec snapshot of the server's version (``tools/comfy_specs/<version>.json``,
   ``tools/capture_core_specs.py``) agrees with the live specs;
2. optionally (``--ui-prompts``), the prompts the real frontend built for the workflows
   (``tools/ui_smoke.js``) equal the converter's;
3. every ``workflows/*.json`` is converted UI -> API with the *live* ``/object_info``
   (docs/design/comfyui_integration.md#running-a-workflow-without-the-browser), widget values are overridden (``--tiny``: the tiny test
   backbones and K = 4; ``--set``: anything), submitted to ``POST /prompt`` and polled
   on ``/history`` until it finishes (docs/design/comfyui_integration.md#running-a-workflow-without-the-browser).  Prints timings and outputs.

4. optionally (``--interrupt-after S``), the first selected workflow is interrupted
   ``S`` seconds after it started executing (``POST /interrupt``); the time until
   ComfyUI reports it stopped is printed, then the workflows run normally (the next
   prompt must succeed).

Only the standard library is used for HTTP.  Exit code 0 when everything passed.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from .comfy_core_nodes import load_core_specs, tested_versions
from .comfy_graph import combo_options, input_kind, ordered_inputs, ui_to_api

ROOT = Path(__file__).resolve().parents[1]


def _get(url: str):
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read())


def _post(url: str, body: dict):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        body = r.read()
        return json.loads(body) if body.strip() else {}  # /interrupt answers with an empty body


def compare_core_specs(live: dict, specs: dict) -> list:
    """Differences between core specs (a committed snapshot) and a live ``/object_info``."""
    out = []
    for name, spec in specs.items():
        if name not in live:
            out.append(f"{name}: not in /object_info")
            continue
        real = live[name]
        if real["output"] != spec["output"]:
            out.append(f"{name}: outputs {real['output']} != {spec['output']}")
        mine = [(n, input_kind(s)) for _, n, s in ordered_inputs(spec)]
        theirs = [(n, input_kind(s)) for _, n, s in ordered_inputs(real)]
        if mine != theirs:
            out.append(f"{name}: inputs {theirs} != {mine}")
            continue
        for (_, n, s), (_, _, r) in zip(ordered_inputs(spec), ordered_inputs(real)):
            so, ro = (s[1] if len(s) > 1 else {}), (r[1] if len(r) > 1 else {})
            for key in ("default", "min", "max", "control_after_generate", "image_upload", "video_upload"):
                if key in so and so.get(key) != ro.get(key):
                    out.append(f"{name}.{n}: {key} {ro.get(key)!r} != {so.get(key)!r}")
            if input_kind(s) == "COMBO" and not so.get("dynamic"):
                missing = set(combo_options(s)) - set(combo_options(r))
                if missing:
                    out.append(f"{name}.{n}: options {sorted(missing)} do not exist")
    return out


def compare_ui_prompts(smoke: dict, live: dict) -> bool:
    """The frontend's prompts (``tools/ui_smoke.js``) vs :func:`ui_to_api` on the same files.

    Frontend-only widget values that are not node inputs (e.g. Load Video's preview) are ignored."""
    ok = True
    for name, rec in sorted(smoke.get("workflows", {}).items()):
        mine = ui_to_api(json.loads((ROOT / "workflows" / name).read_text()), live)
        diffs = []
        for key, node in rec["prompt"].items():
            spec_inputs = {n for _, n, _ in ordered_inputs(live[node["class_type"]])}
            theirs = {k: v for k, v in node["inputs"].items() if k in spec_inputs}
            if key not in mine or mine[key]["class_type"] != node["class_type"] or mine[key]["inputs"] != theirs:
                diffs.append(key)
        diffs += [k for k in mine if k not in rec["prompt"]]
        print(f"{name}: frontend prompt {'==' if not diffs else '!='} converter" + (f" (nodes {diffs})" if diffs else ""))
        if rec.get("notices"):
            print(f"{name}: the frontend reports {'; '.join(rec['notices'])}")
        ok &= not diffs and not rec.get("missing") and not rec.get("notices")
    return ok


def tiny_overrides(stem: str) -> dict:
    model = "tiny-svd" if "svd" in stem else "tiny-sd"
    return {("VidSegLoadModel", "model"): model, ("VidSegKMeansInit", "num_clusters"): 4,
            ("VidSegSegmentVideo", "num_clusters"): 4}


def parse_set(items) -> dict:
    out = {}
    for item in items or []:
        key, _, value = item.partition("=")
        cls, _, name = key.partition(".")
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
        out[(cls, name)] = value
    return out


def run_prompt(url: str, api: dict, timeout: float = 1800.0):
    client = str(uuid.uuid4())
    t0 = time.perf_counter()
    try:
        reply = _post(f"{url}/prompt", {"prompt": api, "client_id": client})
    except urllib.error.HTTPError as e:
        return {"status": f"HTTP {e.code}", "body": e.read().decode()[:3000], "seconds": 0.0}
    pid = reply["prompt_id"]
    while time.perf_counter() - t0 < timeout:
        hist = _get(f"{url}/history/{pid}")
        if pid in hist:
            st = hist[pid]["status"]
            if st.get("completed") or st.get("status_str") == "error":
                msgs = [m for m in st.get("messages", []) if m[0] in ("execution_error", "execution_interrupted")]
                return {"status": st.get("status_str"), "seconds": round(time.perf_counter() - t0, 2),
                        "outputs": hist[pid].get("outputs", {}), "errors": msgs}
        time.sleep(0.2)
    return {"status": "timeout", "seconds": round(time.perf_counter() - t0, 2)}


def interrupt_check(url: str, api: dict, after: float, timeout: float = 600.0) -> bool:
    """Submit ``api``, interrupt ``after`` s after it starts executing; True when it stopped as interrupted."""
    pid = _post(f"{url}/prompt", {"prompt": api, "client_id": str(uuid.uuid4())})["prompt_id"]
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if not _get(f"{url}/queue").get("queue_pending"):
            break  # ours is running
        time.sleep(0.2)
    time.sleep(after)
    sent = time.perf_counter()
    _post(f"{url}/interrupt", {})
    while time.perf_counter() - sent < timeout:
        hist = _get(f"{url}/history/{pid}")
        if pid in hist and (hist[pid]["status"].get("completed") or hist[pid]["status"].get("status_str") == "error"):
            msgs = [m[0] for m in hist[pid]["status"].get("messages", [])]
            where = [m[1] for m in hist[pid]["status"].get("messages", []) if m[0] == "execution_interrupted"]
            node = f" in node {where[0].get('node_id')} {where[0].get('node_type')}" if where else ""
            print(f"interrupt: sent {after} s into the run; stopped{node} {time.perf_counter() - sent:.2f} s later "
                  f"({hist[pid]['status'].get('status_str')}, {msgs})")
            return "execution_interrupted" in msgs
        time.sleep(0.1)
    print("interrupt: the prompt did not stop")
    return False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8188")
    p.add_argument("--comfyui", type=Path, default=None, metavar="COMFYUI_DIR",
                   help="the server's ComfyUI folder (its version, commit and frontend are printed)")
    p.add_argument("--tiny", action="store_true", help="use tiny-sd / tiny-svd and K = 4")
    p.add_argument("--only", action="append", help="workflow file stem(s) to run (default: all)")
    p.add_argument("--set", action="append", metavar="CLASS.INPUT=VALUE", help="override a widget value (JSON)")
    p.add_argument("--no-run", action="store_true", help="only check registration and specs")
    p.add_argument("--interrupt-after", type=float, metavar="S",
                   help="first interrupt the first selected workflow S seconds into its run")
    p.add_argument("--ui-prompts", metavar="JSON", help="output of tools/ui_smoke.js: compare the frontend's "
                                                        "graphToPrompt() with the converter")
    args = p.parse_args(argv)
    ok = True
    stats = _get(f"{args.url}/system_stats")
    served = stats.get("system", {}).get("comfyui_version")
    if args.comfyui is not None:
        from .comfy_runtime import banner, comfy_identity

        print(banner(comfy_identity(args.comfyui), stats))
    else:
        print(f"ComfyUI {served} at {args.url} (pass --comfyui COMFYUI_DIR for its commit and frontend)")
    t = time.perf_counter()
    live = _get(f"{args.url}/object_info")
    print(f"/object_info: {len(live)} node types in {time.perf_counter() - t:.2f} s")
    ours = sorted(k for k in live if k.startswith("VidSeg"))
    sys.path.insert(0, str(ROOT))
    modules = {live[k].get("python_module") for k in ours}
    print(f"VidSeg nodes registered: {len(ours)} from {modules}: {', '.join(ours)}")
    if served in tested_versions():
        diffs = compare_core_specs(live, load_core_specs(served))
        print(f"core specs of tools/comfy_specs/{served}.json agree with the live ones" if not diffs
              else "core spec differences:\n  " + "\n  ".join(diffs))
    else:
        diffs = [f"no snapshot for ComfyUI {served} (have {tested_versions()}): run tools/capture_core_specs.py"]
        print(diffs[0])
    ok &= not diffs
    if args.ui_prompts:
        ok &= compare_ui_prompts(json.loads(Path(args.ui_prompts).read_text()), live)
    if args.no_run:
        return 0 if ok else 1
    interrupt = args.interrupt_after
    for path in sorted((ROOT / "workflows").glob("*.json")):
        if args.only and path.stem not in args.only:
            continue
        api = ui_to_api(json.loads(path.read_text()), live)
        overrides = {**(tiny_overrides(path.stem) if args.tiny else {}), **parse_set(args.set)}
        for node in api.values():
            for (cls, name), value in overrides.items():
                if node["class_type"] == cls and name in node["inputs"]:
                    node["inputs"][name] = value
        if interrupt is not None:
            ok &= interrupt_check(args.url, api, interrupt)
            interrupt = None
        res = run_prompt(args.url, api)
        summary = {k: list(v) for k, v in res.get("outputs", {}).items()}
        print(f"{path.stem}: {res['status']} in {res['seconds']} s; outputs {summary}")
        if res["status"] != "success":
            ok = False
            print(json.dumps(res.get("errors") or res.get("body"), indent=1)[:3000])
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
