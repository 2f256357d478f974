#!/usr/bin/python3
"""Compare fmimage's output against reference files, for tools/check_fullsize.sh.

  compare_weights.py tensors REF.safetensors GOT.safetensors
      the same tensor names, and each tensor the same dtype, shape and bytes
      (read lazily, one tensor at a time: full-size files stay mapped)
  compare_weights.py images A.png B.png [MIN_DB]
      without MIN_DB: the decoded pixels are equal; with it: PSNR(A, B) >= MIN_DB
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


if __name__ == "__main__":
    what, args = sys.argv[1], sys.argv[2:]
    if what == "tensors":
        sys.exit(tensors(*args))
    sys.exit(images(args[0], args[1], float(args[2]) if len(args) > 2 else None))
