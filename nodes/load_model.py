"""Load SD 2.1 / SVD (``VidSegLoadModel``): the loader half of the loader -> compute-node pattern."""
from __future__ import annotations

import torch

from ..vidseg_core.backbones import TINY_MODELS, load_backbone
from ..vidseg_core.compile import COMPILE_CHOICES, compile_backbone, resolve_compile
from ..vidseg_core.devices import PRECISIONS
from .comfy_adapters import bridge
from .schema import Combo, Node, Out
from .sockets import VIDSEG_MODEL, ModelHandle

DEVICES = ("auto", "cpu", "cuda")
PREDICTION_TYPES = ("auto", "epsilon", "v_prediction")


class VidSegLoadModel:
    @classmethod
    def declare(cls) -> Node:
        return Node(
            "VidSegLoadModel", "Load SD/SVD (VidSeg)", "VidSeg/loaders",
            "Loads Stable Diffusion 2.1 or Stable Video Diffusion for VidSeg, fully offline. Lists single files from "
            "ComfyUI/models/checkpoints and ComfyUI/models/vidseg and diffusers folders from "
            "ComfyUI/models/diffusers; 'tiny-sd' / 'tiny-svd' are random test models (fast, meaningless masks). The "
            "model stays on ComfyUI's offload device until a VidSeg compute node needs it.",
            inputs=(
                Combo("model", bridge.list_models() + list(TINY_MODELS),
                      "SD 2.1 (v2-1_512-ema-pruned / v2-1_768-ema-pruned) or SVD (svd / svd_xt) checkpoint. Put files "
                      "in ComfyUI/models/checkpoints or ComfyUI/models/vidseg, diffusers folders in "
                      "ComfyUI/models/diffusers. tiny-sd / tiny-svd are random test models."),
                Combo("precision", PRECISIONS, "auto = fp32 on the CPU, bf16 on GPUs that support it, else fp16. fp16 "
                                               "is closest to the authors' (fewer label flips than bf16; the VAE stays "
                                               "fp32) but can overflow. fp16 is refused on the CPU.", default="auto"),
                Combo("device", DEVICES, "Where VidSeg computes: auto = ComfyUI's device (honours --cpu).",
                      default="auto"),
                Combo("prediction_type", PREDICTION_TYPES, "SD 2.1 only: auto reads it from the file / folder (768 "
                                                           "models are v_prediction).", default="auto", advanced=True),
                Combo("compile", COMPILE_CHOICES, "on = torch.compile (inductor) of the UNet and VAE blocks; the first "
                                                  "batch compiles them (minutes), later ones run faster on a GPU. "
                                                  "Falls back to eager, with a warning, when compilation is not "
                                                  "possible.", default="off", optional=True, advanced=True),
            ),
            outputs=(Out("model", VIDSEG_MODEL, "The loaded diffusion backbone (SD 2.1 or SVD) for the VidSeg "
                                                "nodes."),),
            function="load", search_aliases=("load stable diffusion 2.1", "load svd", "vidseg loader"))

    def load(self, model, precision="auto", device="auto", prediction_type="auto", compile="off"):
        wanted = resolve_compile(compile)
        dev = bridge.torch_device() if device == "auto" else torch.device(device)
        path = model if model in TINY_MODELS else bridge.resolve_model(model)
        backbone = load_backbone(path, dev, precision, prediction_type=None if prediction_type == "auto" else prediction_type,
                           search_dirs=bridge.all_model_folders())
        if wanted:
            compile_backbone(backbone)
        handle = ModelHandle(backbone, model, backbone.device, backbone.dtype)
        bridge.move_model(backbone, bridge.offload_device())
        return (handle,)


NODES = (VidSegLoadModel,)
