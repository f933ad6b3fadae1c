"""Memory figures of the running process from Linux ``/proc/self/status`` (None elsewhere)."""
from __future__ import annotations

from typing import Optional


def status_mb(key: str) -> Optional[float]:
    """``key`` of ``/proc/self/status`` (``VmRSS``, ``VmHWM``: the resident size now / its high-water mark) in
    MiB, or None where ``/proc`` is absent or the line is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None
