#!/bin/sh
# make bench-peers: fmimage's SD 1.5 U-Net and VAE decode per precision beside
# PyTorch, ONNX Runtime and OpenVINO on the same random full-size checkpoint
# (tools/peers/peers.py; tools/BENCH.md). Environment:
#   BENCH_REPS=N      runs per row, medians (default 3)
#   BENCH_WARMUP=N    untimed runs before each row's (default 0: reps >= 3
#                     drop the cold first run; with BENCH_REPS=1, use 1)
#   BENCH_THREADS=T   threads for every runtime (default 2)
#   BENCH_PX=N        image side (default 512; smaller only to check the harness)
#   PEERS_SDXL=1     also one SDXL U-Net evaluation at twice the side (fmimage
#                     fp32/bf16/Q8_0, PyTorch fp32/bf16); PEERS_SDXL=only: just that
#   PEERS_NO_PIP=1    no PyPI: Debian's python3-torch (not a valid oneDNN peer)
#                     and whatever ONNX Runtime / OpenVINO it already imports
#   PEERS_VENV=DIR    the PyPI peers' venv (default BUILD/peers-venv)
#   BUILD=DIR         fmimage build directory (default build)
set -eu
cd "$(dirname "$0")/../.."

BUILD=${BUILD:-build}
VENV=${PEERS_VENV:-$BUILD/peers-venv}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/fmimage/bench
OUT=$BUILD/peers
mkdir -p "$CACHE" "$OUT"

ckpt=$CACHE/sd1-f16.safetensors
if [ ! -f "$ckpt" ]; then
    echo "bench-peers: writing $ckpt (random weights, layout tests/data/layouts/sd1.tsv)"
    nice "$BUILD/tools/mkckpt" tests/data/layouts/sd1.tsv "$ckpt.tmp" --dtype F16 --seed 1
    mv "$ckpt.tmp" "$ckpt"
fi

# The peers come from PyPI into a venv under BUILD: PyPI's torch wheel (MKL
# and oneDNN, AVX-512 kernels) with the CUDA libraries it links against (it
# does not import without them: about 3 GB to download, 5.4 GB installed),
# onnxruntime, openvino, and onnx + onnxscript for torch.onnx.export. Once
# installed the venv is reused. Without it (PEERS_NO_PIP=1, or the install
# fails) the run falls back to Debian's python3-torch, which peers.py labels
# as no valid peer (generic BLAS, AVX2 kernels).
PEERS_PKGS="torch onnxruntime openvino onnx onnxscript numpy safetensors"
PY=/usr/bin/python3
if [ -z "${PEERS_NO_PIP:-}" ]; then
    if [ ! -f "$VENV/.peers-ok" ]; then
        echo "bench-peers: installing the PyPI peers into $VENV ($PEERS_PKGS; ~3 GB download, once)"
        if "$PY" -m venv "$VENV" && "$VENV/bin/pip" install -q --progress-bar off $PEERS_PKGS &&
           "$VENV/bin/python" -c "import torch, onnxruntime, openvino, onnxscript, safetensors"; then
            touch "$VENV/.peers-ok"
        else
            echo "bench-peers: the PyPI peers did not install into $VENV; falling back to Debian's python3-torch"
        fi
    fi
    [ -f "$VENV/.peers-ok" ] && PY=$VENV/bin/python
fi
[ "$PY" = /usr/bin/python3 ] &&
    echo "bench-peers: using Debian's python3-torch: NOT a valid PyTorch/oneDNN peer (its rows only check the harness)"

case ${PEERS_SDXL:-} in
    '') set -- ;;
    only) set -- --sdxl-only ;;
    *) set -- --sdxl ;;
esac
echo "bench-peers: 'uptime' now: $(uptime)"
exec nice "$PY" tools/peers/peers.py "$@" --ckpt "$ckpt" --bench "$BUILD/tools/bench" --cache "$CACHE" --out "$OUT" \
    --reps "${BENCH_REPS:-3}" --warmup "${BENCH_WARMUP:-0}" --threads "${BENCH_THREADS:-2}" --px "${BENCH_PX:-512}"
