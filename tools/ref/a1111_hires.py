#!/usr/bin/python3
"""End-to-end hires-fix reference: A1111's txt2img with enable_hr on the
ORIGINAL modules, through tools/ref/a1111_e2e.py (its model, text, CFG
denoiser, noise and samplers: ldm, k-diffusion, CLIP, A1111 prompt_parser and
rng_philox, read at run time from build/ref-src), adding the hr pass of
A1111's processing.py (AUTOMATIC1111/stable-diffusion-webui @ 0027ce1,
StableDiffusionProcessingTxt2Img.sample / sample_hr_pass /
calculate_hr_conds) and sd_samplers_kdiffusion.sample_img2img (@ 01a40c6),
re-stated here (read, not run: they need all of A1111):

  latent upscalers  torch.nn.functional.interpolate(samples, size=(th//f, tw//f),
                    mode, antialias) (run)
  image upscalers   decode, clamp((x+1)/2), 255*x astype(uint8) (truncation),
                    images.resize_image(0, ...) with the Lanczos/Nearest upscaler
                    (PIL run; the loop as tools/ref/hires_refs.py), /255, 2x-1,
                    the VAE encoder; the latent is the posterior's MEAN times the
                    scale factor (fmimage's img2img convention; A1111 draws
                    posterior.sample() from torch's global generator, which no
                    seed fixes)
  crop              samples[:, :, ty//2 : H-(ty+1)//2, tx//2 : W-(tx+1)//2]
  noise             a new ImageRNG of the new shape from the same seed
  steps             setup_img2img_steps(p, hr_steps): int(hr_steps / min(d, 0.999))
                    sigmas, the last hr_steps of them; x = latent + noise * sigma_sched[0]
  conds             get_multicond_learned_conditioning(hr_prompt, firstpass_steps,
                    hires_steps) (run): schedules of the hr pass

Usage: /usr/bin/python3 tools/ref/a1111_hires.py --cases tests/data/hires/e2e_cases.json
(each case: a1111_e2e.py's keys plus hr_scale, hr_steps, hr_denoise, hr_upscaler,
hr_prompt, out, out_float).
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import a1111_e2e as E  # noqa: E402


def _hires_refs_functions():
    """upscale / resize_image0 from tools/ref/hires_refs.py (a script: only
    its function definitions are taken, its data-writing body is not run)."""
    import ast
    from PIL import Image
    path = os.path.join(HERE, "hires_refs.py")
    tree = ast.parse(open(path).read())
    body = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in ("upscale", "resize_image0")]
    scope = {"Image": Image, "LANCZOS": Image.LANCZOS, "NEAREST": Image.NEAREST}
    exec(compile(ast.Module(body=body, type_ignores=[]), path, "exec"), scope)
    return scope["resize_image0"], scope["LANCZOS"], scope["NEAREST"]


resize_image0, LANCZOS, NEAREST = _hires_refs_functions()

LATENT = {"Latent": ("bilinear", False), "Latent (antialiased)": ("bilinear", True),
          "Latent (bicubic)": ("bicubic", False), "Latent (bicubic antialiased)": ("bicubic", True),
          "Latent (nearest)": ("nearest", False), "Latent (nearest-exact)": ("nearest-exact", False)}


def hires(S, model, o):
    from PIL import Image
    first, _ = E.run(S, model, o)
    samples = first["samples"]
    dtype, f, pp = model.dtype, model.factor, S.prompt_parser
    tw, th = int(o.width * o.hr_scale), int(o.height * o.hr_scale)  # calculate_target_resolution, scale only
    if o.hr_upscaler in LATENT:
        mode, aa = LATENT[o.hr_upscaler]
        x0 = F.interpolate(samples.to(torch.float32), size=(th // f, tw // f), mode=mode, antialias=aa).to(dtype)
    else:
        img = torch.clamp((first["dec"] + 1.0) / 2.0, min=0.0, max=1.0)
        a = (255. * np.moveaxis(img[0].to(torch.float32).numpy(), 0, 2)).astype(np.uint8)
        rs = LANCZOS if o.hr_upscaler == "Lanczos" else NEAREST
        big = resize_image0(Image.fromarray(a), tw, th, rs)
        t = torch.from_numpy(np.moveaxis(np.array(big).astype(np.float32) / 255.0, 2, 0))[None]
        t = (2. * t - 1.).to(dtype)
        with torch.no_grad():
            x0 = model.vae.encode(t).mean * model.scale_factor
    # hr pass
    steps = o.hr_steps or o.steps
    sig_steps = int(steps / min(o.hr_denoise, 0.999))
    t_enc = steps - 1
    model_wrap = S.kd_external.CompVisDenoiser(model)
    sigmas = E.get_sigmas(S, model_wrap, sig_steps, o.scheduler).to(dtype)
    sigma_sched = sigmas[sig_steps - t_enc - 1:]
    rng = E.Rng(S, o.noise, o.seed, tuple(x0.shape[1:]), dtype)
    noise = rng.next()[None]
    xi = x0 + noise * sigma_sched[0]
    emb = E.Embedder(S, model, o.clip_skip)
    cond = pp.get_multicond_learned_conditioning(emb, [o.hr_prompt or o.prompt], o.steps, steps)
    uncond = pp.get_learned_conditioning(emb, [o.negative], o.steps, steps)
    den = E.CFGDenoiser(S, model_wrap)
    fn = getattr(S.kd_sampling, E.SAMPLERS[o.sampler])
    kw = {}
    if o.sampler == "euler_a":
        kw["noise_sampler"] = lambda s, t: rng.next()[None]
    with torch.no_grad():
        out = fn(den, xi, sigma_sched, extra_args={"cond": cond, "uncond": uncond, "cond_scale": o.cfg},
                 disable=True, **kw)
        dec = model.vae.decode(1. / model.scale_factor * out)
    image = torch.clamp((dec + 1.0) / 2.0, min=0.0, max=1.0)
    return {"image": image, "first.samples": samples, "hr.init": x0, "hr.noise": noise,
            "hr.sigmas": sigma_sched, "samples": out}


def main():
    p = E.parser()
    p.add_argument("--hr-scale", type=float, default=2.0)
    p.add_argument("--hr-steps", type=int, default=0)
    p.add_argument("--hr-denoise", type=float, default=0.7)
    p.add_argument("--hr-upscaler", default="Latent")
    p.add_argument("--hr-prompt", default="")
    a = p.parse_args()
    S = E.load_sources(a)
    dtype = torch.float64 if a.dtype == "float64" else torch.float32
    if dtype == torch.float64:
        E.exact_float64(S)
        torch.set_default_dtype(torch.float64)
    import contextlib
    with contextlib.redirect_stdout(sys.stderr):
        model = E.Model(S, a.ckpt, dtype)
    cases = [{}]
    if a.cases:
        with open(a.cases) as f:
            cases = json.load(f)
    from PIL import Image
    from safetensors.torch import save_file
    for c in cases:
        o = E.case_opts(a, c)
        out = hires(S, model, o)
        if o.out:
            Image.fromarray(E.quantize(out["image"], o.quantize)).save(o.out)
        if o.out_float:
            save_file({k: v.detach().to(torch.float32).contiguous() for k, v in out.items()}, o.out_float)
        print(json.dumps({"case": c, "out": o.out}))


if __name__ == "__main__":
    main()
