#!/usr/bin/env bash
# Create (or reuse) a virtual environment with VidSeg's dependencies.
#   usage: bash scripts/setup_env.sh VENV_DIR [--dev]
# torch is installed first and pinned: an unpinned torch would pull a multi-GB CUDA build.
# Set VIDSEG_TORCH to install another torch (e.g. "torch==2.14.1" or a CUDA wheel) instead.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:?usage: setup_env.sh VENV_DIR [--dev]}"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet "${VIDSEG_TORCH:-torch==2.13.0}"
"$VENV/bin/python" -m pip install --quiet -r requirements.txt
if [ "${2:-}" = "--dev" ]; then
  "$VENV/bin/python" -m pip install --quiet -r requirements-dev.txt
fi
"$VENV/bin/python" -c "import torch, diffusers, transformers, sklearn; print('torch', torch.__version__, '| diffusers', diffusers.__version__, '| transformers', transformers.__version__, '| scikit-learn', sklearn.__version__)"
