#!/usr/bin/python3
"""PNG Info paste reference (issue 16 item 6): fmimage's infotext for an
image with <lora:...> tags (two files, te=/unet= form), an embedding in the
negative prompt and --vae, parsed by A1111's own parse_generation_parameters.

What it runs: AUTOMATIC1111/stable-diffusion-webui modules/infotext_utils.py
(re_param, unquote, restore_old_hires_fix_params,
parse_generation_parameters; commit 036500223de0) and
modules/infotext_versions.py (backcompat), imported from the directory given
as A1111_WEBUI (default /tmp/a1111-webui: those functions as upstream has
them in modules/, plus stubs modules/shared.py with A1111's option defaults
infotext_styles "Apply if any", infotext_skip_pasting [],
use_old_hires_fix_width_height False, auto_backcompat True and no saved
styles, and modules/processing.py). Not in git: A1111's code stays out.

It asserts that what A1111 puts back is what the run asked for: prompt (tags
kept, as A1111 writes them), negative prompt, steps, sampler, CFG scale,
seed, size, and the hashes A1111 computes itself (checked here
independently: model sha256[:10], Lora hashes = the sha256 of each file's
bytes after the safetensors header [:12] ("addnet" hash), TI hashes =
sha256[:12] of the embedding file, VAE hash = sha256[:10], VAE = the file
name). Writes tests/data/pnginfo-ref.json: the fmimage arguments, the
infotext A1111 parsed and its parsed dict; tests/test_pnginfo.c checks that
fmimage still writes that infotext byte for byte.

Re-run (after make all and build/tests/test_pnginfo):
    A1111_WEBUI=/tmp/a1111-webui /usr/bin/python3 tools/ref/pnginfo_ref.py
"""
import hashlib
import json
import os
import subprocess
import sys
import tempfile

from PIL import Image

sys.path.insert(0, os.environ.get("A1111_WEBUI", "/tmp/a1111-webui"))
from modules.infotext_utils import parse_generation_parameters  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DATA = "tests/data/"
PROMPT = 'a red fox, <lora:sd1_locon:0.8> in snow: "at dusk"\nsecond line <lora:sd1_loha:te=0.5:unet=1>'
NEGATIVE = "blurry, tiv, low quality"
ARGS = ["-m", DATA + "tiny-sd1.safetensors", "--vae", "@VAE@", "--lora-dir", DATA + "lora",
        "--embeddings-dir", DATA + "embeddings", "--steps", "3", "-W", "64", "-H", "96", "--seed", "1234567",
        "--cfg", "5.5", "--sampler", "euler_ancestral", "-n", NEGATIVE, "-o", "@OUT@", PROMPT]


def sha256(path, skip_header=False):
    with open(path, "rb") as f:
        if skip_header:
            f.seek(8 + int.from_bytes(f.read(8), "little"))
        return hashlib.sha256(f.read()).hexdigest()


def main():
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        vae, out = os.path.join(tmp, "pnginfo_vae.safetensors"), os.path.join(tmp, "out.png")
        subprocess.run(["build/tests/test_pnginfo", "--write-vae", vae], check=True)
        args = [vae if a == "@VAE@" else out if a == "@OUT@" else a for a in ARGS]
        subprocess.run(["build/fmimage"] + args, check=True)
        infotext = Image.open(out).info["parameters"]
        vae_hash = sha256(vae)[:10]
    parsed = parse_generation_parameters(infotext)
    lora = ", ".join(f"{n}: {sha256(DATA + 'lora/' + n + '.safetensors', True)[:12]}" for n in ("sd1_locon", "sd1_loha"))
    want = {
        "Prompt": PROMPT, "Negative prompt": NEGATIVE, "Steps": "3", "Sampler": "Euler a", "CFG scale": "5.5",
        "Seed": "1234567", "Size-1": "64", "Size-2": "96",
        "Model hash": sha256(DATA + "tiny-sd1.safetensors")[:10], "Lora hashes": lora,
        "TI hashes": "tiv: " + sha256(DATA + "embeddings/tiv.safetensors")[:12],
        "VAE": "pnginfo_vae.safetensors", "VAE hash": vae_hash,
    }
    for k, v in want.items():
        if parsed.get(k) != v:
            sys.exit(f"A1111 parsed {k!r} as {parsed.get(k)!r}, the run had {v!r}\n{infotext}")
    with open(DATA + "pnginfo-ref.json", "w") as f:
        json.dump({"args": ARGS, "infotext": infotext, "parsed": parsed}, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(infotext)
    print(len(parsed), "fields parsed; all", len(want), "checked ones as the run asked")


if __name__ == "__main__":
    main()
