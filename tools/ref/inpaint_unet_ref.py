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

--family sd2: the same for tiny-sd2 (tests/data/README.md#tiny-sd2's config, linear
  projections, 16-wide heads) through Stability-AI/stablediffusion@cf1d67a6fd5ea1aa600c4df58e5b47da45f6bdbf
  ldm's UNetModel (v2-inpainting-inference.yaml: in_channels 9), context [2,77,32];
  --ldm default build/ref-src/ldm-sd2. Writes tests/data/inpaint/unet9-sd2.safetensors.
--family sdxl: tiny-sdxl through Stability-AI/generative-models@0ad7de9a5cb53fd63d6d30a4f385485e72e08597
  sgm's UNetModel (A1111's configs/sd_xl_inpaint.yaml: in_channels 9; A1111's
  sd_models_xl.apply_model concatenates c_concat after x), context [2,77,64] and
  y [2,1568] (stored as "y"); --sgm DIR default build/ref-src/sgm (git archive 0ad7de9a sgm).
  torch 1.13 has no F.scaled_dot_product_attention: the plain softmax(q k^T / sqrt(d)) v
  stands in for it. Writes tests/data/inpaint/unet9-sdxl.safetensors.
"""
import json, math, os, sys, types
import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
family = sys.argv[sys.argv.index("--family") + 1] if "--family" in sys.argv else "sd1"
assert family in ("sd1", "sd2", "sdxl")
ldm_dir = sys.argv[sys.argv.index("--ldm") + 1] if "--ldm" in sys.argv else os.path.join(
    ROOT, "build", "ref-src", "ldm" if family == "sd1" else "ldm-sd2")
sgm_dir = sys.argv[sys.argv.index("--sgm") + 1] if "--sgm" in sys.argv else os.path.join(ROOT, "build", "ref-src", "sgm")
try:
    import omegaconf.listconfig  # noqa: F401
except ImportError:
    class ListConfig(list):
        pass
    sys.modules["omegaconf"] = types.ModuleType("omegaconf")
    m = types.ModuleType("omegaconf.listconfig"); m.ListConfig = ListConfig
    sys.modules["omegaconf.listconfig"] = m
def timestep_embedding(timesteps, dim, max_period=10000, repeat_only=False):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float64) / half)
    args = timesteps[:, None].double() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
if family == "sdxl":
    import contextlib
    def sdpa(q, k, v, attn_mask=None):
        assert attn_mask is None
        return torch.softmax(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5, dim=-1) @ v
    torch.nn.functional.scaled_dot_product_attention = sdpa
    for name in ("sgm", "sgm.modules", "sgm.modules.diffusionmodules"):  # skip the packages' __init__ imports
        pkg = types.ModuleType(name)
        pkg.__path__ = [os.path.join(sgm_dir, *name.split("."))]
        sys.modules[name] = pkg
    sys.modules["fsspec"] = types.ModuleType("fsspec")
    import sgm.modules.attention as sgm_attention  # noqa: E402
    sgm_attention.SDP_IS_AVAILABLE = True
    sgm_attention.sdp_kernel = lambda **kw: contextlib.nullcontext()
    sgm_attention.BACKEND_MAP = {None: {}}
    import sgm.modules.diffusionmodules.util as ldm_util  # noqa: E402
    import sgm.modules.diffusionmodules.openaimodel as oam  # noqa: E402
else:
    sys.path.insert(0, ldm_dir)
    import ldm.modules.diffusionmodules.util as ldm_util  # noqa: E402
    import ldm.modules.diffusionmodules.openaimodel as oam  # noqa: E402
    if family == "sd2":  # its attention casts q, k to float32 unless told otherwise
        import ldm.modules.attention as ldm_attention  # noqa: E402
        ldm_attention._ATTN_PRECISION = "float64"
ldm_util.GroupNorm32.forward = nn.GroupNorm.forward
oam.timestep_embedding = timestep_embedding
torch.set_default_dtype(torch.float64)

SD2_UNET = {"in_channels": 4, "out_channels": 4, "model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
            "attention_resolutions": [1, 2], "transformer_depth": [1, 1], "num_heads": -1, "num_head_channels": 16,
            "context_dim": 32, "use_linear_in_transformer": True, "legacy": False, "use_spatial_transformer": True}
path = os.path.join(ROOT, "tests", "data", "tiny-%s.safetensors" % family)
with safe_open(path, "pt") as f:
    meta = f.metadata()
    sd = {k[22:]: f.get_tensor(k).float() for k in f.keys() if k.startswith("model.diffusion_model.")}
u = dict(json.loads(meta["fmimage.config"])["unet"]) if family != "sd2" else dict(SD2_UNET)
if family == "sd1":
    assert not u.pop("use_linear_in_transformer")
if family != "sdxl":
    u["transformer_depth"] = u["transformer_depth"][0]
    u.setdefault("image_size", 32)  # unused by the network
else:
    assert not u.pop("legacy")  # sgm's UNetModel is ldm's with legacy False
ctx_dim, mc = u["context_dim"], u["model_channels"]
u["in_channels"] = 9
g = torch.Generator().manual_seed(18)
b = math.sqrt(3.0 / (9 * 9))
conv_in = ((torch.rand((mc, 9, 3, 3), generator=g, dtype=torch.float64) * 2 - 1) * b).float()
sd["input_blocks.0.0.weight"] = conv_in
net = oam.UNetModel(**u)
net.load_state_dict({k: v.double() for k, v in sd.items()}, strict=True)
net.dtype = torch.float64
net.eval()
x = torch.randn((2, 9, 8, 8), generator=g, dtype=torch.float64).float()
x[:, 4] = (x[:, 4] > 0).float()  # the mask channel is 0 or 1
t = torch.tensor([999.0, 261.5])
ctx = torch.randn((2, 77, ctx_dim), generator=g, dtype=torch.float64).float()
extra, kw = {}, {}
if family == "sdxl":
    y = torch.randn((2, u["adm_in_channels"]), generator=g, dtype=torch.float64).float()
    extra["y"], kw["y"] = y.contiguous(), y.double()
with torch.no_grad():
    out = net(x.double(), t.double(), context=ctx.double(), **kw)
OUT = os.path.join(ROOT, "tests", "data", "inpaint", "unet9.safetensors" if family == "sd1" else "unet9-%s.safetensors" % family)
save_file({"conv_in": conv_in.contiguous(), "x": x.contiguous(), "t": t.float(), "context": ctx.contiguous(),
           "out": out.float().contiguous(), **extra}, OUT)
print("wrote", OUT, "out mean abs %.4f" % out.abs().mean().item())
