#!/usr/bin/python3
"""Reference names for a diffusers-named VAE (issue 16 item 5): the
diffusers AutoencoderKL name of every VAE tensor of the tiny SD 1.x golden
checkpoint, checked with diffusers' own converter.

What it runs: huggingface/diffusers scripts/convert_diffusers_to_original_stable_diffusion.py
(commit 58eb52c0803ea9af3abec60841c2a093bdf1f951, read from the fetched mirror
given as DIFFUSERS_GIT, default /work/.mirror/huggingface+diffusers/repo, and
imported as a module; its __main__ part does not run). A candidate diffusers
name is made for each ldm key by replacing the script's (ldm, diffusers) pairs
the other way, with the newer attention names (to_q, to_k, to_v, to_out.0)
and the 1x1 attention convolutions as Linear [C, C]; then the script's
convert_vae_state_dict must map the whole candidate state dict back to the
checkpoint's exact keys, values and shapes (asserted). The script lists SD's
four levels (decoder up_blocks.i = ldm up.(3-i)); for the two-level tiny VAE
that puts the decoder's blocks at up_blocks 2 and 3, which is what the
script itself accepts.

Writes tests/data/vae-diffusers-names.tsv: diffusers name, ldm name (with
first_stage_model.), 1 when the tensor is stored as a Linear in diffusers.

Re-run: /usr/bin/python3 tools/ref/vae_names.py
"""
import importlib.util
import os
import subprocess
import tempfile

import torch
from safetensors.torch import load_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DATA = os.path.join(ROOT, "tests", "data")
GIT = os.environ.get("DIFFUSERS_GIT", "/work/.mirror/huggingface+diffusers/repo")
COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"


def converter():
    src = subprocess.run(["git", "--git-dir", GIT, "show", COMMIT + ":scripts/convert_diffusers_to_original_stable_diffusion.py"],
                         check=True, capture_output=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "convert_diffusers_to_original_stable_diffusion.py")
    with open(path, "wb") as f:
        f.write(src)
    spec = importlib.util.spec_from_file_location("convert_diffusers", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


ATTN = [("norm.", "group_norm."), ("q.", "to_q."), ("k.", "to_k."), ("v.", "to_v."), ("proj_out.", "to_out.0.")]


def candidate(conv, k):
    v = k
    for sd, hf in reversed(conv.vae_conversion_map):
        v = v.replace(sd, hf)
    mark = "mid_block.attentions.0."
    if mark in v:
        head, tail = v.split(mark)
        for sd, hf in ATTN:
            if tail.startswith(sd):
                tail = hf + tail[len(sd):]
                break
        v = head + mark + tail
    return v


def main():
    conv = converter()
    sd = load_file(os.path.join(DATA, "tiny-sd1.safetensors"))
    pre = "first_stage_model."
    vae = {k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)}
    rows, hf = [], {}
    for k, v in sorted(vae.items()):
        name = candidate(conv, k)
        linear = ".mid_block.attentions.0.to_" in name and name.endswith(".weight") and v.ndim == 4
        hf[name] = v.reshape(v.shape[0], v.shape[1]) if linear else v
        rows.append((name, pre + k, int(linear)))
    back = conv.convert_vae_state_dict(dict(hf))
    assert sorted(back) == sorted(vae), set(back) ^ set(vae)
    for k in vae:
        assert back[k].shape == vae[k].shape and torch.equal(back[k], vae[k]), k
    with open(os.path.join(DATA, "vae-diffusers-names.tsv"), "w") as f:
        f.write("# diffusers name\tldm name\tlinear in diffusers (tools/ref/vae_names.py)\n")
        for r in rows:
            f.write("%s\t%s\t%d\n" % r)
    print(len(rows), "names;", sum(r[2] for r in rows), "linear; round trip through diffusers' converter exact")


if __name__ == "__main__":
    main()
