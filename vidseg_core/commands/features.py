"""``features``: extract the paper's diffusion features of a video to a .safetensors file."""
from __future__ import annotations

import contextlib
import time

from ._common import add_input_arguments, add_model_arguments, load_model, open_source, peak_rss_mb

HELP = "extract diffusion features (blocks 6-8 queries + block-7 correspondence queries) to a .safetensors file"


def add_arguments(p) -> None:
    add_input_arguments(p)
    add_model_arguments(p)
    p.add_argument("--out", required=True, metavar="FILE.safetensors", help="output feature file")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")


def run(args) -> int:
    from ..features import extract_features
    from ..output_dir import check_output_file, write_failure
    from ._common import check_model_options, input_paths

    source = open_source(args)
    check_model_options(args)
    out = check_output_file(args.out, inputs=input_paths(args), overwrite=args.overwrite, suffix=".safetensors",
                            what="feature file")
    t0 = time.perf_counter()
    backbone = load_model(args)
    t_load = time.perf_counter() - t0

    def progress(done, total):
        print(f"\rfeatures: {done}/{total} frames", end="", flush=True)

    feats = extract_features(backbone, source, batch_size=args.batch_size, seed=args.seed, progress=progress)
    print()
    tmp = out.with_suffix(".partial.safetensors")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        feats.save(tmp)
        tmp.replace(out)
    except Exception as exc:  # an OSError, or safetensors' own error for one ("I/O error: ...")
        if not isinstance(exc, OSError) and "I/O error" not in str(exc):
            raise
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise write_failure(exc if isinstance(exc, OSError) else OSError(str(exc)), out, [], [out.name],
                            out.parent) from exc
    n = feats.num_frames
    sec = feats.meta["seconds"]
    print(f"model: {backbone.name} ({backbone.family}, {backbone.device}, {str(backbone.dtype).replace('torch.', '')})")
    print(f"frames: {n} at {feats.frame_size[1]}x{feats.frame_size[0]} -> work size "
          f"{feats.work_size[1]}x{feats.work_size[0]}, feature grid {feats.grid[1]}x{feats.grid[0]}")
    print(f"aggregated: {tuple(feats.aggregated.shape)} {str(feats.aggregated.dtype).replace('torch.', '')}; "
          f"correspondence: {tuple(feats.correspondence.shape)}")
    print(f"time: load {t_load:.2f} s, extract {sec:.2f} s ({sec / n:.3f} s/frame); peak RSS {peak_rss_mb():.0f} MB")
    print(f"wrote {out}")
    return 0
