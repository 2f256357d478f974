#!/usr/bin/python3
"""Reference data for LoRA / LyCORIS merging (issue 16): random small
adapters of every format for the tiny golden checkpoints, and the weights
A1111's own Lora extension makes of them.

What it runs: AUTOMATIC1111/stable-diffusion-webui extensions-builtin/Lora
(v1.10 line: network.py with DoRA's apply_weight_decompose, network_lora.py,
network_hada.py, network_ia3.py, network_lokr.py, network_full.py,
network_norm.py, network_glora.py, network_oft.py (kohya oft_blocks and
LyCORIS oft_diag; needs einops), lyco_helpers.py, and networks.py's
convert_diffusers_name_to_compvis), imported from a directory
given as A1111_LORA (those files as upstream has them, plus stub packages
for the few `modules.*` names they import at load time: sd_models, hashes,
shared, cache, errors, devices (cpu, float32), models.sd3.mmdit.QkvLinear,
models.flux.modules.layers.QkvLinear). The glue is A1111's load_network and
network_apply_weights, followed step by step here: key -> module name
(partition at the first '.'), convert_diffusers_name_to_compvis, the
network_layer_mapping lookup (names of the checkpoint's modules with '.' as
'_'), the re_x_proj and ldm-name fallbacks, module type by create_module in
A1111's order, then per network in prompt order weight += calc_updown(weight)
(MultiheadAttention: q/k/v on the chunks of in_proj_weight, out on out_proj).
Everything is float32 (the checkpoint's F16 tensors widened first), so the
result is what merging into an F32 checkpoint gives.

PEFT files (unet.* / text_encoder.* with lora_A/lora_B) are named the way
diffusers' kohya converter names them (lora_unet_ + the path with '.' as
'_'; text_encoder -> lora_te_ (SDXL: lora_te1_), text_encoder_2 -> lora_te2_)
before the same lookup: A1111 itself reads lora_A/lora_B parts
(ModuleTypeLora) but not those module names for SD 1.x/SDXL.

Writes tests/data/lora/*.safetensors (the adapters) and
tests/data/lora-ref.safetensors ("CASE/TENSOR": every tensor the case's
merge changes, float32; metadata "hash/NAME": A1111's 12-digit short hash
of each adapter, the sha256 of its bytes after the header).

Re-run: A1111_LORA=/tmp/a1111 /usr/bin/python3 tools/ref/lora_refs.py
(deterministic: torch.manual_seed per adapter).
"""
import hashlib
import os
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.environ.get("A1111_LORA", "/tmp/a1111"))
import network  # noqa: E402
import network_full  # noqa: E402
import network_glora  # noqa: E402
import network_hada  # noqa: E402
import network_ia3  # noqa: E402
import network_lokr  # noqa: E402
import network_lora  # noqa: E402
import network_norm  # noqa: E402
import network_oft  # noqa: E402
import networks_convert  # noqa: E402

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DATA = os.path.join(ROOT, "tests", "data")
MODULE_TYPES = [network_lora.ModuleTypeLora(), network_hada.ModuleTypeHada(), network_ia3.ModuleTypeIa3(),
                network_lokr.ModuleTypeLokr(), network_full.ModuleTypeFull(), network_norm.ModuleTypeNorm(),
                network_glora.ModuleTypeGLora(), network_oft.ModuleTypeOFT()]  # networks.py's module_types


def layer_mapping(sd, sdxl):
    """A1111's network_layer_mapping: module path with '.' as '_' -> checkpoint weight name."""
    out = {}
    roots = [("model.diffusion_model.", "diffusion_model.")]
    roots += [("conditioner.embedders.0.", "0."), ("conditioner.embedders.1.", "1.")] if sdxl else [("cond_stage_model.", "")]
    for k in sd:
        for ck, net in roots:
            if not k.startswith(ck):
                continue
            if k.endswith(".in_proj_weight"):
                out[(net + k[len(ck):-len(".in_proj_weight")]).replace(".", "_")] = ("mha", k)
            elif k.endswith(".weight") and sd[k].ndim in (1, 2, 4):  # 1: LayerNorm / GroupNorm
                out[(net + k[len(ck):-len(".weight")]).replace(".", "_")] = ("plain", k)
    return out


