"""Equality check: VidSeg on ComfyUI's own loaders (native adapter) vs the pack's own loader, same file.

Run with ComfyUI's Python (the pack is loaded from this file's checkout)::

    python <pack>/tools/check_native.py --comfyui COMFYUI_DIR --models DIR [--family sd svd] [--frames 2] [--size 128]

It first prints the ComfyUI version, commit and frontend it runs on (``tools/comfy_runtime.py``).

For each family it writes (or reuses) a random full-size single file in the
original key layout, built from the configs the pack ships
(``DIR/vidseg_check_v2-1_512_random.safetensors``,
``DIR/vidseg_check_svd_random.safetensors``; fp16 storage, about 2.6 / 4.2 GB),
loads it with ComfyUI's ``load_checkpoint_guess_config`` (what Load Checkpoint /
Image Only Checkpoint Loader call) and with the pack's ``load_backbone``, runs
both on a few small synthetic frames, one path at a time (memory), and prints
the maximum difference per stage:

* ``features``: aggregated and correspondence queries, max |Δ| / max |x| (fp32);
* ``coarse``: refined coarse labels (pixels that differ);
* ``fast`` / ``quality``: full-resolution labels (fraction of pixels that differ).

Exits 1 when a stage exceeds its tolerance.  ComfyUI runs with ``--cpu`` and
fp32 everywhere (``--force-fp32 --fp32-text-enc``: by default ComfyUI stores
the text / vision encoders in fp16, which changes the SD empty-prompt
embedding and the SVD image embedding at fp16 precision).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
FILES = {"sd": "vidseg_check_v2-1_512_random.safetensors", "svd": "vidseg_check_svd_random.safetensors"}
#: default tolerances: relative feature difference, coarse pixels, full-resolution pixel fractions
TOLERANCES = {"features": 1e-3, "coarse": 0, "fast": 1e-3, "quality": 1e-3}


def _comfy_setup(comfy_dir=None) -> dict:
    """ComfyUI from ``comfy_dir`` (default: the current folder) importable here, fp32 on the CPU; prints which
    ComfyUI (version, commit, frontend) the check runs on."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tools.comfy_runtime import setup_in_process

    return setup_in_process(comfy_dir or os.getcwd())


def load_random_checkpoint(models: Path, family: str, model_options: Optional[dict] = None, comfy_dir=None):
    """ComfyUI set up (:func:`_comfy_setup`), the pack loaded, and the random full-size file of ``family`` under
    ``models`` loaded with ComfyUI's ``load_checkpoint_guess_config`` (``model_options`` as its own, e.g.
    ``{"dtype": torch.float16}``): ``(pack, model, vae, encoders)``, where ``encoders`` are the keyword
    arguments of ``backbone_from_comfy`` (``clip`` or ``clip_vision``); ``comfy_dir``: the ComfyUI folder
    (default: the current folder)."""
    _comfy_setup(comfy_dir)
    import comfy.sd

    from tools.pack_loader import load_pack

    pack = load_pack()
    svd = family == "svd"
    model, clip, vae, clip_vision = comfy.sd.load_checkpoint_guess_config(
        str(models / FILES[family]), output_vae=True, output_clip=not svd, output_clipvision=svd,
        model_options=dict(model_options or {}))[:4]
    return pack, model, vae, ({"clip_vision": clip_vision} if svd else {"clip": clip})


