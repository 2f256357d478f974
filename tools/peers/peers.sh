#!/bin/sh
# make bench-peers: fmimage's SD 1.5 U-Net and VAE decode per precision beside
# PyTorch, ONNX Runtime and OpenVINO on the same random full-size checkpoint
# (tools/peers/peers.py; tools/BENCH.md). Environment:
#   BENCH_REPS=N      runs per row, medians (default 3)
#   BENCH_THREADS=T   threads for every runtime (default 2)
#   BENCH_PX=N        image side (default 512; smaller only to check the harness)
#   PEERS_NO_PIP=1    do not install missing PyPI peers (their rows then say so)
#   BUILD=DIR         fmimage build directory (default build)
set -eu
cd "$(dirname "$0")/../.."

BUILD=${BUILD:-build}
PY=${PYTHON:-/usr/bin/python3}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/fmimage/bench
OUT=$BUILD/peers
mkdir -p "$CACHE" "$OUT"

ckpt=$CACHE/sd1-f16.safetensors
if [ ! -f "$ckpt" ]; then
    echo "bench-peers: writing $ckpt (random weights, layout tests/data/layouts/sd1.tsv)"
    nice "$BUILD/tools/mkckpt" tests/data/layouts/sd1.tsv "$ckpt.tmp" --dtype F16 --seed 1
    mv "$ckpt.tmp" "$ckpt"
fi

# PyTorch is Debian's python3-torch; ONNX Runtime and OpenVINO come from PyPI
# where the machine reaches it. numpy stays < 2 (Debian's torch needs it).
for pkg in onnxruntime openvino; do
    if ! "$PY" -c "import $pkg" 2>/dev/null && [ -z "${PEERS_NO_PIP:-}" ]; then
        echo "bench-peers: installing $pkg from PyPI"
        "$PY" -m pip install -q --break-system-packages "$pkg" 'numpy<2' ||
            echo "bench-peers: $pkg did not install; its rows are left out"
    fi
done

echo "bench-peers: 'uptime' now: $(uptime)"
exec nice "$PY" tools/peers/peers.py --ckpt "$ckpt" --bench "$BUILD/tools/bench" --cache "$CACHE" --out "$OUT" \
    --reps "${BENCH_REPS:-3}" --threads "${BENCH_THREADS:-2}" --px "${BENCH_PX:-512}"
