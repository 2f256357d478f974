#!/usr/bin/env python3
"""Reference data for the hires fix's pure parts (tests/data/hires/).

  latent.safetensors  torch.nn.functional.interpolate (Debian torch 1.13, CPU,
                      float32) on random latents, every mode of A1111's
                      shared.latent_upscale_modes (modules/shared_items /
                      shared.py at AUTOMATIC1111/stable-diffusion-webui@0027ce1):
                        Latent                       bilinear, antialias=False
                        Latent (antialiased)         bilinear, antialias=True
                        Latent (bicubic)             bicubic,  antialias=False
                        Latent (bicubic antialiased) bicubic,  antialias=True
                        Latent (nearest)             nearest,  antialias=False
                        Latent (nearest-exact)       nearest-exact, antialias=False
                      at sizes up (x2, non-integer) and down.
  images.safetensors  PIL Image.resize (python3-pil) LANCZOS and NEAREST on
                      random RGB8 images, and images.resize_image(0, im, w, h,
                      upscaler_name) for the Lanczos and Nearest upscalers: the
                      Upscaler.upscale loop of modules/upscaler.py (@01a40c6)
                      transcribed below, the pixels all PIL's.
  arith.tsv           calculate_target_resolution (processing.py @0027ce1) and
                      sd_samplers_common.setup_img2img_steps(p, steps) as the
                      hr pass calls it, transcribed below, on a table of cases.

A1111's repository is too large to fetch here, so its few lines of
arithmetic are transcribed (marked "origin:"); everything numeric is
torch's or PIL's own. Run: python3 tools/ref/hires_refs.py tests/data/hires
"""
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

out = sys.argv[1]
os.makedirs(out, exist_ok=True)

MODES = [("bilinear", False), ("bilinear", True), ("bicubic", False), ("bicubic", True),
         ("nearest", False), ("nearest-exact", False)]
SIZES = [(16, 16), (12, 20), (5, 6), (8, 8), (21, 13)]

g = torch.Generator().manual_seed(18)
lat = {}
for name, (h, w) in (("a", (8, 8)), ("b", (7, 9))):
    x = torch.randn(1, 4, h, w, generator=g, dtype=torch.float32)
    lat[f"in.{name}"] = x[0].contiguous()
    for k, (mode, aa) in enumerate(MODES):
        for (oh, ow) in SIZES:
            y = F.interpolate(x, size=(oh, ow), mode=mode, antialias=aa)
            lat[f"out.{name}.{k}.{oh}x{ow}"] = y[0].contiguous()
save_file(lat, os.path.join(out, "latent.safetensors"))

LANCZOS = Image.Resampling.LANCZOS if hasattr(Image, "Resampling") else Image.LANCZOS
NEAREST = Image.Resampling.NEAREST if hasattr(Image, "Resampling") else Image.NEAREST


