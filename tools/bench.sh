#!/bin/sh
# make bench: speed and memory of fmimage on random full-size F16
# checkpoints, side by side with stable-diffusion.cpp when a binary is there.
# See tools/BENCH.md. Environment:
#   BENCH_REPS=N        runs per stage, medians (default 3)
#   BENCH_THREADS=T     threads for fmimage and sd.cpp (default 2)
#   BENCH_ONLY=LIST     subset of peak,sd1,prec,gen,sdcpp,lora,turbo,sdxl,upscale,hires (default all),
#                       or the long runs beside sd.cpp, only when named: sd1x20 (20 steps
#                       at 512) and sdxlq8 (SDXL 1024 on one Q8_0 GGUF, fmimage and sd.cpp)
#   BENCH_PRECISION=M   fp32, bf16 or auto (default): the SD 1.5 stage rows' and sd1.gen's mode
#   BENCH_PX=N          image side for SD 1.5 / SD-Turbo, SDXL 2N (default 512;
#                       smaller only to check the harness quickly)
#   BENCH_UPSCALE_PX=N  input side of the CLI-to-CLI upscale rows beside sd.cpp's
#                       -M upscale (default 128; 0 leaves them out)
#   SDCPP_BIN=PATH      stable-diffusion.cpp's sd-cli (default: the cache's
#                       sdcpp/build/bin/sd-cli, if present)
#   BUILD=DIR           fmimage build directory (default build)
set -eu
cd "$(dirname "$0")/.."

BUILD=${BUILD:-build}
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/fmimage/bench
REPS=${BENCH_REPS:-3}
THREADS=${BENCH_THREADS:-2}
ONLY=${BENCH_ONLY:-peak,sd1,prec,gen,sdcpp,lora,turbo,sdxl,upscale,hires}
PX=${BENCH_PX:-512}

mkdir -p "$CACHE" bench

# Random full-size checkpoints in the real tensor layouts (F16, as the
# common releases ship), made once: about 11 GB in all.
for layout in sd1 sdturbo sdxl; do
    ckpt=$CACHE/$layout-f16.safetensors
    if [ ! -f "$ckpt" ]; then
        echo "bench: writing $ckpt (random weights, layout tests/data/layouts/$layout.tsv)"
        nice "$BUILD/tools/mkckpt" "tests/data/layouts/$layout.tsv" "$ckpt.tmp" --dtype F16 --seed 1
        mv "$ckpt.tmp" "$ckpt"
    fi
done
# Real-ESRGAN x4plus's layout with random weights, for the upscale row.
ckpt=$CACHE/realesrgan-x4plus-f16.safetensors
[ -f "$ckpt" ] || { nice "$BUILD/tools/mkckpt" tests/data/layouts/realesrgan-x4plus.tsv "$ckpt.tmp" --dtype F16 --seed 1 && mv "$ckpt.tmp" "$ckpt"; }
# The lora row's adapter: a random rank-64 LoRA/LoCon on every layer of SD 1.5.
lora=$CACHE/loras/sd1-lora-r64.safetensors
[ -f "$lora" ] || { mkdir -p "$CACHE/loras" && nice "$BUILD/tools/mklora" tests/data/layouts/sd1.tsv "$lora" --rank 64; }
# The SDXL Q8_0 rows' GGUF (fmimage and sd.cpp both run this one file).
q8=$CACHE/sdxl-q8_0.gguf
case ",$ONLY," in *,sdxlq8,*) [ -f "$q8" ] || nice "$BUILD/fmimage" convert "$CACHE/sdxl-f16.safetensors" -o "$q8" --type q8_0 -q ;; esac
# TAESD: the golden file is the TAESD architecture with seeded random weights.
[ -f "$CACHE/taesd.safetensors" ] || cp tests/data/taesd-weights.safetensors "$CACHE/taesd.safetensors"

SDCPP=${SDCPP_BIN:-$CACHE/sdcpp/build/bin/sd-cli}
if [ -x "$SDCPP" ]; then
    echo "sd.cpp: $SDCPP"
else
    echo "sd.cpp: not available"
    SDCPP=
fi

echo "bench: the numbers are only as quiet as the machine; 'uptime' now: $(uptime)"
exec "$BUILD/tools/bench" --cache "$CACHE" --reps "$REPS" --threads "$THREADS" --px "$PX" --upscale-px "${BENCH_UPSCALE_PX:-128}" --only "$ONLY" \
    --precision "${BENCH_PRECISION:-auto}" \
    --fmimage "$BUILD/fmimage" --sdcpp "$SDCPP" --json bench/results.json
