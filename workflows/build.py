"""Builds the bundled example workflows (UI format) and their thumbnails from the nodes' own declarations.

Run from the repo root:  ``python -m workflows.build``  (rewrites ``workflows/*.json`` and ``*.jpg``).

Every widget value is written in the frontend's positional order from the node
specs (ours from the node declarations, core ones as the oldest tested ComfyUI reported them:
``tools/comfy_specs/``, read by ``tools/comfy_core_nodes.py``), so the files stay consistent
with the nodes; ``tests/test_workflows.py`` checks them, ``tests/test_comfy_versions.py`` checks
that they load and convert the same on every tested ComfyUI version.  Video comes in through core Load
Video: as a VIDEO straight into Segment Video (the fast preview, streamed), or through Get Video
Components as an IMAGE batch (the stage pipelines, the inpainting).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Callable, Dict, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

#: example inputs the workflows name (put them in ComfyUI/input)
VIDEO_FILE = "vidseg_example.mp4"
REFERENCE_FILE = "vidseg_first_frame.png"
SD21_FILE = "checkpoints/v2-1_512-ema-pruned.safetensors"
SD21_CORE_FILE = "v2-1_512-ema-pruned.safetensors"
SVD_CORE_FILE = "svd_xt.safetensors"

PACK_CNR = ("vidseg", "0.1.0")

# node colours of the thumbnails by category
COLORS = {"VidSeg/loaders": (86, 120, 170), "VidSeg/stages": (70, 140, 110), "VidSeg": (150, 90, 160),
          "VidSeg/masks": (180, 130, 60), "VidSeg/visualize": (170, 80, 80), "VidSeg/io": (120, 120, 120),
          "VidSeg/evaluate": (120, 120, 120)}
CORE_COLOR = (75, 75, 82)


def _specs():
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tools.pack_loader import load_pack, pack_specs

    pack = load_pack()
    return pack, pack_specs(pack)


def _graph(specs, pack):
    from tools.comfy_graph import Graph
    from tools.pack_loader import pack_nodes

    return Graph(specs, {k: PACK_CNR for k in pack_nodes(pack)})


def _video_in(g, x=0, y=0):
    load = g.add("LoadVideo", (x, y), {"file": VIDEO_FILE}, size=(300, 330))
    comps = g.add("GetVideoComponents", (x, y + 360), size=(300, 90))
    g.link(load, "VIDEO", comps, "video")
    return comps


def _mask_video_out(g, mask_src, mask_slot, comps, x, y, prefix):
    to_img = g.add("MaskToImage", (x, y))
    g.link(mask_src, mask_slot, to_img, "mask")
    video = g.add("CreateVideo", (x, y + 90))
    g.link(to_img, "IMAGE", video, "images")
    g.link(comps, "fps", video, "fps")
    save = g.add("SaveVideo", (x, y + 220), {"filename_prefix": prefix}, size=(320, 300))
    g.link(video, "VIDEO", save, "video")


def core_model(g, family: str, x: int, y: int):
    """ComfyUI's own loader + VidSeg Model from ComfyUI -> (adapter node, loader node).

    SD 2.1: Load Checkpoint (MODEL, CLIP, VAE); SVD: Image Only Checkpoint Loader (MODEL, CLIP_VISION, VAE)."""
    if family == "sd":
        ckpt = g.add("CheckpointLoaderSimple", (x, y), {"ckpt_name": SD21_CORE_FILE})
        enc = ("CLIP", "clip")
    else:
        ckpt = g.add("ImageOnlyCheckpointLoader", (x, y), {"ckpt_name": SVD_CORE_FILE})
        enc = ("CLIP_VISION", "clip_vision")
    model = g.add("VidSegModelFromComfy", (x, y + 150))
    g.link(ckpt, "MODEL", model, "model")
    g.link(ckpt, "VAE", model, "vae")
    g.link(ckpt, enc[0], model, enc[1])
    return model, ckpt


def stage_pipeline(specs, pack, family: str, reference: bool, k: int, title: str):
    """Load Video -> stage nodes -> label PNGs, overlay preview, mask video (the model from ComfyUI's loaders)."""
    g = _graph(specs, pack)
    comps = _video_in(g, 0, 0)
    model, _ = core_model(g, family, 0, 500)
    feats = g.add("VidSegExtractFeatures", (360, 0))
    g.link(model, "model", feats, "model")
    g.link(comps, "images", feats, "frames")
    km = g.add("VidSegKMeansInit", (360, 230), {"num_clusters": k})
    g.link(feats, "features", km, "features")
    assign = g.add("VidSegAssignLabels", (360, 460), {"label_names": "1: object" if reference else ""})
    g.link(km, "clusters", assign, "clusters")
    if reference:
        ref = g.add("LoadImage", (0, 680), {"image": REFERENCE_FILE}, size=(300, 320))
        g.link(ref, "MASK", assign, "reference_mask")
    refine = g.add("VidSegCBRRefine", (720, 0))
    knn = g.add("VidSegKNNContextModel", (720, 200))
    g.link(feats, "features", knn, "features")
    g.link(assign, "clusters", knn, "clusters")
    g.link(refine, "refiner", knn, "refiner")
    mod = g.add("VidSegMaskedModulation", (720, 400))
    g.link(model, "model", mod, "model")
    g.link(comps, "images", mod, "frames")
    g.link(knn, "coarse_labels", mod, "coarse_labels")
    draw = g.add("VidSegColorizeLabels", (1080, 0))
    g.link(mod, "labels", draw, "labels")
    g.link(comps, "images", draw, "frames")
    prev = g.add("PreviewImage", (1080, 200), size=(320, 300))
    g.link(draw, "overlay", prev, "images")
    save = g.add("VidSegSaveLabelMaps", (1080, 540), {"filename_prefix": "vidseg/" + title})
    g.link(mod, "labels", save, "labels")
    if reference:
        sel = g.add("VidSegSelectLabels", (1440, 0), {"select": "1"})
        g.link(mod, "labels", sel, "labels")
        _mask_video_out(g, sel, "mask", comps, 1440, 160, "vidseg/" + title + "_mask")
    else:
        allm = g.add("VidSegAllLabelMasks", (1440, 0))
        g.link(mod, "labels", allm, "labels")
        video = g.add("CreateVideo", (1440, 160))
        g.link(draw, "overlay", video, "images")
        g.link(comps, "fps", video, "fps")
        out = g.add("SaveVideo", (1440, 290), {"filename_prefix": "vidseg/" + title + "_overlay"}, size=(320, 300))
        g.link(video, "VIDEO", out, "video")
    return g


def sd21_full(specs, pack):
    return stage_pipeline(specs, pack, "sd", True, 20, "sd21")


def svd_full(specs, pack):
    return stage_pipeline(specs, pack, "svd", False, 5, "svd")


def mask_inpaint(specs, pack):
    """First-frame mask propagated through the video, then inpainted with core SD nodes (one checkpoint load
    serves VidSeg and the inpainting)."""
    g = _graph(specs, pack)
    comps = _video_in(g, 0, 0)
    ref = g.add("LoadImage", (0, 480), {"image": REFERENCE_FILE}, size=(300, 320))
    model, ckpt = core_model(g, "sd", 0, 830)
    seg = g.add("VidSegSegmentVideo", (360, 0), {"num_clusters": 20, "mode": "quality"}, size=(340, 420))
    g.link(model, "model", seg, "model")
    g.link(comps, "images", seg, "frames")
    g.link(ref, "MASK", seg, "reference_mask")
    prev = g.add("PreviewImage", (360, 460), size=(320, 300))
    g.link(seg, "overlay", prev, "images")
    grow = g.add("GrowMask", (740, 0), {"expand": 8, "tapered_corners": True})
    g.link(seg, "mask", grow, "mask")
    pos = g.add("CLIPTextEncode", (740, 280), {"text": "a white swan swimming on a lake, photo"}, size=(320, 140))
    g.link(ckpt, "CLIP", pos, "clip")
    neg = g.add("CLIPTextEncode", (740, 450), {"text": "blurry, distorted"}, size=(320, 140))
    g.link(ckpt, "CLIP", neg, "clip")
    enc = g.add("VAEEncode", (740, 620))
    g.link(comps, "images", enc, "pixels")
    g.link(ckpt, "VAE", enc, "vae")
    noise = g.add("SetLatentNoiseMask", (1100, 0))
    g.link(enc, "LATENT", noise, "samples")
    g.link(grow, "MASK", noise, "mask")
    ks = g.add("KSampler", (1100, 120), {"seed": 0, "steps": 20, "cfg": 7.0, "sampler_name": "euler",
                                         "scheduler": "normal", "denoise": 0.85}, size=(320, 300))
    g.link(ckpt, "MODEL", ks, "model")
    g.link(pos, "CONDITIONING", ks, "positive")
    g.link(neg, "CONDITIONING", ks, "negative")
    g.link(noise, "LATENT", ks, "latent_image")
    dec = g.add("VAEDecode", (1100, 460))
    g.link(ks, "LATENT", dec, "samples")
    g.link(ckpt, "VAE", dec, "vae")
    video = g.add("CreateVideo", (1460, 0))
    g.link(dec, "IMAGE", video, "images")
    g.link(comps, "fps", video, "fps")
    save = g.add("SaveVideo", (1460, 130), {"filename_prefix": "vidseg/inpainted"}, size=(320, 300))
    g.link(video, "VIDEO", save, "video")
    return g


def fast_preview(specs, pack):
    """A quick look, streamed: Load Video -> Segment Video's video input (fast mode, K = 5, the pack's own loader)
    -> the overlay VIDEO saved by Save Video, and the label maps saved.  The video is read batch by batch and
    the outputs are written as it is processed, so memory does not grow with the video's length."""
    g = _graph(specs, pack)
    load = g.add("LoadVideo", (0, 0), {"file": VIDEO_FILE}, size=(300, 330))
    model = g.add("VidSegLoadModel", (0, 360), {"model": SD21_FILE})
    seg = g.add("VidSegSegmentVideo", (360, 0), {"num_clusters": 5, "mode": "fast"}, size=(340, 460))
    g.link(model, "model", seg, "model")
    g.link(load, "VIDEO", seg, "video")
    save = g.add("SaveVideo", (740, 0), {"filename_prefix": "vidseg/preview"}, size=(320, 300))
    g.link(seg, "overlay_video", save, "video")
    labels = g.add("VidSegSaveLabelMaps", (740, 340), {"filename_prefix": "vidseg/preview_labels"})
    g.link(seg, "labels", labels, "labels")
    return g


#: file stem -> (builder, thumbnail caption)
WORKFLOWS: Dict[str, Tuple[Callable, str]] = {
    "vidseg_sd21_full_pipeline": (sd21_full, "SD 2.1 full pipeline (stage nodes, first-frame mask)"),
    "vidseg_svd_full_pipeline": (svd_full, "SVD full pipeline (stage nodes, clusters)"),
    "vidseg_mask_to_inpainting": (mask_inpaint, "First-frame mask -> video mask -> SD inpainting"),
    "vidseg_fast_preview": (fast_preview, "Fast preview, streamed (VIDEO in and out, guided filter)"),
}


def build_all(specs=None, pack=None) -> Dict[str, dict]:
    """Stem -> UI workflow dict of every bundled workflow."""
    if specs is None:
        pack, specs = _specs()
    return {stem: fn(specs, pack).to_ui() for stem, (fn, _) in WORKFLOWS.items()}


def thumbnail(workflow: dict, specs: dict, caption: str, size=(640, 360)):
    """A labelled schematic of the graph (PIL image): node boxes coloured by category, links as lines."""
    from PIL import Image, ImageDraw, ImageFont

    W, H = size
    img = Image.new("RGB", size, (30, 31, 36))
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    nodes = {n["id"]: n for n in workflow["nodes"]}
    x0 = min(n["pos"][0] for n in nodes.values())
    y0 = min(n["pos"][1] for n in nodes.values())
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes.values())
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes.values())
    top, pad = 34, 10
    s = min((W - 2 * pad) / (x1 - x0), (H - top - pad) / (y1 - y0))

    def box(n):
        x, y = n["pos"]
        w, h = n["size"]
        return (pad + (x - x0) * s, top + (y - y0) * s, pad + (x - x0 + w) * s, top + (y - y0 + h) * s)

    for _, src, _, dst, _, _ in workflow["links"]:
        a, b = box(nodes[src]), box(nodes[dst])
        d.line([(a[2], (a[1] + a[3]) / 2), (b[0], (b[1] + b[3]) / 2)], fill=(150, 150, 160), width=1)
    for n in nodes.values():
        b = box(n)
        cat = specs[n["type"]].get("category", "")
        col = COLORS.get(cat, CORE_COLOR) if n["type"].startswith("VidSeg") else CORE_COLOR
        d.rounded_rectangle(b, radius=4, fill=col, outline=(210, 210, 215))
        name = specs[n["type"]].get("display_name") or n["type"]
        name = name.replace(" (VidSeg)", "")
        words, lines, cur = name.split(), [], ""
        for w_ in words:
            if len(cur) + len(w_) + 1 > max(6, int((b[2] - b[0]) / 6)):
                lines.append(cur)
                cur = w_
            else:
                cur = (cur + " " + w_).strip()
        lines.append(cur)
        for i, line in enumerate(lines[:3]):
            d.text((b[0] + 3, b[1] + 3 + 11 * i), line, fill=(255, 255, 255), font=font)
    d.rectangle((0, 0, W, top - 8), fill=(60, 40, 90))
    d.text((pad, 8), "VidSeg  |  " + caption, fill=(255, 255, 255), font=font)
    return img


def main() -> int:
    pack, specs = _specs()
    for stem, wf in build_all(specs, pack).items():
        (HERE / f"{stem}.json").write_text(json.dumps(wf, indent=2) + "\n")
        thumbnail(wf, specs, WORKFLOWS[stem][1]).save(HERE / f"{stem}.jpg", quality=85)
        print(f"wrote workflows/{stem}.json and .jpg ({len(wf['nodes'])} nodes, {len(wf['links'])} links)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
