"""The warnings diffusers logs while loading or casting models (its loggers do not propagate to root, so
pytest's ``caplog`` does not see them)."""
from __future__ import annotations

import contextlib
import logging
from typing import Iterator, List

CAST_LOG = "diffusers.models.modeling_utils"


@contextlib.contextmanager
def diffusers_warnings() -> Iterator[List[str]]:
    """Inside the block, every warning message of diffusers' model loader lands in the yielded list."""
    seen: List[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: seen.append(record.getMessage())
    log = logging.getLogger(CAST_LOG)
    log.addHandler(handler)
    try:
        yield seen
    finally:
        log.removeHandler(handler)
