"""VidSeg Model from ComfyUI (``VidSegModelFromComfy``): core loader objects -> the pack's model socket."""
from __future__ import annotations

import logging
from typing import Optional

from ..vidseg_core.compile import compile_backbone
from ..vidseg_core.errors import InputError
from .comfy_adapters.native import (SUPPORTED, TORCH_COMPILE_WRAPPER, _sigma_check, _unused_wrappers, backbone_from_comfy,
                           torch_compile_request)
from .schema import Combo, Node, Out, Socket
from .sockets import VIDSEG_MODEL, ModelHandle

log = logging.getLogger("vidseg")
COMPILE_CHOICES = ("auto", "off", "on")


def compile_arguments(choice: str, model) -> Optional[dict]:
    """``torch.compile`` arguments for the node's ``compile`` choice, or None (eager).  ``auto``: what a
    TorchCompileModel node set on the MODEL, if any; ``on``: that, else inductor's defaults; ``off``: eager."""
    key = str(choice or "auto").strip().lower()
    if key not in COMPILE_CHOICES:
        raise InputError(f"Unknown compile choice {choice!r}.", f"Use one of {', '.join(COMPILE_CHOICES)}.")
    request = torch_compile_request(model)
    if key == "off" or (key == "auto" and request is None):
        return None
    return request or {"backend": "inductor", "mode": None, "dynamic": None, "options": None}


class VidSegModelFromComfy:
    @classmethod
    def declare(cls) -> Node:
        return Node(
            "VidSegModelFromComfy", "VidSeg Model from ComfyUI", "VidSeg/loaders",
            "Runs VidSeg on the models ComfyUI already loaded: SD 2.1 from Load Checkpoint (MODEL + CLIP + VAE) or "
            "SVD from Image Only Checkpoint Loader (MODEL + CLIP_VISION + VAE). No second copy of the weights; "
            "ComfyUI's model management (offloading, low-VRAM partial loading, LoRA / merges on the MODEL) applies. "
            f"Supported: {SUPPORTED}. The input MODEL is never modified (VidSeg patches a clone).",
            inputs=(
                Socket("model", "MODEL", "MODEL of Load Checkpoint (SD 2.1) or Image Only Checkpoint Loader (SVD)."),
                Socket("vae", "VAE", "VAE of the same loader."),
                Socket("clip", "CLIP", "SD 2.1: CLIP of Load Checkpoint (the empty prompt is the condition).",
                       optional=True),
                Socket("clip_vision", "CLIP_VISION", "SVD: CLIP_VISION of Image Only Checkpoint Loader.",
                       optional=True),
                Combo("compile", COMPILE_CHOICES,
                      "torch.compile of the UNet and VAE blocks during VidSeg's own calls (the MODEL itself is left as "
                      "it was). auto = when a TorchCompileModel node is on the MODEL, with its backend; on = that, "
                      "else inductor; off = eager. The first batch compiles (minutes).", default="auto",
                      optional=True, advanced=True),
            ),
            outputs=(Out("model", VIDSEG_MODEL, "The diffusion backbone for the VidSeg nodes, computing through "
                                                "ComfyUI's MODEL."),),
            function="convert", search_aliases=("vidseg model", "model to vidseg", "segmentation model"))

    def convert(self, model, vae, clip=None, clip_vision=None, compile="auto"):
        arguments = compile_arguments(compile, model)
        backbone = backbone_from_comfy(model, vae, clip=clip, clip_vision=clip_vision)
        honoured = ()
        if arguments is not None:  # handled here: compiled, or eager after a warning saying why
            honoured = (TORCH_COMPILE_WRAPPER,)
            state = compile_backbone(backbone, **arguments)
            if state.active:
                log.info("[VidSeg] torch.compile (%s): %d blocks of the UNet and VAE compiled regionally during "
                         "VidSeg's calls; the first batch compiles them.", state.backend, len(state.regions))
        for note in (_sigma_check(backbone), _unused_wrappers(backbone, honoured)):
            if note:
                log.warning("[VidSeg] %s", note)
        return (ModelHandle(backbone, backbone.name, backbone.device, backbone.dtype),)


NODES = (VidSegModelFromComfy,)
