#!/usr/bin/env bash
# Create .venv with the framework and its test dependencies.
# PyTorch is installed first at the pinned release this machine image carries on disk; on a GPU
# cluster, install your site's torch first (any >= 2.4) and then `pip install -e '.[test]'`.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  .venv/bin/pip install --quiet "torch==${TORCH_VERSION:-2.14.1}" "torchvision==${TORCHVISION_VERSION:-0.29.1}"
fi
.venv/bin/pip install --quiet -e '.[test]'
.venv/bin/python -c "import torch, hydra, growth; print('installed: torch', torch.__version__, '| hydra', hydra.__version__)"
