#!/bin/sh
# Valgrind memcheck of one tiny end-to-end generation (issue 9). Valgrind
# 3.19 cannot run AVX-512 code, so this uses a PORTABLE=1 build (x86-64-v2
# baseline; kernels picked at run time) in build/vg. One thread: libgomp's
# worker threads add nothing to check. Exits non-zero on any error or leak.
set -e
cd "$(dirname "$0")/.."
make -s BUILD=build/vg PORTABLE=1 build/vg/fmimage
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# OMP_WAIT_POLICY set: otherwise the CLI re-executes itself to set it, and
# the re-executed process would run outside valgrind.
OMP_WAIT_POLICY=passive valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect \
    build/vg/fmimage -m tests/data/tiny-sd1.safetensors "a fox" -W 32 -H 32 --steps 2 -t 1 \
    --seed 1 -q -o "$out/x.png"
test -s "$out/x.png"