def upscale(img, scale, resample):
    # origin: modules/upscaler.py Upscaler.upscale with UpscalerLanczos /
    # UpscalerNearest.do_upscale (img.resize((int(w * scale), int(h * scale))))
    dest_w = int((img.width * scale) // 8 * 8)
    dest_h = int((img.height * scale) // 8 * 8)
    for _ in range(3):
        shape = (img.width, img.height)
        img = img.resize((int(img.width * scale), int(img.height * scale)), resample=resample)
        if shape == (img.width, img.height):
            break
        if img.width >= dest_w and img.height >= dest_h:
            break
    if img.width != dest_w or img.height != dest_h:
        img = img.resize((int(dest_w), int(dest_h)), resample=LANCZOS)
    return img


def resize_image0(im, w, h, resample):
    # origin: modules/images.py resize_image(0, ...)'s resize()
    scale = max(w / im.width, h / im.height)
    if scale > 1.0:
        im = upscale(im, scale, resample)
    if im.width != w or im.height != h:
        im = im.resize((w, h), resample=LANCZOS)
    return im


rng = np.random.default_rng(18)
imgs = {}
noise = rng.integers(0, 256, size=(29, 37, 3), dtype=np.uint8)
yy, xx = np.mgrid[0:29, 0:37]
smooth = np.stack([xx * 7 % 256, yy * 9 % 256, (xx + yy) * 5 % 256], -1).astype(np.uint8)
for name, arr in (("noise", noise), ("smooth", smooth)):
    im = Image.fromarray(arr, "RGB")
    imgs[f"in.{name}"] = torch.from_numpy(arr.copy())
    for (w, h) in ((74, 58), (100, 50), (16, 12), (37, 60), (51, 29)):
        for tag, rs in (("lanczos", LANCZOS), ("nearest", NEAREST)):
            imgs[f"pil.{tag}.{name}.{w}x{h}"] = torch.from_numpy(np.array(im.resize((w, h), resample=rs)).copy())
            imgs[f"a1111.{tag}.{name}.{w}x{h}"] = torch.from_numpy(
                np.array(resize_image0(im, w, h, rs)).copy())
save_file(imgs, os.path.join(out, "images.safetensors"))


def target(width, height, hr_scale, rx, ry, opt_f):
    # origin: processing.py StableDiffusionProcessingTxt2Img.calculate_target_resolution
    tx = ty = 0
    if rx == 0 and ry == 0:
        ux, uy = int(width * hr_scale), int(height * hr_scale)
    elif ry == 0:
        ux, uy = rx, rx * height // width
    elif rx == 0:
        ux, uy = ry * width // height, ry
    else:
        if width / height < rx / ry:
            ux, uy = rx, rx * height // width
        else:
            ux, uy = ry * width // height, ry
        tx, ty = (ux - rx) // opt_f, (uy - ry) // opt_f
    return ux, uy, tx, ty


def img2img_steps(steps, denoising_strength):
    # origin: sd_samplers_common.setup_img2img_steps(p, steps) with steps given
    requested_steps = steps
    steps = int(requested_steps / min(denoising_strength, 0.999)) if denoising_strength > 0 else 0
    return steps, requested_steps - 1


with open(os.path.join(out, "arith.tsv"), "w") as f:
    f.write("# kind\targs...\t=> results (tools/ref/hires_refs.py)\n")
    for (w, h) in ((512, 512), (512, 768), (768, 512), (64, 64), (640, 384), (1024, 576)):
        for s in (2.0, 1.5, 1.25, 2.3, 1.1, 1.7, 3.0, 0.5):
            f.write("target\t%d\t%d\t%r\t0\t0\t8\t%d\t%d\t%d\t%d\n" % ((w, h, s) + target(w, h, s, 0, 0, 8)))
        for (rx, ry) in ((1024, 0), (0, 1024), (1024, 1024), (1000, 600), (768, 1152), (1920, 1080), (96, 0)):
            f.write("target\t%d\t%d\t2.0\t%d\t%d\t8\t%d\t%d\t%d\t%d\n" % ((w, h, rx, ry) + target(w, h, 2.0, rx, ry, 8)))
    for steps in (1, 2, 3, 7, 10, 14, 20, 30):
        for d in (0.7, 0.6, 0.35, 0.5, 0.3, 1.0, 0.999, 0.05, 0.75, 0.45):
            f.write("steps\t%d\t%r\t%d\t%d\n" % ((steps, d) + img2img_steps(steps, d)))


def quote(text):
    # origin: modules/infotext_utils.py quote
    if ',' not in str(text) and '\n' not in str(text) and ':' not in str(text):
        return text
    return json.dumps(text, ensure_ascii=False)


# Infotext: the fields txt2img's init() adds to extra_generation_params, in
# its order (processing.py @0027ce1: Hires sampler, Hires prompt, Hires
# negative prompt; calculate_target_resolution: Hires upscale | Hires
# resize; Hires steps; Hires upscaler), values as the web UI sends them
# (JSON numbers: 2 arrives as int 2, 1.5 as float).
INFO_CASES = [
    # name, sampler, prompt, negative, hr_scale, rx, ry, hr_steps, denoise, upscaler, hr_sampler, hr_prompt, hr_negative
    ("scale2", "DPM++ 2M", "a fox", "", "2", 0, 0, 0, "0.7", "Latent", None, "", ""),
    ("lanczos", "DPM++ 2M", "a fox", "ugly", "1.5", 0, 0, 10, "0.45", "Lanczos", None, "", ""),
    ("resize_x", "Euler a", "a fox", "", "2", 1024, 0, 3, "0.6", "Latent (bicubic antialiased)", None, "", ""),
    ("resize_both", "DPM++ 2M", "a fox", "bad", "2", 1000, 600, 0, "0.35", "Nearest", "Euler a",
     "a fox, detailed: sharp", "blurry"),
]
with open(os.path.join(out, "infotext.tsv"), "w") as f:
    f.write("# case\tsampler\tprompt\tnegative\thr_scale\trx\try\thr_steps\tdenoise\tupscaler\thr_sampler\thr_prompt\thr_negative"
            "\t=> Denoising strength value\tthe Hires fields as A1111 joins them\n")
    for (name, sampler, prompt, neg, s, rx, ry, st, d, up, hs, hp, hn) in INFO_CASES:
        extra = {}
        hr_prompt = hp or prompt
        hr_negative = hn or neg
        if hs is not None and hs != sampler:
            extra["Hires sampler"] = hs
        if tuple(hr_prompt) != tuple(prompt):
            extra["Hires prompt"] = hr_prompt
        if tuple(hr_negative) != tuple(neg):
            extra["Hires negative prompt"] = hr_negative
        if rx == 0 and ry == 0:
            extra["Hires upscale"] = json.loads(s)
        else:
            extra["Hires resize"] = f"{rx}x{ry}"
        if st:
            extra["Hires steps"] = st
        if up is not None:
            extra["Hires upscaler"] = up
        text = ", ".join([k if k == v else f'{k}: {quote(v)}' for k, v in extra.items() if v is not None])
        f.write("\t".join([name, sampler, prompt, neg, s, str(rx), str(ry), str(st), d, up, hs or "", hp, hn,
                           str(json.loads(d)), text]) + "\n")
