"""The README's sample grid: assets/demo/samples.png (PyTorch forward of the shipped weights).

  /usr/bin/python3 tools/train_demo/samples.py [--model PATH] [--out PNG]

Prompts are listed in PROMPTS, row by row; seed = 1000 + index; the model's
default settings (DPM++ 2M Karras, 20 steps, CFG 5, 64x64). Each image is
shown at 2x (nearest).
"""
import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import evaluate  # noqa: E402
import sampling  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PROMPTS = [
    "a red circle on a blue background", "a large yellow star on a black background",
    "a small green triangle in the top left corner", "a white square on an orange background",
    "a cyan star on the right on a pink background", "a purple triangle at the bottom on a yellow background",
    "a yellow star above a purple square", "a blue circle to the left of a red triangle on a white background",
    "a small pink square in the bottom right corner on a green background", "an orange circle on a cyan background",
    "a black star in the middle on a white background", "a large green square on a purple background",
]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(ROOT, "assets", "demo", "fmimage-demo.safetensors"))
    p.add_argument("--out", default=os.path.join(ROOT, "assets", "demo", "samples.png"))
    args = p.parse_args()
    torch.set_num_threads(2)
    pipe = sampling.Pipeline(args.model)
    d = pipe.cfg["defaults"]
    x, _, _ = pipe.sample(PROMPTS, [1000 + i for i in range(len(PROMPTS))], steps=d["steps"], cfg=d["cfg"],
                          sampler=d["sampler"], scheduler=d["scheduler"])
    images = list(pipe.decode(x)[0])
    evaluate.grid(images, 4, args.out)
    for i, prompt in enumerate(PROMPTS):
        print(f"{i // 4},{i % 4}: {prompt}")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
