#!/usr/bin/env bash
# The one-call GPU check (issue 19): run on a GPU machine from the repository root, with `.gpu/`
# made by benches/gpu/prepare.sh carried beside the working tree. Needs no network, no Rust and
# no build: only the carried binaries and the machine's python3 with PyTorch.
#
#   bash benches/gpu/check.sh [--device wgpu] [--budget SECONDS]
#
# Measures, each step under its own time limit so that the whole stays within the budget
# (default 450 s):
#   - the peer benchmark (training steps, forecaster inference, batch scoring): shopcast on the
#     GPU, shopcast on `flex` (this machine's CPU cores) and PyTorch on CUDA;
#   - whole `train` runs on the GPU and on `flex`: the demo shop (both models), and Online
#     Retail's forecaster and recommender.
# and prints one table: operation, shopcast GPU, PyTorch CUDA, ratio, target, shopcast GPU
# against flex. The table and every log also go to $OUT when it is set (the device tool's
# folder that comes back), else to the work folder named at the end.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
device=wgpu
budget=450
while [ $# -gt 0 ]; do
    case "$1" in
        --device) device=$2; shift 2 ;;
        --budget) budget=$2; shift 2 ;;
        *) echo "check.sh: unknown option $1 (see the comment at the top)" >&2; exit 2 ;;
    esac
done
gpu=$root/.gpu
if [ ! -f "$gpu/bin/train.xz" ] || [ ! -f "$gpu/bin/peers.xz" ]; then
    echo "check.sh: $gpu lacks the binaries: run benches/gpu/prepare.sh first and carry .gpu" >&2
    exit 2
fi
python=${SHOPCAST_PEER_PYTHON:-python3}
work=${SHOPCAST_GPU_WORK:-$(mktemp -d)}
mkdir -p "$work/bin" "$work/logs"
started=$(date +%s)
cd "$root"

# The Vulkan loader, where the image has none (WGPU needs libvulkan.so.1).
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan\.so\.1'; then
    for deb in "$gpu"/gl/*.deb; do
        [ -f "$deb" ] && dpkg -x "$deb" /
    done
    ldconfig 2>/dev/null || true
fi
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$nvidia_icd" ]; then
    export VK_DRIVER_FILES=$nvidia_icd
fi

# xz through Python's lzma: the image need not have the xz tool.
for name in train peers; do
    "$python" -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)' "$gpu/bin/$name.xz" "$work/bin/$name" || exit 1
    chmod +x "$work/bin/$name"
done

{
    date -u +"%Y-%m-%d %H:%M UTC"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null ||
        echo "no nvidia-smi"
    echo "$(nproc) CPU cores"
} >"$work/machine.txt"

# Runs a step under `limit` seconds (never past the budget) and records its wall time.
# Usage: timed NAME LIMIT COMMAND...; appends "NAME<TAB>seconds<TAB>exit code" to timings.tsv.
timed() {
    local name=$1 limit=$2
    shift 2
    local left=$((budget - ($(date +%s) - started)))
    if [ "$left" -lt 10 ]; then
        printf '%s\t-\tskipped\n' "$name" >>"$work/timings.tsv"
        echo "check: $name skipped (budget spent)" >&2
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    echo "check: $name (at most ${limit}s)" >&2
    local t0 t1 rc
    t0=$(date +%s.%N)
    timeout --kill-after=5 "$limit" "$@" >"$work/logs/$name.out" 2>"$work/logs/$name.err"
    rc=$?
    t1=$(date +%s.%N)
    printf '%s\t%s\t%s\n' "$name" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')" "$rc" >>"$work/timings.tsv"
    [ "$rc" -eq 0 ] || echo "check: $name ended with exit code $rc (see $work/logs/$name.err)" >&2
}

: >"$work/timings.tsv"
bin=$work/bin
# One run per operation on the GPU, each under its own limit: a run that stalls loses only its
# own figure (the peer bench prints its JSON at the end).
operations=$("$python" -c 'import sys; sys.path.insert(0, sys.argv[1])
from compare import OPERATIONS
print(" ".join(name for name, *_ in OPERATIONS))' "$root/benches/peers")
for op in $operations; do
    timed "peers-gpu-$op" 30 "$bin/peers" --device "$device" --repeats 20 --only "$op"
done
timed peers-torch 80 "$python" benches/peers/torch_peer.py --device wgpu --repeats 20
timed peers-flex 60 "$bin/peers" --device flex --repeats 10
for dev in "$device" flex; do
    timed "demo-$dev" 70 "$bin/train" --config configs/demo-shop.toml --device "$dev" \
        --data-dir "$gpu/data/demo-shop" --out "$work/runs/demo-$dev"
done
for only in forecaster recommender; do
    for dev in "$device" flex; do
        timed "retail-$only-$dev" 60 "$bin/train" --config configs/online-retail.toml \
            --only "$only" --device "$dev" --data-dir "$gpu/data/online-retail" \
            --out "$work/runs/retail-$only-$dev"
    done
done

"$python" "$here/table.py" "$work" "$device" | tee "$work/table.md"
if [ -n "${OUT:-}" ]; then
    cp "$work/table.md" "$OUT/" 2>/dev/null
    tar -czf "$OUT/logs.tar.gz" -C "$work" logs timings.tsv machine.txt 2>/dev/null
fi
echo "check: done in $(($(date +%s) - started)) s; work folder $work" >&2
