#!/usr/bin/python3
"""End-to-end reference driver: A1111 txt2img on the ORIGINAL modules.

Runs a tiny golden checkpoint (tests/data/tiny-sd1.safetensors, or any SD 1.x
file with an `fmimage.config` entry) through:
  CompVis/stable-diffusion ldm   UNetModel, AutoencoderKL (Encoder/Decoder)
  openai/CLIP                    the text Transformer (HF names mapped), simple_tokenizer
  crowsonkb/k-diffusion          CompVisDenoiser, get_sigmas_karras, sample_euler,
                                 sample_euler_ancestral, sample_dpmpp_2m
  A1111 modules/prompt_parser.py prompt schedules, AND, emphasis (run)
  A1111 modules/rng_philox.py    the "NV" noise (run)
and re-states (read, not run: they need all of A1111) the logic of A1111's
modules/sd_samplers_cfg_denoiser.py (CFGDenoiser.forward batch layout and
combine_denoised), modules/sd_hijack_clip.py (75-token chunk, BOS/EOS/pad,
emphasis multipliers with the mean restored), modules/sd_samplers_kdiffusion.py
(sigmas, x = noise*sigmas[0]) and modules/processing.py (decode, clamp, 8 bits).
No upstream code lives in this project: the sources are read at run time from
the directories below (fetched mirrors unpacked with git archive).

Sources (flag or environment variable; default build/ref-src/NAME):
  --ldm DIR     $A1111_E2E_LDM     CompVis/stable-diffusion @ 21f890f9da3cfbeaba8e2ac3c425ee9e998d5229
  --kdiff DIR   $A1111_E2E_KDIFF   crowsonkb/k-diffusion    @ 4601bf085320592473f681a62808ed873d17fad5
  --clip DIR    $A1111_E2E_CLIP    openai/CLIP              @ d05afc436d78f1c48dc0dbf8e5980a9d471f35f6
  --a1111 DIR   $A1111_E2E_A1111   dir holding A1111's prompt_parser.py (@ 28bd8e14), rng_philox.py (@ ef1698fd)
                                   and masking.py (@ 0cb7262c: get_crop_region, expand_crop_region, fill)
  e.g.  git --git-dir=/work/.mirror/CompVis+stable-diffusion/repo archive 21f890f9 ldm | tar -x -C build/ref-src/ldm

Python: /usr/bin/python3 with Debian torch 1.13, numpy, lark, PIL, safetensors,
plus einops, ftfy, regex (ldm and the CLIP tokenizer import them).

txt2img flags (A1111 names in brackets):
  --ckpt FILE            checkpoint (default tests/data/tiny-sd1.safetensors)
  --prompt P             [Prompt] full A1111 syntax: [a:b:when], [a|b], AND with :weight, (x:1.2)
  --negative N           [Negative prompt] (schedules allowed, AND is not split, as in A1111)
  --seed S --steps N --cfg C --width W --height H
  --sampler euler|euler_a|dpmpp_2m      --scheduler normal|karras
      (normal = k-diffusion get_sigmas(n), A1111's Automatic for these samplers)
  --noise philox|cpu     [RNG source: NV | CPU]   (default philox)
  --clip-skip N          (default 1)
  --dtype float64|float32   float64 (default) = the goldens' convention: the ldm/CLIP
                         float32 casts (GroupNorm32, CLIP LayerNorm, timestep_embedding)
                         are bypassed so everything stays float64; float32 = torch as A1111 runs it
  --quantize round|trunc 8-bit conversion: round half to even (fmimage, the goldens) or A1111's truncation
  --out FILE.png         the 8-bit image
  --out-float FILE.safetensors   the float image [1,3,H,W] in [0,1] (key "image") and,
                         with --dump, every step: x.N, denoised.N, sigmas, noise, cond.*, uncond
  --dump                 add the trajectory to --out-float
  --cases FILE.json      run a list of cases (objects with the flags' long names,
                         '-' as '_', plus "out" and "out_float"): loads the model once
  --cases FILE.tsv --out-dir DIR [--out-float ALL.safetensors]
                         a case table (header line of column names = the flags'
                         long names with '_', first column "name"; '#' lines skipped):
                         writes DIR/NAME.png per row and, with --out-float, one file
                         holding every row's float image [1,3,H,W] under the key NAME
                         and its final latent (the sampler's output, before 1/scale_factor)
                         under NAME.latent
Prints one line per run (JSON): the schedules' end steps per AND part, the files written.

img2img flags (A1111 StableDiffusionProcessingImg2Img, resize mode "Just resize"):
  --init-image FILE      [Image] flattened on white if it has alpha, Lanczos-resized to W x H
  --denoise X            [Denoising strength] (default 0.75): runs the last int(min(X,0.999)*steps)+1
                         sigmas of the `steps` schedule from init_latent + noise*sigma (setup_img2img_steps)
  --vae-encode mean|sample   ldm get_first_stage_encoding draws posterior.sample() (A1111: the global torch
                         RNG, whatever state it is in); mean (default) = a draw with zero noise, what fmimage
                         does; sample seeds torch's global generator with --vae-seed (default --seed) first
img2img with a mask (A1111 inpaint):
  --mask FILE            [Mask] white = repaint; an RGBA mask uses its alpha (create_binary_mask, rounded at 128)
  --mask-invert          [Mask mode: Inpaint not masked]
  --mask-blur N          [Mask blur] (default 4): cv2.GaussianBlur (2*int(2.5N+0.5)+1) along x then y
  --inpaint-fill fill|original|latent-noise|latent-nothing   [Masked content] (default original);
                         every mode but original fills the image first (masking.fill)
  --inpaint-only-masked  [Inpaint area: Only masked] crop = masking.get_crop_region(mask, padding) then
                         expand_crop_region to W:H, resized (resize mode 2) to W x H, pasted back
  --inpaint-padding N    [Only masked padding, pixels] (default 32)
  The latent mask (the blurred mask resized to the latent by PIL's default filter, rounded) blends
  init_latent into every denoised prediction (CFGDenoiser) and into the samples; the 8-bit result is
  composited over the original's unmasked pixels (apply_overlay): then the float image is that /255.
txt2img + hires fix (A1111 StableDiffusionProcessingTxt2Img.sample_hr_pass):
  --hires-scale X | --hires-width W --hires-height H (either alone keeps the aspect; both: crop, as A1111)
  --hires-steps N        (0 = --steps): the second pass runs N steps of a int(N/min(denoise,0.999)) schedule
  --hires-denoise X      (default 0.7)
  --hires-upscaler NAME  Latent, Latent (antialiased), Latent (bicubic), Latent (bicubic antialiased),
                         Latent (nearest), Latent (nearest-exact) (torch F.interpolate on the latent), or
                         Lanczos, Nearest (decode, 8 bits truncated as A1111, PIL resize, encode)
  --hires-prompt P --hires-negative N   (default: the first pass's); schedules use A1111's hires rule
                         (get_learned_conditioning(..., steps, hires_steps))
  New noise for the second pass: a fresh generator of the same seed for the new latent size.
  A1111's opt_f (hard-coded 8) is the model's latent factor here (2 for tiny-sd1, 4 for the demo).
--out-float also stores "samples" (final latent), and "image_raw" (before the overlay) for masks;
--dump adds every step (x.N, denoised.N; hr.x.N, hr.denoised.N for the second pass), sigmas, noise,
init_latent, mask, hr_init, hr_noise, hr_sigmas.

Check against the golden PNGs:
  /usr/bin/python3 tools/ref/a1111_e2e.py --selftest    (e2e.png, e2e_dpmpp2m_karras.png, e2e_cpu.png)
"""
import argparse
import importlib
import json
import math
import os
import sys
import types

