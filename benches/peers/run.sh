#!/usr/bin/env bash
# The peer benchmark: shopcast's real model code against the same models in PyTorch, on the
# same machine, side by side. Runs both sides in turn for several rounds and prints a table of
# operation, shopcast time, PyTorch time and ratio (medians over the rounds).
#
#   benches/peers/install.sh          # once: PyTorch into benches/peers/.venv
#   benches/peers/run.sh [--device flex|ndarray|wgpu] [--rounds N] [--repeats N] [--only op,op]
#
# --device wgpu runs shopcast on the GPU through WGPU and PyTorch on CUDA.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
device=flex
rounds=3
repeats=30
only=""
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device=$2; shift 2 ;;
        --rounds) rounds=$2; shift 2 ;;
        --repeats) repeats=$2; shift 2 ;;
        --only) only=$2; shift 2 ;;
        *) echo "run.sh: unknown option $1 (see the comment at the top)" >&2; exit 2 ;;
    esac
done
python=${SHOPCAST_PEER_PYTHON:-$here/.venv/bin/python}
if [ ! -x "$python" ]; then
    echo "run.sh: no PyTorch environment at $python: run benches/peers/install.sh first" >&2
    exit 2
fi
results=$(mktemp -d)
trap 'rm -rf "$results"' EXIT
cd "$root"
# Build once before anything is timed.
cargo bench --workspace --bench peers --no-run -q
only_args=()
if [ -n "$only" ]; then only_args=(--only "$only"); fi
for round in $(seq 1 "$rounds"); do
    echo "round $round/$rounds: shopcast" >&2
    cargo bench -q --workspace --bench peers -- --device "$device" --repeats "$repeats" \
        "${only_args[@]}" > "$results/shopcast-$round.json"
    echo "round $round/$rounds: PyTorch" >&2
    "$python" "$here/torch_peer.py" --device "$device" --repeats "$repeats" \
        "${only_args[@]}" > "$results/pytorch-$round.json"
done
python3 "$here/compare.py" "$results"/*.json
