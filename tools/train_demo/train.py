"""Train the fmimage demo model (offline tool; Debian python3-torch, CPU).

  /usr/bin/python3 tools/train_demo/train.py [--out DIR] [stage ...]

Stages (default: all, in this order):
  vae    KL autoencoder on random scenes (L1 + small KL), then rescaled so the
         latents times 0.18215 have unit std (SD's scale_factor stays 0.18215)
  unet   U-Net + CLIP text encoder from scratch on latents: eps prediction, SD
         scaled_linear schedule, Min-SNR-5 loss weights, 10% empty captions
         (for CFG), EMA of the weights; checkpoints every --ckpt-every seconds
  decoder  decoder fine-tune on the fixed encoder's latents
  export F16 single-file SD 1.x checkpoint -> assets/demo/fmimage-demo.safetensors
  unpack the shipped checkpoint -> the files the stages above continue from

Everything is seeded (--seed); the same command gives the same weights as long
as the run is not cut by --unet-time-limit (a safety net for slow machines:
the newest EMA checkpoint is then what gets exported).
"""
import argparse
import json
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import config  # noqa: E402
import models  # noqa: E402
import scenes  # noqa: E402
import stfile  # noqa: E402
import vae_init  # noqa: E402
from clip_tokenizer import Tokenizer  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def to_tensor(imgs):
    return torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 127.5 - 1.0


# ------------------------------------------------------------------ VAE

def train_vae(args):
    """The encoder stays the identity start of vae_init (4x4 average of RGB
    into latent channels 0..2; channel 3 is 0), rescaled so that latent * 0.18215
    has unit std. A fixed encoder lets the U-Net and the decoder train at the
    same time: the latent space never moves."""
    torch.manual_seed(args.seed)
    vae = models.AutoencoderKL(config.VAE)
    vae_init.identity_init(vae)
    # mean' = a*mean, logvar' = logvar + 2 ln a; post_quant_conv takes z'/a:
    # the decoded image is unchanged.
    with torch.no_grad():
        x = to_tensor(scenes.batch(random.Random(args.seed + 1), 256)[0])
        mean, _ = vae.encode(x)
        a = (1.0 / config.VAE["scale_factor"]) / mean.std().item()
        zc = config.VAE["z_channels"]
        vae.quant_conv.weight[:zc] *= a
        vae.quant_conv.bias[:zc] *= a
        vae.quant_conv.bias[zc:] += 2 * math.log(a)
        vae.post_quant_conv.weight /= a
        mean2, _ = vae.encode(x)
        rec = vae.decode(mean2)
        log(f"vae rescale a={a:.4f}: latent std*0.18215 = {(mean2.std() * 0.18215).item():.3f}, "
            f"L1 {(rec - x).abs().mean().item():.4f}")
    torch.save(vae.state_dict(), os.path.join(args.out, "vae.pt"))


def shape_weight(x, w):
    """Per-pixel L1 weight: 1 + w on the shapes (pixels away from the border's
    median colour), 1 on the background. Under plain L1 the decoder draws a
    pixel it is unsure of as the majority (background), and a small star's
    points vanish into a blob; weighting the shapes draws a pixel as shape
    once it is at least 1/(2 + w) likely to be one."""
    if not w:
        return torch.ones_like(x[:, :1])
    border = torch.cat([x[:, :, :2].flatten(2), x[:, :, -2:].flatten(2),
                        x[:, :, :, :2].flatten(2), x[:, :, :, -2:].flatten(2)], dim=2)
    bg = border.median(dim=2).values[:, :, None, None]
    return 1 + w * ((x - bg).norm(dim=1, keepdim=True) > 0.3).float()


