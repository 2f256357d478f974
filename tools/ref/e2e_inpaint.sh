#!/bin/sh
# Reference images for tests/test_e2e_inpaint.c: every row of
# tests/data/e2e/inpaint.tsv drawn by tools/ref/a1111_e2e.py (A1111's
# img2img-inpaint steps over the original ldm + k-diffusion, float64) into
# tests/data/e2e/inpaint/NAME.png. The driver's sources: its --ldm/--kdiff/
# --clip/--a1111 flags or A1111_E2E_* (see the top of a1111_e2e.py).
set -eu
cd "$(dirname "$0")/../.."
exec /usr/bin/python3 - <<'PY'
import subprocess
d = "tests/data/e2e/inpaint"
rows = [l.rstrip("\n").split("\t") for l in open("tests/data/e2e/inpaint.tsv") if not l.startswith("#")][1:]
for name, sampler, sched, steps, cfg, seed, denoise, prompt, negative, flags in rows:
    f = [f"{d}/{t}" if t.endswith(".png") else t for t in flags.split()]
    subprocess.run(["/usr/bin/python3", "tools/ref/a1111_e2e.py", "--ckpt", "tests/data/tiny-sd1.safetensors",
                    "--prompt", prompt, "--negative", negative, "--seed", seed, "--steps", steps, "--cfg", cfg,
                    "--width", "64", "--height", "64", "--sampler", sampler, "--scheduler", sched,
                    "--init-image", f"{d}/init.png", "--denoise", denoise, *f, "--out", f"{d}/{name}.png"],
                   check=True, stdout=subprocess.DEVNULL)
    print(name)
PY
