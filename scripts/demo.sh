#!/usr/bin/env bash
# One command on a fresh machine: set up ./.venv and run the demo
# (a generated clip with known ground truth; SD 2.1 if a checkpoint is found, else tiny-sd).
#   usage: bash scripts/demo.sh [demo options, e.g. --out vidseg_demo --mode fast]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh .venv
.venv/bin/python -m vidseg_core demo "$@"