def train_decoder(args):
    """Decoder (+ post_quant_conv) fine-tune on the fixed encoder's latents:
    L1 on 64x64 scenes (smaller renders shrink the shapes against the latent
    grid, and the decoder learned to draw small stars as blobs); learning rate
    annealed to 0 with --anneal; --fg-weight W weights the shapes' pixels
    1 + W (shape_weight). With --latent-noise S each latent gets Gaussian
    noise of a random std in [0, S) (unit-std latent units): sampled latents
    keep some noise, and the decoder learns to draw it as flat colour. Writes
    vae.pt (encoder unchanged)."""
    torch.manual_seed(args.seed + 3)
    rng = random.Random(args.seed + 3)
    vae = models.AutoencoderKL(config.VAE)
    vae.load_state_dict(torch.load(os.path.join(args.out, "vae.pt")))
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    opt = torch.optim.Adam(params, lr=args.vae_lr)
    val = to_tensor(scenes.batch(random.Random(args.seed + 4), 16)[0])
    t0 = last = time.time()
    for step in range(1, args.vae_steps + 1):
        x = to_tensor(scenes.batch(rng, args.vae_batch)[0])
        z = analytic_latent(vae, x)
        if args.latent_noise:
            z = z + args.latent_noise * torch.rand(z.shape[0], 1, 1, 1) * torch.randn_like(z)
        l1 = ((vae.decode(z / config.VAE["scale_factor"]) - x).abs() * shape_weight(x, args.fg_weight)).mean()
        for g in opt.param_groups:
            g["lr"] = args.vae_lr * min(1.0, step / args.warmup)
            if args.anneal:
                g["lr"] *= 0.5 * (1 + math.cos(math.pi * (step - 1) / args.vae_steps))
        opt.zero_grad()
        l1.backward()
        opt.step()
        done = step == args.vae_steps or time.time() - t0 > args.vae_time_limit
        if step % 50 == 0 or done:
            with torch.no_grad():
                v = (vae.decode(vae.encode(val)[0]) - val).abs().mean().item()
            log(f"decoder {step}/{args.vae_steps} l1 {l1.item():.4f} val-64 l1 {v:.4f} "
                f"{step / (time.time() - t0):.2f} it/s")
        if done or time.time() - last > args.ckpt_every:
            torch.save(vae.state_dict(), os.path.join(args.out, "vae.pt.tmp"))
            os.replace(os.path.join(args.out, "vae.pt.tmp"), os.path.join(args.out, "vae.pt"))
            last = time.time()
        if done:
            break


# ------------------------------------------------------------------ U-Net + text encoder

def analytic_latent(vae, x):
    """What the fixed identity-start encoder computes, without running it (it
    costs ~0.7 GMAC an image): a * (4x4 average of RGB) in channels 0..2, 0 in
    channel 3, times 0.18215. The encoder itself agrees to ~1% (SiLU and
    GroupNorm-scale error of the identity start)."""
    a = vae.quant_conv.weight[0, 0, 0, 0].item()
    z = F.avg_pool2d(x, 4) * a
    z = torch.cat([z, torch.zeros_like(z[:, :1])], dim=1)
    return z * config.VAE["scale_factor"]


class LatentPool:
    """Encoded training scenes; a few are replaced by fresh ones every step."""

    def __init__(self, vae, rng, size, refresh):
        self.vae, self.rng, self.refresh = vae, rng, refresh
        self.scenes, lat = [], []
        for i in range(0, size, 64):
            s, z = self.fresh(64)
            self.scenes += s
            lat.append(z)
        self.latents = torch.cat(lat)

    @torch.no_grad()
    def fresh(self, n):
        s = [scenes.random_scene(self.rng) for _ in range(n)]
        x = to_tensor(np.stack([scenes.render(sc) for sc in s]))
        return s, analytic_latent(self.vae, x)

    def sample(self, n):
        s, z = self.fresh(self.refresh)
        for k in range(self.refresh):
            j = self.rng.randrange(len(self.scenes))
            self.scenes[j], self.latents[j] = s[k], z[k]
        idx = [self.rng.randrange(len(self.scenes)) for _ in range(n)]
        return self.latents[idx], [self.scenes[i] for i in idx]


class TextUNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.unet = models.UNetModel(config.UNET)
        self.text = models.CLIPTextTransformer(config.TEXT)


