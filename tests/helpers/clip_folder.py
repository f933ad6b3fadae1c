"""The real clips the tests read (docs/benchmarks.md#the-clips), resolved in one place."""
from __future__ import annotations

import os
from pathlib import Path

from benchmarks.clips import CLIPS_ENV, clips_root

ROOT = Path(__file__).resolve().parents[2]


def clip_folder() -> Path:
    """``VIDSEG_CLIPS`` when set, else ``clips/`` in the checkout when present, else ``shared/data`` beside it."""
    root = clips_root()
    if os.environ.get(CLIPS_ENV, "").strip() or root.is_dir():
        return root
    return ROOT.parent / "shared" / "data"