# diffusers' older names of a LoRA's factors (LoRACompatibleLinear/Conv's
# lora.down/up, the text encoder's PatchedLoraProjection lora_linear_layer),
# as diffusers' convert_state_dict_to_kohya renames them.
OLD_DIFFUSERS_PARTS = {"lora.down.weight": "lora_down.weight", "lora.up.weight": "lora_up.weight",
                       "lora_linear_layer.down.weight": "lora_down.weight",
                       "lora_linear_layer.up.weight": "lora_up.weight"}


def peft_to_kohya(key, sdxl):
    for peft, sd_name, xl_name in (("unet.", "lora_unet_", "lora_unet_"), ("text_encoder.", "lora_te_", "lora_te1_"),
                                   ("text_encoder_2.", "lora_te2_", "lora_te2_")):
        if key.startswith(peft):
            for part in ("lora_A.weight", "lora_B.weight", "alpha", *OLD_DIFFUSERS_PARTS):
                if key.endswith("." + part):
                    mod = key[len(peft):-len(part) - 1].replace(".", "_")
                    return (xl_name if sdxl else sd_name) + mod + "." + OLD_DIFFUSERS_PARTS.get(part, part)
    return key


def lookup(key, mapping, is_sd2):
    """load_network's lookups: (sd_key, kind, checkpoint weight name) or None."""
    k = networks_convert.convert_diffusers_name_to_compvis(key, is_sd2)
    hit = mapping.get(k)
    if hit is None:
        m = networks_convert.re_x_proj.match(k)
        if m and m.group(1) in mapping:
            hit = mapping[m.group(1)]
    if hit is None and "lora_unet" in key:
        k = key.replace("lora_unet", "diffusion_model")
        hit = mapping.get(k)
    elif hit is None and "lora_te1_text_model" in key:
        k = key.replace("lora_te1_text_model", "0_transformer_text_model")
        hit = mapping.get(k)
        if hit is None:
            k = key.replace("lora_te1_text_model", "transformer_text_model")
            hit = mapping.get(k)
    return (k,) + hit if hit else None


