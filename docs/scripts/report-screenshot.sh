#!/usr/bin/env bash
# Opens a bundle's report.html in headless Chromium, takes a full-page screenshot and checks that
# it is not blank (more than one colour in the picture, and enough non-white pixels).
# Usage: docs/scripts/report-screenshot.sh BUNDLE_DIR [OUT.png]
# Needs Debian's chromium (`apt-get install chromium`) and python3.
set -euo pipefail
bundle=${1:?usage: $0 BUNDLE_DIR [OUT.png]}
png=${2:-$bundle/report.png}
report=$(realpath "$bundle/report.html")
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size=820,4000 \
  --screenshot="$png" "file://$report" 2>/dev/null
python3 - "$png" <<'PY'
import struct, sys, zlib
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
pos, idat, width, height = 8, b"", 0, 0
while pos < len(data):
    n, kind = struct.unpack(">I4s", data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b"IHDR":
        width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
        assert depth == 8 and ctype in (2, 6), f"unexpected PNG format {depth}/{ctype}"
        channels = 3 if ctype == 2 else 4
    elif kind == b"IDAT":
        idat += body
    pos += 12 + n
raw = zlib.decompress(idat)
stride = width * channels
prev = bytearray(stride)
colours, dark = set(), 0
for y in range(height):
    f = raw[y * (stride + 1)]
    line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - channels] if i >= channels else 0
        b = prev[i]
        c = prev[i - channels] if i >= channels else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    prev = line
    for x in range(0, width, 4):
        px = tuple(line[x * channels:x * channels + 3])
        colours.add(px)
        if sum(px) < 600:
            dark += 1
share = dark / (width * height / 4)
print(f"{sys.argv[1]}: {width}x{height}, {len(colours)} colours, {share:.1%} non-white")
assert len(colours) > 10 and share > 0.01, "the screenshot is blank"
PY
