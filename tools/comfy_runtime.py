"""Which ComfyUI a developer check runs on, and setting it up inside the check's own process.

Every real-ComfyUI check takes the ComfyUI folder (``--comfyui DIR``, default: the current folder) and prints
:func:`banner` first: the version from ``comfyui_version.py``, the commit (``git`` in that folder, else the
``COMFYUI_COMMIT`` environment variable, else "commit unknown") and the frontend package the folder pins in
its ``requirements.txt``.  ComfyUI is never imported by the pack's tests; these helpers only run beside a
real ComfyUI.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Optional


def comfy_identity(comfy_dir) -> dict:
    """``{"dir", "version", "commit", "frontend"}`` of a ComfyUI folder (values may be ``None``)."""
    d = Path(comfy_dir).resolve()
    if not (d / "main.py").is_file() or not (d / "comfy").is_dir():
        raise SystemExit(f"{d} is not a ComfyUI folder (no main.py / comfy/): pass --comfyui COMFYUI_DIR")
    version = commit = frontend = None
    vfile = d / "comfyui_version.py"
    if vfile.is_file():
        m = re.search(r"__version__\s*=\s*[\"']([^\"']+)", vfile.read_text())
        version = m.group(1) if m else None
    try:
        commit = subprocess.run(["git", "-C", str(d), "rev-parse", "--short=8", "HEAD"], capture_output=True,
                                text=True, timeout=10).stdout.strip() or None
        if commit and not (d / ".git").exists():
            commit = None  # a folder inside another repository: not ComfyUI's own commit
    except (OSError, subprocess.SubprocessError):
        commit = None
    commit = commit or os.environ.get("COMFYUI_COMMIT") or None
    req = d / "requirements.txt"
    if req.is_file():
        m = re.search(r"^comfyui-frontend-package\s*==\s*(\S+)", req.read_text(), re.M)
        frontend = m.group(1) if m else None
    return {"dir": str(d), "version": version, "commit": commit, "frontend": frontend}


def version_label(ident: dict) -> str:
    """``0.33.0 (de6b062f)`` -- what the result tables print."""
    return f"{ident.get('version') or '?'} ({ident.get('commit') or 'commit unknown'})"


def banner(ident: dict, live: Optional[dict] = None) -> str:
    """One line naming the ComfyUI a check ran on; ``live``: ``/system_stats`` of a running server."""
    text = (f"ComfyUI {version_label(ident)}, frontend {ident.get('frontend') or '?'}, at {ident['dir']}")
    if live:
        system = live.get("system", {})
        text += (f"; server reports ComfyUI {system.get('comfyui_version', '?')}, "
                 f"Python {str(system.get('python_version', '?')).split()[0]}, "
                 f"torch {system.get('pytorch_version', '?')}")
    else:
        try:
            import torch

            text += f"; Python {sys.version.split()[0]}, torch {torch.__version__}"
        except ImportError:
            pass
    return text


def add_comfy_argument(parser) -> None:
    parser.add_argument("--comfyui", type=Path, default=Path(os.getcwd()), metavar="COMFYUI_DIR",
                        help="the ComfyUI folder to run on (default: the current folder)")


def setup_in_process(comfy_dir, fp32: bool = True) -> dict:
    """Make ``comfy`` importable from ``comfy_dir`` in this process (CPU unless CUDA is there; fp32 everywhere
    with ``fp32``: ``--force-fp32 --fp32-text-enc``), print :func:`banner`, return the identity."""
    import torch

    ident = comfy_identity(comfy_dir)
    if _SET_UP.get("ident"):
        if _SET_UP["ident"]["dir"] != ident["dir"]:
            raise SystemExit(f"ComfyUI from {_SET_UP['ident']['dir']} is already set up in this process")
        return _SET_UP["ident"]
    root = ident["dir"]
    if root not in sys.path:
        sys.path.insert(1, root)  # after the pack's root: both have a ``tests`` / ``tools`` folder
    for name in [m for m in sys.modules if m == "comfy" or m.startswith("comfy.")]:
        mod = sys.modules[name]
        if getattr(mod, "__file__", None) and not str(mod.__file__).startswith(root):
            raise SystemExit(f"another ComfyUI is already imported ({mod.__file__})")
    import comfy.options

    comfy.options.enable_args_parsing(False)
    from comfy.cli_args import args

    args.cpu = not torch.cuda.is_available()
    if fp32:
        args.force_fp32 = True
        args.fp32_text_enc = True
    import comfy.model_management  # noqa: F401 - reads the args

    print(banner(ident), flush=True)
    _SET_UP["ident"] = ident
    return ident


_SET_UP: dict = {}
