#!/usr/bin/python3
"""Tiny random diffusers folders, and what diffusers' own scripts make of them.

Builds UNet2DConditionModel, AutoencoderKL, CLIPTextModel and
CLIPTextModelWithProjection with the real diffusers 0.27.2 / transformers
4.40.2 packages (pip, for reference making only; they run on Debian's torch
1.13), random seeded weights, saved with save_pretrained in float16, and a
model_index.json / scheduler_config.json as diffusers writes them. Then it
imports huggingface/diffusers' scripts/convert_diffusers_to_original_stable_diffusion.py
(SD 1.x, 2.x) and scripts/convert_diffusers_to_original_sdxl.py (SDXL) from
the fetched mirror (commit in DIFFUSERS_COMMIT) and runs their conversion
functions exactly as their __main__ does (SD 2.x: the v2.0 branch is taken
by the family, since the script's layer-22 test cannot see a 2-layer tiny
encoder). Writes:

  tests/data/diffusers/FAMILY/...        the folder (FAMILY = sd1, sd2, sdxl)
  tests/data/diffusers/FAMILY.ldm.tsv    per tensor of the converted
      checkpoint: ldm name, dtype, shape, sha256 of its bytes (the converted
      file itself is not committed: the test checks fmimage's names, shapes
      and bytes against these lines)

  tests/data/diffusers/FAMILY.cond.safetensors (--cond: from the folders as
      committed, without rewriting them) what diffusers' pipelines give the
      U-Net for the tokens of "a red fox in snow" (`tokens`, I32 [77]:
      49406 320 736 3240 530 2583 49407, then the tower's pad; pad 0 for
      OpenCLIP towers): `context` [77][D] = text_encoder(ids)[0]
      (last_hidden_state: StableDiffusionPipeline.encode_prompt, clip_skip
      None) for SD 1.x/2.x; SDXL: concat(text_encoder(ids).hidden_states[-2],
      text_encoder_2(ids2).hidden_states[-2]) and `pooled` [P] =
      text_encoder_2(ids2).text_embeds (StableDiffusionXLPipeline.encode_prompt),
      all in float32 (the fp16 weights upcast).

sd1: unet sharded in two safetensors files with an index json; sd2:
text_encoder as pytorch_model.bin (torch.save zip); sdxl: plain files.

Re-run from the repository root: /usr/bin/python3 tools/ref/diffusers_refs.py
"""
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import torch
from safetensors.torch import save_file, load_file

import diffusers
import transformers
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

MIRROR = "/work/.mirror/huggingface+diffusers/repo"
DIFFUSERS_COMMIT = "58eb52c0803ea9af3abec60841c2a093bdf1f951"
OUT = "tests/data/diffusers"


