"""Find, inspect and load a backbone fully offline.

``load_backbone(model)`` accepts ``"tiny-sd"`` / ``"tiny-svd"``, a single-file
checkpoint (``.safetensors``, ``.ckpt``), a diffusers-format folder, or a bare
file / folder name looked up in ``search_dirs`` (the ComfyUI nodes pass
ComfyUI's model folders).  It never touches a hub: configs ship with the pack
and every diffusers call uses ``local_files_only=True``.

The model family is read from the checkpoint's keys (SD 2.x vs SVD, and the
families we refuse with a clear message: SD 1.x, SDXL, SD3, Flux, ...).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple

from ..dependencies import check_model_stack
from ..devices import resolve_device, resolve_dtype
from ..errors import InputError, ModelLoadError
from .base import without_empty_fp32_warning
from .files import read_checkpoint_shapes

TINY_MODELS = ("tiny-sd", "tiny-svd")
CHECKPOINT_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
WHERE_SINGLE_FILES = "ComfyUI/models/checkpoints (or ComfyUI/models/vidseg)"
WHERE_FOLDERS = "ComfyUI/models/diffusers"

_FAMILY_NAMES = {
    "sd2": "Stable Diffusion 2.x",
    "svd": "Stable Video Diffusion",
    "sd1": "Stable Diffusion 1.x",
    "sdxl": "Stable Diffusion XL",
    "sd3": "Stable Diffusion 3",
    "flux": "Flux",
    "diffusers_unet": "a diffusers-format UNet file (no VAE / encoders)",
}


# ---------------------------------------------------------------- detecting
def detect_family(shapes: Dict[str, Tuple[int, ...]]) -> str:
    """Model family of an original-layout (LDM / sgm) checkpoint from its keys."""
    keys = shapes.keys()
    if not keys:
        raise ModelLoadError("The checkpoint holds no tensors.", "Download the file again.")
    if any(k.startswith(("double_blocks.", "model.diffusion_model.double_blocks.")) for k in keys):
        return "flux"
    if any(".joint_blocks." in k or k.startswith("joint_blocks.") for k in keys):
        return "sd3"
    unet = [k for k in keys if k.startswith("model.diffusion_model.")]
    if not unet:
        if any(k.startswith(("down_blocks.", "up_blocks.", "conv_in.")) for k in keys):
            return "diffusers_unet"
        return "unknown"
    if any(".time_stack." in k or ".time_mixer." in k for k in unet):
        return "svd"
    if "model.diffusion_model.label_emb.0.0.weight" in shapes or any(k.startswith("conditioner.embedders.1.") for k in keys):
        return "sdxl"
    ctx = [v for k, v in shapes.items() if k.startswith("model.diffusion_model.input_blocks.")
           and k.endswith("attn2.to_k.weight")]
    if ctx:
        dim = ctx[0][-1]
        if dim == 768:
            return "sd1"
        return "sd2"  # 1024 for real SD 2.x; tiny test models use small context dims
    return "unknown"


def detect_folder_family(folder: Path) -> str:
    """Family of a diffusers-format folder from its ``model_index.json``."""
    index = folder / "model_index.json"
    if not index.is_file():
        raise ModelLoadError(
            f"{folder} is a folder but not a diffusers model (no model_index.json).",
            f"Point to a diffusers folder (with model_index.json) in {WHERE_FOLDERS}, or to a single .safetensors file.",
        )
    try:
        cls = json.loads(index.read_text()).get("_class_name", "")
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{index} is not valid JSON ({exc}).", "Restore the folder from its source.") from exc
    if cls in ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"):
        return "sd2"
    if cls == "StableVideoDiffusionPipeline":
        return "svd"
    raise ModelLoadError(f"{folder.name} is a {cls or 'unknown'} diffusers folder; VidSeg needs Stable Diffusion 2.1 or "
                         "Stable Video Diffusion.", "Choose an SD 2.1 or SVD model.")


# ---------------------------------------------------------------- finding
def resolve_model_path(model: str, search_dirs: Iterable[os.PathLike] = ()) -> Path:
    """A path as given, or a name found in one of ``search_dirs``."""
    p = Path(model).expanduser()
    if p.exists():
        return p
    for d in search_dirs:
        cand = Path(d) / model
        if cand.exists():
            return cand
    looked = ", ".join(str(d) for d in search_dirs) or "(no model folders given)"
    raise ModelLoadError(
        f"Model {model!r} was not found (looked at the path itself and in: {looked}).",
        f"Put SD 2.1 / SVD single files (v2-1_512-ema-pruned.safetensors, svd.safetensors, ...) in {WHERE_SINGLE_FILES}, "
        f"diffusers folders in {WHERE_FOLDERS}, or pass a full path; 'tiny-sd' / 'tiny-svd' need no file.",
    )


# ---------------------------------------------------------------- loading
def load_backbone(model: str, device: str = "auto", precision: str = "auto", *,
                  prediction_type: Optional[str] = None, search_dirs: Iterable[os.PathLike] = (),
                  config=None):
    """Load a backbone by name or path, offline.  See the module docstring."""
    check_model_stack()
    with without_empty_fp32_warning():
        return _load_backbone(model, device, precision, prediction_type=prediction_type, search_dirs=search_dirs,
                              config=config)


def _load_backbone(model, device, precision, *, prediction_type, search_dirs, config):
    dev = resolve_device(device)
    dtype = resolve_dtype(precision, dev)
    if not isinstance(model, str) or not model.strip():
        raise InputError("No model was given.", "Pass a checkpoint path, a diffusers folder, 'tiny-sd' or 'tiny-svd'.")
    name = model.strip()
    if name.lower() in TINY_MODELS:
        if name.lower() == "tiny-sd":
            from .sd21 import build_tiny_sd

            return build_tiny_sd(device=dev, dtype=dtype, config=config)
        from .svd import build_tiny_svd

        return build_tiny_svd(device=dev, dtype=dtype, config=config)
    if name.lower().startswith("tiny"):
        raise InputError(f"Unknown model type {name!r}.", f"The built-in test models are {', '.join(TINY_MODELS)}.")

    path = resolve_model_path(name, search_dirs)
    if path.is_dir():
        family = detect_folder_family(path)
        if family == "sd2":
            from .sd21_files import load_sd21_diffusers

            return load_sd21_diffusers(path, device=dev, dtype=dtype, prediction_type=prediction_type, config=config)
        from .svd_files import load_svd_diffusers

        return load_svd_diffusers(path, device=dev, dtype=dtype, config=config)

    if path.suffix.lower() not in CHECKPOINT_EXTENSIONS:
        raise ModelLoadError(f"{path.name} is not a model checkpoint (expected {', '.join(CHECKPOINT_EXTENSIONS)}).",
                             "Choose a .safetensors checkpoint or a diffusers folder.")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"{path.name} is empty (0 bytes).", "Download the file again.")
    family = detect_family(read_checkpoint_shapes(path))
    if family == "sd2":
        from .sd21_files import load_sd21_single_file

        return load_sd21_single_file(path, device=dev, dtype=dtype, prediction_type=prediction_type, config=config)
    if family == "svd":
        from .svd_files import load_svd_single_file

        return load_svd_single_file(path, device=dev, dtype=dtype, config=config)
    what = _FAMILY_NAMES.get(family, "an unrecognised model")
    raise ModelLoadError(
        f"{path.name} is {what}, not Stable Diffusion 2.1 or Stable Video Diffusion.",
        "VidSeg works with v2-1_512-ema-pruned / v2-1_768-ema-pruned (SD 2.1) or svd / svd_xt checkpoints; "
        f"put one in {WHERE_SINGLE_FILES}.",
    )