import numpy as np
import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))


# --------------------------------------------------------------------------- sources

def load_sources(a):
    """Imports the upstream modules from their directories, with stubs for the
    training-only packages they import but never use here."""
    def stub(name, **attrs):
        if name in sys.modules:
            return sys.modules[name]
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        sys.modules[name] = m
        return m
    # ldm.models.autoencoder imports pytorch_lightning (base class only) and taming (VQ models).
    try:
        import pytorch_lightning  # noqa: F401
    except ImportError:
        stub("pytorch_lightning", LightningModule=nn.Module)
    try:
        import taming.modules.vqvae.quantize  # noqa: F401
    except ImportError:
        stub("taming"); stub("taming.modules"); stub("taming.modules.vqvae")
        stub("taming.modules.vqvae.quantize", VectorQuantizer2=None)
    # UNetModel checks context_dim against omegaconf's ListConfig (configs loaded from YAML).
    try:
        import omegaconf.listconfig  # noqa: F401
    except ImportError:
        class ListConfig(list):
            pass
        stub("omegaconf"); stub("omegaconf.listconfig", ListConfig=ListConfig)
    # k_diffusion.sampling/utils import these for samplers and helpers not used here.
    for name in ("torchdiffeq", "torchsde", "torchvision"):
        try:
            importlib.import_module(name)
        except ImportError:
            stub(name, odeint=None)
    if "torchvision.transforms" not in sys.modules:
        try:
            importlib.import_module("torchvision.transforms.functional")
        except ImportError:
            stub("torchvision.transforms"); stub("torchvision.transforms.functional")
    sys.path.insert(0, a.ldm)
    sys.path.insert(0, a.clip)
    sys.path.insert(0, a.a1111)
    # k_diffusion/__init__.py imports its training modules; load only the package shell.
    # k_diffusion/__init__.py and clip/__init__.py import their training / model-zoo
    # modules (torchvision, packaging, downloads): load only the package shells.
    for name, d in (("k_diffusion", a.kdiff), ("clip", a.clip)):
        pkg = types.ModuleType(name)
        pkg.__path__ = [os.path.join(d, name)]
        sys.modules[name] = pkg
    S = types.SimpleNamespace()
    S.kd_sampling = importlib.import_module("k_diffusion.sampling")
    S.kd_external = importlib.import_module("k_diffusion.external")
    S.openaimodel = importlib.import_module("ldm.modules.diffusionmodules.openaimodel")
    S.ldm_util = importlib.import_module("ldm.modules.diffusionmodules.util")
    S.autoencoder = importlib.import_module("ldm.models.autoencoder")
    S.clip_model = importlib.import_module("clip.model")
    S.tokenizer = importlib.import_module("clip.simple_tokenizer").SimpleTokenizer()
    S.prompt_parser = importlib.import_module("prompt_parser")
    S.rng_philox = importlib.import_module("rng_philox")
    S.masking = importlib.import_module("masking")
    return S


def exact_float64(S):
    """The goldens' float64 convention (the original TINY-SD1 document, section 4;
    tests/data/README.md): remove the
    float32 round trips of ldm GroupNorm32, CLIP LayerNorm and ldm's
    timestep_embedding so float64 stays float64."""
    S.ldm_util.GroupNorm32.forward = nn.GroupNorm.forward
    S.clip_model.LayerNorm.forward = nn.LayerNorm.forward
    orig = S.ldm_util.timestep_embedding

    def timestep_embedding(timesteps, dim, max_period=10000, repeat_only=False):
        if repeat_only:
            return orig(timesteps, dim, max_period, repeat_only)
        half = dim // 2
        freqs = torch.exp(-math.log(max_period) * torch.arange(0, half, dtype=torch.float64) / half)
        args = timesteps[:, None].double() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb
    S.openaimodel.timestep_embedding = timestep_embedding


# --------------------------------------------------------------------------- model

