#!/usr/bin/env bash
# Prepares, on this machine, everything benches/gpu/check.sh needs on a GPU machine that has no
# network and no Rust toolchain (its python3 holds PyTorch with CUDA). Writes `.gpu/` at the
# repository root (ignored by git), at most 60 MiB so that it travels with the working tree:
#
#   .gpu/bin/train.xz, .gpu/bin/peers.xz   stripped release binaries, xz-compressed
#   .gpu/data/demo-shop/                  the demo shop, generated here once
#   .gpu/data/online-retail/              the Online Retail parquet file
#   .gpu/gl/*.deb                         the Vulkan loader, for WGPU where the image lacks it
#
#   benches/gpu/prepare.sh [--online-retail DIR]
#
# DIR holds online_retail.parquet (default: SHOPCAST_ONLINE_RETAIL, else ../shared/data/online-retail
# beside the repository). Then, on the GPU machine: `bash benches/gpu/check.sh`, carrying `.gpu`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
retail=${SHOPCAST_ONLINE_RETAIL:-$root/../shared/data/online-retail}
while [ $# -gt 0 ]; do
    case "$1" in
        --online-retail) retail=$2; shift 2 ;;
        *) echo "prepare.sh: unknown option $1 (see the comment at the top)" >&2; exit 2 ;;
    esac
done
if [ ! -f "$retail/online_retail.parquet" ]; then
    echo "prepare.sh: no online_retail.parquet in $retail (pass --online-retail DIR)" >&2
    exit 2
fi
for tool in strip xz apt-get; do
    command -v "$tool" >/dev/null || { echo "prepare.sh: needs $tool" >&2; exit 2; }
done
cd "$root"
out=$root/.gpu
rm -rf "$out"
mkdir -p "$out/bin" "$out/data/online-retail" "$out/gl"

# Always --workspace: a build of one package resolves burn's features differently and rebuilds it.
echo "prepare: building train and the peer bench (release)" >&2
cargo build --release --workspace --bin train -q
peers=$(cargo bench --workspace --bench peers --no-run --message-format=json -q |
    python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "peers" and m.get("executable"):
        print(m["executable"])')
if [ -z "$peers" ]; then
    echo "prepare.sh: cargo did not name the peer bench binary" >&2
    exit 1
fi
for pair in "train:target/release/train" "peers:$peers"; do
    name=${pair%%:*}
    strip -o "$out/bin/$name" "${pair#*:}"
    xz -T0 -6 "$out/bin/$name"
done

echo "prepare: generating the demo shop" >&2
demo=$(mktemp -d)
trap 'rm -rf "$demo"' EXIT
target/release/train --config configs/demo-shop.toml --only forecaster --device flex \
    --data-dir "$out/data/demo-shop" --out "$demo/bundle" >"$demo/log" 2>&1 || {
    cat "$demo/log" >&2
    exit 1
}
cp "$retail/online_retail.parquet" "$out/data/online-retail/"

# The Vulkan loader (the image has NVIDIA's driver but may lack libvulkan); own package lists,
# so the machine's apt state is left alone.
lists=$(mktemp -d)
mkdir -p "$lists/partial"
chmod 755 "$lists" "$lists/partial" # apt downloads as the _apt user
apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 "-oDir::State::Lists=$lists")
apt-get "${apt_opts[@]}" update -qq
(cd "$out/gl" && apt-get "${apt_opts[@]}" download -qq libvulkan1 2>/dev/null)
rm -rf "$lists"

bytes=$(du -sb "$out" | cut -f1)
echo "prepare: .gpu holds $((bytes / 1048576)) MiB" >&2
if [ "$bytes" -gt $((60 * 1048576)) ]; then
    echo "prepare.sh: .gpu is over 60 MiB; it would not travel with the working tree" >&2
    exit 1
fi
echo "prepare: done; on the GPU machine run 'bash benches/gpu/check.sh' with .gpu carried" >&2
