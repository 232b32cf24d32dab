#!/usr/bin/env bash
# Installs PyTorch into benches/peers/.venv for the peer benchmark (benches/peers/run.sh).
#
# PyPI's Linux wheel of torch is the CUDA build: it pulls NVIDIA's runtime libraries (several GB)
# even for CPU use. Where PyTorch's own CPU-only index can be reached, point
# SHOPCAST_TORCH_INDEX at it (e.g. https://download.pytorch.org/whl/cpu) to get the ~200 MB
# CPU wheel instead; the CPU kernels (MKL/oneDNN) are the same in both.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python=${PYTHON:-python3}
if [ ! -x "$here/.venv/bin/python" ]; then
    "$python" -m venv "$here/.venv"
fi
index_args=()
if [ -n "${SHOPCAST_TORCH_INDEX:-}" ]; then
    index_args=(--index-url "$SHOPCAST_TORCH_INDEX")
fi
"$here/.venv/bin/python" -m pip install --quiet "${index_args[@]}" -r "$here/requirements.txt"
"$here/.venv/bin/python" -c 'import torch; print("torch", torch.__version__, "threads", torch.get_num_threads())'
