#!/bin/sh
# Re-train the demo model from scratch and rewrite the shipped files:
#   assets/demo/fmimage-demo.safetensors, assets/demo/samples.png,
#   tests/data/demo-ref.safetensors
# Needs Debian's python3-torch (+ python3-numpy, python3-pil); with the
# reference BLAS torch's matmuls are ~8x slower, so install libopenblas0-pthread.
# Takes about 75 minutes on 2 busy cores. Extra arguments go to train.py.
set -e
cd "$(dirname "$0")/../.."
PY=/usr/bin/python3
export OMP_WAIT_POLICY=PASSIVE OPENBLAS_NUM_THREADS=1
mkdir -p build/demo-train
$PY tools/train_demo/train.py vae unet "$@" 2>&1 | tee build/demo-train/train.log
# Second U-Net stage with offset noise: without it the background colour
# follows the seed's noise mean instead of the caption (README "Results").
$PY tools/train_demo/train.py unet --resume --anneal --offset-noise 0.5 --unet-steps 5000 --warmup 20 "$@" \
    2>&1 | tee -a build/demo-train/train.log
# Third stage: more U-Net steps (stars in held-out colours came out malformed).
$PY tools/train_demo/train.py unet --resume --anneal --offset-noise 0.5 --unet-lr 3e-4 --unet-steps 6300 --warmup 20 "$@" \
    2>&1 | tee -a build/demo-train/train.log
# Fourth stage: the decoder alone, on slightly noisy latents, then with the
# shapes' pixels weighted (README "Results": plain L1 drew small stars as blobs).
$PY tools/train_demo/train.py decoder --vae-steps 5000 --vae-batch 4 --vae-lr 3e-4 --anneal --latent-noise 0.1 \
    --warmup 50 "$@" 2>&1 | tee -a build/demo-train/train.log
$PY tools/train_demo/train.py decoder --vae-steps 2500 --vae-batch 4 --vae-lr 1e-4 --anneal --latent-noise 0.1 \
    --fg-weight 3 --warmup 50 "$@" 2>&1 | tee -a build/demo-train/train.log
$PY tools/train_demo/train.py export "$@" 2>&1 | tee -a build/demo-train/train.log
$PY tools/train_demo/reference.py
$PY tools/train_demo/samples.py
# adherence on the held-out prompts, images drawn by the C pipeline
sh tools/train_demo/eval_c.sh
