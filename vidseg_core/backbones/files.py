"""Reading checkpoint files and diffusers folders: the helpers every backbone's file loader shares.

``loading`` picks the loader for a model; ``sd21_files`` / ``svd_files`` build their backbone from the
files with these helpers.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from ..errors import ModelLoadError


def _corrupt(path: Path, exc: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"Cannot read checkpoint {path.name}: the file is corrupt or truncated ({type(exc).__name__}: {exc}).",
        "Download the file again and check its size / hash.",
    )


def read_checkpoint_shapes(path: Path) -> Dict[str, Tuple[int, ...]]:
    """Key -> shape of a checkpoint without loading its tensors (safetensors) ."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="pt") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        sd = load_state_dict(path)
        return {k: tuple(v.shape) for k, v in sd.items() if hasattr(v, "shape")}
    except ModelLoadError:
        raise
    except Exception as exc:
        raise _corrupt(path, exc) from exc


def load_state_dict(path: Path) -> Dict[str, "object"]:
    """All tensors of a checkpoint on the CPU (safetensors, or a pickled state dict loaded with weights_only)."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        import torch

        obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if not isinstance(obj, dict):
            raise ModelLoadError(f"{path.name} does not hold a state dict.", "Use a .safetensors checkpoint.")
        return obj
    except ModelLoadError:
        raise
    except Exception as exc:
        raise _corrupt(path, exc) from exc


def check_folder_parts(folder: Path, parts: Sequence[str]) -> None:
    """Raise a readable error naming every missing component of a diffusers folder."""
    missing = []
    for part in parts:
        sub = folder / part
        if not sub.is_dir() or not (sub / "config.json").is_file() and not (sub / "scheduler_config.json").is_file():
            missing.append(part)
        elif part not in ("scheduler", "feature_extractor", "tokenizer") and not any(
                p.suffix in (".safetensors", ".bin") for p in sub.iterdir()):
            missing.append(f"{part} (weights)")
    if missing:
        raise ModelLoadError(f"The diffusers folder {folder.name} is incomplete: missing {', '.join(missing)}.",
                             "Copy the complete model folder (all its sub-folders) from its source.")


def weights_variant(part_folder: Path, stem: str) -> Optional[str]:
    """The diffusers ``variant`` of a component folder: ``None`` when ``<stem>.safetensors`` / ``.bin`` is there,
    else the tag of the first ``<stem>.<tag>.safetensors`` / ``.bin`` (``"fp16"`` as the HF repos ship)."""
    part_folder = Path(part_folder)
    if any((part_folder / f"{stem}{ext}").is_file() for ext in (".safetensors", ".bin")):
        return None
    for ext in ("safetensors", "bin"):
        for p in sorted(part_folder.glob(f"{stem}.*.{ext}")):
            m = re.fullmatch(re.escape(stem) + r"\.([A-Za-z0-9_]+)\." + ext, p.name)
            if m:
                return m.group(1)
    return None
