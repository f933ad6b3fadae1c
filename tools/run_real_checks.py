"""Every real-ComfyUI check of the pack against one ComfyUI folder, with one command; prints a result table.

Run with the Python of that ComfyUI's environment (it runs the checks with it), the pack linked into its
``custom_nodes``::

    COMFYUI_VENV/bin/python tools/run_real_checks.py --comfyui COMFYUI_DIR --models MODELS_DIR \\
        [--data FRAMES_DIR [--mask MASK_PNG]] [--commit SHA] [--out RESULTS_DIR] [--only CHECK ...]

``MODELS_DIR`` holds the random full-size SD 2.1 / SVD files (``tools/check_native.py`` writes them the first
time; about 7 GB); ``FRAMES_DIR`` a folder of frames for the example clip (synthetic shapes without it).

In-process checks (ComfyUI imported by the check, no server):

* ``native-sd`` / ``native-svd``: ``tools/check_native.py`` -- ComfyUI's loaders + the native adapter vs the
  pack's loader (the first run writes the random full-size file);
* ``split-sd`` / ``split-svd``: ``tools/check_native_split.py`` -- prefix sharing on ComfyUI's UNet;
* ``compile-sd`` / ``compile-svd``: ``tools/check_native_compile.py`` -- a TorchCompileModel request honoured;
* ``naming``: ``tools/check_naming.py`` -- Segment Video's vocabulary read by Load Checkpoint's CLIP through
  ``/prompt`` (a server of its own) against the library's own text tower and ``NamingSegmenter``.

Server checks (one server, ``main.py --cpu`` on a loopback port, or without ``--cpu`` with ``--gpu``; the example
inputs are put into the ComfyUI folder by ``tools/comfy_inputs.py``, the core loaders read links to the random
full-size files):

* ``boot``: the server starts and lists exactly the pack's VidSeg nodes (those of the committed node-spec
  snapshot, ``tests/snapshots/v1_node_specs.json``) from ``custom_nodes``;
* ``specs``: the committed core-spec snapshot of this version equals the server's (``capture_core_specs``);
* ``interrupt``: ``check_comfy --interrupt-after`` on the SD 2.1 workflow (the log names the node that
  stopped), then the same prompt succeeds;
* ``workflow:<stem>``: each bundled workflow through ``/prompt`` (``check_comfy --tiny``: ``tiny-sd`` in
  Load SD/SVD, K = 4; ``--set``, default 2 sampler steps for the inpainting);
* ``ui``: ``tools/ui_smoke.js`` in headless Chromium (every workflow loads with no missing node type) and
  the prompts the real frontend builds equal the converter's (``check_comfy --ui-prompts``).

Each check's console goes to ``RESULTS_DIR/<check>.log``; the table (check, result, seconds, ComfyUI version
and commit) is printed and written to ``RESULTS_DIR/results.json``.  Exit code 0 when every check passed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools.comfy_runtime import banner, comfy_identity, version_label  # noqa: E402
from tools.comfy_server import add_server_arguments  # noqa: E402

IN_PROCESS = ("native-sd", "native-svd", "split-sd", "split-svd", "compile-sd", "compile-svd", "naming")
SERVER = ("boot", "specs", "interrupt", "workflows", "ui")
SNAPSHOT = ROOT / "tests" / "snapshots" / "v1_node_specs.json"  # the node ids the pack declares
WORKFLOWS = sorted(p.stem for p in (ROOT / "workflows").glob("*.json"))


def run(name: str, cmd, out: Path, env: dict, timeout: float, cwd=ROOT) -> dict:
    """Run one check command; its console to ``out/<name>.log``; a result row."""
    log = out / f"{name.replace(':', '_')}.log"
    t0 = time.perf_counter()
    with open(log, "w") as f:
        f.write("$ " + " ".join(map(str, cmd)) + "\n")
        f.flush()
        try:
            rc = subprocess.run([str(c) for c in cmd], cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env,
                                timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    secs = time.perf_counter() - t0
    row = {"check": name, "result": "pass" if rc == 0 else f"FAIL ({rc})", "seconds": round(secs, 1),
           "log": str(log)}
    print(f"  {name:34s} {row['result']:12s} {secs:8.1f} s", flush=True)
    return row


def in_process_checks(args, env, out, want) -> list:
    py, comfy, models = sys.executable, args.comfyui, args.models
    common = ["--comfyui", comfy, "--models", models]
    cmds = {
        "native-sd": [py, ROOT / "tools/check_native.py", *common, "--family", "sd"],
        "native-svd": [py, ROOT / "tools/check_native.py", *common, "--family", "svd"],
        "split-sd": [py, ROOT / "tools/check_native_split.py", *common, "--family", "sd", "--timing-runs", "0"],
        "split-svd": [py, ROOT / "tools/check_native_split.py", *common, "--family", "svd", "--timing-runs", "0"],
        "compile-sd": [py, ROOT / "tools/check_native_compile.py", *common, "--family", "sd"],
        "compile-svd": [py, ROOT / "tools/check_native_compile.py", *common, "--family", "svd"],
        "naming": [py, ROOT / "tools/check_naming.py", *common, "--port", args.port, "--clip-frames", args.clip_frames,
                   "--clip-size", *args.clip_size, *(["--data", args.data] if args.data else []),
                   *(["--gpu"] if args.gpu else []), *[f"--server-args={a}" for a in args.server_args]],
    }
    return [run(name, cmds[name], out, env, args.timeout) for name in IN_PROCESS if name in want]


def server_checks(args, env, out, want) -> list:
    from tools import comfy_inputs
    from tools.comfy_server import ComfyServer, http_json

    rows = []
    comfy_inputs.prepare(args.comfyui, args.models, args.data, args.mask, args.clip_frames,
                         tuple(args.clip_size))
    py = sys.executable
    client = ["-m", "tools.check_comfy", "--comfyui", args.comfyui]
    sets = [x for item in args.set for x in ("--set", item)]
    t0 = time.perf_counter()
    server = ComfyServer(args.comfyui, py, args.port, extra_args=args.server_args, log=out / "server.log", env=env,
                         gpu=args.gpu)
    try:
        server.start()
    except SystemExit as exc:
        print(exc)
        return [{"check": "boot", "result": "FAIL (no server)", "seconds": round(time.perf_counter() - t0, 1),
                 "log": str(out / "server.log")}]
    try:
        url = server.url
        ours = sorted(k for k in http_json(f"{url}/object_info") if k.startswith("VidSeg"))
        expected = sorted(json.loads(SNAPSHOT.read_text()))
        missing, extra = sorted(set(expected) - set(ours)), sorted(set(ours) - set(expected))
        ok = not missing and not extra
        rows.append({"check": "boot", "result": "pass" if ok else f"FAIL (missing {missing}, unexpected {extra})",
                     "seconds": round(server.start_seconds, 1), "log": str(out / "server.log")})
        print(f"  {'boot':34s} {rows[-1]['result']:12s} {server.start_seconds:8.1f} s ({len(ours)} VidSeg nodes)")
        if "specs" in want:
            rows.append(run("specs", [py, "-m", "tools.capture_core_specs", "--comfyui", args.comfyui, "--url", url,
                                      "--check"], out, env, 300))
        if "interrupt" in want:
            rows.append(run("interrupt", [py, *client, "--url", url, "--tiny", "--only", "vidseg_sd21_full_pipeline",
                                          "--interrupt-after", str(args.interrupt_after), *sets], out, env, args.timeout))
        if "workflows" in want:
            for stem in args.workflows:
                rows.append(run(f"workflow:{stem}", [py, *client, "--url", url, "--tiny", "--only", stem, *sets], out,
                                env, args.timeout))
        if "ui" in want:
            smoke = out / "ui_smoke.json"
            node_env = dict(env, NODE_PATH=args.node_modules or env.get("NODE_PATH", ""))
            row = run("ui", ["node", ROOT / "tools/ui_smoke.js", url, smoke], out, node_env, 600)
            if row["result"] == "pass":
                cmp_row = run("ui-prompts", [py, *client, "--url", url, "--no-run", "--ui-prompts", smoke], out, env,
                              300)
                row["result"] = cmp_row["result"]
                row["seconds"] += cmp_row["seconds"]
            rows.append(row)
    finally:
        server.stop()
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--comfyui", type=Path, required=True, metavar="COMFYUI_DIR")
    p.add_argument("--models", type=Path, required=True, metavar="MODELS_DIR",
                   help="folder of the random full-size files (written there the first time)")
    p.add_argument("--data", type=Path, default=None, metavar="FRAMES_DIR", help="frames for the example clip")
    p.add_argument("--mask", type=Path, default=None, help="first-frame object mask (non-zero = object)")
    p.add_argument("--commit", default=None, help="ComfyUI's commit when its folder is not a git checkout")
    p.add_argument("--out", type=Path, default=Path("real_checks"), metavar="RESULTS_DIR")
    p.add_argument("--only", nargs="+", choices=IN_PROCESS + SERVER, help="run only these checks")
    p.add_argument("--skip", nargs="+", choices=IN_PROCESS + SERVER, default=[])
    p.add_argument("--workflows", nargs="+", default=WORKFLOWS, choices=WORKFLOWS, metavar="STEM",
                   help="bundled workflows to run (default: all)")
    p.add_argument("--port", type=int, default=8199)
    add_server_arguments(p)
    p.add_argument("--clip-frames", type=int, default=4)
    p.add_argument("--clip-size", type=int, nargs=2, default=[256, 144], metavar=("W", "H"))
    p.add_argument("--interrupt-after", type=float, default=15.0,
                   help="seconds into the SD 2.1 workflow (its log names the node that stopped)")
    p.add_argument("--set", nargs="*", default=["KSampler.steps=2"], metavar="CLASS.INPUT=VALUE",
                   help="widget overrides of the workflow runs (default: 2 sampler steps in the inpainting workflow)")
    p.add_argument("--node-modules", default=None, help="node_modules folder holding playwright-core")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per check")
    args = p.parse_args(argv)
    env = dict(os.environ, PYTHONUNBUFFERED="1")  # the checks' consoles reach their logs as they run
    if args.commit:
        env["COMFYUI_COMMIT"] = os.environ["COMFYUI_COMMIT"] = args.commit
    args.comfyui, args.models = args.comfyui.resolve(), args.models.resolve()
    args.models.mkdir(parents=True, exist_ok=True)
    ident = comfy_identity(args.comfyui)
    label = version_label(ident)
    args.out.mkdir(parents=True, exist_ok=True)
    print(banner(ident), flush=True)
    want = set(args.only or IN_PROCESS + SERVER) - set(args.skip)
    rows = in_process_checks(args, env, args.out, want)
    if want & set(SERVER):
        rows += server_checks(args, env, args.out, want)
    for r in rows:
        r["comfyui"] = label
    width = max(len(r["check"]) for r in rows) if rows else 10
    print(f"\n{'check':{width}s}  {'result':12s} {'seconds':>8s}  ComfyUI")
    for r in rows:
        print(f"{r['check']:{width}s}  {r['result']:12s} {r['seconds']:8.1f}  {r['comfyui']}")
    (args.out / "results.json").write_text(json.dumps({"comfyui": ident, "rows": rows}, indent=1) + "\n")
    return 0 if rows and all(r["result"] == "pass" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
