"""Rows, machine description and the markdown table shared by the benchmark scripts and ``run_all.py``.

A row is a dict with the keys of :data:`COLUMNS` (strings).  Every figure that
is a ratio is computed from two timings taken side by side in the same run.
"""
from __future__ import annotations

import os
import platform
import time
from typing import Dict, Iterable, List, Optional

#: (key, header) of the one table
COLUMNS = (
    ("benchmark", "Benchmark"),
    ("case", "Case"),
    ("measure", "Measure"),
    ("value", "Value"),
    ("ratio", "Ratio (same run)"),
    ("notes", "Setting / notes"),
)


def row(benchmark: str, case: str, measure: str, value, ratio: str = "", notes: str = "") -> Dict[str, str]:
    return {"benchmark": benchmark, "case": case, "measure": measure, "value": str(value), "ratio": ratio,
            "notes": notes}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return "/".join(f"{v:.2f}" for v in os.getloadavg())
    except (OSError, AttributeError):
        return "n/a"


def machine() -> Dict[str, str]:
    """What the figures were measured on (printed above the table)."""
    import torch

    return {
        "cpu": cpu_model(),
        "cores": str(os.cpu_count()),
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "load_start": load_average(),
    }


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Iterable[Dict[str, str]]) -> str:
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(k, "")) for k, _ in COLUMNS) + " |")
    return "\n".join(lines)


def render(rows: List[Dict[str, str]], info: Dict[str, str], title: str = "VidSeg benchmarks",
           footer: Optional[List[str]] = None) -> str:
    """The machine line(s), the table and optional footer lines, as markdown."""
    head = [f"# {title}", "",
            f"Machine: {info.get('cpu', '?')}, {info.get('cores', '?')} cores; torch {info.get('torch', '?')}, "
            f"{info.get('threads', '?')} threads (OMP_WAIT_POLICY {info.get('omp_wait_policy', '?')}); Python {info.get('python', '?')}; {info.get('date', '')}",
            f"Load average (1/5/15 min) at start: {info.get('load_start', 'n/a')}"
            + (f", at end: {info['load_end']}" if info.get("load_end") else ""), ""]
    return "\n".join(head + [markdown_table(rows)] + ([""] + footer if footer else [])) + "\n"


def seconds(t: float) -> str:
    if t >= 100:
        return f"{t:.0f} s"
    if t >= 1:
        return f"{t:.2f} s"
    return f"{t * 1000:.1f} ms"


def ratio(slow: float, fast: float) -> str:
    return f"{slow / fast:.2f}x" if fast > 0 else "n/a"
