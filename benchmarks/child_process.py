"""Run a benchmark's measuring side in a fresh interpreter and read back the one result line it prints.

A memory figure (peak RSS) is only honest in a process that did nothing else, so the memory benchmarks
run each configuration as a child: the child prints ``TAG {json}`` and this helper returns that object
with the child's wall time added.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Dict, Optional, Sequence


def run_tagged_child(cmd: Sequence[str], tag: str, cwd: Path, env: Optional[dict] = None,
                     timeout: Optional[float] = None) -> Dict[str, object]:
    """``cmd``'s result object (the JSON after ``tag`` on its stdout) plus ``wall_seconds``; a child that
    printed no result raises ``RuntimeError`` with the end of its stderr."""
    t = time.perf_counter()
    proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout, cwd=str(cwd), env=env)
    wall = time.perf_counter() - t
    for line in proc.stdout.splitlines():
        if line.startswith(tag):
            rep = json.loads(line[len(tag):])
            rep["wall_seconds"] = wall
            return rep
    raise RuntimeError(f"benchmark child failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")