def torch_module(w):
    if w.ndim == 1:  # a norm: network_norm.py needs only its weight
        c = torch.nn.LayerNorm(w.shape[0])
    elif w.ndim == 4:
        c = torch.nn.Conv2d(w.shape[1], w.shape[0], tuple(w.shape[2:]), padding=w.shape[2] // 2, bias=False)
    else:
        c = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        c.weight.copy_(w)
    return c


def merge(sd, sdxl, adapters):
    """adapters: [(file tensors, te, unet)] in prompt order -> {name: merged fp32}."""
    mapping = layer_mapping(sd, sdxl)
    is_sd2 = "model_transformer_resblocks_0_attn" in mapping
    cur = {}

    def weight(name):
        if name not in cur:
            cur[name] = sd[name].float().clone()
        return cur[name]

    for tensors, te, unet in adapters:
        net = network.Network("n", None)
        net.te_multiplier, net.unet_multiplier = te, unet
        matched = {}
        for key, w in tensors.items():
            key = peft_to_kohya(key, sdxl)
            mod, _, part = key.partition(".")
            hit = lookup(mod, mapping, is_sd2)
            if hit is None:
                continue
            sd_key, kind, wname = hit
            matched.setdefault(sd_key, (kind, wname, {}))[2][part] = w.float() if part.startswith("lora_") else w
        mods = {}
        for sd_key, (kind, wname, w) in matched.items():
            W = weight(wname)
            if kind == "mha":
                n = W.shape[0] // 3
                sdm = torch.nn.Linear(W.shape[1], n, bias=False)
            else:
                sdm = torch_module(W)
            nw = network.NetworkWeights(network_key=sd_key, sd_key=sd_key, w=w, sd_module=sdm)
            for t in MODULE_TYPES:
                m = t.create_module(net, nw)
                if m is not None:
                    mods[sd_key] = (kind, wname, m)
                    break
        with torch.no_grad():
            mhas = {}
            for sd_key, (kind, wname, m) in mods.items():
                if kind == "mha":
                    mhas.setdefault(wname, {})[sd_key[-6]] = m
                    continue
                if sd_key.endswith("_out_proj") and mapping.get(sd_key[:-9], ("",))[0] == "mha":
                    mhas.setdefault(mapping[sd_key[:-9]][1], {})["o"] = (wname, m)
                    continue
                W = weight(wname)
                updown, ex_bias = m.calc_updown(W)
                cur[wname] = W + updown
                if ex_bias is not None:
                    bname = wname[:-len("weight")] + "bias"
                    cur[bname] = weight(bname) + ex_bias
            for wname, parts in mhas.items():  # network_apply_weights' MultiheadAttention branch
                if not all(x in parts for x in "qkvo"):
                    continue
                W = weight(wname)
                qw, kw, vw = W.chunk(3, 0)
                ups = [parts[x].calc_updown(c)[0] for x, c in zip("qkv", (qw, kw, vw))]
                cur[wname] = W + torch.vstack(ups)
                oname, om = parts["o"]
                O = weight(oname)
                cur[oname] = O + om.calc_updown(O)[0]
    return {k: v.contiguous() for k, v in cur.items() if not torch.equal(v, sd[k].float())}


def rnd(*shape, s=0.1):
    return torch.randn(*shape) * s


def lora(up_out, down_in, r, alpha=None, conv=None, mid=False):
    """kohya LoRA/LoCon factors: conv = kernel size of the layer (None: linear)."""
    d = {}
    if conv is None:
        d["lora_down.weight"], d["lora_up.weight"] = rnd(r, down_in), rnd(up_out, r)
    elif mid:
        d["lora_down.weight"], d["lora_up.weight"] = rnd(r, down_in, 1, 1), rnd(up_out, r, 1, 1)
        d["lora_mid.weight"] = rnd(r, r, conv, conv)
    else:
        d["lora_down.weight"], d["lora_up.weight"] = rnd(r, down_in, conv, conv), rnd(up_out, r, 1, 1)
    if alpha is not None:
        d["alpha"] = torch.tensor(float(alpha))
    return d


def flat(modules):
    return {f"{m}.{p}": t.contiguous() for m, parts in modules.items() for p, t in parts.items()}


def sd1_adapters():
    out = {}
    torch.manual_seed(1601)
    out["sd1_locon"] = flat({
        "lora_te_text_model_encoder_layers_0_self_attn_q_proj": lora(8, 8, 4, alpha=2),
        "lora_te_text_model_encoder_layers_0_mlp_fc1": lora(32, 8, 2, alpha=1),
        "lora_unet_input_blocks_1_1_proj_in": lora(32, 32, 4, alpha=4),  # linear factors on a 1x1 conv
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q": lora(32, 32, 8, alpha=4),
        "lora_unet_input_blocks_1_0_in_layers_2": lora(32, 32, 4, alpha=2, conv=3),  # LoCon 3x3
        "lora_unet_mid_block_resnets_0_conv1": lora(64, 32 * 2, 4, conv=3, mid=True),  # CP (diffusers name)
        "lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k": lora(64, 8, 4, alpha=8),
        "lora_unet_not_a_layer_of_this_model": lora(4, 4, 2),
    })
    torch.manual_seed(1602)
    out["sd1_loha"] = flat({
        "lora_te_text_model_encoder_layers_0_self_attn_v_proj": {
            "hada_w1_a": rnd(8, 4), "hada_w1_b": rnd(4, 8), "hada_w2_a": rnd(8, 4), "hada_w2_b": rnd(4, 8),
            "alpha": torch.tensor(2.0)},
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_k": {
            "hada_w1_a": rnd(32, 4, s=0.5), "hada_w1_b": rnd(4, 32, s=0.5), "hada_w2_a": rnd(32, 4, s=0.5),
            "hada_w2_b": rnd(4, 32, s=0.5), "alpha": torch.tensor(4.0)},
        "lora_unet_input_blocks_1_0_in_layers_2": {  # Tucker
            "hada_w1_a": rnd(4, 32, s=0.5), "hada_w1_b": rnd(4, 32, s=0.5), "hada_t1": rnd(4, 4, 3, 3, s=0.5),
            "hada_w2_a": rnd(4, 32, s=0.5), "hada_w2_b": rnd(4, 32, s=0.5), "hada_t2": rnd(4, 4, 3, 3, s=0.5),
            "alpha": torch.tensor(2.0)},
    })
    torch.manual_seed(1603)
    out["sd1_lokr"] = flat({
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_v": {  # factorised w1 and w2
            "lokr_w1_a": rnd(4, 2), "lokr_w1_b": rnd(2, 4), "lokr_w2_a": rnd(8, 2), "lokr_w2_b": rnd(2, 8),
            "alpha": torch.tensor(1.0)},
        "lora_unet_input_blocks_1_0_in_layers_2": {"lokr_w1": rnd(4, 4), "lokr_w2": rnd(8, 8, 3, 3)},
        "lora_unet_output_blocks_1_0_in_layers_2": {  # t2 (CP) on a 3x3 conv
            "lokr_w1": rnd(4, 4), "lokr_t2": rnd(2, 2, 3, 3), "lokr_w2_a": rnd(2, 16), "lokr_w2_b": rnd(2, 24),
            "alpha": torch.tensor(1.0)},
        "lora_te_text_model_encoder_layers_0_self_attn_out_proj": {"lokr_w1": rnd(2, 2), "lokr_w2": rnd(4, 4)},
    })
    torch.manual_seed(1604)
    out["sd1_full"] = flat({
        "lora_unet_input_blocks_1_1_proj_out": {"diff": rnd(32, 32, 1, 1, s=0.01)},
        "lora_te_text_model_encoder_layers_0_mlp_fc2": {"diff": rnd(8, 32, s=0.01)},
    })
    torch.manual_seed(1605)
    out["sd1_dora"] = flat({
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_out_0": dict(
            lora(32, 32, 4, alpha=2), dora_scale=torch.rand(1, 32) + 0.5),
        "lora_unet_input_blocks_1_0_in_layers_2": dict(lora(32, 32, 4, alpha=4, conv=3),
                                                       dora_scale=torch.rand(1, 32, 1, 1) + 0.5),
    })
    torch.manual_seed(1606)
    peft = {}
    for mod, o, i in (("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_v", 32, 8),
                      ("unet.mid_block.attentions.0.transformer_blocks.0.ff.net.2", 64, 256),
                      ("text_encoder.text_model.encoder.layers.0.self_attn.k_proj", 8, 8)):
        peft[mod + ".lora_A.weight"], peft[mod + ".lora_B.weight"] = rnd(4, i), rnd(o, 4)
    out["sd1_peft"] = peft
    return out