def upstream(script):
    path = f"/tmp/fmimage-{os.path.basename(script)}"
    with open(path, "wb") as f:
        f.write(subprocess.check_output(["git", "--git-dir", MIRROR, "show", f"{DIFFUSERS_COMMIT}:{script}"]))
    spec = importlib.util.spec_from_file_location(os.path.basename(script)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def randomise(model, seed):
    """Gaussian weights scaled by fan-in (the default init leaves zero convs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                base = 1.0 if "norm" in name and name.endswith("weight") else 0.0
                p.copy_(base + 0.05 * torch.randn(p.shape, generator=g))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
    return model


def clip(width, layers, act, proj=None, seed=0):
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=width, intermediate_size=4 * width,
                         num_hidden_layers=layers, num_attention_heads=2, max_position_embeddings=77,
                         hidden_act=act, projection_dim=proj or width,
                         pad_token_id=1, bos_token_id=49406, eos_token_id=49407)
    m = CLIPTextModelWithProjection(cfg) if proj else CLIPTextModel(cfg)
    return randomise(m, seed).half()


def vae(scale, seed):
    m = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 32, 32, 32),
                      layers_per_block=2, norm_num_groups=32, sample_size=64, scaling_factor=scale,
                      down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    return randomise(m, seed).half()


def scheduler(prediction):
    return {"_class_name": "PNDMScheduler", "_diffusers_version": diffusers.__version__,
            "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
            "num_train_timesteps": 1000, "prediction_type": prediction, "set_alpha_to_one": False,
            "skip_prk_steps": True, "steps_offset": 1, "clip_sample": False}


def index(pipeline, parts):
    d = {"_class_name": pipeline, "_diffusers_version": diffusers.__version__}
    libs = {"unet": ("diffusers", "UNet2DConditionModel"), "vae": ("diffusers", "AutoencoderKL"),
            "text_encoder": ("transformers", "CLIPTextModel"),
            "text_encoder_2": ("transformers", "CLIPTextModelWithProjection"),
            "tokenizer": ("transformers", "CLIPTokenizer"), "tokenizer_2": ("transformers", "CLIPTokenizer"),
            "scheduler": ("diffusers", "PNDMScheduler")}
    for p in parts:
        d[p] = list(libs[p])
    return d


def shard(folder, fname):
    """The unet's one file as two shards with a diffusers index json."""
    sd = load_file(os.path.join(folder, fname))
    names = sorted(sd)
    half = len(names) // 2
    stem = fname[:-len(".safetensors")]
    files = [f"{stem}-00001-of-00002.safetensors", f"{stem}-00002-of-00002.safetensors"]
    wmap = {}
    for i, part in enumerate((names[:half], names[half:])):
        save_file({n: sd[n] for n in part}, os.path.join(folder, files[i]), metadata={"format": "pt"})
        for n in part:
            wmap[n] = files[i]
    total = sum(t.numel() * t.element_size() for t in sd.values())
    with open(os.path.join(folder, fname + ".index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": wmap}, f, indent=2, sort_keys=True)
    os.remove(os.path.join(folder, fname))


def write_tsv(state_dict, path):
    with open(path, "w") as f:
        f.write("# ldm name\tdtype\tshape\tsha256 of the bytes (diffusers' conversion script)\n")
        for k in sorted(state_dict):
            t = state_dict[k].contiguous()
            b = t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.view(torch.int16).numpy().tobytes()
            shape = ",".join(str(s) for s in t.shape)
            f.write(f"{k}\t{str(t.dtype).replace('torch.', '')}\t[{shape}]\t{hashlib.sha256(b).hexdigest()}\n")


def state(folder, part, fname):
    p = os.path.join(folder, part, fname)
    return load_file(p) if fname.endswith(".safetensors") else torch.load(p, map_location="cpu")


def sd_family(name, pipeline_dir, unet, text, prediction, v20, bin_text=False, shard_unet=False):
    conv = upstream("scripts/convert_diffusers_to_original_stable_diffusion.py")
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    unet.save_pretrained(os.path.join(d, "unet"))
    vae(0.18215, 2).save_pretrained(os.path.join(d, "vae"))
    text.save_pretrained(os.path.join(d, "text_encoder"), safe_serialization=not bin_text)
    os.makedirs(os.path.join(d, "scheduler"))
    with open(os.path.join(d, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(scheduler(prediction), f, indent=2)
    with open(os.path.join(d, "model_index.json"), "w") as f:
        json.dump(index(pipeline_dir, ["unet", "vae", "text_encoder", "scheduler"]), f, indent=2)
    # as the script's __main__ (before any sharding: it reads the one file)
    u = {"model.diffusion_model." + k: v for k, v in conv.convert_unet_state_dict(
        state(d, "unet", "diffusion_pytorch_model.safetensors")).items()}
    va = {"first_stage_model." + k: v for k, v in conv.convert_vae_state_dict(
        state(d, "vae", "diffusion_pytorch_model.safetensors")).items()}
    t = state(d, "text_encoder", "pytorch_model.bin" if bin_text else "model.safetensors")
    if v20:
        t = {"transformer." + k: v for k, v in t.items()}
        t = {"cond_stage_model.model." + k: v for k, v in conv.convert_text_enc_state_dict_v20(t).items()}
    else:
        t = {"cond_stage_model.transformer." + k: v for k, v in conv.convert_text_enc_state_dict(t).items()}
    write_tsv({**u, **va, **t}, os.path.join(OUT, name + ".ldm.tsv"))
    if shard_unet:
        shard(os.path.join(d, "unet"), "diffusion_pytorch_model.safetensors")


def sdxl():
    conv = upstream("scripts/convert_diffusers_to_original_sdxl.py")
    d = os.path.join(OUT, "sdxl")
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    te1, te2 = clip(8, 2, "quick_gelu", seed=3), clip(8, 2, "gelu", proj=8, seed=4)
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 32, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2), attention_head_dim=(2, 2, 2), cross_attention_dim=16,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=256 * 6 + 8, norm_num_groups=32)
    randomise(unet, 5).half().save_pretrained(os.path.join(d, "unet"))
    vae(0.13025, 6).save_pretrained(os.path.join(d, "vae"))
    te1.save_pretrained(os.path.join(d, "text_encoder"))
    te2.save_pretrained(os.path.join(d, "text_encoder_2"))
    os.makedirs(os.path.join(d, "scheduler"))
    with open(os.path.join(d, "scheduler", "scheduler_config.json"), "w") as f:
        json.dump(scheduler("epsilon"), f, indent=2)
    with open(os.path.join(d, "model_index.json"), "w") as f:
        json.dump(index("StableDiffusionXLPipeline", ["unet", "vae", "text_encoder", "text_encoder_2", "scheduler"]), f,
                  indent=2)
    u = {"model.diffusion_model." + k: v for k, v in conv.convert_unet_state_dict(
        state(d, "unet", "diffusion_pytorch_model.safetensors")).items()}
    va = {"first_stage_model." + k: v for k, v in conv.convert_vae_state_dict(
        state(d, "vae", "diffusion_pytorch_model.safetensors")).items()}
    t1 = {"conditioner.embedders.0.transformer." + k: v for k, v in conv.convert_openai_text_enc_state_dict(
        state(d, "text_encoder", "model.safetensors")).items()}
    t2 = {"conditioner.embedders.1.model." + k: v for k, v in conv.convert_openclip_text_enc_state_dict(
        state(d, "text_encoder_2", "model.safetensors")).items()}
    t2["conditioner.embedders.1.model.text_projection"] = t2.pop(
        "conditioner.embedders.1.model.text_projection.weight").T.contiguous()
    write_tsv({**u, **va, **t1, **t2}, os.path.join(OUT, "sdxl.ldm.tsv"))


def main():
    assert diffusers.__version__ == "0.27.2" and transformers.__version__ == "4.40.2", (diffusers.__version__,
                                                                                          transformers.__version__)
    os.makedirs(OUT, exist_ok=True)
    # SD 1.x: the 4-level, 2-resnet layout the script hard-codes, tiny widths
    sd1_unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 32, 32, 32),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=8, attention_head_dim=2, norm_num_groups=32)
    sd_family("sd1", "StableDiffusionPipeline", randomise(sd1_unet, 1).half(), clip(8, 2, "quick_gelu", seed=0),
              "epsilon", v20=False, shard_unet=True)
    sd2_unet = UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(32, 32, 32, 32),
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=8, attention_head_dim=(2, 2, 2, 2), use_linear_projection=True, norm_num_groups=32)
    sd_family("sd2", "StableDiffusionPipeline", randomise(sd2_unet, 7).half(), clip(8, 2, "gelu", seed=8),
              "v_prediction", v20=True, bin_text=True)
    sdxl()


