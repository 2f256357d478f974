"""make bench-peers: the SD 1.5 U-Net (batch 2, 64x64 latent, 77-token context)
and the VAE decode (64x64 -> 512x512) in PyTorch fp32 / bf16, ONNX Runtime fp32
and OpenVINO fp32 / bf16, on the same random full-size F16 checkpoint that
`make bench` uses, beside fmimage's per-precision rows from build/tools/bench in
the same run. See tools/BENCH.md.

    peers.py --ckpt FILE --bench BUILD/tools/bench --cache DIR --out DIR [--reps 3] [--threads 2]

The networks are tools/train_demo/models.py (the project's PyTorch port of
ldm's UNetModel and AutoencoderKL) at the SD 1.5 config, loaded from the same
.safetensors. The inputs are the ones fmimage's bench used (bench --dump), and
torch fp32's outputs are compared with fmimage's fp32 outputs first, so every
row runs the same network on the same numbers. Times: median of `reps` runs of
the CPU time of this process / threads (what the run would take with the
cores to itself), and the wall clock.
"""
import argparse
import copy
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "train_demo"))
import models  # noqa: E402

UNET = {"in_channels": 4, "out_channels": 4, "model_channels": 320, "channel_mult": [1, 2, 4, 4],
        "num_res_blocks": 2, "attention_resolutions": [4, 2, 1], "num_heads": 8, "context_dim": 768}
VAE = {"z_channels": 4, "in_channels": 3, "out_ch": 3, "ch": 128, "ch_mult": [1, 2, 4, 4],
       "num_res_blocks": 2, "embed_dim": 4, "attn_resolutions": []}
CTX = 77


def load_weights(module, prefix, ckpt):
    """ckpt: the checkpoint's tensors (name -> numpy F16), the same numbers fmimage maps."""
    sd = {k[len(prefix):]: torch.from_numpy(v.astype(np.float32)) for k, v in ckpt.items() if k.startswith(prefix)}
    missing, unexpected = module.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.startswith("encoder.") and k != "quant_conv.weight" and k != "quant_conv.bias"]
    if missing:
        raise SystemExit(f"peers: {prefix}: {len(missing)} tensors missing from the checkpoint, e.g. {missing[:3]}")
    return module.eval()


class Unet(torch.nn.Module):
    def __init__(self, ckpt):
        super().__init__()
        self.net = load_weights(models.UNetModel(UNET), "model.diffusion_model.", ckpt)

    def forward(self, x, t, context):
        return self.net(x, t, context)


class VaeDecode(torch.nn.Module):
    def __init__(self, ckpt):
        super().__init__()
        self.vae = load_weights(models.AutoencoderKL(VAE), "first_stage_model.", ckpt)
        self.vae.encoder = None

    def forward(self, z):
        return self.vae.decode(z)


def timed(fn, reps, threads):
    cpu, wall = [], []
    for r in range(reps):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append((time.process_time() - c0) / threads)
        wall.append(time.perf_counter() - w0)
        print(f"    run {r + 1}/{reps}: {wall[-1]:.2f} s wall, {cpu[-1]:.2f} s CPU/thread", file=sys.stderr, flush=True)
    return float(np.median(cpu)), float(np.median(wall))


