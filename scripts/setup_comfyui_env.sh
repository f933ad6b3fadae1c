#!/usr/bin/env bash
# A virtual environment for one ComfyUI checkout with this pack linked into its custom_nodes (developer checks).
#   usage: bash scripts/setup_comfyui_env.sh COMFYUI_DIR VENV_DIR "TORCH_PACKAGES" [PACK_LINK]
#   e.g.   bash scripts/setup_comfyui_env.sh ~/ComfyUI-0.33 ~/venv-comfy033 \
#              "torch==2.11.0 torchvision==0.26.0 torchaudio==2.11.0"
# TORCH_PACKAGES are installed first and then held as constraints, so ComfyUI's requirements (installed
# without their torch / torchvision / torchaudio lines) and the pack's cannot replace them.
# PACK_LINK (default: this checkout) is what custom_nodes/vidseg points to: point it at a folder that is
# itself a link to re-point every ComfyUI at another checkout at once.
set -euo pipefail
COMFY="$(cd "${1:?usage: setup_comfyui_env.sh COMFYUI_DIR VENV_DIR TORCH_PACKAGES [PACK_LINK]}" && pwd)"
VENV="${2:?VENV_DIR missing}"
TORCH="${3:?TORCH_PACKAGES missing, e.g. \"torch==2.14.1 torchvision==0.29.1\"}"
PACK="$(cd "$(dirname "$0")/.." && pwd)"
LINK="${4:-$PACK}"
[ -f "$COMFY/main.py" ] || { echo "$COMFY is not a ComfyUI folder (no main.py)"; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086
"$PY" -m pip install $TORCH
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
tr ' ' '\n' <<<"$TORCH" | grep -v '^$' > "$WORK/constraints.txt"
grep -v -E '^\s*(torch|torchvision|torchaudio)\s*$' "$COMFY/requirements.txt" > "$WORK/comfy-requirements.txt"
"$PY" -m pip install -r "$WORK/comfy-requirements.txt" -c "$WORK/constraints.txt"
# requests: ComfyUI's frontend manager imports it; av and psutil: the checks' clips and memory figures
"$PY" -m pip install requests av psutil -r "$PACK/requirements.txt" -c "$WORK/constraints.txt"
ln -sfn "$LINK" "$COMFY/custom_nodes/vidseg"
"$PY" -c "import torch, torchvision; print('torch', torch.__version__, '| torchvision', torchvision.__version__)"
grep -E '^__version__' "$COMFY/comfyui_version.py"
echo "custom_nodes/vidseg -> $LINK"
