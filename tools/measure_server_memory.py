"""Peak memory of a real ComfyUI server running a bundled workflow on a long clip (developer figure, not CI).

Run with the Python of that ComfyUI's environment::

    COMFYUI_VENV/bin/python tools/measure_server_memory.py --comfyui COMFYUI_DIR --source FRAMES_DIR \\
        --frames 200 [--workflow vidseg_fast_preview] [--tiny] [--set Class.input=value ...]

1. writes ``input/vidseg_mem_<W>x<H>_<N>.mp4`` into the ComfyUI folder: the frames of ``FRAMES_DIR``
   (sorted, resized to ``--size``, default 854x480) looped to ``N`` frames (H.264, ``tools/comfy_inputs.py``);
2. starts a fresh server (``main.py --cpu``, loopback; or ``--url`` + ``--pid`` of a running one);
3. converts ``workflows/<workflow>.json`` with the live ``/object_info``, points every Load Video at the clip
   (``--tiny``: ``tiny-sd`` / ``tiny-svd`` in Load SD/SVD and K = 4; ``--set`` overrides anything), submits
   it to ``/prompt`` and samples the server process's resident memory every ``--interval`` s (``/proc``)
   until it finishes;
4. prints the ComfyUI version, the CPU, the resident memory before the prompt, the sampled peak, the
   kernel's high-water mark (``VmHWM``: the true peak since the server started), after the run, and after
   ``POST /free`` (models unloaded); ``--json`` writes the figures to a file, and while the prompt runs it
   holds the figures so far (``"finished": false``: elapsed seconds, peak, high-water mark, trace), rewritten
   every 10 s, so a run cut off before its end still leaves its record (printed every ``--progress-every`` s).
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from vidseg_core.dataset.progress import write_json_atomic  # noqa: E402


def proc_memory(pid: int) -> dict:
    """``VmRSS`` and ``VmHWM`` of a process in bytes (Linux ``/proc``)."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


class Sampler(threading.Thread):
    """Samples a process's RSS until stopped; ``peak`` in bytes, ``trace``: (seconds, peak RSS since the
    previous trace point) every ``trace_every`` seconds, to show whether memory grows with the run.
    ``on_trace(sampler)``, when given, is called after each trace point (from the sampling thread)."""

    def __init__(self, pid: int, interval: float, trace_every: float = 10.0, on_trace=None):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak, self.samples = pid, interval, 0, 0
        self.trace_every, self.trace, self.on_trace = trace_every, [], on_trace
        self._halt = threading.Event()

    def run(self) -> None:
        start = time.perf_counter()
        window, next_point = 0, self.trace_every
        while not self._halt.is_set():
            try:
                rss = proc_memory(self.pid)["VmRSS"]
            except (OSError, KeyError):
                return
            self.peak, window = max(self.peak, rss), max(window, rss)
            self.samples += 1
            elapsed = time.perf_counter() - start
            if elapsed >= next_point:
                self.trace.append((round(elapsed, 1), window))
                window, next_point = 0, next_point + self.trace_every
                if self.on_trace is not None:
                    self.on_trace(self)
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                import os

                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical CPUs"
    except OSError:
        pass
    return "unknown CPU"


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


class ProgressRecord:
    """Called at each trace point of a running prompt: rewrites ``path`` (when given) with the figures so far,
    ``"finished": false``, and prints one line every ``every`` seconds."""

    def __init__(self, path: Path | None, every: float, before: dict, extra: dict):
        self.path, self.every, self.before, self.extra = path, every, before, extra
        self.next_print = every

    def __call__(self, sampler: Sampler) -> None:
        try:
            hwm = proc_memory(sampler.pid)["VmHWM"]
        except (OSError, KeyError):
            return
        elapsed = sampler.trace[-1][0]
        figs = {"finished": False, "elapsed": elapsed, "rss_before": self.before["VmRSS"],
                "rss_peak_sampled": sampler.peak, "vm_hwm": hwm, "samples": sampler.samples,
                "trace": list(sampler.trace), **self.extra}
        if self.path is not None:
            write_json_atomic(self.path, figs)
        if elapsed >= self.next_print:
            print(f"  {elapsed:.0f} s: peak so far {gib(sampler.peak)}, high-water mark {gib(hwm)}", flush=True)
            self.next_print += self.every


def measure(url: str, pid: int, api: dict, interval: float, timeout: float, record: Path | None = None,
            progress_every: float = 120.0, extra: dict | None = None) -> dict:
    from tools.check_comfy import run_prompt
    from tools.comfy_server import http_json

    before = proc_memory(pid)
    sampler = Sampler(pid, interval, on_trace=ProgressRecord(record, progress_every, before, extra or {}))
    sampler.start()
    res = run_prompt(url, api, timeout)
    sampler.stop()
    after = proc_memory(pid)
    http_json(f"{url}/free", {"unload_models": True, "free_memory": True})
    time.sleep(3.0)  # /free is handled by the prompt worker between prompts
    freed = proc_memory(pid)
    return {"finished": True, "status": res["status"], "seconds": res["seconds"],
            "errors": res.get("errors") or res.get("body"),
            "rss_before": before["VmRSS"], "rss_peak_sampled": max(sampler.peak, after["VmRSS"]),
            "vm_hwm": after["VmHWM"], "rss_after": after["VmRSS"], "rss_after_free": freed["VmRSS"],
            "samples": sampler.samples, "trace": sampler.trace, "outputs": {k: list(v) for k, v in res.get("outputs", {}).items()}}