def rel_err(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


def torch_rows(stages, reps, threads, results):
    """fp32, then the module and its inputs in bfloat16 (oneDNN's bf16 kernels,
    AMX where the CPU has it; torch 1.13's autocast fails on GroupNorm)."""
    for prec in ("fp32", "bf16"):
        for name, (mod, inputs) in stages.items():
            print(f"  PyTorch {prec} {name}", file=sys.stderr, flush=True)
            if prec == "bf16":
                mod = copy.deepcopy(mod).to(torch.bfloat16)
                inputs = [v if v.dim() == 1 else v.to(torch.bfloat16) for v in inputs]
            with torch.no_grad():
                results[(f"PyTorch {torch.__version__} {prec}", name)] = timed(lambda: mod(*inputs), reps, threads)
            del mod


def onnx_export(stages, out):
    paths = {}
    for name, (mod, inputs) in stages.items():
        path = os.path.join(out, f"{name}-{'x'.join(map(str, inputs[0].shape[2:]))}.onnx")
        if not os.path.exists(path):
            names = ["x", "t", "context"] if name == "unet" else ["z"]
            with torch.no_grad():
                torch.onnx.export(mod, tuple(inputs), path + ".tmp", input_names=names, output_names=["out"],
                                  opset_version=17)
            os.replace(path + ".tmp", path)
        paths[name] = path
    return paths


def feeds(name, inputs):
    names = ["x", "t", "context"] if name == "unet" else ["z"]
    return {n: v.numpy() for n, v in zip(names, inputs)}


def ort_rows(paths, stages, reps, threads, results, notes):
    try:
        import onnxruntime as ort
    except ImportError as e:
        notes.append(f"ONNX Runtime: not installed ({e})")
        return
    label = f"ONNX Runtime {ort.__version__} fp32"
    for name, (mod, inputs) in stages.items():
        print(f"  {label} {name}", file=sys.stderr, flush=True)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sess = ort.InferenceSession(paths[name], so, providers=["CPUExecutionProvider"])
        f = feeds(name, inputs)
        results[(label, name)] = timed(lambda: sess.run(None, f), reps, threads)


def ov_rows(paths, stages, reps, threads, results, notes):
    try:
        import openvino as ov
    except ImportError as e:
        notes.append(f"OpenVINO: not installed ({e})")
        return
    core = ov.Core()
    caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    for prec, hint in (("fp32", "f32"), ("bf16", "bf16")):
        if prec == "bf16" and "BF16" not in caps:
            notes.append(f"OpenVINO bf16: the CPU plugin reports no BF16 ({caps})")
            continue
        label = f"OpenVINO {ov.__version__.split('-')[0]} {prec}"
        for name, (mod, inputs) in stages.items():
            print(f"  {label} {name}", file=sys.stderr, flush=True)
            cm = core.compile_model(core.read_model(paths[name]), "CPU",
                                    {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": hint,
                                     "PERFORMANCE_HINT": "LATENCY"})
            req = cm.create_infer_request()
            f = feeds(name, inputs)
            results[(label, name)] = timed(lambda: req.infer(f), reps, threads)


def fmimage_rows(args, results, notes):
    js = os.path.join(args.out, "fmimage.json")
    cmd = [args.bench, "--cache", args.cache, "--reps", str(args.reps), "--threads", str(args.threads),
           "--px", str(args.px), "--only", "prec", "--dump", args.out, "--json", js]
    print("  " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    for s in json.load(open(js))["stages"]:
        key = s["key"]
        for name, stem in (("unet", "sd1.unet_b2."), ("vae", "sd1.vae_decode.")):
            if key.startswith(stem):
                results[(f"fmimage {s['precision']}", name)] = (s["cpu_s_per_thread"], s["wall_s"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--px", type=int, default=512, help="image side (smaller only to check the harness)")
    args = ap.parse_args()
    lat, px = args.px // 8, args.px
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(args.threads)
    results, notes = {}, []

    print("peers: fmimage's rows (build/tools/bench --only prec)", file=sys.stderr, flush=True)
    fmimage_rows(args, results, notes)

    def raw(name, shape):
        return torch.from_numpy(np.fromfile(os.path.join(args.out, name), np.float32).reshape(shape))

    x, t = raw("unet_x.f32", (2, 4, lat, lat)), raw("unet_t.f32", (2,))
    ctx, z = raw("unet_ctx.f32", (2, CTX, 768)), raw("vae_z.f32", (1, 4, lat, lat))
    from safetensors.numpy import load_file  # python3-safetensors (Debian)
    ckpt = load_file(args.ckpt)
    stages = {"unet": (Unet(ckpt), [x, t, ctx]), "vae": (VaeDecode(ckpt), [z])}
    del ckpt

    # the same network: torch fp32 against fmimage fp32 on the same inputs
    agree = {}
    with torch.no_grad():
        for name, ref, shape in (("unet", "unet_out.f32", (2, 4, lat, lat)), ("vae", "vae_img.f32", (1, 3, px, px))):
            mod, inputs = stages[name]
            agree[name] = rel_err(raw(ref, shape).numpy(), mod(*inputs).numpy())
    for name, e in agree.items():
        print(f"check {name}: max |fmimage fp32 - torch fp32| / max |torch fp32| = {e:.2e}"
              f" ({'ok' if e <= 1e-3 else 'DIFFERENT NETWORKS?'}, bound 1e-3)")

    torch_rows(stages, args.reps, args.threads, results)
    try:
        paths = onnx_export(stages, args.out)
    except Exception as e:  # noqa: BLE001 - any exporter failure only drops those rows
        notes.append(f"ONNX export failed: {e}")
        paths = None
    if paths:
        ort_rows(paths, stages, args.reps, args.threads, results, notes)
        try:
            ov_rows(paths, stages, args.reps, args.threads, results, notes)
        except Exception as e:  # noqa: BLE001
            notes.append(f"OpenVINO failed: {e}")

    print_table(results, notes, args, px)
    with open(os.path.join(args.out, "peers.json"), "w") as f:
        json.dump({"threads": args.threads, "reps": args.reps, "loadavg": os.getloadavg(), "agreement": agree,
                   "notes": notes, "rows": [{"runtime": k[0], "stage": k[1], "cpu_s_per_thread": v[0], "wall_s": v[1]}
                                            for k, v in results.items()]}, f, indent=1)
    print(f"\nJSON: {os.path.join(args.out, 'peers.json')}")


def print_table(results, notes, args, px):
    runtimes = list(dict.fromkeys(k[0] for k in results))
    ours = {n: results.get(("fmimage auto=bf16", n)) or results.get(("fmimage auto=fp32", n)) for n in ("unet", "vae")}
    cpu = os.popen("LC_ALL=C lscpu | sed -n 's/^Model name: *//p'").read().strip()
    print(f"\nbench-peers: {cpu}, {px}x{px} ({px // 8}x{px // 8} latent), {args.threads} threads each, medians of {args.reps}; load now {os.getloadavg()}")
    print("CPU s/thread (wall s); ratio = that row's CPU time / fmimage auto's (> 1: fmimage faster)")
    print(f"{'runtime':34} {'U-Net batch 2':>22} {'VAE decode':>22}")
    for r in runtimes:
        cells = []
        for n in ("unet", "vae"):
            v = results.get((r, n))
            cells.append(f"{v[0]:7.2f} ({v[1]:6.2f}) {v[0] / ours[n][0]:5.2f}x" if v and ours[n] else f"{'-':>22}")
        print(f"{r:34} {cells[0]:>22} {cells[1]:>22}")
    for n in notes:
        print(n)


if __name__ == "__main__":
    main()
