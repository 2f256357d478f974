"""SD 1.x modules in miniature, with the exact ldm / HF CLIP parameter names.

Written from CompVis/stable-diffusion (openaimodel.py, attention.py, model.py,
autoencoder.py) and HF modeling_clip.py; the conventions the C code implements
are in tests/data/README.md#tiny-sd1. state_dict() of `SD1` gives the
single-file names (model.diffusion_model.*, first_stage_model.*,
cond_stage_model.transformer.text_model.*).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def gn(c, eps):
    return nn.GroupNorm(32, c, eps=eps)


# ---------------------------------------------------------------- U-Net (ldm openaimodel)

def timestep_embedding(t, dim, max_period=10000):
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64) / half)
    args = t.to(torch.float64)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(torch.float32)


class ResBlock(nn.Module):
    def __init__(self, ch, emb_ch, out_ch):
        super().__init__()
        self.in_layers = nn.Sequential(gn(ch, 1e-5), nn.SiLU(), nn.Conv2d(ch, out_ch, 3, padding=1))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_ch, out_ch))
        self.out_layers = nn.Sequential(gn(out_ch, 1e-5), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out_ch, out_ch, 3, padding=1))
        nn.init.zeros_(self.out_layers[3].weight)
        nn.init.zeros_(self.out_layers[3].bias)
        self.skip_connection = nn.Identity() if ch == out_ch else nn.Conv2d(ch, out_ch, 1)

    def forward(self, x, emb, context):
        h = self.in_layers(x)
        h = h + self.emb_layers(emb)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class CrossAttention(nn.Module):
    def __init__(self, query_dim, context_dim, heads, dim_head):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.scale = heads, dim_head ** -0.5
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim), nn.Dropout(0.0))

    def forward(self, x, context=None):
        context = x if context is None else context
        b, n, _ = x.shape
        h = self.heads
        q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
        q, k, v = (t.reshape(b, t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))
        w = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
        out = (w @ v).transpose(1, 2).reshape(b, n, -1)
        return self.to_out(out)


class GEGLU(nn.Module):
    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x):
        x, gate = self.proj(x).chunk(2, dim=-1)
        return x * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * 4), nn.Dropout(0.0), nn.Linear(dim * 4, dim))

    def forward(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, dim_head, context_dim):
        super().__init__()
        self.attn1 = CrossAttention(dim, dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = CrossAttention(dim, context_dim, heads, dim_head)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x, context):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """depth blocks; linear: SDXL's use_linear_in_transformer (proj_in/proj_out
    as Linear on the flattened tokens instead of 1x1 convolutions)."""
    def __init__(self, ch, heads, dim_head, context_dim, depth=1, linear=False):
        super().__init__()
        inner = heads * dim_head
        self.linear = linear
        self.norm = gn(ch, 1e-6)
        self.proj_in = nn.Linear(ch, inner) if linear else nn.Conv2d(ch, inner, 1)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(inner, heads, dim_head, context_dim)
                                                 for _ in range(depth)])
        self.proj_out = nn.Linear(inner, ch) if linear else nn.Conv2d(inner, ch, 1)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x, emb, context):
        b, c, hh, ww = x.shape
        h = self.norm(x)
        if self.linear:
            h = self.proj_in(h.flatten(2).transpose(1, 2))
        else:
            h = self.proj_in(h).flatten(2).transpose(1, 2)
        for blk in self.transformer_blocks:
            h = blk(h, context)
        if self.linear:
            return x + self.proj_out(h).transpose(1, 2).reshape(b, c, hh, ww)
        return x + self.proj_out(h.transpose(1, 2).reshape(b, -1, hh, ww))


class Downsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.op = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x, emb, context):
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x, emb, context):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Seq(nn.ModuleList):
    def forward(self, x, emb, context):
        for m in self:
            x = m(x, emb, context)
        return x


class ConvIn(nn.Conv2d):
    def forward(self, x, emb, context):
        return super().forward(x)


class UNetModel(nn.Module):
    """ldm's UNetModel; the SD 1.x config keys, plus SDXL's optional ones:
    num_head_channels (heads = channels / it), transformer_depth (an int or one
    per level), transformer_depth_middle, use_linear_in_transformer and
    adm_in_channels (label_emb on the vector y)."""
    def __init__(self, cfg):
        super().__init__()
        mc, mult, nrb = cfg["model_channels"], cfg["channel_mult"], cfg["num_res_blocks"]
        attn_res = cfg["attention_resolutions"]
        depth = cfg.get("transformer_depth", 1)
        depth = [depth] * len(mult) if isinstance(depth, int) else depth

        def transformer(ch, d):
            hc = cfg.get("num_head_channels", -1)
            heads = ch // hc if hc > 0 else cfg["num_heads"]
            return SpatialTransformer(ch, heads, ch // heads, cfg["context_dim"], d,
                                      cfg.get("use_linear_in_transformer", False))

        self.model_channels = mc
        ed = mc * 4
        self.time_embed = nn.Sequential(nn.Linear(mc, ed), nn.SiLU(), nn.Linear(ed, ed))
        if cfg.get("adm_in_channels"):
            self.label_emb = nn.Sequential(nn.Sequential(nn.Linear(cfg["adm_in_channels"], ed), nn.SiLU(),
                                                         nn.Linear(ed, ed)))
        self.input_blocks = nn.ModuleList([Seq([ConvIn(cfg["in_channels"], mc, 3, padding=1)])])
        chans, ch, ds = [mc], mc, 1
        for level, m in enumerate(mult):
            for _ in range(nrb):
                layers = [ResBlock(ch, ed, m * mc)]
                ch = m * mc
                if ds in attn_res:
                    layers.append(transformer(ch, depth[level]))
                self.input_blocks.append(Seq(layers))
                chans.append(ch)
            if level != len(mult) - 1:
                self.input_blocks.append(Seq([Downsample(ch)]))
                chans.append(ch)
                ds *= 2
        self.middle_block = Seq([ResBlock(ch, ed, ch), transformer(ch, cfg.get("transformer_depth_middle", depth[-1])),
                                 ResBlock(ch, ed, ch)])
        self.output_blocks = nn.ModuleList()
        for level, m in list(enumerate(mult))[::-1]:
            for i in range(nrb + 1):
                layers = [ResBlock(ch + chans.pop(), ed, m * mc)]
                ch = m * mc
                if ds in attn_res:
                    layers.append(transformer(ch, depth[level]))
                if level and i == nrb:
                    layers.append(Upsample(ch))
                    ds //= 2
                self.output_blocks.append(Seq(layers))
        self.out = nn.Sequential(gn(ch, 1e-5), nn.SiLU(), nn.Conv2d(ch, cfg["out_channels"], 3, padding=1))
        nn.init.zeros_(self.out[2].weight)
        nn.init.zeros_(self.out[2].bias)

    def forward(self, x, t, context, y=None):
        temb = timestep_embedding(t, self.model_channels).to(self.time_embed[0].weight.dtype)
        emb = self.time_embed(temb)
        if y is not None:
            emb = emb + self.label_emb(y)
        hs, h = [], x
        for m in self.input_blocks:
            h = m(h, emb, context)
            hs.append(h)
        h = self.middle_block(h, emb, context)
        for m in self.output_blocks:
            h = m(torch.cat([h, hs.pop()], dim=1), emb, context)
        return self.out(h)


# ---------------------------------------------------------------- VAE (ldm model.py, AutoencoderKL)

class ResnetBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.norm1 = gn(cin, 1e-6)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2 = gn(cout, 1e-6)
        self.dropout = nn.Dropout(0.0)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = gn(c, 1e-6)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q = self.q(h).flatten(2).transpose(1, 2)
        k = self.k(h).flatten(2)
        v = self.v(h).flatten(2)
        w = torch.softmax(q @ k * c ** -0.5, dim=-1)  # [b, hw(q), hw(k)]
        out = (v @ w.transpose(1, 2)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class VDown(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=0)

    def forward(self, x):
        return self.conv(F.pad(x, (0, 1, 0, 1)))


class VUp(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Mid(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.block_1, self.attn_1, self.block_2 = ResnetBlock(c, c), AttnBlock(c), ResnetBlock(c, c)

    def forward(self, x):
        return self.block_2(self.attn_1(self.block_1(x)))


class Encoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch, mult, nrb = cfg["ch"], cfg["ch_mult"], cfg["num_res_blocks"]
        assert not cfg["attn_resolutions"]
        self.conv_in = nn.Conv2d(cfg["in_channels"], ch, 3, padding=1)
        self.down = nn.ModuleList()
        cin = ch
        for i, m in enumerate(mult):
            lvl = nn.Module()
            lvl.block = nn.ModuleList()
            lvl.attn = nn.ModuleList()
            for _ in range(nrb):
                lvl.block.append(ResnetBlock(cin, ch * m))
                cin = ch * m
            if i != len(mult) - 1:
                lvl.downsample = VDown(cin)
            self.down.append(lvl)
        self.mid = Mid(cin)
        self.norm_out = gn(cin, 1e-6)
        self.conv_out = nn.Conv2d(cin, 2 * cfg["z_channels"], 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for lvl in self.down:
            for b in lvl.block:
                h = b(h)
            if hasattr(lvl, "downsample"):
                h = lvl.downsample(h)
        h = self.mid(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch, mult, nrb = cfg["ch"], cfg["ch_mult"], cfg["num_res_blocks"]
        cin = ch * mult[-1]
        self.conv_in = nn.Conv2d(cfg["z_channels"], cin, 3, padding=1)
        self.mid = Mid(cin)
        ups = []
        for i in reversed(range(len(mult))):
            lvl = nn.Module()
            lvl.block = nn.ModuleList()
            lvl.attn = nn.ModuleList()
            for _ in range(nrb + 1):
                lvl.block.append(ResnetBlock(cin, ch * mult[i]))
                cin = ch * mult[i]
            if i != 0:
                lvl.upsample = VUp(cin)
            ups.insert(0, lvl)
        self.up = nn.ModuleList(ups)
        self.norm_out = gn(cin, 1e-6)
        self.conv_out = nn.Conv2d(cin, cfg["out_ch"], 3, padding=1)

    def forward(self, z):
        h = self.mid(self.conv_in(z))
        for lvl in reversed(self.up):
            for b in lvl.block:
                h = b(h)
            if hasattr(lvl, "upsample"):
                h = lvl.upsample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderKL(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
        self.quant_conv = nn.Conv2d(2 * cfg["z_channels"], 2 * cfg["embed_dim"], 1)
        self.post_quant_conv = nn.Conv2d(cfg["embed_dim"], cfg["z_channels"], 1)

    def encode(self, x):
        mean, logvar = self.quant_conv(self.encoder(x)).chunk(2, dim=1)
        return mean, torch.clamp(logvar, -30.0, 20.0)

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))


# ---------------------------------------------------------------- CLIP text model (HF names)

class CLIPAttention(nn.Module):
    def __init__(self, w, heads):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(w, w) for _ in range(4))

    def forward(self, x, mask):
        b, n, w = x.shape
        h = self.heads
        q = self.q_proj(x) * (w // h) ** -0.5
        q, k, v = (t.reshape(b, n, h, -1).transpose(1, 2) for t in (q, self.k_proj(x), self.v_proj(x)))
        a = torch.softmax(q @ k.transpose(-1, -2) + mask, dim=-1)
        return self.out_proj((a @ v).transpose(1, 2).reshape(b, n, w))


class CLIPMLP(nn.Module):
    def __init__(self, w, inter):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(w, inter), nn.Linear(inter, w)

    def forward(self, x):
        h = self.fc1(x)
        return self.fc2(h * torch.sigmoid(1.702 * h))


class CLIPLayer(nn.Module):
    def __init__(self, w, heads, inter):
        super().__init__()
        self.self_attn = CLIPAttention(w, heads)
        self.layer_norm1 = nn.LayerNorm(w)
        self.mlp = CLIPMLP(w, inter)
        self.layer_norm2 = nn.LayerNorm(w)

    def forward(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEmbeddings(nn.Module):
    def __init__(self, vocab, w, max_len):
        super().__init__()
        self.token_embedding = nn.Embedding(vocab, w)
        self.position_embedding = nn.Embedding(max_len, w)
        self.register_buffer("position_ids", torch.arange(max_len).unsqueeze(0))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding.weight, std=0.01)


class CLIPEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.ModuleList([CLIPLayer(cfg["width"], cfg["heads"], cfg["intermediate_size"])
                                     for _ in range(cfg["layers"])])


class CLIPTextTransformer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.embeddings = CLIPEmbeddings(cfg["vocab_size"], cfg["width"], cfg["max_length"])
        self.encoder = CLIPEncoder(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg["width"])

    def forward(self, ids):
        n = ids.shape[1]
        x = self.embeddings.token_embedding(ids) + self.embeddings.position_embedding.weight[:n]
        mask = torch.full((n, n), float("-inf"), dtype=x.dtype).triu(1)
        for layer in self.encoder.layers:
            x = layer(x, mask)
        return self.final_layer_norm(x)


class CLIPTextModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.text_model = CLIPTextTransformer(cfg)

    def forward(self, ids):
        return self.text_model(ids)


class FrozenCLIPEmbedder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.transformer = CLIPTextModel(cfg)

    def forward(self, ids):
        return self.transformer(ids)


class DiffusionWrapper(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.diffusion_model = UNetModel(cfg)


class SD1(nn.Module):
    """The whole checkpoint: state_dict() keys are the SD 1.x single-file names."""

    def __init__(self, config):
        super().__init__()
        self.model = DiffusionWrapper(config["unet"])
        self.first_stage_model = AutoencoderKL(config["vae"])
        self.cond_stage_model = FrozenCLIPEmbedder(config["text"])
        for name, value in ddpm_buffers(config["schedule"]).items():
            self.register_buffer(name, value)


def ddpm_buffers(s):
    """ldm DDPM.register_schedule (linear), float64 math, stored F32."""
    import numpy as np
    betas = np.linspace(s["linear_start"] ** 0.5, s["linear_end"] ** 0.5, s["timesteps"], dtype=np.float64) ** 2
    alphas = 1.0 - betas
    ac = np.cumprod(alphas, axis=0)
    ac_prev = np.append(1.0, ac[:-1])
    v_posterior = 0.0
    post_var = (1 - v_posterior) * betas * (1.0 - ac_prev) / (1.0 - ac) + v_posterior * betas
    buf = {
        "betas": betas, "alphas_cumprod": ac, "alphas_cumprod_prev": ac_prev,
        "sqrt_alphas_cumprod": np.sqrt(ac), "sqrt_one_minus_alphas_cumprod": np.sqrt(1.0 - ac),
        "log_one_minus_alphas_cumprod": np.log(1.0 - ac), "sqrt_recip_alphas_cumprod": np.sqrt(1.0 / ac),
        "sqrt_recipm1_alphas_cumprod": np.sqrt(1.0 / ac - 1),
        "posterior_variance": post_var,
        "posterior_log_variance_clipped": np.log(np.maximum(post_var, 1e-20)),
        "posterior_mean_coef1": betas * np.sqrt(ac_prev) / (1.0 - ac),
        "posterior_mean_coef2": (1.0 - ac_prev) * np.sqrt(alphas) / (1.0 - ac),
    }
    return {k: torch.tensor(v, dtype=torch.float32) for k, v in buf.items()}
