"""PyTorch reference run of the shipped demo weights, for the C pipeline test.

  /usr/bin/python3 tools/train_demo/reference.py [--model PATH] [--out tests/data/demo-ref.safetensors]

Loads assets/demo/fmimage-demo.safetensors (F16 weights widened to float64:
the reference is computed in float64, like the goldens) and runs A1111-style
txt2img (tests/data/README.md#a1111-txt2img) twice:

  run    prompt                               seed steps cfg sampler   schedule
  ref    "a red circle on a blue background"    42   10  5.0 euler     normal
  ref2   "a yellow star above a purple square"   7   20  5.0 dpmpp_2m  karras  (the model's defaults)

Both with negative prompt "" and A1111 "NV" Philox noise (sampling.philox_randn,
bit-exact with tests/data/rng.safetensors). Stored, F32 unless noted (P = run):
  P.tokens_cond, P.tokens_uncond  I32 [1,77]
  P.cond, P.uncond                [1,77,32]  last_hidden_state
  P.noise                         [1,4,16,16] Philox noise (x.0 = noise * sigmas[0])
  P.sigmas [S+1], P.t [S]         schedule and the fractional U-Net timesteps
  P.x.N (N = 0..S), P.denoised.N (N = 0..S-1)   the trajectory (ref2: N = 0, 1 only)
  P.x_final                       [1,4,16,16] = P.x.S
  P.dec                           [1,3,64,64] decode(x_final / 0.18215), not clamped
  P.image                         [1,3,64,64] clamp((dec+1)/2, 0, 1)
The run settings are in __metadata__["runs"].
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sampling  # noqa: E402
import stfile  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
RUNS = [
    dict(name="ref", prompt="a red circle on a blue background", negative="", seed=42, steps=10, cfg=5.0,
         sampler="euler", scheduler="normal", trace=True),
    dict(name="ref2", prompt="a yellow star above a purple square", negative="", seed=7, steps=20, cfg=5.0,
         sampler="dpmpp_2m", scheduler="karras", trace=False),
]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(ROOT, "assets", "demo", "fmimage-demo.safetensors"))
    p.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "demo-ref.safetensors"))
    args = p.parse_args()
    pipe = sampling.Pipeline(args.model)
    pipe.sd.double()
    out = {}
    for r in RUNS:
        P = r["name"]
        trace = []
        x, noise, sig = pipe.sample([r["prompt"]], [r["seed"]], steps=r["steps"], cfg=r["cfg"],
                                    sampler=r["sampler"], scheduler=r["scheduler"], negative=r["negative"],
                                    trace=trace)
        _, dec = pipe.decode(x)
        out[f"{P}.tokens_cond"] = np.array([pipe.tok(r["prompt"])], np.int32)
        out[f"{P}.tokens_uncond"] = np.array([pipe.tok(r["negative"])], np.int32)
        out[f"{P}.cond"] = pipe.encode_text([r["prompt"]]).numpy()
        out[f"{P}.uncond"] = pipe.encode_text([r["negative"]]).numpy()
        out[f"{P}.noise"] = noise.numpy()
        out[f"{P}.sigmas"] = np.asarray(sig)
        out[f"{P}.t"] = np.array([pipe.sigma_to_t(float(s)) for s in sig[:-1]])
        for i, (xi, di) in enumerate(trace):
            if r["trace"] or i < 2:
                out[f"{P}.x.{i}"] = xi.numpy()
                out[f"{P}.denoised.{i}"] = di.numpy()
        if r["trace"]:
            out[f"{P}.x.{len(trace)}"] = x.numpy()
        out[f"{P}.x_final"] = x.numpy()
        out[f"{P}.dec"] = dec.numpy()
        out[f"{P}.image"] = ((dec + 1) / 2).clamp(0, 1).numpy()
        print(f"{P}: '{r['prompt']}' final latent range [{x.min():.3f}, {x.max():.3f}]")
    out = {k: (v.astype(np.float32) if v.dtype != np.int32 else v) for k, v in out.items()}
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    stfile.save(args.out, out, {"runs": json.dumps(RUNS), "model": os.path.basename(args.model)})
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e3:.0f} KB, {len(out)} tensors)")


if __name__ == "__main__":
    main()
