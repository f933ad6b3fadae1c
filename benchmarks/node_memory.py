"""Peak memory of Segment Video through the node code: an IMAGE batch in vs a core VIDEO in, against length.

Every configuration runs in a FRESH Python process with the test stand-ins of ComfyUI (``tests/conftest.py``:
no ComfyUI needed) and ``tiny-sd`` from Load SD/SVD (VidSeg), fast mode, on a clip looped to the length:

* ``image``: today's graph, Load Video -> Get Video Components (the whole video decoded to one float IMAGE)
  -> Segment Video (float outputs on) -> the overlay IMAGE encoded to an mp4 (Create Video + Save Video) and
  Save Label Maps;
* ``video``: the streamed graph, Load Video -> Segment Video's video input -> overlay_video saved (Save Video
  copies the file) and Save Label Maps.

The child prints its peak RSS (``VmHWM``), its RSS after loading the model, after the run and after Save
Label Maps.  The clip is written once per size by looping the given frames (``--data``, a folder of images;
default: the blackswan frames beside the repository) with PyAV.

    python benchmarks/node_memory.py [--lengths 28 112 448] [--size 854x480] [--paths image video]
        [--clusters 20] [--data DIR] [--threads N] [--spill-mb MB]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, Optional

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.clips import CLIPS, require  # noqa: E402
from benchmarks.child_process import run_tagged_child  # noqa: E402
from benchmarks.proc_status import status_mb  # noqa: E402

DEFAULT_DATA = CLIPS / "blackswan" / "frames"
RESULT_TAG = "NODE-MEMORY "


def make_clip(data: Path, frames: int, size, path: Path, fps: int = 24) -> Path:
    """``frames`` frames of the images in ``data`` looped forth and back, resized to ``size`` (W, H)."""
    import numpy as np
    from PIL import Image

    from vidseg_core.video_writer import H264Writer

    files = sorted(p for p in data.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not files:
        raise SystemExit(f"no frames in {data}")
    imgs = [np.asarray(Image.open(f).convert("RGB").resize(size, Image.BICUBIC)) for f in files]
    loop = imgs + imgs[-2:0:-1] if len(imgs) > 2 else imgs
    with H264Writer(path, fps=fps) as w:
        for a in range(0, frames, 16):
            w.write(np.stack([loop[i % len(loop)] for i in range(a, min(frames, a + 16))]))
    return path


def child(clip: str, path: str, clusters: int, out_dir: str, spill_mb: Optional[float] = None) -> Dict[str, object]:
    """One configuration in this (fresh) process: see the module docstring."""
    import tests.conftest  # noqa: F401 - the ComfyUI stand-ins, installed at import
    import torch

    import folder_paths
    from tests.helpers.comfy_video_standin import VideoFromFile
    from tools.pack_loader import load_pack, pack_nodes

    folder_paths.get_output_directory = lambda: out_dir
    folder_paths.get_temp_directory = lambda: out_dir
    nodes = pack_nodes(load_pack())
    if spill_mb is not None:  # the node reads the threshold when it creates the store
        sys.modules["vidseg_pack.vidseg_core.label_store"].DEFAULT_SPILL_BYTES = int(spill_mb * 2**20)
    rep: Dict[str, object] = {"path": path, "clusters": clusters, "threads": torch.get_num_threads()}
    with torch.inference_mode():
        (model,) = nodes["VidSegLoadModel"]().load("tiny-sd", "auto", "cpu")
        rep["rss_mb_after_load"] = status_mb("VmRSS")
        t = time.perf_counter()
        video = VideoFromFile(clip)
        seg = nodes["VidSegSegmentVideo"]()
        if path == "image":
            frames = video.get_components().images  # Get Video Components: the whole video as a float IMAGE
            out = seg.segment(model, frames=frames, num_clusters=clusters, mode="fast")
            from vidseg_core.video_writer import H264Writer

            with H264Writer(os.path.join(out_dir, "overlay_image_path.mp4"), fps=24) as w:
                for a in range(0, out[3].shape[0], 16):  # Create Video + Save Video encode the IMAGE
                    w.write(out[3][a:a + 16])
            del frames
        else:
            out = seg.segment(model, video=video, num_clusters=clusters, mode="fast")
            out[5].save_to(os.path.join(out_dir, "overlay_video_path.mp4"))  # Save Video copies the file
        rep["frames"] = int(out[0].num_frames)
        rep["segment_seconds"] = time.perf_counter() - t
        rep["rss_mb_after_run"] = status_mb("VmRSS")
        nodes["VidSegSaveLabelMaps"]().save(out[0], filename_prefix=f"bench_{path}/labels")
        rep["rss_mb_after_save"] = status_mb("VmRSS")
        rep["spilled"] = bool(getattr(out[0].store, "spilled", False))
    rep["peak_mb"] = status_mb("VmHWM")
    return rep


def run_config(clip: Path, path: str, clusters: int, threads: Optional[int],
               spill_mb: Optional[float] = None) -> Dict[str, object]:
    with tempfile.TemporaryDirectory() as out_dir:
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(clip), "--path", path,
               "--clusters", str(clusters), "--out", out_dir]
        if spill_mb is not None:
            cmd += ["--spill-mb", str(spill_mb)]
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        return run_tagged_child(cmd, RESULT_TAG, ROOT, env=env)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[28, 112, 448])
    ap.add_argument("--size", default="854x480", help="frame size WxH of the looped clip")
    ap.add_argument("--paths", nargs="+", default=["image", "video"], choices=["image", "video"])
    ap.add_argument("--clusters", type=int, default=20, help="K (the workflow's default: 20)")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the children (OMP_NUM_THREADS)")
    ap.add_argument("--spill-mb", type=float, default=None,
                    help="keep label maps in a file above this size (default: the node's, 64 MiB)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", default="video", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(RESULT_TAG + json.dumps(child(a.child, a.path, a.clusters, a.out, a.spill_mb)), flush=True)
        return 0
    require(a.data)
    w, h = (int(v) for v in a.size.lower().split("x"))
    print(f"Segment Video (fast, tiny-sd, K={a.clusters}) through the node code, {w}x{h} clip looped from "
          f"{a.data}; peak RSS = VmHWM of a fresh process per row")
    print(f"{'path':6s} {'frames':>6s} {'peak MB':>8s} {'after load':>10s} {'after run':>9s} {'after save':>10s} "
          f"{'labels':>8s} {'seconds':>7s}")
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.lengths:
            clip = make_clip(a.data, n, (w, h), Path(tmp) / f"clip_{n}.mp4")
            for path in a.paths:
                r = run_config(clip, path, a.clusters, a.threads, a.spill_mb)
                print(f"{path:6s} {r['frames']:6d} {r['peak_mb']:8.0f} {r['rss_mb_after_load']:10.0f} "
                      f"{r['rss_mb_after_run']:9.0f} {r['rss_mb_after_save']:10.0f} "
                      f"{'spilled' if r['spilled'] else 'memory':>8s} {r['segment_seconds']:7.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
