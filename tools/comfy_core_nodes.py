"""Hand-written ``/object_info`` entries of the ComfyUI core nodes our bundled workflows use.

Written from the node declarations of ComfyUI v0.3.64 (``nodes.py``,
``comfy_extras/nodes_video.py``, ``comfy_extras/nodes_mask.py``) and checked
against that version's ``GET /object_info`` (see ``tools/check_comfy.py``).
Combos whose options are files on the user's machine (checkpoints, input
images / videos) have an empty option list and ``"dynamic": True``; long
option lists (samplers) hold only a subset, marked ``"partial": True``.
Only what the workflow builder, the UI -> API converter and the tests need is
recorded (types, widget options, input order, outputs).
"""
from __future__ import annotations

from typing import Dict

#: version these specs were checked against
COMFYUI_VERSION = "0.3.64"


def _spec(required, outputs, output_names=None, optional=None, output_node=False, category=""):
    inp = {"required": dict(required)}
    order = {"required": [k for k, _ in required]}
    if optional:
        inp["optional"] = dict(optional)
        order["optional"] = [k for k, _ in optional]
    return {"input": inp, "input_order": order, "output": list(outputs),
            "output_name": list(output_names or outputs), "output_is_list": [False] * len(outputs),
            "output_node": output_node, "category": category, "python_module": "nodes"}


CORE_NODES: Dict[str, dict] = {
    # comfy_extras/nodes_video.py (V3 nodes; combos appear as ["COMBO", {"options": [...]}])
    "LoadVideo": _spec([("file", ["COMBO", {"options": [], "video_upload": True, "dynamic": True}])],
                       ["VIDEO"], category="image/video"),
    "GetVideoComponents": _spec([("video", ["VIDEO", {}])], ["IMAGE", "AUDIO", "FLOAT"],
                                ["images", "audio", "fps"], category="image/video"),
    "CreateVideo": _spec([("images", ["IMAGE", {}]),
                          ("fps", ["FLOAT", {"default": 30.0, "min": 1.0, "max": 120.0, "step": 1.0}])],
                         ["VIDEO"], optional=[("audio", ["AUDIO", {}])], category="image/video"),
    "SaveVideo": _spec([("video", ["VIDEO", {}]),
                        ("filename_prefix", ["STRING", {"default": "video/ComfyUI", "multiline": False}]),
                        ("format", ["COMBO", {"default": "auto", "options": ["auto", "mp4"]}]),
                        ("codec", ["COMBO", {"default": "auto", "options": ["auto", "h264"]}])],
                       [], output_node=True, category="image/video"),
    # nodes.py
    "LoadImage": _spec([("image", [[], {"image_upload": True, "dynamic": True}])], ["IMAGE", "MASK"],
                       category="image"),
    "ImageScale": _spec([("image", ["IMAGE", {}]),
                         ("upscale_method", [["nearest-exact", "bilinear", "area", "bicubic", "lanczos"], {}]),
                         ("width", ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}]),
                         ("height", ["INT", {"default": 512, "min": 0, "max": 16384, "step": 1}]),
                         ("crop", [["disabled", "center"], {}])],
                        ["IMAGE"], category="image/upscaling"),
    "CheckpointLoaderSimple": _spec([("ckpt_name", [[], {"dynamic": True}])], ["MODEL", "CLIP", "VAE"],
                                    category="loaders"),
    "ImageOnlyCheckpointLoader": _spec([("ckpt_name", [[], {"dynamic": True}])], ["MODEL", "CLIP_VISION", "VAE"],
                                       category="loaders/video_models"),
    "CLIPTextEncode": _spec([("text", ["STRING", {"multiline": True, "dynamicPrompts": True}]),
                             ("clip", ["CLIP", {}])], ["CONDITIONING"], category="conditioning"),
    "VAEEncode": _spec([("pixels", ["IMAGE", {}]), ("vae", ["VAE", {}])], ["LATENT"], category="latent"),
    "VAEDecode": _spec([("samples", ["LATENT", {}]), ("vae", ["VAE", {}])], ["IMAGE"], category="latent"),
    "SetLatentNoiseMask": _spec([("samples", ["LATENT", {}]), ("mask", ["MASK", {}])], ["LATENT"],
                                category="latent/inpaint"),
    "KSampler": _spec([("model", ["MODEL", {}]),
                       ("seed", ["INT", {"default": 0, "min": 0, "max": 18446744073709551615,
                                         "control_after_generate": True}]),
                       ("steps", ["INT", {"default": 20, "min": 1, "max": 10000}]),
                       ("cfg", ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}]),
                       ("sampler_name", [["euler", "euler_ancestral", "heun", "dpmpp_2m", "dpmpp_sde", "ddim",
                                          "uni_pc"], {"partial": True}]),
                       ("scheduler", [["simple", "sgm_uniform", "karras", "exponential", "ddim_uniform", "beta",
                                       "normal", "linear_quadratic", "kl_optimal"], {}]),
                       ("positive", ["CONDITIONING", {}]),
                       ("negative", ["CONDITIONING", {}]),
                       ("latent_image", ["LATENT", {}]),
                       ("denoise", ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}])],
                      ["LATENT"], category="sampling"),
    "PreviewImage": _spec([("images", ["IMAGE", {}])], [], output_node=True, category="image"),
    # comfy_extras/nodes_mask.py
    "GrowMask": _spec([("mask", ["MASK", {}]),
                       ("expand", ["INT", {"default": 0, "min": -16384, "max": 16384, "step": 1}]),
                       ("tapered_corners", ["BOOLEAN", {"default": True}])], ["MASK"], category="mask"),
    "MaskToImage": _spec([("mask", ["MASK", {}])], ["IMAGE"], category="mask"),
}
