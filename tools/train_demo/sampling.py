"""k-diffusion style sampling of an SD1 module (A1111 txt2img conventions).

Follows tests/data/README.md#a1111-txt2img and #rng (Philox):
CompVisDenoiser (c_in, c_out = -sigma, fractional t from log-sigma
interpolation), CFG on the batch [cond; uncond], Euler and DPM++ 2M, normal
and Karras schedules, A1111 "NV" Philox noise.
"""
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import models  # noqa: E402
import stfile  # noqa: E402
from clip_tokenizer import Tokenizer  # noqa: E402


# ------------------------------------------------------------------ A1111 Philox ("NV") randn

def philox_randn(seed, shape, offset=0):
    n = int(np.prod(shape))
    M = np.uint64(0xFFFFFFFF)
    c0 = np.full(n, offset & 0xFFFFFFFF, dtype=np.uint64)
    c1 = np.zeros(n, dtype=np.uint64)
    c2 = np.arange(n, dtype=np.uint64)
    c3 = np.zeros(n, dtype=np.uint64)
    k0, k1 = seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF
    for _ in range(10):
        p0 = c0 * np.uint64(0xD2511F53)
        p1 = c2 * np.uint64(0xCD9E8D57)
        c0, c1, c2, c3 = ((p1 >> np.uint64(32)) ^ c1 ^ np.uint64(k0), p1 & M,
                          (p0 >> np.uint64(32)) ^ c3 ^ np.uint64(k1), p0 & M)
        k0 = (k0 + 0x9E3779B9) & 0xFFFFFFFF
        k1 = (k1 + 0xBB67AE85) & 0xFFFFFFFF
    a = float(np.float32(2.3283064e-10))
    b = float(np.float32(2.3283064e-10 * 6.2831855))
    u = c0.astype(np.float64) * a + a / 2
    v = c1.astype(np.float64) * b + b / 2
    return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32).reshape(shape)


# ------------------------------------------------------------------ model loading

def load_model(path):
    tensors, meta = stfile.load(path)
    cfg = json.loads(meta["fmimage.config"])
    sd = models.SD1(cfg)
    state = {k: torch.from_numpy(v.astype(np.int64 if v.dtype == np.int64 else np.float32))
             for k, v in tensors.items()}
    sd.load_state_dict(state, strict=True)
    sd.eval()
    return sd, cfg


class Pipeline:
    def __init__(self, path):
        self.sd, self.cfg = load_model(path)
        self.tok = Tokenizer()
        ac = self.sd.alphas_cumprod.double()
        self.sigmas = ((1 - ac) / ac).sqrt()
        self.log_sigmas = self.sigmas.log()
        self.factor = 2 ** (len(self.cfg["vae"]["ch_mult"]) - 1)

    @torch.no_grad()
    def encode_text(self, prompts):
        ids = torch.tensor([self.tok(p) for p in prompts])
        return self.sd.cond_stage_model(ids)

    def sigma_to_t(self, s):
        ls = math.log(s)
        lo = int((self.log_sigmas <= ls).nonzero().max()) if bool((self.log_sigmas <= ls).any()) else 0
        lo = min(lo, len(self.log_sigmas) - 2)
        w = (self.log_sigmas[lo] - ls) / (self.log_sigmas[lo] - self.log_sigmas[lo + 1])
        return lo + float(min(max(w, 0.0), 1.0))

    def schedule(self, steps, kind):
        if kind == "karras":
            smin, smax = float(self.sigmas[0]), float(self.sigmas[-1])
            ramp = np.linspace(0, 1, steps)
            s = (smax ** (1 / 7) + ramp * (smin ** (1 / 7) - smax ** (1 / 7))) ** 7
        else:
            s = []
            for t in np.linspace(len(self.sigmas) - 1, 0, steps):
                lo, hi = int(math.floor(t)), int(math.ceil(t))
                w = t - lo
                s.append(math.exp((1 - w) * float(self.log_sigmas[lo]) + w * float(self.log_sigmas[hi])))
            s = np.array(s)
        return np.append(s, 0.0)

    @torch.no_grad()
    def denoise(self, x, sigma, cond, uncond, cfg):
        t = self.sigma_to_t(sigma)
        c_in = 1.0 / math.sqrt(sigma ** 2 + 1)
        n = x.shape[0]
        eps = self.sd.model.diffusion_model(torch.cat([x, x]) * c_in, torch.full((2 * n,), t),
                                            torch.cat([cond, uncond]))
        d = torch.cat([x, x]) - sigma * eps
        d_cond, d_uncond = d[:n], d[n:]
        return d_uncond + (d_cond - d_uncond) * cfg

    @torch.no_grad()
    def sample(self, prompts, seeds, steps=20, cfg=5.0, sampler="dpmpp_2m", scheduler="karras",
               negative="", width=64, height=64, trace=None):
        cond = self.encode_text(prompts)
        uncond = self.encode_text([negative] * len(prompts))
        shape = (4, height // self.factor, width // self.factor)
        noise = torch.from_numpy(np.stack([philox_randn(s, shape) for s in seeds]))
        sig = self.schedule(steps, scheduler)
        x = noise.to(next(self.sd.parameters()).dtype) * float(sig[0])
        old = None
        for i in range(steps):
            den = self.denoise(x, float(sig[i]), cond, uncond, cfg)
            if trace is not None:
                trace.append((x.clone(), den.clone()))
            if sampler == "euler":
                x = x + (x - den) / float(sig[i]) * float(sig[i + 1] - sig[i])
            else:  # dpmpp_2m
                t, t_next = -math.log(sig[i]), (-math.log(sig[i + 1]) if sig[i + 1] > 0 else math.inf)
                h = t_next - t
                if old is None or sig[i + 1] == 0:
                    x = (sig[i + 1] / sig[i]) * x - math.expm1(-h) * den
                else:
                    r = (t - (-math.log(sig[i - 1]))) / h
                    dd = (1 + 1 / (2 * r)) * den - (1 / (2 * r)) * old
                    x = (sig[i + 1] / sig[i]) * x - math.expm1(-h) * dd
                old = den
        return x, noise, sig

    @torch.no_grad()
    def decode(self, x):
        dec = self.sd.first_stage_model.decode(x / self.cfg["vae"]["scale_factor"])
        img = ((dec + 1) / 2).clamp(0, 1)
        return np.round(img.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8), dec
