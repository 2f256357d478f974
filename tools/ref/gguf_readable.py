#!/usr/bin/python3
"""fmimage's GGUF output read by the gguf Python package (pip's gguf, not a
Debian package, hence not in make test).

For each type, `build/fmimage convert tests/data/tiny-sd1.safetensors -o
X.gguf --type T`, then `build/fmimage convert X.gguf -o X.safetensors --type
f32` (fmimage's own dequantisation); gguf.GGUFReader must read X.gguf, give
every tensor the same name, shape and type as fmimage's reader, and
gguf.quants.dequantize the same float32 values bit for bit; the string
metadata (fmimage.config) must be there.

Run from the repository root after make: /usr/bin/python3 tools/ref/gguf_readable.py
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import gguf
from gguf import quants
from safetensors.numpy import load_file

TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]


def main():
    src = "tests/data/tiny-sd1.safetensors"
    with tempfile.TemporaryDirectory() as d:
        for t in TYPES:
            g, s = os.path.join(d, t + ".gguf"), os.path.join(d, t + ".safetensors")
            subprocess.check_call(["build/fmimage", "convert", src, "-o", g, "--type", t, "-q"])
            subprocess.check_call(["build/fmimage", "convert", g, "-o", s, "--type", "f32", "-q"])
            r = gguf.GGUFReader(g)
            assert "fmimage.config" in r.fields, t
            ref = load_file(s)
            kinds = {}
            for x in r.tensors:
                want = ref[x.name]
                if x.tensor_type in (gguf.GGMLQuantizationType.I64, gguf.GGMLQuantizationType.I32):
                    got = np.asarray(x.data).reshape(want.shape)
                else:
                    got = quants.dequantize(x.data, x.tensor_type).reshape(want.shape)
                assert got.astype(want.dtype).tobytes() == want.tobytes(), (t, x.name)
                kinds[x.tensor_type.name] = kinds.get(x.tensor_type.name, 0) + 1
            assert len(r.tensors) == len(ref), t
            print(f"{t}: {len(r.tensors)} tensors read by gguf {kinds}, values equal to fmimage's")


if __name__ == "__main__":
    if not os.path.isfile("build/fmimage"):
        sys.exit("run from the repository root after make")
    main()
