#!/usr/bin/env bash
# Copy the 14 blackswan frames into gpu_frames/blackswan (ignored by git through .git/info/exclude) so that a
# device run can carry them: the working tree travels to the GPU machine, ../shared does not.
#
#   scripts/gpu_frames.sh [SOURCE_DIR]        # default ../shared/data/blackswan/frames
#   then, with the device tool: run(command="python benchmarks/gpu.py", carry=["gpu_frames"], timeout_s=540)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="${1:-$root/../shared/data/blackswan/frames}"
dst="$root/gpu_frames/blackswan"
[ -d "$src" ] || { echo "no frames at $src" >&2; exit 2; }
mkdir -p "$dst"
ls "$src" | grep -Ei '\.(jpg|jpeg|png)$' | sort | head -n 14 | while read -r f; do cp "$src/$f" "$dst/"; done
exclude="$(git -C "$root" rev-parse --git-path info/exclude)"
grep -qx '/gpu_frames/' "$exclude" 2>/dev/null || echo '/gpu_frames/' >> "$exclude"
echo "copied $(ls "$dst" | wc -l) frames to $dst ($(du -sh "$dst" | cut -f1)); carry gpu_frames"
