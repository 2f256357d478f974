#!/usr/bin/python3
"""Reference Checkpoint name lookups for the X/Y/Z plot: runs A1111's own
list_models (CheckpointInfo, register) and get_closet_checkpoint_match on a
folder of empty checkpoint files and a list of names, and writes
tests/data/xyz_ckpt.tsv.

Upstream: AUTOMATIC1111/stable-diffusion-webui modules/sd_models.py
(CheckpointInfo, list_models, re_strip_checksum,
get_closet_checkpoint_match), modules/util.py (natural_sort_key,
walk_files), modules/modelloader.py (load_models). The script reads those
files from A1111_DIR, takes the named definitions out of them with ast and
runs them as they are; only what they call outside themselves is stubbed:
no --ckpt-dir, no --ckpt, hidden files not listed, no metadata, no cached
SHA-256 (so titles carry no " [hash]", as fmimage's), and the old partial
hash a string no name here can equal.

Re-run:  A1111_DIR=/path/to/stable-diffusion-webui /usr/bin/python3 tools/ref/xyz_ckpt_ref.py
Line 1: "files" <TAB> the folder's files (JSON list of paths relative to it);
then: the name (JSON) <TAB> the file A1111 picks (JSON, relative), or null.
"""
import ast
import json
import os
import pathlib
import re
import sys
import tempfile
import types

A1111 = pathlib.Path(os.environ.get("A1111_DIR", "build/a1111ck"))
OUT = pathlib.Path(__file__).resolve().parents[2] / "tests/data/xyz_ckpt.tsv"

FILES = [
    "v1-5-pruned-emaonly.safetensors", "v1-5-pruned.safetensors", "sd_xl_base_1.0.safetensors",
    "sd_xl_refiner_1.0.safetensors", "dreamshaper_8.safetensors", "x10.safetensors", "x9a.safetensors",
    "a/dup.safetensors", "b/dup.safetensors", "a/b_c.safetensors", "a_b/c.safetensors", "sub/deep/inner.safetensors",
    "sub2/inner2.safetensors", "Sub/Upper.SafeTensors", "old.ckpt", "myvae.vae.safetensors", ".hidden/h.safetensors",
    ".dotfile.safetensors", "caf\u00e9.safetensors", "readme.txt", "model.gguf.txt", "t [x].safetensors",
    "n01.safetensors", "n1b.safetensors",
]

NAMES = [
    "", "v1-5-pruned", "v1-5-pruned.safetensors", "v1-5", "pruned", "emaonly", "v1-5-pruned-emaonly",
    "sd_xl", "sd_xl_base_1.0", "refiner", "1.0", "dreamshaper", "dreamshaper_8 [879db523c3]",
    "dreamshaper [0123456789]", "x", "x1", "x9", "dup", "a/dup", "a/dup.safetensors", "b/dup", "a_dup",
    "b_c", "a_b_c", "a/b_c", "a_b/c", "c", "inner", "sub/deep/inner", "sub_deep_inner", "inner2", "sub",
    "Upper", "upper", "Sub/Upper.SafeTensors", "old", "old.ckpt", "myvae", "myvae.vae", "h", ".hidden/h",
    "dotfile", ".dotfile", "caf\u00e9", "cafe", "readme", "model", "gguf", "t [x]", "t", "t [x] [y]", "[x]",
    "n1", "n01", "n", "safetensors", ".safetensors", "/", "../v1-5-pruned", "nothing-like-this", "  v1-5",
    "v1-5 ", "V1-5", "x [abc]", "zzz [v1-5]", "sd_xl_base_1.0.safetensors [31e35c80fc]", "1", "0", "_",
]


def defs(path, names):
    """The source of the top-level definitions and assignments called names."""
    src = path.read_text()
    out = []
    for node in ast.parse(src).body:
        got = [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)]
        if getattr(node, "name", None) in names or any(g in names for g in got):
            out.append(ast.get_source_segment(src, node))
    missing = set(names) - {n for n in names if any(f"def {n}(" in s or f"class {n}" in s or s.startswith(n) for s in out)}
    if missing:
        sys.exit(f"{path}: no {sorted(missing)}")
    return "\n\n".join(out)


def a1111(root):
    """A1111's lookup over root: get_closet_checkpoint_match, with the
    checkpoints listed by its own list_models."""
    opts = types.SimpleNamespace(list_hidden_files=False, data={})
    cmd = types.SimpleNamespace(ckpt_dir=None, ckpt=os.path.join(root, "no-such-file"), no_download_sd_model=True)
    shared = types.SimpleNamespace(cmd_opts=cmd, opts=opts, sd_model_file=None, default_sd_model_file=cmd.ckpt)
    util = {"os": os, "re": re, "shared": shared}
    exec(defs(A1111 / "modules/util.py", ["natural_sort_key", "walk_files"]), util)
    shared.walk_files = util["walk_files"]
    loader = {"os": os, "shared": shared}
    exec(defs(A1111 / "modules/modelloader.py", ["load_models"]), loader)
    ns = {
        "os": os, "re": re, "sys": sys, "shared": shared, "model_path": os.path.abspath(root),
        "modelloader": types.SimpleNamespace(load_models=loader["load_models"]),
        "hashes": types.SimpleNamespace(partial_hash_from_cache=lambda f: "\0partial:" + f,
                                        sha256_from_cache=lambda f, title: None),
        "cache": types.SimpleNamespace(cached_data_for_file=lambda *a: {}),
        "errors": types.SimpleNamespace(display=lambda *a: None),
        "read_metadata_from_safetensors": lambda f: {},
        "checkpoints_list": {}, "checkpoint_aliases": {},
    }
    exec(defs(A1111 / "modules/sd_models.py",
              ["CheckpointInfo", "list_models", "re_strip_checksum", "get_closet_checkpoint_match"]), ns)
    ns["list_models"]()
    return ns["get_closet_checkpoint_match"]


def main():
    with tempfile.TemporaryDirectory() as d:
        for f in FILES:
            p = pathlib.Path(d, f)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(b"")
        match = a1111(d)
        lines = ["files\t" + json.dumps(FILES)]
        for n in NAMES:
            info = match(n)
            got = os.path.relpath(info.filename, d) if info else None
            lines.append(json.dumps(n) + "\t" + json.dumps(got))
    OUT.write_text("\n".join(lines) + "\n")
    print(f"{OUT}: {len(NAMES)} names over {len(FILES)} files")


if __name__ == "__main__":
    main()
