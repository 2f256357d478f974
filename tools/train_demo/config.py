"""The demo model's architecture: written into the checkpoint as fmimage.config.

Why these widths: GroupNorm(32, C) normalises every group of C/32 channels per
image. With one channel per group (C = 32) a flat-coloured region loses its
absolute colour (only its sign against the other regions survives), and the
VAE cannot reconstruct flat scenes. Three channels per group keep one
shift- and scale-invariant number per group, so the VAE's full-resolution
level and its last encoder level are 96 wide (ch 32 x ch_mult 3), its middle
level 32 wide to save time. The U-Net's outer level is 64 wide for the same
reason (its `out` norm), the inner ones 96. Text width 32 and these widths
keep the F16 file under 16 MB (the 49408-row token embedding alone is 3.2 MB).
"""

UNET = {"in_channels": 4, "out_channels": 4, "model_channels": 32, "channel_mult": [2, 3, 3],
        "num_res_blocks": 1, "attention_resolutions": [2, 4], "transformer_depth": [1, 1, 1],
        "num_heads": 2, "num_head_channels": -1, "context_dim": 32, "use_linear_in_transformer": False,
        "use_spatial_transformer": True, "legacy": False, "image_size": 16, "use_checkpoint": False}
VAE = {"double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
       "ch_mult": [3, 1, 3], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0, "embed_dim": 4,
       "scale_factor": 0.18215}
TEXT = {"kind": "clip", "width": 32, "layers": 3, "heads": 2, "vocab_size": 49408, "max_length": 77,
        "act": "quick_gelu", "pad_token": 49407, "intermediate_size": 128}
SCHEDULE = {"linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000}
DEFAULTS = {"width": 64, "height": 64, "steps": 20, "cfg": 5.0, "sampler": "dpmpp_2m", "scheduler": "karras"}

CONFIG = {"family": "sd1", "prediction": "eps", "unet": UNET, "vae": VAE, "text": TEXT, "schedule": SCHEDULE}
