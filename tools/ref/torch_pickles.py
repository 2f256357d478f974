#!/usr/bin/python3
"""PyTorch files made by torch.save itself, for the pickle reader's tests.

Runs torch.save of Debian's python3-torch (1.13, /usr/bin/python3) and
Python's own pickle module; no fmimage code is involved. Writes:

  tests/data/pickles/tiny-sd1-f16.ckpt   tests/data/tiny-sd1.safetensors as a
      Lightning-style checkpoint: {"state_dict": OrderedDict of the tensors cast
      to float16 by torch (int64 stays int64), "epoch", "global_step",
      "fmimage.config" (the safetensors file's config metadata, so detection
      finds the tiny config)}.
  tests/data/pickles/STRUCT.{ckpt,pt,pth} + STRUCT.expect.safetensors
      the real structures: Lightning checkpoint with state_dict and scalars
      (numpy scalar global_step), bare state dict (with _metadata), EMA keys,
      A1111 embedding (string_to_param), the original textual-inversion
      embedding (nn.ParameterDict), ESRGAN params_ema + params, protocol 4;
      dtypes f32/f16/bf16/f64/i64/i32/u8, views with a storage offset, a
      transposed (strided) tensor, a 0-d tensor, a Parameter. The .expect file
      holds each tensor as torch.load returns it (contiguous), under the name
      the reader must give it (nested dict keys joined with ".").
  tests/data/pickles/evil-*.ckpt   torch zip files whose pickle calls
      os.system / builtins.eval / posix.system to create /tmp/fmimage-pwned-*;
      this script checks that torch.load(weights_only=False) really creates the
      file (then deletes it).
  tests/data/pickles/legacy.pt   _use_new_zipfile_serialization=False.
  tests/fuzz/corpus/pickle/*     the data.pkl of each small file (fuzz seeds;
      tests/fuzz/corpus/torchfile/ holds copies of the small files themselves).

Re-run from the repository root: /usr/bin/python3 tools/ref/torch_pickles.py
"""
import collections
import io
import json
import os
import pickle
import subprocess
import sys
import types
import zipfile

import numpy as np
import torch
from safetensors.torch import save_file, load_file
from safetensors import safe_open

OUT = "tests/data/pickles"
CORPUS = "tests/fuzz/corpus/pickle"
os.makedirs(OUT, exist_ok=True)
os.makedirs(CORPUS, exist_ok=True)
torch.manual_seed(0)


def seed_of(path):
    with zipfile.ZipFile(path) as z:
        name = [n for n in z.namelist() if n.endswith("/data.pkl")][0]
        data = z.read(name)
    with open(os.path.join(CORPUS, os.path.basename(path) + ".pkl"), "wb") as f:
        f.write(data)


def expect(path, tensors):
    save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, path + ".expect.safetensors")


def save(obj, name, expected, **kw):
    path = os.path.join(OUT, name)
    torch.save(obj, path, **kw)
    seed_of(path)
    # what torch itself reads back, under the reader's names
    back = torch.load(path)
    expect(path, expected(back))


# 1. the tiny SD1 model as an fp16 Lightning checkpoint
sd = load_file("tests/data/tiny-sd1.safetensors")
cfg = safe_open("tests/data/tiny-sd1.safetensors", "pt").metadata()["fmimage.config"]
half = collections.OrderedDict((k, v.half() if v.is_floating_point() else v) for k, v in sorted(sd.items()))
path = os.path.join(OUT, "tiny-sd1-f16.ckpt")
torch.save({"state_dict": half, "epoch": 0, "global_step": 0, "fmimage.config": cfg}, path)


def small():
    base = torch.randn(4, 6)
    d = collections.OrderedDict()
    d["model.f32"] = base
    d["model.row"] = base[2]                 # view: storage offset 12
    d["model.t"] = base.t()                  # strided
    d["model.f16"] = torch.randn(3, 5).half()
    d["model.bf16"] = torch.randn(7).bfloat16()
    d["model.f64"] = torch.randn(2, 2, dtype=torch.float64)
    d["model.i64"] = torch.arange(5)
    d["model.i32"] = torch.arange(3, dtype=torch.int32)
    d["model.u8"] = torch.arange(4, dtype=torch.uint8)
    d["model.scalar"] = torch.tensor(2.5)
    d["model.param"] = torch.nn.Parameter(torch.randn(2, 3))
    d["model.conv"] = torch.randn(2, 3, 3, 3)[:, 1:]  # offset and strides of a slice
    return d


