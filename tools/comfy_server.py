"""Start and stop a real ComfyUI server for the developer checks (loopback only, never CI).

    with ComfyServer(COMFYUI_DIR, python=VENV/bin/python, port=8199) as server:
        server.url, server.pid, server.system_stats()

The server runs ``main.py --cpu --listen 127.0.0.1 --port PORT --temp-directory TEMP`` (plus ``extra_args``;
without ``--cpu`` when ``gpu`` is set, so that ComfyUI picks its GPU with its own defaults: dynamic VRAM and
CUDA graphs on in 0.33, off with ``--disable-dynamic-vram`` / ``--disable-cuda-graphs`` in ``extra_args``)
from its own folder with the given Python, its console written to ``log``; :meth:`start` waits until
``/system_stats`` answers and checks the process is still the one listening.  :meth:`stop` ends exactly that
process (its id).

``TEMP`` is a folder of this port's own (``<system temp>/vidseg_comfy_<port>`` unless ``extra_args`` names
one): a starting ComfyUI empties its temp folder, which would delete the files a server already running in
the same ComfyUI folder is writing (Segment Video's VIDEO outputs live there until saved).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional, Sequence


def http_json(url: str, body: Optional[dict] = None, timeout: float = 60.0):
    """GET (``body`` None) or POST JSON; the decoded reply (``{}`` for an empty body)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        raw = r.read()
        return json.loads(raw) if raw.strip() else {}


def port_in_use(port: int) -> bool:
    try:
        http_json(f"http://127.0.0.1:{port}/system_stats", timeout=2)
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def add_server_arguments(parser) -> None:
    """``--server-args`` (repeatable, ``--server-args=--flag``) and ``--gpu`` of the tools that start a server."""
    parser.add_argument("--server-args", nargs="*", action="extend", default=[],
                        help="extra arguments of ComfyUI's main.py (one starting with -- as --server-args=--flag, "
                             "repeatable)")
    parser.add_argument("--gpu", action="store_true",
                        help="start ComfyUI without --cpu: on its GPU with its own defaults (in 0.33 dynamic VRAM "
                             "and CUDA graphs on; --server-args=--disable-dynamic-vram / "
                             "--server-args=--disable-cuda-graphs turn them off)")


class ComfyServer:
    """One ComfyUI server process (see module doc)."""

    def __init__(self, comfy_dir, python: Optional[str] = None, port: int = 8199,
                 extra_args: Sequence[str] = (), log: Optional[Path] = None, env: Optional[dict] = None,
                 gpu: bool = False):
        self.dir = Path(comfy_dir).resolve()
        self.gpu = gpu
        self.python = python or sys.executable
        self.port = port
        self.extra_args = list(extra_args)
        self.log = Path(log) if log else self.dir / f"vidseg_server_{port}.log"
        self.env = dict(os.environ, **(env or {}))
        self.proc: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def command(self) -> list:
        """The server's command line (see module doc)."""
        temp = [] if any(a.startswith("--temp-directory") for a in self.extra_args) else \
            ["--temp-directory", str(Path(tempfile.gettempdir()) / f"vidseg_comfy_{self.port}")]
        device = [] if self.gpu else ["--cpu"]
        return [self.python, "main.py", *device, "--listen", "127.0.0.1", "--port", str(self.port), *temp,
                *self.extra_args]

    def start(self, timeout: float = 300.0) -> "ComfyServer":
        if port_in_use(self.port):
            raise SystemExit(f"port {self.port} already answers: stop that server or pass another --port")
        cmd = self.command()
        self._log = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdout=self._log, stderr=subprocess.STDOUT, env=self.env,
                                     start_new_session=True)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise SystemExit(f"ComfyUI exited with {self.proc.returncode} while starting; see {self.log}:\n"
                                 + self.tail())
            try:
                self.system_stats()
                self.start_seconds = time.perf_counter() - t0
                return self
            except (urllib.error.URLError, OSError, ValueError):
                time.sleep(0.5)
        self.stop()
        raise SystemExit(f"ComfyUI did not answer within {timeout:.0f} s; see {self.log}")

    def system_stats(self) -> dict:
        return http_json(f"{self.url}/system_stats", timeout=5)

    def tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
