"""Loading SVD offline: single files (the sgm layout) and diffusers folders.

Single files (``svd.safetensors``, ``svd_xt.safetensors``) are read lazily
from safetensors, their architecture matched against the shipped configs by
tensor shapes, converted to the diffusers layout (:mod:`.svd_convert`) and
loaded into meta-built modules; diffusers folders load per component with
``from_pretrained(..., local_files_only=True)`` (docs/design/backbones.md#offline-loading-of-sd-21-single-files).
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from ..errors import ModelLoadError
from .config import SVDConfig
from .svd import (PARTS, TINY_IMAGE_ENCODER, TINY_UNET, TINY_VAE, ConditioningEncoder, SVDBackbone, _build,
                  _build_parts, _finish, real_configs)

# ------------------------------------------------------------------ single files
class _SafetensorsSource:
    """Lazy key -> tensor view of an open safetensors file (read one tensor at a time)."""

    def __init__(self, handle, name: str):
        self.handle = handle
        self.name = name

    def keys(self):
        return self.handle.keys()

    def __getitem__(self, key: str) -> torch.Tensor:
        try:
            return self.handle.get_tensor(key)
        except Exception as exc:
            raise ModelLoadError(f"Cannot read tensor {key} of {self.name}: the file is corrupt or truncated ({exc}).",
                                 "Download the file again and check its size / hash.") from exc


@contextlib.contextmanager
def _open_checkpoint(path: Path):
    from .files import load_state_dict

    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            handle = safe_open(str(path), framework="pt", device="cpu")
        except Exception as exc:
            raise ModelLoadError(f"Cannot read checkpoint {path.name}: the file is corrupt or truncated ({exc}).",
                                 "Download the file again and check its size / hash.") from exc
        with handle:
            yield _SafetensorsSource(handle, path.name)
    else:
        yield load_state_dict(path)


def _candidate_shapes(unet, vae, enc) -> Dict[str, Dict[str, tuple]]:
    from .svd_convert import clip_to_sgm, unet_to_sgm, vae_to_sgm

    return {"unet": {k: tuple(v.shape) for k, v in unet_to_sgm(unet.state_dict()).items()},
            "vae": {k: tuple(v.shape) for k, v in vae_to_sgm(vae.state_dict()).items()},
            "image_encoder": {k: tuple(v.shape) for k, v in clip_to_sgm(enc.state_dict()).items()}}


def match_architecture(shapes: Dict[str, tuple], num_frames: int = 14) -> Tuple[dict, dict, dict, Dict[str, str]]:
    """Configs (UNet, VAE, image encoder) whose original-layout tensor shapes the checkpoint has.

    Real SVD / SVD-XT first, then the tiny test model; per component.  The
    attention head counts are not stored in a checkpoint, so the configs come
    from these known architectures rather than from the shapes alone.
    """
    from .svd_convert import COND_VAE_PREFIX

    real = real_configs(num_frames)
    tiny = (dict(TINY_UNET), dict(TINY_VAE), dict(TINY_IMAGE_ENCODER))
    cands = {"real": (real, _candidate_shapes(*_build_parts(*real, meta=True))),
             "tiny": (tiny, _candidate_shapes(*_build_parts(*tiny, meta=True)))}
    chosen, which, first_diff = [], {}, {}
    for i, part in enumerate(PARTS):
        for label, (cfgs, cand) in cands.items():
            expected = cand[part]
            diff = None
            for k, shape in expected.items():
                if k.startswith(COND_VAE_PREFIX) and k not in shapes:
                    continue  # the conditioning encoder copy is optional
                if shapes.get(k) != shape:
                    diff = f"{k}: file {shapes.get(k, 'missing')}, expected {shape}"
                    break
            if diff is None:
                chosen.append(cfgs[i])
                which[part] = label
                break
            first_diff.setdefault(part, diff)
        else:
            raise ModelLoadError(
                f"This Stable Video Diffusion checkpoint's {part} does not have the SVD / SVD-XT layer shapes "
                f"(first difference: {first_diff[part]}).",
                "Use the original svd.safetensors / svd_xt.safetensors (img2vid), or a diffusers-format SVD folder.")
    return chosen[0], chosen[1], chosen[2], which


def _position_ids_fix(module: torch.nn.Module) -> None:
    """Materialise non-persistent ``position_ids`` buffers left on the meta device (transformers' CLIP)."""
    for name, buf in list(module.named_buffers()):
        if buf.is_meta and name.endswith("position_ids"):
            owner_name, _, attr = name.rpartition(".")
            owner = module.get_submodule(owner_name) if owner_name else module
            ids = torch.arange(buf.shape[-1], dtype=torch.long).expand(tuple(buf.shape)).clone()
            owner.register_buffer(attr, ids, persistent=False)


def _load_into(meta_module: torch.nn.Module, rebuild, state: Dict[str, torch.Tensor], dtype, what: str):
    """Adopt ``state`` into a meta-built module (no second copy); fall back to a normal build if needed."""
    # pop as we convert so a dtype change never holds two full copies of the weights
    state = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in
             ((k, state.pop(k)) for k in list(state))}
    try:
        meta_module.load_state_dict(state, strict=True, assign=True)
        _position_ids_fix(meta_module)
        module = meta_module
        if any(t.is_meta for t in list(module.parameters()) + list(module.buffers())):
            module = rebuild()
            module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"The converted {what} weights do not fit the model ({str(exc)[:300]}).",
                             "Use the original svd.safetensors / svd_xt.safetensors.") from exc
    return module