class TextEncoder(nn.Module):
    """openai/CLIP's text tower (clip/model.py Transformer, causal mask,
    QuickGELU), loaded from the HF CLIPTextModel names of an SD 1.x file."""

    def __init__(self, S, cfg, sd, prefix):
        super().__init__()
        w, L, heads, n_ctx = cfg["width"], cfg["layers"], cfg["heads"], cfg.get("max_length", 77)
        self.token_embedding = nn.Embedding(cfg["vocab_size"], w)
        self.positional_embedding = nn.Parameter(torch.empty(n_ctx, w))
        mask = torch.empty(n_ctx, n_ctx).fill_(float("-inf")).triu_(1)
        self.transformer = S.clip_model.Transformer(w, L, heads, mask)
        self.ln_final = S.clip_model.LayerNorm(w)
        p = prefix + "text_model."
        m = {"token_embedding.weight": sd[p + "embeddings.token_embedding.weight"],
             "positional_embedding": sd[p + "embeddings.position_embedding.weight"],
             "ln_final.weight": sd[p + "final_layer_norm.weight"],
             "ln_final.bias": sd[p + "final_layer_norm.bias"]}
        for i in range(L):
            h, c = p + "encoder.layers.%d." % i, "transformer.resblocks.%d." % i
            m[c + "attn.in_proj_weight"] = torch.cat([sd[h + "self_attn.%s_proj.weight" % k] for k in "qkv"])
            m[c + "attn.in_proj_bias"] = torch.cat([sd[h + "self_attn.%s_proj.bias" % k] for k in "qkv"])
            for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"),
                         ("ln_2", "layer_norm2"), ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                m[c + a + ".weight"] = sd[h + b + ".weight"]
                m[c + a + ".bias"] = sd[h + b + ".bias"]
        self.load_state_dict(m, strict=True)
        self.layers = L

    def forward(self, tokens, clip_skip=1):
        x = self.token_embedding(tokens) + self.positional_embedding
        x = x.permute(1, 0, 2)  # CLIP's Transformer is sequence-first
        blocks = self.transformer.resblocks
        for blk in blocks[:len(blocks) - (clip_skip - 1)]:
            x = blk(x)
        # A1111 sd_hijack_clip: last_hidden_state, or hidden_states[-clip_skip] then final_layer_norm
        return self.ln_final(x.permute(1, 0, 2))


class Model:
    def __init__(self, S, path, dtype):
        from safetensors import safe_open
        with safe_open(path, "pt") as f:
            meta = f.metadata() or {}
            sd = {k: f.get_tensor(k) for k in f.keys()}
        if "fmimage.config" not in meta:
            raise SystemExit("a1111_e2e: %s: no fmimage.config metadata (only the tiny goldens are supported)" % path)
        cfg = json.loads(meta["fmimage.config"])
        if cfg.get("family") != "sd1":
            raise SystemExit("a1111_e2e: %s: family %s not supported yet (sd1 only)" % (path, cfg.get("family")))
        sd = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
        self.cfg, self.dtype = cfg, dtype
        u = dict(cfg["unet"])
        import inspect
        known = inspect.signature(S.openaimodel.UNetModel.__init__).parameters
        for k in [k for k in u if k not in known]:
            if u[k]:  # SD 2.x keys (use_linear_in_transformer...) the CompVis code lacks
                raise SystemExit("a1111_e2e: unet option %s=%r needs a newer ldm" % (k, u[k]))
            del u[k]
        td = u.get("transformer_depth")
        if isinstance(td, list):  # the config lists it per level; CompVis' UNetModel takes one int
            if len(set(td)) != 1:
                raise SystemExit("a1111_e2e: per-level transformer_depth %r needs sgm" % (td,))
            u["transformer_depth"] = td[0]
        self.unet = S.openaimodel.UNetModel(**u)
        self.unet.load_state_dict({k[22:]: v for k, v in sd.items() if k.startswith("model.diffusion_model.")}, strict=True)
        self.unet.dtype = dtype  # UNetModel.forward casts x to self.dtype (float32 unless fp16)
        v = dict(cfg["vae"])
        self.scale_factor = v.pop("scale_factor")
        embed_dim = v.pop("embed_dim")
        self.vae = S.autoencoder.AutoencoderKL(v, {"target": "torch.nn.Identity"}, embed_dim)
        self.vae.load_state_dict({k[18:]: x for k, x in sd.items() if k.startswith("first_stage_model.")}, strict=True)
        self.text = TextEncoder(S, cfg["text"], sd, "cond_stage_model.transformer.")
        self.alphas_cumprod = sd["alphas_cumprod"].to(torch.float64 if dtype == torch.float64 else torch.float32)
        for m in (self.unet, self.vae, self.text):
            m.to(dtype).eval()
        self.factor = 2 ** (len(v["ch_mult"]) - 1)

    # ldm LatentDiffusion.apply_model for crossattn conditioning, as k-diffusion's CompVisDenoiser calls it
    def apply_model(self, x, t, cond):
        return self.unet(x, t, context=cond)


# --------------------------------------------------------------------------- text (A1111 sd_hijack_clip)

class Embedder:
    """A1111 FrozenCLIPEmbedderWithCustomWords for SD 1.x: parse_prompt_attention,
    tokens in chunks of 75 between BOS and EOS, padded with EOS; emphasis
    multipliers applied to the output and its mean restored."""
    BOS, EOS = 49406, 49407

    def __init__(self, S, model, clip_skip):
        self.S, self.model, self.clip_skip = S, model, clip_skip

    def tokenize_line(self, line):
        parsed = self.S.prompt_parser.parse_prompt_attention(line)
        toks, mults = [], []
        for text, weight in parsed:
            if text == "BREAK" and weight == -1:
                raise SystemExit("a1111_e2e: BREAK is not supported by this driver")
            ids = self.S.tokenizer.encode(text)
            toks += ids
            mults += [weight] * len(ids)
        if len(toks) > 75:
            raise SystemExit("a1111_e2e: prompt over 75 tokens is not supported by this driver")
        pad = 75 - len(toks)
        return [self.BOS] + toks + [self.EOS] * (pad + 1), [1.0] + mults + [1.0] * (pad + 1)

    def __call__(self, texts):
        rows = []
        for t in texts:
            tok, mult = self.tokenize_line(t)
            with torch.no_grad():
                z = self.model.text(torch.tensor([tok]), self.clip_skip)
                m = torch.tensor(mult, dtype=z.dtype).reshape(1, -1, 1)
                original_mean = z.mean()
                z = z * m
                new_mean = z.mean()
                z = z * (original_mean / new_mean)
            rows.append(z[0])
        return torch.stack(rows)

    # the interface prompt_parser.get_learned_conditioning calls
    def get_learned_conditioning(self, texts):
        return self(list(texts))