def nested_names(obj, prefix=""):
    out = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            out[prefix + str(k)] = v
        elif isinstance(v, dict):
            out.update(nested_names(v, prefix + str(k) + "."))
    return out


# 2. the structures
d = small()
save({"state_dict": d, "epoch": 3, "global_step": np.int64(7), "pytorch-lightning_version": "1.4.2",
      "callbacks": {"x": {"monitor": None}}, "optimizer_states": [{"state": {0: {"exp_avg": torch.ones(3)}}}]},
     "lightning.ckpt", lambda b: dict(b["state_dict"]))

bare = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.LayerNorm(2)).state_dict()  # has _metadata
save(bare, "bare.pt", lambda b: dict(b))

ema = collections.OrderedDict()
ema["model.diffusion_model.out.2.weight"] = torch.randn(4, 2)
ema["model_ema.diffusion_modelout2weight"] = torch.randn(4, 2)
ema["model_ema.decay"] = torch.tensor(0.9999)
ema["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
save({"state_dict": ema, "global_step": 1000}, "ema.ckpt", lambda b: dict(b["state_dict"]))

emb = {"string_to_token": {"*": 265}, "string_to_param": {"*": torch.randn(2, 8)}, "name": "tiny-emb",
       "step": 10, "sd_checkpoint": "a9263745", "sd_checkpoint_name": "tiny-sd1"}
save(emb, "embedding.pt", lambda b: nested_names(b))

pd = torch.nn.ParameterDict({"*": torch.nn.Parameter(torch.randn(1, 8))})
save({"string_to_token": {"*": 265}, "string_to_param": pd}, "embedding-ti.pt",
     lambda b: {"string_to_param." + k: v for k, v in b["string_to_param"].items()})

params = collections.OrderedDict(("conv_first.weight", torch.randn(2, 3, 3, 3)) for _ in range(1))
params_ema = collections.OrderedDict(("conv_first.weight", torch.randn(2, 3, 3, 3)) for _ in range(1))
save({"params": params, "params_ema": params_ema}, "esrgan.pth", lambda b: dict(b["params_ema"]))

save(small(), "protocol4.pt", lambda b: dict(b), pickle_protocol=4)

# 3. pickles that run code: torch.load (weights_only=False) would execute them
class Evil:
    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return (self.fn, (self.arg,))


def rewrite_pickle(path, old, new):
    """Replaces bytes of data.pkl (a GLOBAL's module name), re-zipping stored."""
    with zipfile.ZipFile(path) as z:
        members = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in members:
            if name.endswith("/data.pkl"):
                assert old in data
                data = data.replace(old, new)
            z.writestr(name, data)


def evil(name, fn, code_for, patch=None):
    target = "/tmp/fmimage-pwned-" + name
    if os.path.exists(target):
        os.unlink(target)
    path = os.path.join(OUT, "evil-" + name + ".ckpt")
    torch.save({"state_dict": {"w": torch.ones(2)}, "x": Evil(fn, code_for(target))}, path)
    if patch:
        rewrite_pickle(path, *patch)
    seed_of(path)
    # prove it: loading it with torch creates the file
    subprocess.run([sys.executable, "-c", "import torch,sys; torch.load(sys.argv[1])", path], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert os.path.exists(target), "torch.load of %s did not create %s" % (path, target)
    os.unlink(target)


import builtins
import posix
# os.system pickles as posix.system on Linux: the os-system file names os itself
evil("os-system", os.system, lambda t: "touch " + t, (b"cposix\nsystem\n", b"cos\nsystem\n"))
evil("eval", builtins.eval, lambda t: "open(%r, 'w').close()" % t)
evil("posix-system", posix.system, lambda t: "touch " + t)

# 4. the legacy (pre-1.6) format: refused
torch.save({"w": torch.ones(2)}, os.path.join(OUT, "legacy.pt"), _use_new_zipfile_serialization=False)
print("ok")
