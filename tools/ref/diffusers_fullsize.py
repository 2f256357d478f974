#!/usr/bin/python3
"""Random full-size diffusers folders of SD 1.5, SD 2.1 and SDXL base, and the
single-file checkpoints diffusers' own conversion scripts make of them.

  /usr/bin/python3 tools/ref/diffusers_fullsize.py FAMILY...   (sd15 sd21 sdxl; run from the repository root)

For each FAMILY, into ${XDG_CACHE_HOME:-~/.cache}/fmimage/bench/ (never committed):

  diffusers-FAMILY/   the folder as the hub lays it out: model_index.json, unet/, vae/, text_encoder/
      (sdxl: text_encoder_2/ with projection), tokenizer/ (tokenizer_2/), scheduler/, each part saved by
      save_pretrained of diffusers 0.27.2 / transformers 4.40.2 (pip, reference making only, on Debian's
      torch) in float16 with the configs of runwayml/stable-diffusion-v1-5, stabilityai/stable-diffusion-2-1
      and stabilityai/stable-diffusion-xl-base-1.0 (written out here from their config.json: the hub cannot
      be reached), diffusers' default random init. Layout variants: sd15 plain files; sd21 the `fp16`
      variant names (diffusion_pytorch_model.fp16.safetensors, model.fp16.safetensors) as that repository
      ships them; sdxl the unet in 3 shards with diffusers' index json (as save_pretrained(max_shard_size)
      of later diffusers writes it) and text_encoder_2 sharded by transformers' save_pretrained.
  diffusers-FAMILY.ldm.safetensors and .ckpt   the state dict of
      huggingface/diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py (SD 1.x with
      convert_text_enc_state_dict, SD 2.x with convert_text_enc_state_dict_v20) or
      scripts/convert_diffusers_to_original_sdxl.py, run exactly as their __main__ does (shards merged
      first: the scripts read one file), saved as the script saves it (--use_safetensors, or torch.save of
      {"state_dict": ...} for the .ckpt).

tools/check_fullsize.sh folders then checks fmimage against these files.
"""
import gzip
import importlib.util
import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file

import diffusers
import transformers
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

MIRROR = "/work/.mirror/huggingface+diffusers/repo"
DIFFUSERS_COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"
ROOT = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fmimage", "bench")


def upstream(script):
    path = f"/tmp/fmimage-{os.path.basename(script)}"
    with open(path, "wb") as f:
        f.write(subprocess.check_output(["git", "--git-dir", MIRROR, "show", f"{DIFFUSERS_COMMIT}:{script}"]))
    spec = importlib.util.spec_from_file_location(os.path.basename(script)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- the published configs ----

def unet_config(family):
    common = dict(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, norm_num_groups=32,
                  flip_sin_to_cos=True, freq_shift=0, act_fn="silu", downsample_padding=1)
    if family == "sd15":
        return dict(common, block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                    attention_head_dim=8,
                    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    if family == "sd21":
        return dict(common, sample_size=96, block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=1024,
                    attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, upcast_attention=True,
                    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    return dict(common, sample_size=128, block_out_channels=(320, 640, 1280), cross_attention_dim=2048,
                attention_head_dim=(5, 10, 20), transformer_layers_per_block=(1, 2, 10), use_linear_projection=True,
                addition_embed_type="text_time", addition_time_embed_dim=256,
                projection_class_embeddings_input_dim=2816,
                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"))


def vae(family):
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                         layers_per_block=2, norm_num_groups=32, act_fn="silu",
                         sample_size={"sd15": 512, "sd21": 768, "sdxl": 1024}[family],
                         scaling_factor=0.13025 if family == "sdxl" else 0.18215,
                         down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def clip_l():  # openai/clip-vit-large-patch14's text model (SD 1.x, SDXL text_encoder)
    return CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                        hidden_act="quick_gelu", projection_dim=768,
                                        pad_token_id=1, bos_token_id=0, eos_token_id=2))


def open_clip_h():  # SD 2.x's text_encoder: OpenCLIP ViT-H/14 without its last layer
    return CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096,
                                        num_hidden_layers=23, num_attention_heads=16, max_position_embeddings=77,
                                        hidden_act="gelu", projection_dim=512,
                                        pad_token_id=1, bos_token_id=0, eos_token_id=2))


