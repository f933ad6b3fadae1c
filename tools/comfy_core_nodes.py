"""``/object_info`` entries of the ComfyUI core nodes the bundled workflows use, as real servers reported them.

The entries are snapshots captured from running ComfyUI servers by ``tools/capture_core_specs.py`` and
committed as ``tools/comfy_specs/<ComfyUI version>.json`` (with the commit and frontend they came from), so
the workflow builder, the UI -> API converter and the tests (which run without ComfyUI) use what each
tested version really declares.  Combos whose options are files on the capturing machine (checkpoints,
input images / videos) are stored with no options and ``"dynamic": True``.

* :data:`CORE_NODES` -- the oldest tested version's entries: what ``workflows/build.py`` writes the
  workflows against (a saved workflow must load in the oldest frontend too);
* :func:`load_core_specs` -- one version's entries; :func:`tested_versions` -- every snapshot's version.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Dict, List

SPEC_DIR = Path(__file__).resolve().parent / "comfy_specs"

#: the core node types the bundled workflows use (what the capture keeps)
CORE_NODE_TYPES = ("LoadVideo", "GetVideoComponents", "CreateVideo", "SaveVideo", "LoadImage", "ImageScale",
                   "CheckpointLoaderSimple", "ImageOnlyCheckpointLoader", "CLIPTextEncode", "VAEEncode",
                   "VAEDecode", "SetLatentNoiseMask", "KSampler", "PreviewImage", "GrowMask", "MaskToImage")


def _version_key(v: str):
    return tuple(int(p) if p.isdigit() else p for p in v.replace("-", ".").split("."))


def tested_versions() -> List[str]:
    """Versions with a committed snapshot, oldest first."""
    return sorted((p.stem for p in SPEC_DIR.glob("*.json")), key=_version_key)


@lru_cache(maxsize=None)
def load_snapshot(version: str) -> dict:
    """The whole snapshot file of ``version`` (``comfyui_version``, ``commit``, ``frontend``, ``nodes``)."""
    path = SPEC_DIR / f"{version}.json"
    if not path.is_file():
        raise FileNotFoundError(f"no core node snapshot for ComfyUI {version} in {SPEC_DIR} (have "
                                f"{tested_versions()}): capture it with tools/capture_core_specs.py")
    return json.loads(path.read_text())


def load_core_specs(version: str = None) -> Dict[str, dict]:
    """Node type -> ``/object_info`` entry of ``version`` (default: the oldest tested version); a fresh copy."""
    versions = tested_versions()
    if version is None and not versions:
        raise FileNotFoundError(f"no core node snapshot in {SPEC_DIR}: capture one with tools/capture_core_specs.py")
    version = version or versions[0]
    return json.loads(json.dumps(load_snapshot(version)["nodes"]))


def __getattr__(name: str):
    """``CORE_NODES``: the oldest tested version's core specs (the workflows are written against them);
    ``COMFYUI_VERSION``: that version.  Read when asked, so capturing the first snapshot needs none."""
    if name == "CORE_NODES":
        return load_core_specs()
    if name == "COMFYUI_VERSION":
        return tested_versions()[0]
    raise AttributeError(name)