# ------------------------------------------------------------------ random full-size files
def _save(state, path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_suffix(".partial")
    out, seen = {}, set()
    for k, v in state.items():
        v = (v.to(torch.float16) if v.is_floating_point() else v).contiguous()
        if v.data_ptr() in seen:  # a part written twice (SVD's conditioning encoder copy): its own storage
            v = v.clone()
        seen.add(v.data_ptr())
        out[k] = v
    save_file(out, str(tmp))
    tmp.rename(path)


def _ldm_layout():
    """The pack's test helper writing the original SD layout, by path (ComfyUI has a ``tests`` package too)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("vidseg_ldm_layout", ROOT / "tests" / "helpers" / "ldm_layout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_sd(path: Path, seed: int = 0) -> None:
    """SD 2.1 (512-base layout) with random weights: diffusers modules from the shipped configs -> LDM keys."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from vidseg_core.backbones.sd21 import CONFIG_DIR

    sd_ldm_state = _ldm_layout().sd_ldm_state

    def cfg(part):
        return {k: v for k, v in json.loads((CONFIG_DIR / part / "config.json").read_text()).items()
                if not k.startswith("_")}

    torch.manual_seed(seed)
    unet = UNet2DConditionModel.from_config(cfg("unet"))
    vae = AutoencoderKL.from_config(cfg("vae"))
    text = {k: v for k, v in cfg("text_encoder").items() if k not in ("architectures", "model_type")}
    te = CLIPTextModel(CLIPTextConfig(**text))
    state = sd_ldm_state(unet.half(), vae.half(), te.half())
    del unet, vae, te
    _save(state, path)


def write_svd(path: Path, seed: int = 0) -> None:
    """SVD img2vid with random weights: diffusers modules from the shipped configs -> sgm keys."""
    from vidseg_core.backbones.svd import _build_parts, real_configs
    from vidseg_core.backbones.svd_convert import diffusers_to_sgm

    torch.manual_seed(seed)
    unet, vae, enc = (m.half() for m in _build_parts(*real_configs(14)))  # fp16 storage: halves the peak
    state = diffusers_to_sgm(unet.state_dict(), vae.state_dict(), enc.state_dict())
    del unet, vae, enc
    _save(state, path)


# ------------------------------------------------------------------ runs
def synthetic_frames(t: int, size: int) -> torch.Tensor:
    """A bright ellipse moving over a noisy two-tone background, ``[T,S,S,3]`` in 0..1."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    out = torch.empty(t, size, size, 3)
    for i in range(t):
        img = torch.where((yy < size // 2)[..., None], torch.tensor([0.1, 0.3, 0.6]), torch.tensor([0.2, 0.5, 0.2]))
        m = ((xx - size * (0.35 + 0.05 * i)) ** 2 + (yy - size * 0.5) ** 2 * 2) < (size * 0.22) ** 2
        img[m] = torch.tensor([0.95, 0.9, 0.1])
        out[i] = (img + 0.05 * torch.randn(size, size, 3, generator=g)).clamp(0, 1)
    return out


def run_all(bb, frames: torch.Tensor, k: int, modes) -> dict:
    from vidseg_core.features import extract_batch_features
    from vidseg_core.pipeline import SegmentSettings, segment_video

    out, secs = {}, {}
    t0 = time.perf_counter()
    with torch.inference_mode():
        out["agg"], out["corr"] = extract_batch_features(bb, frames, store_dtype=torch.float32)
        secs["features"] = time.perf_counter() - t0
        for mode in modes:
            t0 = time.perf_counter()
            labels, coarse, _ = segment_video(bb, frames, SegmentSettings(num_clusters=k, mode=mode,
                                                                          batch_size=frames.shape[0]),
                                              keep_coarse=True)
            out[mode], out["coarse"] = labels, coarse
            secs[mode] = time.perf_counter() - t0
    out["seconds"] = secs
    return out


def native_path(path: Path, family: str, frames, k, modes, pack) -> dict:
    import comfy.model_management as mm
    import comfy.sd

    t0 = time.perf_counter()
    model, clip, vae, clip_vision = comfy.sd.load_checkpoint_guess_config(
        str(path), output_vae=True, output_clip=family == "sd", output_clipvision=family == "svd")[:4]
    load = time.perf_counter() - t0
    native = sys.modules[pack.__name__ + ".nodes.comfy_adapters.native"]
    bb = native.backbone_from_comfy(model, vae, clip=clip, clip_vision=clip_vision)
    before = repr(model.model_options)
    res = run_all(bb, frames, k, modes)
    res["seconds"]["load"] = load
    res["options_unchanged"] = repr(model.model_options) == before
    res["detected"] = f"{type(model.model).__name__} / {model.model.model_type.name}"
    del bb, model, clip, vae, clip_vision
    mm.unload_all_models()
    gc.collect()
    return res


def pack_path(path: Path, family: str, frames, k, modes, ptype) -> dict:
    from vidseg_core.backbones import load_backbone

    t0 = time.perf_counter()
    bb = load_backbone(str(path), device="cpu", precision="fp32", prediction_type=ptype)
    load = time.perf_counter() - t0
    res = run_all(bb, frames, k, modes)
    res["seconds"]["load"] = load
    del bb
    gc.collect()
    return res


def compare(a: dict, b: dict, modes) -> dict:
    def rel(x, y):
        return float((x - y).abs().max() / y.abs().max().clamp_min(1e-12))

    figs = {"features": max(rel(a["agg"], b["agg"]), rel(a["corr"], b["corr"])),
            "coarse": int((a["coarse"] != b["coarse"]).sum())}
    for mode in modes:
        figs[mode] = float((a[mode] != b[mode]).float().mean())
    return figs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", required=True, type=Path, help="folder for the random full-size files")
    p.add_argument("--family", nargs="+", default=["sd", "svd"], choices=["sd", "svd"])
    p.add_argument("--frames", type=int, default=2)
    p.add_argument("--size", type=int, default=128, help="square frame side (multiple of 64)")
    p.add_argument("--clusters", type=int, default=3)
    p.add_argument("--modes", nargs="+", default=["fast", "quality"], choices=["fast", "quality"])
    p.add_argument("--comfyui", type=Path, default=None, metavar="COMFYUI_DIR",
                   help="the ComfyUI folder to run on (default: the current folder)")
    args = p.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    _comfy_setup(args.comfyui)
    from tools.pack_loader import load_pack

    pack = load_pack()
    args.models.mkdir(parents=True, exist_ok=True)
    frames = synthetic_frames(args.frames, args.size)
    ok = True
    for family in args.family:
        path = args.models / FILES[family]
        if not path.is_file():
            t0 = time.perf_counter()
            (write_sd if family == "sd" else write_svd)(path)
            print(f"[{family}] wrote {path} ({path.stat().st_size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.0f} s")
        native = native_path(path, family, frames, args.clusters, args.modes, pack)
        ptype = None
        if family == "sd":
            ptype = "v_prediction" if "V_PREDICTION" in native["detected"] else "epsilon"
        ours = pack_path(path, family, frames, args.clusters, args.modes, ptype)
        figs = compare(native, ours, args.modes)
        print(f"[{family}] ComfyUI detected {native['detected']}; input MODEL options unchanged: "
              f"{native['options_unchanged']}; {args.frames} frames {args.size}x{args.size}, K={args.clusters}")
        for stage, value in figs.items():
            bad = value > TOLERANCES[stage]
            ok &= not bad
            unit = {"features": "max rel |Δ|", "coarse": "pixels differ"}.get(stage, "fraction of pixels differ")
            print(f"[{family}]   {stage:8s} {unit}: {value:.3g} (tolerance {TOLERANCES[stage]}){'  FAIL' if bad else ''}")
        ok &= native["options_unchanged"]
        print(f"[{family}]   seconds native {json.dumps({k: round(v, 1) for k, v in native['seconds'].items()})}; "
              f"pack {json.dumps({k: round(v, 1) for k, v in ours['seconds'].items()})}")
        del native, ours
        gc.collect()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