def open_clip_bigg():  # SDXL's text_encoder_2: OpenCLIP ViT-bigG/14 with its projection
    return CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=49408, hidden_size=1280, intermediate_size=5120,
                                                      num_hidden_layers=32, num_attention_heads=20,
                                                      max_position_embeddings=77, hidden_act="gelu",
                                                      projection_dim=1280,
                                                      pad_token_id=1, bos_token_id=0, eos_token_id=2))


def scheduler(family):
    d = {"_class_name": "EulerDiscreteScheduler" if family == "sdxl" else "PNDMScheduler",
         "_diffusers_version": diffusers.__version__, "beta_start": 0.00085, "beta_end": 0.012,
         "beta_schedule": "scaled_linear", "num_train_timesteps": 1000,
         "prediction_type": "v_prediction" if family == "sd21" else "epsilon",
         "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False}
    return d


def model_index(family):
    sdxl = family == "sdxl"
    d = {"_class_name": "StableDiffusionXLPipeline" if sdxl else "StableDiffusionPipeline",
         "_diffusers_version": diffusers.__version__,
         "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
         "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
         "scheduler": ["diffusers", scheduler(family)["_class_name"]]}
    if sdxl:
        d["text_encoder_2"] = ["transformers", "CLIPTextModelWithProjection"]
        d["tokenizer_2"] = ["transformers", "CLIPTokenizer"]
    else:
        d["safety_checker"] = [None, None]
        d["feature_extractor"] = [None, None]
    return d


def bytes_to_unicode():  # CLIP's byte-level alphabet (openai/CLIP simple_tokenizer.py)
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def tokenizer(folder, pad):
    """vocab.json and merges.txt as the hub's tokenizer/ holds them, built from
    the BPE file fmimage ships (the same merges the openai tokenizer uses)."""
    with gzip.open("assets/clip/bpe_simple_vocab_16e6.txt.gz", "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1:49152 - 256 - 2 + 1]
    alphabet = bytes_to_unicode()
    vocab = alphabet + [c + "</w>" for c in alphabet] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    with open(os.path.join(folder, "special_tokens_map.json"), "w") as f:
        json.dump({"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": pad,
                   "unk_token": "<|endoftext|>"}, f)
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "do_lower_case": True,
                   "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": pad,
                   "unk_token": "<|endoftext|>"}, f)


# ---- writing ----

