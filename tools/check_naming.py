"""Naming in real ComfyUI: Segment Video's vocabulary read by Load Checkpoint's CLIP, against the library.

Run with ComfyUI's Python (the pack is loaded from this file's checkout)::

    python <pack>/tools/check_naming.py --comfyui COMFYUI_DIR --models DIR [--vocabulary "sky, water, ..."]

It prints the ComfyUI version, commit and frontend it runs on, then

1. **graph**: starts a server (``--cpu --force-fp32 --fp32-text-enc``: fp32 everywhere, as
   ``tools/check_native.py``), puts the example clip and the random full-size SD 2.1 file in place
   (``tools/comfy_inputs.py``; the file is written by ``tools/check_native.py`` if missing) and runs through
   ``/prompt``: Load Video -> Get Video Components -> Segment Video (fast, K clusters, cuts off,
   ``vocabulary``, ``clip``; model: Load Checkpoint -> VidSeg Model from ComfyUI) -> Preview Any (``info``);
   reads each label's word and score from the info;
2. **words**: in this process, the same file through ComfyUI's ``load_checkpoint_guess_config`` (what Load
   Checkpoint calls): each phrase's embedding read by that CLIP (the node's ``clip_phrase_encoder``) against the
   library's own text tower of the pack's loader on the same file, tokenised with ``transformers``' CLIP
   tokenizer on the BPE files ComfyUI ships (``comfy/sd1_tokenizer``: the vocabulary OpenCLIP uses);
3. **library**: the pack's loader (own text tower and that tokenizer) and ``NamingSegmenter`` with the node's
   settings on the same frames (decoded by ComfyUI's ``VideoFromFile``): the words and scores against the
   graph's.

Exits 1 when the embeddings differ by more than ``--tol-embedding`` (relative), a label's word differs, or a
score differs by more than ``--tol-score`` (the info prints 3 decimals).
"""
from __future__ import annotations

import argparse
import gc
import importlib
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

CHECKPOINT = "v2-1_512-ema-pruned.safetensors"
VOCABULARY = "sky, water, grass, bird, person, road, tree, building"
#: ``value: word score`` entries of Segment Video's names line
NAME_ENTRY = re.compile(r"(-?\d+): (.+?) (\d+\.\d+)( \(below threshold\))?$")


