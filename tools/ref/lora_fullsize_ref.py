#!/usr/bin/python3
"""Full-size LoRA merge check (issue 16, make check-fullsize): a random
rank-8 kohya LoRA/LoCon (build/tools/mklora) on a random full-size
checkpoint (build/tools/mkckpt from tests/data/layouts), a few of its modules
merged by fmimage (build/tools/loramerge) and by A1111's own Lora extension
(the glue and modules tools/ref/lora_refs.py runs, from A1111_LORA, default
/tmp/a1111; see that script's header), float32; every merged tensor within
TOL (default 1e-6) of its largest absolute value.

    lora_fullsize_ref.py CKPT LORA WORKDIR [TE [UNET]]

Modules checked: the first LoRA module whose name contains each of PICK
(3x3 LoCon convs, 1x1 proj_in, attention and feed-forward linears,
time_emb_proj, and a text-encoder attention / MLP layer), written as a
subset file both merge. Prints one row per tensor (the update's and the
difference's largest value over the tensor's); exit 1 on any over TOL.
"""
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lora_refs  # noqa: E402  (imports A1111's modules)

PICK = ["in_layers_2", "skip_connection", "proj_in", "attn1_to_q", "attn2_to_k", "ff_net_0_proj", "emb_layers_1",
        "output_blocks_11_1_transformer_blocks_0_attn2_to_out_0", "middle_block_1_proj_out",
        "self_attn_q_proj", "self_attn_out_proj", "mlp_fc2", "lora_te1_", "lora_te2_",
        # SDXL's OpenCLIP: q, k, v land in thirds of one fused in_proj_weight (A1111 applies them only
        # with all four of q, k, v, out_proj there)
        "te2_text_model_encoder_layers_1_self_attn_q_proj", "te2_text_model_encoder_layers_1_self_attn_k_proj",
        "te2_text_model_encoder_layers_1_self_attn_v_proj", "te2_text_model_encoder_layers_1_self_attn_out_proj"]
TOL = float(os.environ.get("TOL", "1e-6"))


def main():
    ckpt, lora, work = sys.argv[1:4]
    te = float(sys.argv[4]) if len(sys.argv) > 4 else 1.0
    unet = float(sys.argv[5]) if len(sys.argv) > 5 else te
    tensors = load_file(lora)
    modules = sorted({k.split(".", 1)[0] for k in tensors})
    chosen = []
    for p in PICK:
        m = next((m for m in modules if p in m and m not in chosen), None)
        if m:
            chosen.append(m)
    subset = {k: v for k, v in tensors.items() if k.split(".", 1)[0] in chosen}
    sub_path, fm_path = os.path.join(work, "lora-subset.safetensors"), os.path.join(work, "lora-fm-merged.safetensors")
    save_file(subset, sub_path)
    loramerge = os.environ.get("LORAMERGE", "build/tools/loramerge")
    subprocess.run([loramerge, ckpt, fm_path, f"{sub_path}:{te}:{unet}"], check=True)
    base = load_file(ckpt)
    sdxl = any(k.startswith("conditioner.embedders.1.") for k in base)
    ref = lora_refs.merge(base, sdxl, [(subset, te, unet)])
    got = load_file(fm_path)
    worst, bad = 0.0, 0
    if set(got) != set(ref):
        print("changed tensors differ: fmimage only", sorted(set(got) - set(ref)), "A1111 only",
              sorted(set(ref) - set(got)))
        bad += 1
    for k in sorted(set(got) & set(ref)):
        scale = ref[k].abs().max().clamp_min(1e-30)
        rel = float((got[k] - ref[k]).abs().max() / scale)
        update = float((ref[k] - base[k].float()).abs().max() / scale)  # how much the LoRA moved it
        worst = max(worst, rel)
        bad += rel > TOL
        print(f"{k}\t{list(ref[k].shape)}\tupdate {update:.3e}\tdiff {rel:.3e}\t{'ok' if rel <= TOL else 'FAIL'}")
    print(f"{len(chosen)} modules, {len(ref)} tensors, worst {worst:.3e} of the tensor's max (tolerance {TOL:g})")
    return 1 if bad else 0


if __name__ == "__main__":
    torch.set_num_threads(2)
    sys.exit(main())