def cond():
    ids = [49406, 320, 736, 3240, 530, 2583, 49407]

    def tokens(pad):
        return torch.tensor([ids + [pad] * (77 - len(ids))])

    for fam in ("sd1", "sd2", "sdxl"):
        d = os.path.join(OUT, fam)
        with torch.no_grad():
            if fam == "sdxl":
                te1 = CLIPTextModel.from_pretrained(os.path.join(d, "text_encoder")).float()
                te2 = CLIPTextModelWithProjection.from_pretrained(os.path.join(d, "text_encoder_2")).float()
                a = te1(tokens(49407), output_hidden_states=True).hidden_states[-2]
                o2 = te2(tokens(0), output_hidden_states=True)
                out = {"tokens": tokens(49407)[0].int(), "tokens2": tokens(0)[0].int(),
                       "context": torch.cat([a, o2.hidden_states[-2]], dim=-1)[0].contiguous(),
                       "pooled": o2.text_embeds[0].contiguous()}
            else:
                te = CLIPTextModel.from_pretrained(os.path.join(d, "text_encoder")).float()
                pad = 0 if fam == "sd2" else 49407
                out = {"tokens": tokens(pad)[0].int(), "context": te(tokens(pad))[0][0].contiguous()}
        save_file(out, os.path.join(OUT, fam + ".cond.safetensors"))


if __name__ == "__main__":
    if sys.argv[1:] == ["--cond"]:
        cond()
    else:
        main()
        cond()