# --------------------------------------------------------------------------- CFG denoiser (A1111 sd_samplers_cfg_denoiser)

class CFGDenoiser(nn.Module):
    """The batch layout and combine_denoised of A1111's CFGDenoiser.forward for
    one image (no skip_early_cond, no s_min_uncond, batch_cond_uncond on),
    with the latent mask blended after denoising (mask_before_denoising off)."""

    def __init__(self, S, model_wrap):
        super().__init__()
        self.S, self.inner_model = S, model_wrap
        self.step = 0
        self.mask = self.nmask = self.init_latent = None
        self.trace = []

    @staticmethod
    def combine_denoised(x_out, conds_list, uncond, cond_scale):
        denoised_uncond = x_out[-uncond.shape[0]:]
        denoised = torch.clone(denoised_uncond)
        for i, conds in enumerate(conds_list):
            for cond_index, weight in conds:
                denoised[i] += (x_out[cond_index] - denoised_uncond[i]) * (weight * cond_scale)
        return denoised

    def forward(self, x, sigma, uncond, cond, cond_scale):
        pp = self.S.prompt_parser
        conds_list, tensor = pp.reconstruct_multicond_batch(cond, self.step)
        uncond = pp.reconstruct_cond_batch(uncond, self.step)
        batch_size = len(conds_list)
        repeats = [len(conds_list[i]) for i in range(batch_size)]
        x_in = torch.cat([torch.stack([x[i] for _ in range(n)]) for i, n in enumerate(repeats)] + [x])
        sigma_in = torch.cat([torch.stack([sigma[i] for _ in range(n)]) for i, n in enumerate(repeats)] + [sigma])
        if tensor.shape[1] != uncond.shape[1]:
            raise SystemExit("a1111_e2e: cond and uncond of different token counts are not supported")
        cond_in = torch.cat([tensor, uncond])
        x_out = self.inner_model(x_in, sigma_in, cond=cond_in)
        denoised = self.combine_denoised(x_out, conds_list, uncond, cond_scale)
        if self.mask is not None:
            denoised = denoised * self.nmask + self.init_latent * self.mask
        self.trace.append(denoised.clone())
        self.step += 1
        return denoised


# --------------------------------------------------------------------------- pipeline (A1111 processing.py)

SAMPLERS = {"euler": "sample_euler", "euler_a": "sample_euler_ancestral", "dpmpp_2m": "sample_dpmpp_2m"}


def get_sigmas(S, model_wrap, steps, scheduler):
    if scheduler == "normal":
        return model_wrap.get_sigmas(steps)
    if scheduler == "karras":
        return S.kd_sampling.get_sigmas_karras(n=steps, sigma_min=model_wrap.sigmas[0].item(),
                                               sigma_max=model_wrap.sigmas[-1].item())
    raise SystemExit("a1111_e2e: unknown scheduler %s" % scheduler)


class Rng:
    """A1111 modules/rng.ImageRNG for one image: the first draw is the initial
    noise, later draws (ancestral samplers) continue the same generator."""

    def __init__(self, S, kind, seed, shape, dtype):
        self.shape, self.dtype, self.kind = shape, dtype, kind
        if kind == "philox":
            self.g = S.rng_philox.Generator(seed)
        elif kind == "cpu":
            self.g = torch.Generator().manual_seed(seed)
        else:
            raise SystemExit("a1111_e2e: unknown noise source %s" % kind)

    def next(self):
        if self.kind == "philox":
            n = torch.asarray(self.g.randn(self.shape))
        else:
            n = torch.randn(self.shape, generator=self.g, dtype=torch.float32)
        return n.to(self.dtype)


def quantize(img, mode):
    a = (img[0].permute(1, 2, 0).cpu().numpy().astype(np.float64) * 255.0)
    return (np.round(a) if mode == "round" else np.floor(a)).clip(0, 255).astype(np.uint8)


def conds_for(S, model, o, prompt, negative, steps, hires_steps=None):
    """A1111 StableDiffusionProcessing.setup_conds: c = multicond(prompt), uc = negative."""
    pp = S.prompt_parser
    emb = Embedder(S, model, o.clip_skip)
    cond = pp.get_multicond_learned_conditioning(emb, [prompt], steps, hires_steps)
    uncond = pp.get_learned_conditioning(emb, [negative], steps, hires_steps)
    return cond, uncond


def sample(S, model, o, x, sigmas, cond, uncond, rng, den=None):
    """k-diffusion sampling through the CFG denoiser (A1111 KDiffusionSampler.launch_sampling)."""
    den = den or CFGDenoiser(S, S.kd_external.CompVisDenoiser(model))
    extra = {"cond": cond, "uncond": uncond, "cond_scale": o.cfg}
    fn = getattr(S.kd_sampling, SAMPLERS[o.sampler])
    kw = {}
    if o.sampler == "euler_a":
        kw["noise_sampler"] = lambda s, t: rng.next()[None]
    xs = []
    with torch.no_grad():
        out = fn(den, x, sigmas, extra_args=extra, disable=True, callback=lambda d: xs.append(d["x"].clone()), **kw)
    return out, den, xs


def setup_img2img_steps(o, steps=None, denoise=None):
    """A1111 sd_samplers_common.setup_img2img_steps (img2img_fix_steps off): a
    given step count (the hires pass) is the number of steps actually run."""
    if steps is not None:
        requested = steps
        steps = int(requested / min(denoise, 0.999)) if denoise > 0 else 0
        t_enc = requested - 1
    else:
        steps = o.steps
        t_enc = int(min(denoise, 0.999) * steps)
    return steps, t_enc


