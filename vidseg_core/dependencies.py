"""diffusers and transformers, checked against the installed torch before a model is built.

The pack imports both lazily (ComfyUI users keep their own torch).  Recent releases need a recent torch:
diffusers 0.41 and newer fail to import under torch 2.5 (``torch.accelerator``), and transformers 5 imports
but disables its PyTorch models there, handing out placeholder classes.  A model load would then end in a
bare traceback from inside diffusers.  :func:`check_model_stack` turns both into a :class:`DependencyError`
that names the versions and the fix.

Tested (the whole suite, on the CPU): torch 2.5.1 with every lower bound of ``requirements.txt`` (diffusers
0.30.3, transformers 4.40.2, ...); torch 2.11.0 and 2.13.0 with diffusers 0.42.1 and transformers 5.24.0.
"""
from __future__ import annotations

import importlib

from .errors import DependencyError

_import = importlib.import_module  # one seam for the tests

#: what to install when the newest diffusers / transformers do not suit the user's torch
OLDER_STACK = "pip install 'diffusers==0.30.3' 'transformers==4.40.2'"


def _fix(torch_version: str) -> str:
    return (f"Upgrade torch to 2.6 or newer, or keep torch {torch_version} and install releases that support it: "
            f"{OLDER_STACK} (tested with torch 2.5.1).")


def check_diffusers() -> None:
    """Raise :class:`DependencyError` unless diffusers imports with the installed torch."""
    import torch

    try:
        _import("diffusers")
    except ModuleNotFoundError as exc:
        raise DependencyError("diffusers is not installed.",
                              "pip install -r requirements.txt (in ComfyUI's Python environment).") from exc
    except Exception as exc:  # an import-time failure inside diffusers: a torch it does not support
        raise DependencyError(f"diffusers does not import with torch {torch.__version__} "
                              f"({type(exc).__name__}: {exc}).", _fix(torch.__version__)) from exc


def check_model_stack() -> None:
    """Raise :class:`DependencyError` unless diffusers imports and transformers has its PyTorch models (the
    pack's own loader builds its text and image encoders with transformers)."""
    import torch

    check_diffusers()
    try:
        transformers = _import("transformers")
    except ModuleNotFoundError as exc:
        raise DependencyError("transformers is not installed.",
                              "pip install -r requirements.txt (in ComfyUI's Python environment).") from exc
    if not transformers.utils.is_torch_available():
        raise DependencyError(f"transformers {transformers.__version__} has disabled its PyTorch models: it needs "
                              f"a newer torch than {torch.__version__}.", _fix(torch.__version__))
