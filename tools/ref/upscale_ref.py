#!/usr/bin/env python3
"""Reference data for the upscaling models (tests/data/upscale/).

Runs the ORIGINAL network code on tiny random models, in float64:
  - RRDBNet (ESRGAN / Real-ESRGAN x4plus, x2plus, anime_6B):
    XPixelGroup/BasicSR basicsr/archs/rrdbnet_arch.py, commit 8d56e3a
    (its arch_util.make_layer and pixel_unshuffle are imported too)
  - SRVGGNetCompact (realesr-general-x4v3, animevideov3):
    xinntao/Real-ESRGAN realesrgan/archs/srvgg_arch.py, commit a4abfb2

The two files are imported straight from checkouts (the `fetch` tool's git
dirs, exported with `git archive`); basicsr's registry, logger, torchvision
and deformable-conv imports are stubbed because these two networks do not
use them. Run:
    python3 tools/ref/upscale_ref.py BASICSR_DIR REALESRGAN_DIR \
        tests/data/upscale tests/data/layouts
It also writes the tensor lists of the published full-size models
(LAYOUTDIR/*.tsv: name, dtype, shape) from the same classes at their
published sizes.
"""
import os
import sys
import types
import importlib.util

import numpy as np
import torch
from safetensors.torch import save_file

basicsr_dir, realesrgan_dir, outdir, layoutdir = sys.argv[1:5]


def stub(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    sys.modules[name] = m
    return m


class Registry:
    def register(self, *a, **k):
        return (lambda c: c) if not a or not isinstance(a[0], type) else a[0]


stub("torchvision")
stub("basicsr")
stub("basicsr.utils", get_root_logger=lambda *a, **k: None)
stub("basicsr.utils.registry", ARCH_REGISTRY=Registry())
stub("basicsr.ops")
stub("basicsr.ops.dcn", ModulatedDeformConvPack=torch.nn.Module, modulated_deform_conv=None)
stub("basicsr.archs")


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


load("basicsr.archs.arch_util", os.path.join(basicsr_dir, "basicsr/archs/arch_util.py"))
rrdb = load("basicsr.archs.rrdbnet_arch", os.path.join(basicsr_dir, "basicsr/archs/rrdbnet_arch.py"))
srvgg = load("realesrgan_srvgg", os.path.join(realesrgan_dir, "realesrgan/archs/srvgg_arch.py"))

torch.manual_seed(20261202)


def randomise(net, scale):
    # Small weights (basicsr initialises RRDB convs at 0.1 x kaiming) keep the
    # activations O(1) through the residual chain; biases random too.
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("weight") and p.dim() == 4:
                fan_in = p.shape[1] * p.shape[2] * p.shape[3]
                p.copy_(torch.randn_like(p) * scale / fan_in ** 0.5)
            elif p.dim() == 1 and "body" in name and p.shape[0] > 0 and name.count(".") == 2 and isinstance(net, srvgg.SRVGGNetCompact):
                p.copy_(torch.rand_like(p) * 0.4)  # PReLU slopes in [0, 0.4)
            else:
                p.copy_(torch.randn_like(p) * 0.05)
        last = net.conv_last if hasattr(net, "conv_last") else None
        if last is not None:
            last.bias.add_(0.5)  # RRDBNet's output is the image itself: centre it in [0, 1]
    return net.double().eval()


def old_esrgan_names(sd, n_up):
    """The old ESRGAN (xinntao/ESRGAN architecture.py) names of the same
    network: model.0 conv_first, model.1.sub.I.RDBk.convj.0 the trunk,
    model.1.sub.NB conv_body, model.(3+3i) the upsampling convs, then
    model.(3n+2) conv_hr and model.(3n+4) conv_last (the Sequential's
    flattened indices, activations and upsamplers taking the others)."""
    out = {}
    nb = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("body."))
    for k, v in sd.items():
        base, kind = k.rsplit(".", 1)
        if base == "conv_first": nk = "model.0"
        elif base.startswith("body."):
            _, i, rdb, conv = base.split(".")
            nk = f"model.1.sub.{i}.RDB{rdb[3:]}.{conv}.0"
        elif base == "conv_body": nk = f"model.1.sub.{nb}"
        elif base.startswith("conv_up"): nk = f"model.{3 + 3 * (int(base[7:]) - 1)}"
        elif base == "conv_hr": nk = f"model.{3 * n_up + 2}"
        elif base == "conv_last": nk = f"model.{3 * n_up + 4}"
        else: raise KeyError(k)
        out[f"{nk}.{kind}"] = v
    return out


def f32(sd):
    return {k: v.detach().float().contiguous() for k, v in sd.items()}


cases = {}
img = torch.randint(0, 256, (1, 3, 20, 28), generator=torch.Generator().manual_seed(7)).double() / 255
cases["input"] = img[0].float()
models = {
    "rrdb-x4": rrdb.RRDBNet(3, 3, scale=4, num_feat=8, num_block=2, num_grow_ch=4),
    "rrdb-x2": rrdb.RRDBNet(3, 3, scale=2, num_feat=8, num_block=1, num_grow_ch=4),
    "srvgg-x4": srvgg.SRVGGNetCompact(3, 3, num_feat=8, num_conv=3, upscale=4, act_type="prelu"),
}
for name, net in models.items():
    randomise(net, 0.8)
    # the weights the C code reads are float32; compute from those exact values
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(p.float().double())
        out = net(img)
    cases[f"{name}.output"] = out[0].float()
    save_file(f32(net.state_dict()), os.path.join(outdir, f"{name}.safetensors"))
    print(name, tuple(out.shape), float(out.abs().max()))
save_file(f32(old_esrgan_names(models["rrdb-x4"].state_dict(), 2)), os.path.join(outdir, "esrgan-old-x4.safetensors"))
save_file(cases, os.path.join(outdir, "cases.safetensors"))

# Tensor lists of the published full-size networks.
layouts = {
    "realesrgan-x4plus": rrdb.RRDBNet(3, 3, scale=4, num_feat=64, num_block=23, num_grow_ch=32),
    "realesrgan-x2plus": rrdb.RRDBNet(3, 3, scale=2, num_feat=64, num_block=23, num_grow_ch=32),
    "realesrgan-x4plus-anime-6b": rrdb.RRDBNet(3, 3, scale=4, num_feat=64, num_block=6, num_grow_ch=32),
    "realesr-general-x4v3": srvgg.SRVGGNetCompact(3, 3, num_feat=64, num_conv=32, upscale=4, act_type="prelu"),
    "realesr-animevideov3": srvgg.SRVGGNetCompact(3, 3, num_feat=64, num_conv=16, upscale=4, act_type="prelu"),
}
for name, net in layouts.items():
    with open(os.path.join(layoutdir, name + ".tsv"), "w") as f:
        for k, v in net.state_dict().items():
            f.write(f"{k}\tF32\t{','.join(str(d) for d in v.shape)}\n")