def sample_img2img(S, model, o, init_latent, noise, cond, uncond, rng, denoise, steps=None, mask=None, nmask=None):
    """A1111 KDiffusionSampler.sample_img2img: the last t_enc+1 sigmas of a
    `steps` schedule from init_latent + noise * sigma; the latent mask is
    blended into every denoised prediction (CFGDenoiser)."""
    steps, t_enc = setup_img2img_steps(o, steps, denoise)
    model_wrap = S.kd_external.CompVisDenoiser(model)
    sigmas = get_sigmas(S, model_wrap, steps, o.scheduler).to(model.dtype)
    sigma_sched = sigmas[steps - t_enc - 1:]
    xi = init_latent + noise * sigma_sched[0]
    den = CFGDenoiser(S, model_wrap)
    den.init_latent = init_latent
    if mask is not None:
        den.mask, den.nmask = mask, nmask
    samples, den, xs = sample(S, model, o, xi, sigma_sched, cond, uncond, rng, den)
    return samples, den, xs, sigma_sched


def load_rgb(path):
    """A1111 images.flatten(img, opts.img2img_background_color = #ffffff)."""
    from PIL import Image
    img = Image.open(path)
    if img.mode == "RGBA":
        background = Image.new("RGBA", img.size, "#ffffff")
        background.paste(img, mask=img)
        img = background
    return img.convert("RGB")


def resize_just(im, w, h):
    """A1111 images.resize_image(0, ...) with no img2img upscaler: PIL Lanczos."""
    from PIL import Image
    return im.resize((w, h), resample=Image.LANCZOS)


def create_binary_mask(image, round=True):
    """A1111 processing.create_binary_mask."""
    if image.mode == "RGBA" and image.getextrema()[-1] != (255, 255):
        image = image.split()[-1].convert("L")
    else:
        image = image.convert("L")
    return image.point(lambda x: 255 if x > 128 else 0) if round else image


def encode(model, o, image01):
    """A1111 images_tensor_to_samples (Full VAE): ldm encode_first_stage, then
    get_first_stage_encoding = posterior.sample() * scale_factor. --vae-encode
    mean takes the posterior mean (a draw with zero noise: deterministic)."""
    x = image01.to(model.dtype) * 2 - 1
    with torch.no_grad():
        post = model.vae.encode(x)
        if o.vae_encode == "sample":
            torch.manual_seed(o.vae_seed if o.vae_seed is not None else o.seed)
            z = post.sample()
        else:
            z = post.mean
    return model.scale_factor * z


def pil_to_tensor01(image):
    a = np.array(image).astype(np.float32) / 255.0
    return torch.from_numpy(np.moveaxis(a, 2, 0).copy())[None]


def decode(model, samples):
    with torch.no_grad():
        dec = model.vae.decode(1. / model.scale_factor * samples)
    return dec, torch.clamp((dec + 1.0) / 2.0, min=0.0, max=1.0)