def lycoris_adapters():
    """IA3, OFT (kohya and LyCORIS), GLoRA, norm: the module types A1111 has beside LoRA/LoHa/LoKr/full."""
    out = {}
    torch.manual_seed(1621)
    out["sd1_ia3"] = flat({
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q": {"weight": rnd(32, s=0.3), "on_input": torch.tensor(False)},
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k": {"weight": rnd(32, s=0.3), "on_input": torch.tensor(False)},
        "lora_unet_input_blocks_1_1_transformer_blocks_0_ff_net_2": {"weight": rnd(1, 128, s=0.3), "on_input": torch.tensor(True)},
        "lora_te_text_model_encoder_layers_0_mlp_fc1": {"weight": rnd(32, s=0.3), "on_input": torch.tensor(False),
                                                        "scale": torch.tensor(0.5)},
    })
    torch.manual_seed(1622)
    out["sd1_oft"] = flat({
        # kohya: ||Q|| clamped to alpha * rows (0.032 here), and not (32)
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q": {"oft_blocks": rnd(4, 8, 8),
                                                                       "alpha": torch.tensor(1e-3)},
        "lora_unet_input_blocks_1_0_in_layers_2": {"oft_blocks": rnd(4, 8, 8, s=0.05), "alpha": torch.tensor(1.0)},
        # LyCORIS: R itself, blocks as factorization(rows, n) gives them
        "lora_unet_input_blocks_1_1_proj_out": {"oft_diag": torch.eye(4).repeat(8, 1, 1) + rnd(8, 4, 4, s=0.05)},
        "lora_te_text_model_encoder_layers_0_self_attn_k_proj": {
            "oft_diag": torch.eye(2).repeat(4, 1, 1) + rnd(4, 2, 2, s=0.05), "alpha": torch.tensor(3.0)},
    })
    torch.manual_seed(1623)
    out["sd1_glora"] = flat({
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_v": {
            "a1.weight": rnd(4, 32), "a2.weight": rnd(32, 4), "b1.weight": rnd(4, 32), "b2.weight": rnd(32, 4),
            "alpha": torch.tensor(4.0)},
        "lora_te_text_model_encoder_layers_0_mlp_fc2": {
            "a1.weight": rnd(2, 32), "a2.weight": rnd(32, 2), "b1.weight": rnd(2, 32), "b2.weight": rnd(8, 2),
            "alpha": torch.tensor(1.0)},
    })
    torch.manual_seed(1624)
    out["sd1_norm"] = flat({
        "lora_unet_input_blocks_1_1_norm": {"w_norm": rnd(32), "b_norm": rnd(32)},  # GroupNorm
        "lora_unet_down_blocks_0_resnets_0_norm1": {"w_norm": rnd(32), "b_norm": rnd(32)},  # -> in_layers_0
        "lora_te_text_model_encoder_layers_0_layer_norm1": {"w_norm": rnd(8), "b_norm": rnd(8)},  # LayerNorm
    })
    return out