def load_svd_single_file(path, device, dtype, config: Optional[SVDConfig] = None) -> SVDBackbone:
    """An original-layout ``svd.safetensors`` / ``svd_xt.safetensors`` (or a tiny file of that layout), offline."""
    from .files import read_checkpoint_shapes
    from .svd_convert import sgm_to_diffusers

    path = Path(path)
    device = torch.device(device)
    num_frames = 25 if "xt" in path.stem.lower() else 14
    shapes = read_checkpoint_shapes(path)
    unet_cfg, vae_cfg, clip_cfg, _ = match_architecture(shapes, num_frames)
    unet_cfg = {**unet_cfg, "num_frames": num_frames}  # does not change any weight shape
    cfgs = {"unet": unet_cfg, "vae": vae_cfg, "image_encoder": clip_cfg}
    metas = {part: _build(part, cfg, meta=True) for part, cfg in cfgs.items()}
    with _open_checkpoint(path) as source:
        conv = sgm_to_diffusers(source, *(metas[p].state_dict().keys() for p in PARTS))
    states = {"unet": conv.unet, "vae": conv.vae, "image_encoder": conv.image_encoder}
    mods = {p: _finish(_load_into(metas[p], lambda p=p: _build(p, cfgs[p]), states[p], dtype, p), device, dtype)
            for p in PARTS}
    cond_encoder = None
    if conv.cond_encoder is not None:  # the file's conditioning encoder differs from its first-stage encoder

        def cond_module(meta: bool) -> ConditioningEncoder:
            v = _build("vae", vae_cfg, meta)
            return ConditioningEncoder(v.encoder, v.quant_conv)

        cond_encoder = _finish(_load_into(cond_module(True), lambda: cond_module(False), conv.cond_encoder, dtype,
                                          "conditioning encoder"), device, dtype)
    return SVDBackbone(path.stem, config or SVDConfig(), mods["unet"], mods["vae"], mods["image_encoder"], device,
                       dtype, cond_encoder=cond_encoder)


# ------------------------------------------------------------------ diffusers folders
def load_svd_diffusers(folder, device, dtype, config: Optional[SVDConfig] = None) -> SVDBackbone:
    """A diffusers-format SVD folder (``unet/``, ``vae/``, ``image_encoder/``), offline."""
    from diffusers import AutoencoderKLTemporalDecoder, UNetSpatioTemporalConditionModel
    from transformers import CLIPVisionModelWithProjection

    from .files import check_folder_parts, weights_variant

    folder = Path(folder)
    device = torch.device(device)
    check_folder_parts(folder, PARTS)
    loaders = (("unet", UNetSpatioTemporalConditionModel, "diffusion_pytorch_model"),
               ("vae", AutoencoderKLTemporalDecoder, "diffusion_pytorch_model"),
               ("image_encoder", CLIPVisionModelWithProjection, "model"))
    parts = []
    for sub, cls, stem in loaders:
        kwargs = {"local_files_only": True}
        variant = weights_variant(folder / sub, stem)
        if variant:
            kwargs["variant"] = variant
        try:
            parts.append(_finish(cls.from_pretrained(str(folder / sub), **kwargs), device, dtype))
        except Exception as exc:
            raise ModelLoadError(f"Cannot load {folder.name}/{sub} ({type(exc).__name__}: {str(exc)[:300]}).",
                                 "Copy the complete model folder again (its weights or config.json are damaged).") from exc
    return SVDBackbone(folder.name, config or SVDConfig(), parts[0], parts[1], parts[2], device, dtype)
