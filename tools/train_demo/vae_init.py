"""A near-identity starting point for the demo VAE (image -> 4x4 average -> nearest upsample).

Training the KL autoencoder from a random start on flat-coloured scenes is slow
on a CPU (the colours have to get through GroupNorms with 3 channels per
group), so it starts from an autoencoder that already passes colours through:

* every ResnetBlock's conv2 and the mid AttnBlock's proj_out are zero, so
  each block is its shortcut; nin_shortcuts copy channels; down-samplers
  average 2x2; up-samplers repeat (nearest) and their conv is the identity;
* a colour x travels as the channel triple (x, -x, K) with K = 16 a constant
  (a conv bias). GroupNorm over such a triple has mean K/3 whatever x is and
  a variance dominated by K, so norm_out's affine (gamma = that std, beta =
  K/3 + 10) gives back x + 10, which SiLU passes almost unchanged (the +10 is
  removed by conv_out's bias).

Training then only has to learn the edges.
"""
import math

import torch

K = 16.0
SHIFT = 10.0
TRIPLES = 4  # R, G, B (and the 4th latent channel in the decoder)


def _zero(m):
    torch.nn.init.zeros_(m.weight)
    torch.nn.init.zeros_(m.bias)


def _copy_1x1(conv):
    _zero(conv)
    n = min(conv.weight.shape[0], conv.weight.shape[1])
    for i in range(n):
        conv.weight[i, i, 0, 0] = 1.0


def _identity_3x3(conv):
    _zero(conv)
    for i in range(conv.weight.shape[0]):
        conv.weight[i, i, 1, 1] = 1.0


def _avg_down(conv):  # VAE Downsample: pad (0,1,0,1), 3x3 stride 2 -> taps [0:2, 0:2]
    _zero(conv)
    for i in range(conv.weight.shape[0]):
        conv.weight[i, i, 0:2, 0:2] = 0.25


def _resblock_identity(b):
    _zero(b.conv2)
    if hasattr(b, "nin_shortcut"):
        _copy_1x1(b.nin_shortcut)


def _norm_out(gn, n_triples):
    torch.nn.init.zeros_(gn.weight)
    torch.nn.init.zeros_(gn.bias)
    std = math.sqrt(2 * K * K / 9)
    for g in range(n_triples):
        gn.weight[3 * g] = std
        gn.bias[3 * g] = K / 3 + SHIFT


def _triples_in(conv, n_in):
    """conv (3x3) from n_in channels to triples (x, -x, K)."""
    _zero(conv)
    for c in range(n_in):
        conv.weight[3 * c, c, 1, 1] = 1.0
        conv.weight[3 * c + 1, c, 1, 1] = -1.0
        conv.bias[3 * c + 2] = K


def _pick_out(conv, n_out):
    _zero(conv)
    for c in range(n_out):
        conv.weight[c, 3 * c, 1, 1] = 1.0
        conv.bias[c] = -SHIFT


@torch.no_grad()
def identity_init(vae):
    enc, dec = vae.encoder, vae.decoder
    _triples_in(enc.conv_in, 3)
    for lvl in enc.down:
        for b in lvl.block:
            _resblock_identity(b)
        if hasattr(lvl, "downsample"):
            _avg_down(lvl.downsample.conv)
    for b in (enc.mid.block_1, enc.mid.block_2, dec.mid.block_1, dec.mid.block_2):
        _resblock_identity(b)
    _zero(enc.mid.attn_1.proj_out)
    _zero(dec.mid.attn_1.proj_out)
    _norm_out(enc.norm_out, 3)
    _pick_out(enc.conv_out, 3)  # mean channels 0..2 = RGB, channel 3 and logvar start at 0
    _copy_1x1(vae.quant_conv)
    vae.quant_conv.bias[vae.quant_conv.weight.shape[0] // 2:] = -8.0  # posterior std e^-4
    _copy_1x1(vae.post_quant_conv)
    _triples_in(dec.conv_in, 4)
    for lvl in dec.up:
        for b in lvl.block:
            _resblock_identity(b)
        if hasattr(lvl, "upsample"):
            _identity_3x3(lvl.upsample.conv)
    _norm_out(dec.norm_out, 3)
    _pick_out(dec.conv_out, 3)
