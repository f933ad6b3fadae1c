"""Where the benchmarks and figure scripts find their real clips (docs/benchmarks.md#the-clips).

The clips are not part of the pack: put them in ``clips/`` at the repository root (git-ignored) or name their
folder in the ``VIDSEG_CLIPS`` environment variable.  Every script's ``--data`` (or ``--frames``) overrides
both.  Layout::

    <clips>/blackswan/frames/00000.jpg ... 00013.jpg      the DAVIS 2017 blackswan frames, 854x480
    <clips>/blackswan/masks_osvos/00000.png ... 00049.png  OSVOS results (frame 0: the annotation)
    <clips>/blackswan/masks_rvos/00000.png ... 00049.png   RVOS unsupervised proposals
    <clips>/bedroom/frames/00000.jpg ... 00199.jpg         200 frames, 960x540, no masks
"""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: the environment variable naming the clips folder
CLIPS_ENV = "VIDSEG_CLIPS"


def clips_root() -> Path:
    """The folder named by ``VIDSEG_CLIPS``, else ``clips/`` at the repository root."""
    named = os.environ.get(CLIPS_ENV, "").strip()
    return Path(named).expanduser() if named else ROOT / "clips"


#: the clips folder as resolved when the benchmarks were imported
CLIPS = clips_root()


def missing_clip_message(path: Path) -> str:
    """What to tell the user when a clip folder is absent: where it was looked for, and the two fixes."""
    return (f"clip folder not found: {path}. Put the benchmark clips in clips/ at the repository root, set "
            f"{CLIPS_ENV} to their folder, or pass the folder on the command line (docs/benchmarks.md#the-clips).")


def require(path: Path) -> Path:
    """``path`` if it exists, else ``SystemExit`` with :func:`missing_clip_message`."""
    path = Path(path)
    if not path.exists():
        raise SystemExit(missing_clip_message(path))
    return path