def naming_prompt(vocabulary: str, clusters: int, seed: int, batch: int) -> dict:
    """The API prompt of the graph check."""
    from tools.comfy_inputs import VIDEO

    return {
        "1": {"class_type": "LoadVideo", "inputs": {"file": VIDEO}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": CHECKPOINT}},
        "4": {"class_type": "VidSegModelFromComfy", "inputs": {"model": ["3", 0], "vae": ["3", 2],
                                                               "clip": ["3", 1], "compile": "off"}},
        "5": {"class_type": "VidSegSegmentVideo", "inputs": {
            "model": ["4", 0], "frames": ["2", 0], "num_clusters": clusters, "mode": "fast", "seed": seed,
            "keep_model_loaded": False, "reference_frame": 0, "mask_labels": "", "batch_size": batch,
            "refiner": "cbr", "kmeans": "torch", "float_outputs": "off", "vocabulary": vocabulary,
            "name_threshold": -1.0, "clip": ["3", 1], "cuts": "off", "cut_frames": ""}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": ["5", 4]}},
    }


def names_from_info(info: str) -> dict:
    """``{label value: (word, score)}`` from Segment Video's ``names (...): v: word s, ...`` line."""
    line = next((l for l in info.splitlines() if l.startswith("names (")), None)
    if line is None:
        raise SystemExit(f"Segment Video's info has no names line:\n{info}")
    out = {}
    for entry in line.split("): ", 1)[1].split(", "):
        m = NAME_ENTRY.match(entry.strip())
        if m is None:
            raise SystemExit(f"cannot read the names entry {entry!r} of:\n{line}")
        out[int(m.group(1))] = (m.group(2), float(m.group(3)))
    return out


def graph_names(args, vocabulary: str) -> tuple:
    """Run the prompt on a fresh server; ``(names, info, seconds)``."""
    from tools import comfy_inputs
    from tools.check_comfy import run_prompt
    from tools.comfy_server import ComfyServer

    comfy_inputs.prepare(args.comfyui, args.models, args.data, None, args.clip_frames, tuple(args.clip_size))
    log = args.comfyui / f"vidseg_naming_{args.port}.log"
    extra = ["--force-fp32", "--fp32-text-enc", *args.server_args]
    with ComfyServer(args.comfyui, sys.executable, args.port, extra, log, gpu=args.gpu) as server:
        res = run_prompt(server.url, naming_prompt(vocabulary, args.clusters, args.seed, args.batch), args.timeout)
    if res.get("status") != "success":
        raise SystemExit(f"the naming prompt did not succeed: {res}\nserver log: {log}")
    info = res["outputs"]["6"]["text"][0]
    return names_from_info(info), info, res["seconds"]


def comfy_embeddings(path: Path, vocabulary) -> torch.Tensor:
    """The vocabulary ``[W, C]`` read by the CLIP of ComfyUI's checkpoint loader, as Segment Video's ``clip``
    input reads it."""
    import comfy.model_management as mm
    import comfy.sd

    from tools.pack_loader import load_pack

    pack = load_pack()
    naming = importlib.import_module(pack.__name__ + ".nodes.segment_naming")
    text = importlib.import_module(pack.__name__ + ".vidseg_core.naming.text")
    clip = comfy.sd.load_checkpoint_guess_config(str(path), output_vae=False, output_clip=True)[1]
    phrases = [p for e in vocabulary.entries for p in e.phrases]
    out = text.entry_means(vocabulary, naming.clip_phrase_encoder(clip)(phrases))
    del clip
    mm.unload_all_models()
    gc.collect()
    return out


def library_run(path: Path, tokenizer: Path, frames: torch.Tensor, args, vocabulary: str) -> tuple:
    """The pack's loader on the same file: ``(vocabulary, its embeddings [W, C], names, seconds)``."""
    from tools.pack_loader import load_pack

    pack = load_pack()
    core = pack.__name__ + ".vidseg_core"

    loading = importlib.import_module(core + ".backbones.loading")
    text = importlib.import_module(core + ".naming.text")
    vocab = importlib.import_module(core + ".naming.vocabulary")
    segmenter = importlib.import_module(core + ".naming.segmenter")
    pipeline = importlib.import_module(core + ".pipeline")
    shots = importlib.import_module(pack.__name__ + ".nodes.shot_inputs")

    bb = loading.load_backbone(str(path), device="cpu", precision="fp32")
    voc = vocab.load_vocabulary(vocabulary)
    emb = text.vocabulary_embeddings(bb, voc, str(tokenizer))
    settings = pipeline.SegmentSettings(num_clusters=args.clusters, batch_size=args.batch, mode="fast", refiner="cbr",
                                        seed=args.seed, kmeans_impl="torch", shots=shots.shot_settings("off"))
    seg = segmenter.NamingSegmenter(bb, settings, naming=segmenter.NamingSettings(voc, None, tokenizer=str(tokenizer)))
    t0 = time.perf_counter()
    with torch.inference_mode():
        for _ in seg.run(lambda a, b: frames[a:b], frames.shape[0], tuple(frames.shape[1:3])):
            pass
    names = {n["value"]: (n["word"], n["score"]) for n in seg.naming["labels"]}
    return voc, emb, names, time.perf_counter() - t0


def main(argv=None) -> int:
    from tools.comfy_server import add_server_arguments

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--comfyui", type=Path, required=True, metavar="COMFYUI_DIR")
    p.add_argument("--models", type=Path, required=True, help="folder of the random full-size files")
    p.add_argument("--data", type=Path, default=None, help="frames folder for the example clip (default: synthetic)")
    p.add_argument("--clip-frames", type=int, default=4)
    p.add_argument("--clip-size", type=int, nargs=2, default=[256, 144], metavar=("W", "H"))
    p.add_argument("--vocabulary", default=VOCABULARY)
    p.add_argument("--clusters", type=int, default=4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--batch", type=int, default=14)
    p.add_argument("--port", type=int, default=8197)
    p.add_argument("--timeout", type=float, default=3600.0)
    add_server_arguments(p)
    p.add_argument("--tol-embedding", type=float, default=1e-4)
    p.add_argument("--tol-score", type=float, default=1.5e-3)
    args = p.parse_args(argv)
    args.comfyui = args.comfyui.resolve()

    from tools.check_native import FILES, _comfy_setup, write_sd

    _comfy_setup(args.comfyui)
    path = args.models / FILES["sd"]
    if not path.is_file():
        args.models.mkdir(parents=True, exist_ok=True)
        write_sd(path)
    ok = True

    graph, info, secs = graph_names(args, args.vocabulary)
    print(f"[graph] Segment Video via /prompt in {secs:.1f} s; info:\n  " + "\n  ".join(info.splitlines()))

    from comfy_api.input_impl import VideoFromFile
    from tools.comfy_inputs import VIDEO

    frames = VideoFromFile(str(args.comfyui / "input" / VIDEO)).get_components().images.float()
    tokenizer = args.comfyui / "comfy" / "sd1_tokenizer"
    voc, ours, lib, lib_secs = library_run(path, tokenizer, frames, args, args.vocabulary)
    theirs = comfy_embeddings(path, voc)
    rel = float((theirs - ours).abs().max() / ours.abs().max())
    bad = rel > args.tol_embedding
    ok &= not bad
    print(f"[words] {len(voc)} entries, ComfyUI CLIP vs the library's text tower: max rel |Δ| {rel:.3g} "
          f"(tolerance {args.tol_embedding}){'  FAIL' if bad else ''}")

    print(f"[library] NamingSegmenter on the same {frames.shape[0]} frames in {lib_secs:.1f} s")
    for value in sorted(set(graph) | set(lib)):
        g, l = graph.get(value), lib.get(value)
        same = g is not None and l is not None and g[0] == l[0] and abs(g[1] - l[1]) <= args.tol_score
        ok &= same
        print(f"  label {value}: graph {g} library {None if l is None else (l[0], round(l[1], 4))}"
              f"{'' if same else '  FAIL'}")
    print("naming check: " + ("pass" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
