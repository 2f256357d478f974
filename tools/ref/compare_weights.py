#!/usr/bin/python3
"""Compare fmimage's output against reference files, for tools/check_fullsize.sh.

  compare_weights.py tensors REF.safetensors GOT.safetensors
      the same tensor names, and each tensor the same dtype, shape and bytes
      (read lazily, one tensor at a time: full-size files stay mapped)
  compare_weights.py images A.png B.png [MIN_DB]
      without MIN_DB: the decoded pixels are equal; with it: PSNR(A, B) >= MIN_DB
  compare_weights.py q8_0 REF.safetensors GOT.gguf [MIN_DB]
      every Q8_0 tensor of GOT dequantised by the gguf package (ggml's
      definition) against REF's tensor of that name: the signal-to-noise
      ratio over all of them, 10 log10(sum ref^2 / sum (deq - ref)^2), and
      the worst tensor's; >= MIN_DB (default 30) for the worst
Prints one line and exits 0 when it holds, 1 when not.
"""
import math
import sys

from PIL import Image


def tensors(ref, got):
    import torch
    from safetensors import safe_open
    with safe_open(ref, framework="pt") as a, safe_open(got, framework="pt") as b:
        ka, kb = set(a.keys()), set(b.keys())
        if ka != kb:
            print(f"names differ: only in {ref}: {sorted(ka - kb)[:5]}, only in {got}: {sorted(kb - ka)[:5]}")
            return 1
        for k in sorted(ka):
            x, y = a.get_tensor(k), b.get_tensor(k)
            if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x.view(-1).view(torch.uint8) if x.numel() else x,
                                                                            y.view(-1).view(torch.uint8) if y.numel() else y):
                print(f"{k}: {x.dtype} {list(x.shape)} in {ref}, {y.dtype} {list(y.shape)} in {got}: differ")
                return 1
    print(f"{len(ka)} tensors equal (name, dtype, shape, bytes)")
    return 0


def images(a, b, min_db=None):
    x, y = Image.open(a).convert("RGB"), Image.open(b).convert("RGB")
    if x.size != y.size:
        print(f"sizes differ: {x.size} {y.size}")
        return 1
    bx, by = x.tobytes(), y.tobytes()
    if min_db is None:
        print("pixels equal" if bx == by else "pixels differ")
        return 0 if bx == by else 1
    mse = sum((p - q) ** 2 for p, q in zip(bx, by)) / len(bx)
    db = math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)
    print(f"PSNR {db:.2f} dB (need >= {min_db})")
    return 0 if db >= min_db else 1


def q8_0(ref, got, min_db=30.0):
    import numpy as np
    import gguf
    from gguf import quants
    from safetensors import safe_open
    r = gguf.GGUFReader(got)
    signal = noise = 0.0
    worst, worst_name, n = math.inf, "", 0
    with safe_open(ref, framework="np") as a:
        for t in r.tensors:
            if t.tensor_type != gguf.GGMLQuantizationType.Q8_0:
                continue
            x = a.get_tensor(t.name).astype(np.float64).reshape(-1)
            y = quants.dequantize(t.data, t.tensor_type).astype(np.float64).reshape(-1)
            s, e = float(np.dot(x, x)), float(np.dot(y - x, y - x))
            signal, noise, n = signal + s, noise + e, n + 1
            db = math.inf if e == 0 else 10 * math.log10(s / e)
            if db < worst:
                worst, worst_name = db, t.name
    total = math.inf if noise == 0 else 10 * math.log10(signal / noise)
    print(f"{n} Q8_0 tensors: weight SNR {total:.2f} dB, worst {worst:.2f} dB ({worst_name}) (need >= {min_db})")
    return 0 if n and worst >= min_db else 1


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    if what == "tensors":
        sys.exit(tensors(*args))
    if what == "q8_0":
        sys.exit(q8_0(args[0], args[1], *(float(v) for v in args[2:])))
    sys.exit(images(args[0], args[1], float(args[2]) if len(args) > 2 else None))