def train_unet(args):
    # a resumed run draws new data (a different stream per starting step)
    data_seed = args.seed + 2 + (torch.load(os.path.join(args.out, "unet.pt"))["step"] if args.resume else 0)
    torch.manual_seed(data_seed)
    rng = random.Random(data_seed)
    tok = Tokenizer()
    vae = models.AutoencoderKL(config.VAE)
    vae.load_state_dict(torch.load(os.path.join(args.out, "vae.pt")))
    vae.eval()
    t0 = time.time()
    pool = LatentPool(vae, rng, args.pool, args.pool_refresh)
    log(f"latent pool {len(pool.scenes)} in {time.time() - t0:.0f}s, std {pool.latents.std().item():.3f}")

    model = TextUNet()
    ema = TextUNet()
    ema.load_state_dict(model.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    nparams = sum(p.numel() for p in model.parameters())
    log(f"unet+text params {nparams / 1e6:.2f}M")
    first = 1
    if args.resume:  # continue a run from its checkpoint (fresh Adam moments, warm-up again)
        ck = torch.load(os.path.join(args.out, "unet.pt"))
        model.load_state_dict(ck["model"])
        ema.load_state_dict(ck["ema"])
        first = ck["step"] + 1
        log(f"resuming after step {ck['step']}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.unet_lr, weight_decay=0.0)
    ac = models.ddpm_buffers(config.SCHEDULE)["alphas_cumprod"]
    snr = ac / (1 - ac)
    loss_w = torch.clamp(snr, max=5.0) / snr  # Min-SNR-5 for eps prediction

    t0 = last_ckpt = time.time()
    avg = None
    for step in range(first, args.unet_steps + 1):
        z0, sc = pool.sample(args.unet_batch)
        caps = ["" if rng.random() < args.uncond_prob else scenes.caption(rng, s) for s in sc]
        ids = torch.tensor([tok(c) for c in caps])
        t = torch.randint(0, 1000, (len(caps),))
        noise = torch.randn_like(z0)
        if args.offset_noise:  # per-image, per-channel constant: the input's mean stops telling the colour
            noise = noise + args.offset_noise * torch.randn(z0.shape[0], z0.shape[1], 1, 1)
        a = ac[t][:, None, None, None]
        zt = a.sqrt() * z0 + (1 - a).sqrt() * noise
        eps = model.unet(zt, t.float(), model.text(ids))
        loss = ((eps - noise).pow(2).mean(dim=(1, 2, 3)) * loss_w[t]).mean()
        for g in opt.param_groups:
            g["lr"] = args.unet_lr * min(1.0, (step - first + 1) / args.warmup)
            if args.anneal:  # cosine to 0 over this run's steps
                g["lr"] *= 0.5 * (1 + math.cos(math.pi * (step - first) / (args.unet_steps - first + 1)))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, pm in zip(ema.parameters(), model.parameters()):
                pe.mul_(decay).add_(pm, alpha=1 - decay)
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        el = time.time() - t0
        if step % 20 == 0 or step == 1:
            log(f"unet {step}/{args.unet_steps} loss {avg:.4f} {(step - first + 1) / el:.3f} it/s")
        done = step == args.unet_steps or el > args.unet_time_limit
        if done or time.time() - last_ckpt > args.ckpt_every:
            torch.save({"step": step, "ema": ema.state_dict(), "model": model.state_dict()},
                       os.path.join(args.out, "unet.pt.tmp"))
            os.replace(os.path.join(args.out, "unet.pt.tmp"), os.path.join(args.out, "unet.pt"))
            last_ckpt = time.time()
            log(f"checkpoint at step {step}")
        if done:
            break


# ------------------------------------------------------------------ export

def export(args):
    """EMA weights -> F16 safetensors (DDPM buffers F32, position_ids I64)."""
    sd = models.SD1(config.CONFIG)
    vae = torch.load(os.path.join(args.out, "vae.pt"))
    ck = torch.load(os.path.join(args.out, "unet.pt"))
    ema = ck["ema"]
    state = {}
    for k, v in sd.state_dict().items():
        if k.startswith("first_stage_model."):
            v = vae[k[len("first_stage_model."):]]
        elif k.startswith("model.diffusion_model."):
            v = ema["unet." + k[len("model.diffusion_model."):]]
        elif k.startswith("cond_stage_model.transformer.text_model."):
            v = ema["text." + k[len("cond_stage_model.transformer.text_model."):]]
        state[k] = v
    tensors = {}
    for k, v in state.items():
        a = v.detach().cpu().numpy()
        if k.endswith("position_ids"):
            a = a.astype(np.int64)
        elif "." not in k:  # DDPM buffers stay F32
            a = a.astype(np.float32)
        else:
            a = a.astype(np.float16)
        tensors[k] = a
    cfg = dict(config.CONFIG)
    cfg["defaults"] = config.DEFAULTS
    cfg["vocabulary"] = scenes.vocabulary()
    cfg["training"] = {"unet_steps": int(ck["step"]), "seed": args.seed, "held_out": scenes.HELD_OUT}
    path = args.dest
    os.makedirs(os.path.dirname(path), exist_ok=True)
    stfile.save(path, tensors, {"fmimage.config": json.dumps(cfg), "format": "pt"})
    log(f"wrote {path}: {len(tensors)} tensors, {os.path.getsize(path) / 1e6:.2f} MB, step {ck['step']}")


def unpack(args):
    """The inverse of export: a shipped checkpoint (--src) -> vae.pt and
    unet.pt (EMA = model = its weights, step from its fmimage.config), so later
    stages can continue from the shipped model without the earlier run's files."""
    tensors, meta = stfile.load(args.src)
    step = json.loads(meta["fmimage.config"]).get("training", {}).get("unet_steps", 0)
    f32 = {k: torch.from_numpy(v.astype(np.int64 if v.dtype == np.int64 else np.float32)) for k, v in tensors.items()}
    vae = {k[len("first_stage_model."):]: v for k, v in f32.items() if k.startswith("first_stage_model.")}
    net = {}
    for k, v in f32.items():
        if k.startswith("model.diffusion_model."):
            net["unet." + k[len("model.diffusion_model."):]] = v
        elif k.startswith("cond_stage_model.transformer.text_model."):
            net["text." + k[len("cond_stage_model.transformer.text_model."):]] = v
    TextUNet().load_state_dict(net, strict=True)  # every name present, nothing extra
    torch.save(vae, os.path.join(args.out, "vae.pt"))
    torch.save({"step": step, "ema": net, "model": net}, os.path.join(args.out, "unet.pt"))
    log(f"unpacked {args.src}: step {step}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stages", nargs="*", default=["vae", "unet", "export"])
    p.add_argument("--out", default=os.path.join(ROOT, "build", "demo-train"))
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--dest", default=os.path.join(ROOT, "assets", "demo", "fmimage-demo.safetensors"),
                   help="export: output file")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--vae-steps", type=int, default=2000)
    p.add_argument("--vae-time-limit", type=float, default=3600, help="seconds")
    p.add_argument("--vae-batch", type=int, default=8)
    p.add_argument("--vae-lr", type=float, default=1e-4)
    p.add_argument("--latent-noise", type=float, default=0.0, help="decoder: max std of latent noise")
    p.add_argument("--fg-weight", type=float, default=0.0, help="decoder: extra L1 weight of shape pixels")
    p.add_argument("--src", default=os.path.join(ROOT, "assets", "demo", "fmimage-demo.safetensors"),
                   help="unpack: checkpoint to continue from")
    p.add_argument("--unet-steps", type=int, default=1600)
    p.add_argument("--unet-batch", type=int, default=24)
    p.add_argument("--unet-lr", type=float, default=8e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--resume", action="store_true", help="unet: continue from build/.../unet.pt")
    p.add_argument("--anneal", action="store_true", help="unet, decoder: cosine learning-rate decay to 0")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--uncond-prob", type=float, default=0.1)
    p.add_argument("--offset-noise", type=float, default=0.0,
                   help="unet: offset noise strength (the shipped second stage uses 0.5; see README)")
    p.add_argument("--pool", type=int, default=2048)
    p.add_argument("--pool-refresh", type=int, default=2)
    p.add_argument("--unet-time-limit", type=float, default=3600, help="seconds")
    p.add_argument("--ckpt-every", type=float, default=300, help="seconds")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    os.makedirs(args.out, exist_ok=True)
    for s in args.stages:
        {"vae": train_vae, "unet": train_unet, "decoder": train_decoder, "export": export,
         "unpack": unpack}[s](args)


if __name__ == "__main__":
    main()
