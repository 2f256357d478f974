#!/usr/bin/python3
"""A random full-size SD 1.5 diffusers folder, for a by-hand load check.

Writes ${XDG_CACHE_HOME:-~/.cache}/fmimage/bench/diffusers-sd15/ (about
2 GB, float16, never committed) with diffusers 0.27.2 / transformers 4.40.2
(pip, reference making only): UNet2DConditionModel, AutoencoderKL and
CLIPTextModel in the configs of runwayml/stable-diffusion-v1-5 (written out
here: the hub cannot be reached), default random init, the unet sharded as
save_pretrained(max_shard_size=...) does when the version supports it.
Then: build/fmimage -m DIR/ "a red fox" -W 512 -H 512 --steps 1 -o out.png

Run from the repository root: /usr/bin/python3 tools/ref/diffusers_fullsize.py
"""
import json
import os

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel

root = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "fmimage", "bench",
                    "diffusers-sd15")
os.makedirs(root, exist_ok=True)
torch.manual_seed(0)
unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8,
                            block_out_channels=(320, 640, 1280, 1280), layers_per_block=2).half()
try:
    unet.save_pretrained(os.path.join(root, "unet"), max_shard_size="1GB")
except TypeError:
    unet.save_pretrained(os.path.join(root, "unet"))
del unet
AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512,
              down_block_types=("DownEncoderBlock2D",) * 4,
              up_block_types=("UpDecoderBlock2D",) * 4).half().save_pretrained(os.path.join(root, "vae"))
CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                             num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                             projection_dim=768)).half().save_pretrained(os.path.join(root, "text_encoder"))
os.makedirs(os.path.join(root, "scheduler"), exist_ok=True)
with open(os.path.join(root, "scheduler", "scheduler_config.json"), "w") as f:
    json.dump({"_class_name": "PNDMScheduler", "beta_start": 0.00085, "beta_end": 0.012,
               "beta_schedule": "scaled_linear", "num_train_timesteps": 1000, "prediction_type": "epsilon"}, f)
with open(os.path.join(root, "model_index.json"), "w") as f:
    json.dump({"_class_name": "StableDiffusionPipeline", "unet": ["diffusers", "UNet2DConditionModel"],
               "vae": ["diffusers", "AutoencoderKL"], "text_encoder": ["transformers", "CLIPTextModel"],
               "scheduler": ["diffusers", "PNDMScheduler"]}, f)
print(root)