def sdxl_adapters():
    torch.manual_seed(1611)
    mods = {
        "lora_te1_text_model_encoder_layers_0_self_attn_q_proj": lora(32, 32, 4, alpha=2),
        "lora_te1_text_model_encoder_layers_1_mlp_fc2": lora(32, 128, 4, alpha=2),
        "lora_unet_input_blocks_3_1_transformer_blocks_0_attn1_to_q": lora(64, 64, 8, alpha=4),
        "lora_unet_input_blocks_1_0_in_layers_2": lora(32, 32, 4, alpha=2, conv=3),
        "lora_unet_output_blocks_0_1_proj_in": lora(64, 64, 4, alpha=4),
    }
    for p in ("q_proj", "k_proj", "v_proj", "out_proj"):  # the fused attention: all four, as A1111 needs
        mods["lora_te2_text_model_encoder_layers_0_self_attn_" + p] = lora(32, 32, 4, alpha=2)
    mods["lora_te2_text_model_encoder_layers_1_mlp_fc1"] = lora(128, 32, 4, alpha=2)
    mods["lora_te2_text_model_encoder_layers_1_self_attn_q_proj"] = lora(32, 32, 4, alpha=2)  # alone: not applied
    return {"sdxl_lora": flat(mods)}


def lora_on(base, weight, r, alpha, s=0.1):
    """LoRA factors shaped for the checkpoint tensor weight (a 3x3 conv gets LoCon's)."""
    w = base[weight]
    down_in = w.shape[1] * (w.shape[2] * w.shape[3] if w.ndim == 4 else 1)
    d = {"lora_down.weight": rnd(r, down_in, s=s), "lora_up.weight": rnd(w.shape[0], r, s=s)}
    if w.ndim == 4:
        d["lora_down.weight"] = d["lora_down.weight"].reshape(r, *w.shape[1:])
        d["lora_up.weight"] = d["lora_up.weight"].reshape(w.shape[0], r, 1, 1)
    d["alpha"] = torch.tensor(float(alpha))
    return d


# LCM-LoRA's target modules (diffusers examples/consistency_distillation,
# train_lcm_distill_lora_sd*.py): to_q, to_k, to_v, to_out.0, proj_in,
# proj_out, ff.net.0.proj, ff.net.2, conv1, conv2, conv_shortcut,
# downsamplers.0.conv, upsamplers.0.conv, time_emb_proj; published in
# kohya's spelling of the diffusers module names (lora_unet_down_blocks_...).
ATTN = [("proj_in", "proj_in"), ("proj_out", "proj_out")] + [
    (f"transformer_blocks_{{t}}_{a}_{x}", f"transformer_blocks.{{t}}.{a}.{y}")
    for a in ("attn1", "attn2") for x, y in (("to_q", "to_q"), ("to_k", "to_k"), ("to_v", "to_v"),
                                             ("to_out_0", "to_out.0"))] + [
    ("transformer_blocks_{t}_ff_net_0_proj", "transformer_blocks.{t}.ff.net.0.proj"),
    ("transformer_blocks_{t}_ff_net_2", "transformer_blocks.{t}.ff.net.2")]
