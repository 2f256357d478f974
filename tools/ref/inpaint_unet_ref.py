#!/usr/bin/python3
"""Reference for the 9-channel (inpainting) U-Net forward (tests/test_inpaint.c).

tiny-sd1.safetensors with its conv_in (model.diffusion_model.input_blocks.0.0.weight)
replaced by a seeded [32, 9, 3, 3] one is run through ldm's UNetModel
(CompVis/stable-diffusion@21f890f9da3cfbeaba8e2ac3c425ee9e998d5229,
ldm/modules/diffusionmodules/openaimodel.py, in_channels 9: the U-Net of
LatentInpaintDiffusion, whose c_concat = [mask, masked-image latent] is
concatenated after x on the channel axis by DiffusionWrapper 'hybrid') in
float64 (GroupNorm32's and timestep_embedding's float32 casts bypassed, the
goldens' convention). Writes tests/data/inpaint/unet9.safetensors:
  conv_in  [32,9,3,3]  the new conv_in weight (F32; the test builds the file from it)
  x        [2,9,8,8]   U-Net input: c_in * x (4 channels), then mask (1), then latent (4)
  t        [2]         timesteps 999, 261.5
  context  [2,77,8]
  out      [2,4,8,8]   eps, float64 run, stored F32
Sources: --ldm DIR (default build/ref-src/ldm, from
  git --git-dir=/work/.mirror/CompVis+stable-diffusion/repo archive 21f890f9 ldm | tar -x -C build/ref-src/ldm)
"""
import json, math, os, sys, types
import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
ldm_dir = sys.argv[sys.argv.index("--ldm") + 1] if "--ldm" in sys.argv else os.path.join(ROOT, "build", "ref-src", "ldm")
try:
    import omegaconf.listconfig  # noqa: F401
except ImportError:
    class ListConfig(list):
        pass
    sys.modules["omegaconf"] = types.ModuleType("omegaconf")
    m = types.ModuleType("omegaconf.listconfig"); m.ListConfig = ListConfig
    sys.modules["omegaconf.listconfig"] = m
sys.path.insert(0, ldm_dir)
import ldm.modules.diffusionmodules.util as ldm_util  # noqa: E402
import ldm.modules.diffusionmodules.openaimodel as oam  # noqa: E402

ldm_util.GroupNorm32.forward = nn.GroupNorm.forward
def timestep_embedding(timesteps, dim, max_period=10000, repeat_only=False):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float64) / half)
    args = timesteps[:, None].double() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
oam.timestep_embedding = timestep_embedding
torch.set_default_dtype(torch.float64)

path = os.path.join(ROOT, "tests", "data", "tiny-sd1.safetensors")
with safe_open(path, "pt") as f:
    cfg = json.loads(f.metadata()["fmimage.config"])
    sd = {k[22:]: f.get_tensor(k) for k in f.keys() if k.startswith("model.diffusion_model.")}
u = dict(cfg["unet"])
for k in ("use_linear_in_transformer",):
    assert not u.pop(k)
u["transformer_depth"] = u["transformer_depth"][0]
u["in_channels"] = 9
g = torch.Generator().manual_seed(18)
b = math.sqrt(3.0 / (9 * 9))
conv_in = ((torch.rand((32, 9, 3, 3), generator=g, dtype=torch.float64) * 2 - 1) * b).float()
sd["input_blocks.0.0.weight"] = conv_in
net = oam.UNetModel(**u)
net.load_state_dict({k: v.double() for k, v in sd.items()}, strict=True)
net.dtype = torch.float64
net.eval()
x = torch.randn((2, 9, 8, 8), generator=g, dtype=torch.float64).float()
x[:, 4] = (x[:, 4] > 0).float()  # the mask channel is 0 or 1
t = torch.tensor([999.0, 261.5])
ctx = torch.randn((2, 77, 8), generator=g, dtype=torch.float64).float()
with torch.no_grad():
    out = net(x.double(), t.double(), context=ctx.double())
OUT = os.path.join(ROOT, "tests", "data", "inpaint", "unet9.safetensors")
save_file({"conv_in": conv_in.contiguous(), "x": x.contiguous(), "t": t.float(), "context": ctx.contiguous(),
           "out": out.float().contiguous()}, OUT)
print("wrote", OUT, "out mean abs %.4f" % out.abs().mean().item())
