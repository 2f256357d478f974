#!/usr/bin/python3
"""A full-size .ckpt made by torch.save itself, for tools/check_fullsize.sh (issue 17).

  ckpt_fullsize.py IN.safetensors OUT.ckpt

Reads every tensor of IN (a random full-size checkpoint from
build/tools/mkckpt, ldm names) with safetensors' own reader and writes it with
Debian's python3-torch (1.13) torch.save in the structure of a Lightning
training checkpoint as SD 1.x was published (sd-v1-4.ckpt): {"state_dict":
OrderedDict of the tensors in the file's order, "epoch", "global_step" (a
numpy scalar), "pytorch-lightning_version"}. The tensors keep their dtypes
(F16 here), so fmimage reading OUT must draw IN's image bit for bit and
`fmimage convert OUT` must give IN's tensors bit for bit. No fmimage code is
involved. Written to OUT.tmp, then renamed.
"""
import collections
import os
import sys

import numpy as np
import torch
from safetensors import safe_open


def main(src, dst):
    sd = collections.OrderedDict()
    with safe_open(src, framework="pt") as f:
        for k in f.keys():
            sd[k] = f.get_tensor(k)
    torch.save({"state_dict": sd, "epoch": 6, "global_step": np.int64(840000),
                "pytorch-lightning_version": "1.4.2"}, dst + ".tmp")
    os.replace(dst + ".tmp", dst)
    print(f"{dst}: {len(sd)} tensors")


if __name__ == "__main__":
    main(*sys.argv[1:])