RESNET = [("conv1", "in_layers.2"), ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"),
          ("conv_shortcut", "skip_connection")]


def lcm_modules(base, blocks, tblocks):
    """(kohya-diffusers module name, checkpoint weight) for the LCM target
    modules of the given diffusers blocks {diffusers prefix: ldm prefix}."""
    out = {}
    for dif, ldm in blocks.items():
        for t in range(tblocks):
            for dn, ln in ATTN if "attentions" in dif else RESNET:
                w = f"model.diffusion_model.{ldm}.{ln.format(t=t)}.weight"
                if w in base:  # (a resnet without conv_shortcut, a level with fewer transformer blocks)
                    out[f"lora_unet_{dif}_{dn.format(t=t)}"] = w
    return out


def published_adapters(bases):
    """The spellings LCM-LoRA / SDXL-Lightning / diffusers files come in, on
    the tiny checkpoints. Only blocks where A1111's fixed diffusers->ldm
    arithmetic (3 layers a U-Net level, SD's layers_per_block=2) also holds
    for the tiny layouts (1 layer a level): level 0, the middle, up level 0;
    the full-size key lists are tests/test_lora.c's job."""
    out = {}
    sd1, xl = bases["sd1"], bases["sdxl"]
    torch.manual_seed(1621)
    mods = lcm_modules(sd1, {"down_blocks_0_attentions_0": "input_blocks.1.1", "down_blocks_0_resnets_0": "input_blocks.1.0",
                             "mid_block_attentions_0": "middle_block.1", "mid_block_resnets_0": "middle_block.0",
                             "mid_block_resnets_1": "middle_block.2", "up_blocks_0_resnets_0": "output_blocks.0.0",
                             "up_blocks_0_resnets_1": "output_blocks.1.0"}, 1)
    # small factors, as trained LoRAs have: a dense update of 41 tensors
    lcm = {m: lora_on(sd1, w, 4, 4 if i % 2 else 2, s=0.03) for i, (m, w) in enumerate(mods.items())}
    # A1111 puts the tiny model's level-0 downsampler at input_blocks_3_0_op (SD's place): unmapped, as there.
    lcm["lora_unet_down_blocks_0_downsamplers_0_conv"] = lora_on(sd1, "model.diffusion_model.input_blocks.2.0.op.weight", 4, 4)
    out["sd1_lcm"] = flat(lcm)
    torch.manual_seed(1622)
    old = {}
    for mod, w in (("unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "input_blocks.1.1.transformer_blocks.0.attn1.to_q"),
                   ("unet.mid_block.resnets.0.conv1", "middle_block.0.in_layers.2"),
                   ("unet.up_blocks.0.resnets.1.time_emb_proj", "output_blocks.1.0.emb_layers.1")):
        f = lora_on(sd1, "model.diffusion_model." + w + ".weight", 4, 2)
        old[mod + ".lora.down.weight"], old[mod + ".lora.up.weight"] = f["lora_down.weight"], f["lora_up.weight"]
    old["unet.mid_block.resnets.0.conv1.alpha"] = torch.tensor(2.0)  # diffusers' network_alphas spelling
    te = "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
    f = lora_on(sd1, te, 2, 2)
    old["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.down.weight"] = f["lora_down.weight"]
    old["text_encoder.text_model.encoder.layers.0.self_attn.q_proj.lora_linear_layer.up.weight"] = f["lora_up.weight"]
    out["sd1_diffusers_old"] = {k: v.contiguous() for k, v in old.items()}
    torch.manual_seed(1623)
    mods = lcm_modules(xl, {"down_blocks_0_resnets_0": "input_blocks.1.0", "mid_block_attentions_0": "middle_block.1",
                            "mid_block_resnets_1": "middle_block.2", "up_blocks_0_attentions_1": "output_blocks.1.1",
                            "up_blocks_0_resnets_0": "output_blocks.0.0"}, 2)
    lcm = {m: lora_on(xl, w, 4, 4, s=0.03) for m, w in mods.items()}
    # A1111's upsampler arithmetic puts up level 0's at output_blocks_2_1_conv, SD 1.x's place (its
    # level 0 has no attentions); in SDXL that is an attention: unmapped, as in A1111 (ComfyUI maps it).
    lcm["lora_unet_up_blocks_0_upsamplers_0_conv"] = lora_on(xl, "model.diffusion_model.output_blocks.1.2.conv.weight", 4, 4)
    out["sdxl_lcm"] = flat(lcm)
    return out


def addnet_hash(path):
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        f.seek(8 + n)
        return hashlib.sha256(f.read()).hexdigest()[:12]


CASES = [  # (case, base, [(adapter, te, unet)])
    ("sd1_locon", "sd1", [("sd1_locon", 0.8, 0.8)]),
    ("sd1_loha", "sd1", [("sd1_loha", 0.5, 1.0)]),
    ("sd1_lokr", "sd1", [("sd1_lokr", 1.0, 1.0)]),
    ("sd1_full", "sd1", [("sd1_full", 0.7, 0.7)]),
    ("sd1_dora", "sd1", [("sd1_dora", 0.9, 0.9)]),
    ("sd1_peft", "sd1", [("sd1_peft", 1.0, 1.0)]),
    ("sd1_stack", "sd1", [("sd1_locon", 0.8, 0.8), ("sd1_loha", 0.5, 1.0)]),
    ("sdxl_lora", "sdxl", [("sdxl_lora", 0.8, 0.8)]),
    ("sd1_ia3", "sd1", [("sd1_ia3", 0.8, 0.6)]),
    ("sd1_oft", "sd1", [("sd1_oft", 0.7, 0.9)]),
    ("sd1_glora", "sd1", [("sd1_glora", 1.0, 0.8)]),
    ("sd1_norm", "sd1", [("sd1_norm", 0.5, 1.0)]),
    ("sd1_lyco_stack", "sd1", [("sd1_oft", 0.7, 0.9), ("sd1_ia3", 0.8, 0.6)]),  # IA3 scales OFT's to_q
    ("sd1_lcm", "sd1", [("sd1_lcm", 1.0, 1.0)]),
    ("sd1_diffusers_old", "sd1", [("sd1_diffusers_old", 0.9, 0.7)]),
    ("sdxl_lcm", "sdxl", [("sdxl_lcm", 1.0, 0.8)]),
]


def main():
    bases = {"sd1": load_file(os.path.join(DATA, "tiny-sd1.safetensors")),
             "sdxl": load_file(os.path.join(DATA, "tiny-sdxl.safetensors"))}
    adapters = dict(sd1_adapters(), **sdxl_adapters(), **lycoris_adapters(), **published_adapters(bases))
    os.makedirs(os.path.join(DATA, "lora"), exist_ok=True)
    meta = {}
    for name, t in adapters.items():
        path = os.path.join(DATA, "lora", name + ".safetensors")
        md = {"ss_output_name": "fox_style"} if name == "sd1_locon" else None
        if name == "sd1_locon":  # one adapter stored as F16 (A1111 widens LoRA factors to float32)
            t = {k: (v.half() if "lora_" in k else v) for k, v in t.items()}
        save_file(t, path, metadata=md)
        meta["hash/" + name] = addnet_hash(path)
    files = {n: load_file(os.path.join(DATA, "lora", n + ".safetensors")) for n in adapters}
    ref = {}
    for case, base, uses in CASES:
        merged = merge(bases[base], base == "sdxl", [(files[a], te, un) for a, te, un in uses])
        for k, v in merged.items():
            ref[case + "/" + k] = v
        print(case, len(merged), "tensors changed")
    save_file(ref, os.path.join(DATA, "lora-ref.safetensors"), metadata=meta)


if __name__ == "__main__":
    main()