def shard(folder, fname, n):
    """One safetensors file as n shards with a diffusers index json."""
    sd = load_file(os.path.join(folder, fname))
    names = sorted(sd)
    stem = fname[:-len(".safetensors")]
    wmap = {}
    for i in range(n):
        part = names[i * len(names) // n:(i + 1) * len(names) // n]
        file = f"{stem}-{i + 1:05d}-of-{n:05d}.safetensors"
        save_file({k: sd[k] for k in part}, os.path.join(folder, file), metadata={"format": "pt"})
        wmap.update({k: file for k in part})
    total = sum(t.numel() * t.element_size() for t in sd.values())
    with open(os.path.join(folder, fname + ".index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wmap}, f, indent=2, sort_keys=True)
    os.remove(os.path.join(folder, fname))


def load_part(folder, stem):
    """A part's state dict as the conversion scripts load it: one file (the
    shards of an index merged)."""
    for name in (stem + ".safetensors", stem + ".fp16.safetensors"):
        p = os.path.join(folder, name)
        if os.path.exists(p):
            return load_file(p)
        if os.path.exists(p + ".index.json"):
            with open(p + ".index.json") as f:
                files = sorted(set(json.load(f)["weight_map"].values()))
            sd = {}
            for file in files:
                sd.update(load_file(os.path.join(folder, file)))
            return sd
    raise FileNotFoundError(os.path.join(folder, stem))


def save(model, folder, **kw):
    model.half().save_pretrained(folder, **kw)
    del model


def write_folder(family, d):
    torch.set_default_dtype(torch.float16)  # built in half: SDXL's U-Net in float32 alone is 10 GB
    torch.manual_seed({"sd15": 0, "sd21": 1, "sdxl": 2}[family])
    variant = {"variant": "fp16"} if family == "sd21" else {}
    save(UNet2DConditionModel(**unet_config(family)), os.path.join(d, "unet"), **variant)
    if family == "sdxl":
        shard(os.path.join(d, "unet"), "diffusion_pytorch_model.safetensors", 3)
    save(vae(family), os.path.join(d, "vae"), **variant)
    if family == "sd21":
        save(open_clip_h(), os.path.join(d, "text_encoder"), **variant)
    else:
        save(clip_l(), os.path.join(d, "text_encoder"))
    tokenizer(os.path.join(d, "tokenizer"), "!" if family == "sd21" else "<|endoftext|>")
    if family == "sdxl":
        save(open_clip_bigg(), os.path.join(d, "text_encoder_2"), max_shard_size="800MB")
        tokenizer(os.path.join(d, "tokenizer_2"), "!")
    os.makedirs(os.path.join(d, "scheduler"), exist_ok=True)
    with open(os.path.join(d, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(scheduler(family), f, indent=2)
    with open(os.path.join(d, "model_index.json"), "w") as f:
        json.dump(model_index(family), f, indent=2)


def ldm_state_dict(family, d):
    """What the conversion script's __main__ puts together."""
    if family == "sdxl":
        conv = upstream("scripts/convert_diffusers_to_original_sdxl.py")
    else:
        conv = upstream("scripts/convert_diffusers_to_original_stable_diffusion.py")
    u = {"model.diffusion_model." + k: v
         for k, v in conv.convert_unet_state_dict(load_part(os.path.join(d, "unet"), "diffusion_pytorch_model")).items()}
    va = {"first_stage_model." + k: v
          for k, v in conv.convert_vae_state_dict(load_part(os.path.join(d, "vae"), "diffusion_pytorch_model")).items()}
    t = load_part(os.path.join(d, "text_encoder"), "model")
    if family == "sdxl":
        t1 = {"conditioner.embedders.0.transformer." + k: v for k, v in conv.convert_openai_text_enc_state_dict(t).items()}
        t2 = {"conditioner.embedders.1.model." + k: v for k, v in conv.convert_openclip_text_enc_state_dict(
            load_part(os.path.join(d, "text_encoder_2"), "model")).items()}
        t2["conditioner.embedders.1.model.text_projection"] = t2.pop(
            "conditioner.embedders.1.model.text_projection.weight").T.contiguous()
        return {**u, **va, **t1, **t2}
    # the script's test: "text_model.encoder.layers.22.layer_norm2.bias" in the dict means v2.0
    if "text_model.encoder.layers.22.layer_norm2.bias" in t:
        t = {"transformer." + k: v for k, v in t.items()}
        t = {"cond_stage_model.model." + k: v for k, v in conv.convert_text_enc_state_dict_v20(t).items()}
    else:
        t = {"cond_stage_model.transformer." + k: v for k, v in conv.convert_text_enc_state_dict(t).items()}
    return {**u, **va, **t}


def main(families):
    assert diffusers.__version__ == "0.27.2" and transformers.__version__ == "4.40.2", (diffusers.__version__,
                                                                                          transformers.__version__)
    for family in families:
        assert family in ("sd15", "sd21", "sdxl"), family
        d = os.path.join(ROOT, "diffusers-" + family)
        if not os.path.exists(os.path.join(d, "model_index.json")):
            write_folder(family, d + ".tmp")
            os.rename(d + ".tmp", d)
        with torch.no_grad():
            sd = ldm_state_dict(family, d)
        sd = {k: v.contiguous() for k, v in sd.items()}
        save_file(sd, d + ".ldm.safetensors.tmp")
        os.rename(d + ".ldm.safetensors.tmp", d + ".ldm.safetensors")
        torch.save({"state_dict": sd}, d + ".ldm.ckpt.tmp")
        os.rename(d + ".ldm.ckpt.tmp", d + ".ldm.ckpt")
        del sd
        print(d)


if __name__ == "__main__":
    main(sys.argv[1:] or ["sd15", "sd21", "sdxl"])