def main(argv=None) -> int:
    from tools import comfy_inputs
    from tools.check_comfy import parse_set, tiny_overrides
    from tools.comfy_graph import ui_to_api
    from tools.comfy_runtime import banner, comfy_identity
    from tools.comfy_server import ComfyServer, add_server_arguments, http_json

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--comfyui", type=Path, required=True, metavar="COMFYUI_DIR")
    p.add_argument("--source", type=Path, required=True, metavar="FRAMES_DIR", help="frames to loop into the clip")
    p.add_argument("--frames", type=int, required=True, help="clip length (the frames are looped)")
    p.add_argument("--size", type=int, nargs=2, default=[854, 480], metavar=("W", "H"))
    p.add_argument("--fps", type=int, default=24)
    p.add_argument("--workflow", default="vidseg_fast_preview", help="stem of a workflows/*.json file")
    p.add_argument("--tiny", action="store_true", help="tiny-sd / tiny-svd in Load SD/SVD, K = 4")
    p.add_argument("--set", action="append", metavar="CLASS.INPUT=VALUE", help="override a widget value (JSON)")
    p.add_argument("--port", type=int, default=8198)
    p.add_argument("--url", default=None, help="use this running server (with --pid) instead of starting one")
    p.add_argument("--pid", type=int, default=None)
    add_server_arguments(p)
    p.add_argument("--interval", type=float, default=0.1)
    p.add_argument("--timeout", type=float, default=7200.0)
    p.add_argument("--json", type=Path, default=None,
                   help="write the figures here (the figures so far while the prompt runs)")
    p.add_argument("--progress-every", type=float, default=120.0, metavar="S",
                   help="print the peak and high-water mark so far every S seconds (default 120)")
    args = p.parse_args(argv)
    ident = comfy_identity(args.comfyui)
    size = tuple(args.size)
    if any(v < 64 or v % 2 for v in size):
        raise SystemExit(f"--size {size[0]} {size[1]}: H.264 needs even sides (>= 64); give e.g. --size 426 240")
    clip = Path(args.comfyui) / "input" / f"vidseg_mem_{size[0]}x{size[1]}_{args.frames}.mp4"
    if not clip.is_file():
        t0 = time.perf_counter()
        comfy_inputs.write_clip(clip, args.source, args.frames, size, args.fps)
        print(f"wrote {clip.name} ({clip.stat().st_size / 2**20:.1f} MiB) in {time.perf_counter() - t0:.0f} s")
    server = None
    if args.url:
        if args.pid is None:
            raise SystemExit("--url needs --pid (the server's process id, whose memory is sampled)")
        url, pid = args.url.rstrip("/"), args.pid
    else:
        server = ComfyServer(args.comfyui, sys.executable, args.port, extra_args=args.server_args,
                             gpu=args.gpu).start()
        url, pid = server.url, server.pid
    try:
        print(banner(ident, http_json(f"{url}/system_stats")))
        live = http_json(f"{url}/object_info")
        api = ui_to_api(json.loads((ROOT / "workflows" / f"{args.workflow}.json").read_text()), live)
        overrides = {**(tiny_overrides(args.workflow) if args.tiny else {}), **parse_set(args.set),
                     ("LoadVideo", "file"): clip.name}
        for node in api.values():
            for (cls, name), value in overrides.items():
                if node["class_type"] == cls and name in node["inputs"]:
                    node["inputs"][name] = value
        run = {"comfyui": ident, "cpu": cpu_name(), "workflow": args.workflow, "frames": args.frames,
               "size": list(size), "tiny": args.tiny, "set": args.set or []}
        figs = measure(url, pid, api, args.interval, args.timeout, args.json, args.progress_every, run)
    finally:
        if server is not None:
            server.stop()
    figs.update(run)
    print(f"{args.workflow} on {args.frames} frames {size[0]}x{size[1]}{' (tiny)' if args.tiny else ''}: "
          f"{figs['status']} in {figs['seconds']} s; CPU: {figs['cpu']}")
    print(f"  server RSS before {gib(figs['rss_before'])}, peak {gib(figs['rss_peak_sampled'])} (sampled every "
          f"{args.interval} s), high-water mark {gib(figs['vm_hwm'])}, after {gib(figs['rss_after'])}, "
          f"after /free {gib(figs['rss_after_free'])}")
    trace = figs["trace"]
    if len(trace) >= 4:
        half = len(trace) // 2
        first, second = max(r for _, r in trace[:half]), max(r for _, r in trace[half:])
        print(f"  peak in the first half of the run {gib(first)}, in the second half {gib(second)} "
              f"({(second - first) / first:+.1%})")
    if figs["status"] != "success":
        print(json.dumps(figs["errors"], indent=1)[:3000])
    if args.json:
        write_json_atomic(args.json, figs)
    return 0 if figs["status"] == "success" else 1


if __name__ == "__main__":
    raise SystemExit(main())