def run_txt2img(S, model, o):
    cond, uncond = conds_for(S, model, o, o.prompt, o.negative, o.steps)
    f = model.factor
    shape = (4, o.height // f, o.width // f)
    rng = Rng(S, o.noise, o.seed, shape, model.dtype)
    model_wrap = S.kd_external.CompVisDenoiser(model)
    sigmas = get_sigmas(S, model_wrap, o.steps, o.scheduler).to(model.dtype)
    noise = rng.next()[None]
    x = noise * sigmas[0]
    samples, den, xs = sample(S, model, o, x, sigmas, cond, uncond, rng)
    out = {"samples": samples, "sigmas": sigmas, "noise": noise}
    add_trace(o, out, den, xs, "")
    if o.hires_scale or o.hires_width or o.hires_height:
        samples = hires_pass(S, model, o, samples, out)
    dec, image = decode(model, samples)
    out.update(image=image, dec=dec, samples_final=samples)
    info = {"cond_parts": [[e.end_at_step for e in c.schedules] for c in cond.batch[0]],
            "weights": [c.weight for c in cond.batch[0]]}
    return out, info


def add_trace(o, out, den, xs, prefix):
    if o.dump:
        for i, d in enumerate(den.trace):
            out[prefix + "denoised.%d" % i] = d
        for i, xi in enumerate(xs):
            out[prefix + "x.%d" % i] = xi  # x before step i (the sampler's callback)


LATENT_UPSCALE_MODES = {  # A1111 shared_items / shared.latent_upscale_modes
    "Latent": {"mode": "bilinear", "antialias": False},
    "Latent (antialiased)": {"mode": "bilinear", "antialias": True},
    "Latent (bicubic)": {"mode": "bicubic", "antialias": False},
    "Latent (bicubic antialiased)": {"mode": "bicubic", "antialias": True},
    "Latent (nearest)": {"mode": "nearest", "antialias": False},
    "Latent (nearest-exact)": {"mode": "nearest-exact", "antialias": False},
}


def hr_target(o):
    """A1111 StableDiffusionProcessingTxt2Img.calculate_target_resolution."""
    f = 8 if o.opt_f is None else o.opt_f
    tx = ty = 0
    if not o.hires_width and not o.hires_height:
        return int(o.width * o.hires_scale), int(o.height * o.hires_scale), 0, 0
    rx, ry = o.hires_width or 0, o.hires_height or 0
    if ry == 0:
        ux, uy = rx, rx * o.height // o.width
    elif rx == 0:
        ux, uy = ry * o.width // o.height, ry
    else:
        src_ratio, dst_ratio = o.width / o.height, rx / ry
        if src_ratio < dst_ratio:
            ux, uy = rx, rx * o.height // o.width
        else:
            ux, uy = ry * o.width // o.height, ry
        tx, ty = (ux - rx) // f, (uy - ry) // f
    return ux, uy, tx, ty


def upscale_pil(im, w, h, name):
    """A1111 images.resize_image(0, im, w, h, upscaler_name) for the PIL
    upscalers (modules/upscaler.py UpscalerLanczos / UpscalerNearest through
    Upscaler.upscale), re-stated."""
    from PIL import Image
    resample = {"Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST}[name]
    scale = max(w / im.width, h / im.height)
    if scale > 1.0:
        dest_w, dest_h = int((im.width * scale) // 8 * 8), int((im.height * scale) // 8 * 8)
        for i in range(3):
            if im.width >= dest_w and im.height >= dest_h and (i > 0 or scale != 1):
                break
            shape = (im.width, im.height)
            im = im.resize((int(im.width * scale), int(im.height * scale)), resample=resample)
            if shape == (im.width, im.height):
                break
        if im.width != dest_w or im.height != dest_h:
            im = im.resize((int(dest_w), int(dest_h)), resample=Image.LANCZOS)
    if im.width != w or im.height != h:
        im = im.resize((w, h), resample=Image.LANCZOS)
    return im


def hires_pass(S, model, o, samples, out):
    """A1111 StableDiffusionProcessingTxt2Img.sample_hr_pass."""
    from PIL import Image
    f = model.factor
    o.opt_f = f
    tw, th, trx, try_ = hr_target(o)
    up = o.hires_upscaler
    if up in LATENT_UPSCALE_MODES:
        m = LATENT_UPSCALE_MODES[up]
        samples = torch.nn.functional.interpolate(samples, size=(th // f, tw // f), mode=m["mode"], antialias=m["antialias"])
    else:
        _, low = decode(model, samples)
        x_sample = (255. * np.moveaxis(low[0].cpu().numpy(), 0, 2)).astype(np.uint8)  # A1111 truncates here
        image = upscale_pil(Image.fromarray(x_sample), tw, th, up)
        samples = encode(model, o, pil_to_tensor01(image))
    samples = samples[:, :, try_ // 2:samples.shape[2] - (try_ + 1) // 2, trx // 2:samples.shape[3] - (trx + 1) // 2]
    rng = Rng(S, o.noise, o.seed, tuple(samples.shape[1:]), model.dtype)  # a new ImageRNG for the new size
    noise = rng.next()[None]
    hr_steps = o.hires_steps or o.steps
    # A1111 calculate_hr_conds: schedules of the first pass's steps with the hires rule
    cond, uncond = conds_for(S, model, o, o.hires_prompt or o.prompt, o.hires_negative or o.negative, o.steps, hr_steps)
    out["hr_init"] = samples
    out["hr_noise"] = noise
    samples, den, xs, sig = sample_img2img(S, model, o, samples, noise, cond, uncond, rng, o.hires_denoise, steps=hr_steps)
    out["hr_sigmas"] = sig
    add_trace(o, out, den, xs, "hr.")
    return samples


def run_img2img(S, model, o):
    """A1111 StableDiffusionProcessingImg2Img.init + sample + the overlay of
    process_images (resize mode 0 "Just resize", batch of one)."""
    from PIL import Image, ImageOps
    masking = S.masking
    f = model.factor
    crop_region = None
    image_mask = None
    mask_for_overlay = None
    paste_to = None
    if o.mask:
        image_mask = create_binary_mask(Image.open(o.mask), round=True)
        if o.mask_invert:
            image_mask = ImageOps.invert(image_mask)
        import cv2
        if o.mask_blur > 0:  # mask_blur_x then mask_blur_y, both = mask_blur
            k = 2 * int(2.5 * o.mask_blur + 0.5) + 1
            image_mask = Image.fromarray(cv2.GaussianBlur(np.array(image_mask), (k, 1), o.mask_blur))
            image_mask = Image.fromarray(cv2.GaussianBlur(np.array(image_mask), (1, k), o.mask_blur))
        if o.inpaint_only_masked:
            mask_for_overlay = image_mask
            mask = image_mask.convert("L")
            crop_region = masking.get_crop_region(np.array(mask), o.inpaint_padding)
            if crop_region[0] >= crop_region[2] or crop_region[1] >= crop_region[3]:
                raise SystemExit("a1111_e2e: blank mask with --inpaint-only-masked (A1111 falls back to img2img)")
            crop_region = masking.expand_crop_region(crop_region, o.width, o.height, mask.width, mask.height)
            x1, y1, x2, y2 = crop_region
            mask = mask.crop(crop_region)
            image_mask = resize_fill(mask, o.width, o.height)
            paste_to = (x1, y1, x2 - x1, y2 - y1)
        else:
            image_mask = resize_just(image_mask, o.width, o.height)
            np_mask = np.clip(np.array(image_mask).astype(np.float32) * 2, 0, 255).astype(np.uint8)
            mask_for_overlay = Image.fromarray(np_mask)
    latent_mask = image_mask
    image = load_rgb(o.init_image)
    overlay = None
    if crop_region is None:
        image = resize_just(image, o.width, o.height)
    if image_mask is not None:
        if mask_for_overlay.size != (image.width, image.height):
            mask_for_overlay = resize_just(mask_for_overlay, image.width, image.height)
        image_masked = Image.new("RGBa", (image.width, image.height))
        image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask_for_overlay.convert("L")))
        overlay = image_masked.convert("RGBA")
    if crop_region is not None:
        image = image.crop(crop_region)
        image = resize_fill(image, o.width, o.height)
    fill = {"fill": 0, "original": 1, "latent-noise": 2, "latent-nothing": 3}[o.inpaint_fill]
    if image_mask is not None and fill != 1:
        image = masking.fill(image, latent_mask)
    init_latent = encode(model, o, pil_to_tensor01(image))
    mask = nmask = None
    shape = tuple(init_latent.shape[1:])
    if image_mask is not None:
        latmask = latent_mask.convert("RGB").resize((init_latent.shape[3], init_latent.shape[2]))
        latmask = np.moveaxis(np.array(latmask, dtype=np.float32), 2, 0) / 255
        latmask = latmask[0]
        latmask = np.around(latmask)  # mask_round
        latmask = np.tile(latmask[None], (init_latent.shape[1], 1, 1))
        mask = torch.asarray(1.0 - latmask).to(model.dtype)
        nmask = torch.asarray(latmask).to(model.dtype)
        if fill == 2:  # create_random_tensors(shape, [seed]): a fresh ImageRNG's first draw
            init_latent = init_latent * mask + Rng(S, o.noise, o.seed, shape, model.dtype).next()[None] * nmask
        elif fill == 3:
            init_latent = init_latent * mask
    cond, uncond = conds_for(S, model, o, o.prompt, o.negative, o.steps)
    rng = Rng(S, o.noise, o.seed, shape, model.dtype)
    noise = rng.next()[None]
    samples, den, xs, sig = sample_img2img(S, model, o, init_latent, noise, cond, uncond, rng, o.denoise,
                                           mask=mask, nmask=nmask)
    if mask is not None:
        samples = samples * nmask + init_latent * mask
    dec, image01 = decode(model, samples)
    out = {"samples": samples, "sigmas": sig, "noise": noise, "init_latent": init_latent, "dec": dec}
    if mask is not None:
        out["mask"] = mask[None]
    add_trace(o, out, den, xs, "")
    out["image_raw"] = image01
    if overlay is not None:
        image01 = apply_overlay(image01, paste_to, overlay, o)
    out["image"] = image01
    info = {"cond_parts": [[e.end_at_step for e in c.schedules] for c in cond.batch[0]],
            "sigmas": len(sig) - 1}
    return out, info


def resize_fill(im, w, h):
    """A1111 images.resize_image(2, ...) "Resize and fill" (no upscaler)."""
    from PIL import Image
    ratio = w / h
    src_ratio = im.width / im.height
    src_w = w if ratio < src_ratio else im.width * h // im.height
    src_h = h if ratio >= src_ratio else im.height * w // im.width
    resized = resize_just(im, src_w, src_h)
    res = Image.new("RGB" if im.mode != "L" else "L", (w, h))
    res.paste(resized, box=(w // 2 - src_w // 2, h // 2 - src_h // 2))
    if ratio < src_ratio:
        fill_height = h // 2 - src_h // 2
        if fill_height > 0:
            res.paste(resized.resize((w, fill_height), box=(0, 0, w, 0)), box=(0, 0))
            res.paste(resized.resize((w, fill_height), box=(0, resized.height, w, resized.height)), box=(0, fill_height + src_h))
    elif ratio > src_ratio:
        fill_width = w // 2 - src_w // 2
        if fill_width > 0:
            res.paste(resized.resize((fill_width, h), box=(0, 0, 0, h)), box=(0, 0))
            res.paste(resized.resize((fill_width, h), box=(resized.width, 0, resized.width, h)), box=(fill_width + src_w, 0))
    return res


def apply_overlay(image01, paste_to, overlay, o):
    """A1111 processing.apply_overlay on the 8-bit image: paste back the crop
    (only masked), then alpha-composite the original's unmasked pixels. The
    result is 8-bit, so the float image returned is that /255."""
    from PIL import Image
    u8 = quantize(image01, o.quantize)
    image = Image.fromarray(u8)
    if paste_to is not None:
        x, y, w, h = paste_to
        base_image = Image.new("RGBA", (overlay.width, overlay.height))
        image = resize_just(image, w, h)  # images.resize_image(1, image, w, h): same aspect here
        base_image.paste(image, (x, y))
        image = base_image
    image = image.convert("RGBA")
    image.alpha_composite(overlay)
    image = image.convert("RGB")
    return pil_to_tensor01(image).to(image01.dtype)


def run(S, model, o):
    if o.init_image:
        return run_img2img(S, model, o)
    return run_txt2img(S, model, o)


def write(o, out, info):
    from PIL import Image
    if o.out:
        Image.fromarray(quantize(out["image"], o.quantize)).save(o.out)
    if o.out_float:
        from safetensors.torch import save_file
        keep = out if o.dump else {k: out[k] for k in ("image", "samples", "image_raw") if k in out}
        save_file({k: v.detach().to(torch.float32).contiguous() for k, v in keep.items()}, o.out_float,
                  metadata={"settings": json.dumps({k: getattr(o, k) for k in OPTS})})
    print(json.dumps({"prompt": o.prompt, "out": o.out, "out_float": o.out_float, **info}))


# --------------------------------------------------------------------------- command line

OPTS = ["prompt", "negative", "seed", "steps", "cfg", "width", "height", "sampler", "scheduler",
        "noise", "clip_skip", "quantize", "dtype", "vae_encode", "init_image", "denoise", "mask", "mask_invert",
        "mask_blur", "inpaint_fill", "inpaint_only_masked", "inpaint_padding", "hires_scale", "hires_width",
        "hires_height", "hires_steps", "hires_denoise", "hires_upscaler", "hires_prompt", "hires_negative"]


def parser():
    p = argparse.ArgumentParser(description="A1111 txt2img on the original ldm/k-diffusion/CLIP code (see the module docstring)")
    src = lambda n: os.environ.get("A1111_E2E_" + n.upper(), os.path.join(ROOT, "build", "ref-src", n))  # noqa: E731
    p.add_argument("--ldm", default=src("ldm"))
    p.add_argument("--kdiff", default=src("kdiff"))
    p.add_argument("--clip", default=src("clip"))
    p.add_argument("--a1111", default=src("a1111"))
    p.add_argument("--ckpt", default=os.path.join(ROOT, "tests", "data", "tiny-sd1.safetensors"))
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--prompt", default="")
    p.add_argument("--negative", default="")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--cfg", type=float, default=7.5)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default="euler")
    p.add_argument("--scheduler", choices=["normal", "karras"], default="normal")
    p.add_argument("--noise", choices=["philox", "cpu"], default="philox")
    p.add_argument("--clip-skip", type=int, default=1)
    p.add_argument("--quantize", choices=["round", "trunc"], default="round")
    p.add_argument("--vae-encode", choices=["mean", "sample"], default="mean")
    p.add_argument("--vae-seed", type=int)
    p.add_argument("--init-image")
    p.add_argument("--denoise", type=float, default=0.75)
    p.add_argument("--mask")
    p.add_argument("--mask-invert", action="store_true")
    p.add_argument("--mask-blur", type=int, default=4)
    p.add_argument("--inpaint-fill", choices=["fill", "original", "latent-noise", "latent-nothing"], default="original")
    p.add_argument("--inpaint-only-masked", action="store_true")
    p.add_argument("--inpaint-padding", type=int, default=32)
    p.add_argument("--hires-scale", type=float, default=0)
    p.add_argument("--hires-width", type=int, default=0)
    p.add_argument("--hires-height", type=int, default=0)
    p.add_argument("--hires-steps", type=int, default=0)
    p.add_argument("--hires-denoise", type=float, default=0.7)
    p.add_argument("--hires-upscaler", default="Latent", choices=sorted(LATENT_UPSCALE_MODES) + ["Lanczos", "Nearest"])
    p.add_argument("--hires-prompt", default="")
    p.add_argument("--hires-negative", default="")
    p.add_argument("--out")
    p.add_argument("--out-float")
    p.add_argument("--dump", action="store_true")
    p.add_argument("--cases")
    p.add_argument("--out-dir")
    p.add_argument("--selftest", action="store_true")
    return p


def case_opts(base, d):
    o = argparse.Namespace(**vars(base))
    o.opt_f = None
    for k, v in d.items():
        k = k.replace("-", "_")
        if not hasattr(o, k):
            raise SystemExit("a1111_e2e: unknown case key %s" % k)
        setattr(o, k, v)
    return o


def compare_png(a_path, ref_path):
    from PIL import Image
    a = np.asarray(Image.open(a_path).convert("RGB")).astype(int)
    b = np.asarray(Image.open(ref_path).convert("RGB")).astype(int)
    d = np.abs(a - b)
    return (d <= 1).mean(), (d == 0).mean(), int(d.max())


def selftest(S, model, base):
    gold = os.environ.get("A1111_E2E_GOLDEN", os.path.join(ROOT, "tests", "data"))
    runs = [dict(prompt="a red fox in snow", negative="", seed=42, steps=6, cfg=7.5, sampler="euler",
                 scheduler="normal", noise="philox", ref="e2e.png"),
            dict(prompt="a red fox in snow", negative="blurry", seed=7, steps=8, cfg=5.0, sampler="dpmpp_2m",
                 scheduler="karras", noise="philox", ref="e2e_dpmpp2m_karras.png"),
            dict(prompt="a red fox in snow", negative="", seed=42, steps=6, cfg=7.5, sampler="euler",
                 scheduler="normal", noise="cpu", ref="e2e_cpu.png")]
    import tempfile
    ok = True
    for r in runs:
        ref = r.pop("ref")
        o = case_opts(base, r)
        o.out = os.path.join(tempfile.mkdtemp(), ref)
        o.out_float = None
        out, info = run(S, model, o)
        write(o, out, info)
        within, exact, dmax = compare_png(o.out, os.path.join(gold, ref))
        fl = ""
        cases = os.path.join(gold, "tiny-sd1-cases.safetensors")
        if os.path.exists(cases):
            from safetensors import safe_open
            with safe_open(cases, "pt") as f:
                key = {"e2e.png": "e2e", "e2e_dpmpp2m_karras.png": "e2e2", "e2e_cpu.png": "e2e3"}[ref]
                d = (out["image"].to(torch.float64) - f.get_tensor(key + ".image").to(torch.float64)).abs().max()
                fl = ", float image max |d| %.3g vs %s.image" % (d, key)
        print("selftest %s (%s): %.4f%% within 1 LSB, %.4f%% exact, max diff %d%s"
              % (ref, base.dtype, 100 * within, 100 * exact, dmax, fl))
        ok &= within >= 0.99
    return ok


INT_KEYS = {"seed", "steps", "width", "height", "clip_skip", "mask_blur", "inpaint_padding", "hires_width",
            "hires_height", "hires_steps", "vae_seed"}
FLOAT_KEYS = {"cfg", "denoise", "hires_scale", "hires_denoise"}
BOOL_KEYS = {"mask_invert", "inpaint_only_masked", "dump"}


def read_table(path):
    with open(path, encoding="utf-8") as f:
        lines = [ln.rstrip("\n") for ln in f if ln.strip() and not ln.startswith("#")]
    head = lines[0].split("\t")
    rows = []
    for ln in lines[1:]:
        cells = ln.split("\t")
        if len(cells) != len(head):
            raise SystemExit("a1111_e2e: %s: %d cells, header has %d: %r" % (path, len(cells), len(head), ln))
        d = dict(zip(head, cells))
        for k in d:
            if k in INT_KEYS:
                d[k] = int(d[k])
            elif k in FLOAT_KEYS:
                d[k] = float(d[k])
            elif k in BOOL_KEYS:
                d[k] = d[k] not in ("", "0", "false", "no")
        rows.append(d)
    return rows


def run_table(S, model, a):
    if not a.out_dir:
        raise SystemExit("a1111_e2e: --cases FILE.tsv needs --out-dir")
    os.makedirs(a.out_dir, exist_ok=True)
    images = {}
    for d in read_table(a.cases):
        name = d.pop("name")
        o = case_opts(a, d)
        o.out, o.out_float = os.path.join(a.out_dir, name + ".png"), None
        out, info = run(S, model, o)
        write(o, out, info)
        images[name] = out["image"].detach().to(torch.float32).contiguous()
        images[name + ".latent"] = out["samples"].detach().to(torch.float32).contiguous()
    if a.out_float:
        from safetensors.torch import save_file
        save_file(images, a.out_float, metadata={"made_by": "tools/ref/a1111_e2e.py --cases " + os.path.basename(a.cases),
                                                 "dtype": a.dtype, "ckpt": os.path.basename(a.ckpt)})


def main():
    a = parser().parse_args()
    S = load_sources(a)
    dtype = torch.float64 if a.dtype == "float64" else torch.float32
    if dtype == torch.float64:
        exact_float64(S)
        torch.set_default_dtype(torch.float64)
    import contextlib
    with contextlib.redirect_stdout(sys.stderr):  # ldm prints its layer choices
        model = Model(S, a.ckpt, dtype)
    if a.selftest:
        sys.exit(0 if selftest(S, model, a) else 1)
    cases = [{}]
    if a.cases and a.cases.endswith(".tsv"):
        run_table(S, model, a)
        return
    if a.cases:
        with open(a.cases) as f:
            cases = json.load(f)
    for c in cases:
        o = case_opts(a, c)
        out, info = run(S, model, o)
        write(o, out, info)


if __name__ == "__main__":
    main()
