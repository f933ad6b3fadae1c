#!/usr/bin/env bash
# Prepare a run of benchmarks/gpu.py on a GPU machine that has neither the clips nor network access:
# copy the 14 blackswan frames into gpu_frames/blackswan (where benchmarks/gpu.py looks first) and download
# the diffusers wheel (and its importlib_metadata) for Python 3.12 into .whl; both folders are kept out of git
# through .git/info/exclude.
#
#   scripts/gpu_prepare.sh [SOURCE_DIR]        # default: the benchmark clips' blackswan frames (docs/benchmarks.md#the-clips)
#
# then, on the GPU machine, with the checkout and both folders (about 8 minutes):
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl &&
#     PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 benchmarks/gpu.py --budget-s 450
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="${1:-${VIDSEG_CLIPS:-$root/clips}/blackswan/frames}"
dst="$root/gpu_frames/blackswan"
[ -d "$src" ] || { echo "no frames at $src" >&2; exit 2; }
mkdir -p "$dst"
ls "$src" | grep -Ei '\.(jpg|jpeg|png)$' | sort | head -n 14 | while read -r f; do cp "$src/$f" "$dst/"; done
exclude="$(git -C "$root" rev-parse --git-path info/exclude)"
for p in /gpu_frames/ /.whl/; do grep -qx "$p" "$exclude" 2>/dev/null || echo "$p" >> "$exclude"; done
echo "copied $(ls "$dst" | wc -l) frames to $dst ($(du -sh "$dst" | cut -f1)); carry gpu_frames"
version="$(python3 -c 'import diffusers; print(diffusers.__version__)' 2>/dev/null || echo 0.42.1)"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d "$root/.whl" \
  "diffusers==$version" importlib_metadata
echo "wheels in $root/.whl: $(ls "$root/.whl" | tr '\n' ' '); carry .whl"
