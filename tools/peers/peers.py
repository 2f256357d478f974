"""make bench-peers: the SD 1.5 U-Net (batch 2, 64x64 latent, 77-token context)
and the VAE decode (64x64 -> 512x512) in PyTorch fp32 / bf16, ONNX Runtime fp32
and OpenVINO fp32 / bf16, on the same random full-size F16 checkpoint that
`make bench` uses, beside fmimage's per-precision rows from build/tools/bench in
the same run; with --sdxl also one SDXL U-Net evaluation (1024x1024) in fmimage
and PyTorch. See tools/BENCH.md.

    peers.py --ckpt FILE --bench BUILD/tools/bench --cache DIR --out DIR
             [--reps 3] [--warmup 0] [--threads 2] [--px 512] [--sdxl | --sdxl-only]

Run by tools/peers/peers.sh in the venv it sets up (PyPI's torch with oneDNN,
onnxruntime, openvino). The networks are tools/train_demo/models.py (the
project's PyTorch port of ldm's UNetModel and AutoencoderKL) at the SD 1.5 (and
SDXL) config, loaded from the same .safetensors, with PyTorch's fused
attention. The inputs are the ones fmimage's bench used (bench --dump), and
torch fp32's outputs are compared with fmimage's fp32 outputs first, so every
row runs the same network on the same numbers. Times: median of `reps` runs of
the CPU time of this process / threads (what the run would take with the
cores to itself), and the wall clock. Under the table: what kernels each peer
ran (torch's build and oneDNN implementations, OpenVINO's primitives).
"""
import argparse
import collections
import copy
import inspect
import json
import os
import re
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
SDXL_UNET = {"in_channels": 4, "out_channels": 4, "model_channels": 320, "channel_mult": [1, 2, 4],
             "num_res_blocks": 2, "attention_resolutions": [4, 2], "num_head_channels": 64,
             "transformer_depth": [0, 2, 10], "transformer_depth_middle": 10, "use_linear_in_transformer": True,
             "context_dim": 2048, "adm_in_channels": 2816}


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
        self.eval()

    def forward(self, x, t, context):
        return self.net(x, t, context)


class VaeDecode(torch.nn.Module):
    def __init__(self, ckpt):
        super().__init__()
        self.vae = load_weights(models.AutoencoderKL(VAE), "first_stage_model.", ckpt)
        self.vae.encoder = None
        self.eval()

    def forward(self, z):
        return self.vae.decode(z)


def sdpa_attention():
    """PyTorch's fused attention (F.scaled_dot_product_attention, what diffusers
    runs) in place of models.py's plain softmax(q k^T / sqrt(d)) v: the same
    math, so the agreement check still holds, and PyTorch is timed at its best.
    False where the torch has no SDPA (1.13)."""
    F = torch.nn.functional
    if not hasattr(F, "scaled_dot_product_attention"):
        return False

    def cross(self, x, context=None):
        context = x if context is None else context
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)
                   for t in (self.to_q(x), self.to_k(context), self.to_v(context)))
        return self.to_out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1))

    def vae_attn(self, x):
        b, c, hh, ww = x.shape
        h = self.norm(x)
        q, k, v = (m(h).flatten(2).transpose(1, 2)[:, None] for m in (self.q, self.k, self.v))
        out = F.scaled_dot_product_attention(q, k, v)[:, 0].transpose(1, 2).reshape(b, c, hh, ww)
        return x + self.proj_out(out)

    models.CrossAttention.forward = cross
    models.AttnBlock.forward = vae_attn
    return True


def torch_peer():
    """(valid, line): is this torch a real oneDNN peer on this CPU (oneDNN on,
    an optimised BLAS, the widest vector ISA the CPU has), and what it is."""
    cfg = torch.__config__.show()
    blas = (re.search(r"BLAS_INFO=(\w+)", cfg) or [None, "?"])[1]
    dnn = (re.search(r"MKL-DNN v([\d.]+)", cfg) or [None, "?"])[1]
    cap = torch.backends.cpu.get_cpu_capability() if hasattr(torch.backends, "cpu") else \
        (re.search(r"CPU capability usage: (\w+)", cfg) or [None, "?"])[1]
    avx512 = " avx512f " in open("/proc/cpuinfo").read().split("\n\n")[0].replace("\t", " ") + " "
    valid = torch.backends.mkldnn.is_available() and blas not in ("generic", "?") and (cap.startswith("AVX512") or not avx512)
    line = f"PyTorch {torch.__version__}: oneDNN {dnn}, BLAS {blas}, ATen CPU kernels {cap}"
    return valid, line + ("" if valid else ": NOT a valid oneDNN peer (its rows only check the harness)")


ONEDNN_PROBE = """
import torch
torch.set_num_threads(1)
with torch.no_grad():
    for dt in (torch.float32, torch.bfloat16):
        torch.nn.Conv2d(320, 320, 3, padding=1).to(dt)(torch.randn(1, 320, 16, 16).to(dt))
        torch.nn.Linear(320, 320).to(dt)(torch.randn(2, 77, 320).to(dt))
"""


def onednn_kernels():
    """The oneDNN implementations torch picks for a fp32 and a bf16 convolution
    and linear (ONEDNN_VERBOSE=1 in a child): "bf16: convolution jit_bf16:avx512_core_bf16, ..."."""
    r = subprocess.run([sys.executable, "-c", ONEDNN_PROBE], capture_output=True, text=True,
                       env=dict(os.environ, ONEDNN_VERBOSE="1", DNNL_VERBOSE="1"))
    seen = {}
    for line in r.stdout.splitlines():
        f = line.split(",")
        if "exec" in f and "cpu" in f:
            i = f.index("cpu")
            op, impl, desc = f[i + 1], f[i + 2], ",".join(f[i + 3:])
            if op in ("convolution", "matmul", "inner_product"):
                dt = "bf16" if "src:bf16" in desc else "fp32"
                seen.setdefault(dt, {}).setdefault(op, impl)
    return "; ".join(f"{dt}: " + (", ".join(f"{op} {impl}" for op, impl in seen[dt].items()) if dt in seen else "none")
                     for dt in ("fp32", "bf16")) + " (a product missing here runs in ATen/MKL)"


def timed(fn, args):
    """Median CPU s/thread and wall s of args.reps runs of fn, after
    args.warmup untimed ones."""
    reps, threads = args.reps, args.threads
    for _ in range(args.warmup):
        fn()
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


def torch_rows(stages, args, results, valid):
    """fp32, then the module and its inputs in bfloat16 (oneDNN's bf16 kernels,
    AVX512_BF16 or AMX where the CPU has them; torch 1.13's autocast fails on GroupNorm)."""
    for prec in ("fp32", "bf16"):
        label = f"PyTorch {torch.__version__} {prec}" + ("" if valid else " (NOT valid)")
        for name, (mod, inputs) in stages.items():
            print(f"  {label} {name}", file=sys.stderr, flush=True)
            if prec == "bf16":
                mod = copy.deepcopy(mod).to(torch.bfloat16)
                inputs = [v if v.dim() == 1 else v.to(torch.bfloat16) for v in inputs]
            with torch.no_grad():
                results[(label, name)] = timed(lambda m=mod, i=inputs: m(*i), args)
            del mod


def onnx_export(stages, out):
    """Each torch module to BUILD/peers/STAGE-HxW-onnx/model.onnx (weights as
    external data: the U-Net is over protobuf's 2 GB), once; torch >= 2.5 through
    its dynamo exporter (opset 18), older torch through the TorchScript one."""
    kw = {"opset_version": 17}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kw = {"opset_version": 18, "dynamo": True, "external_data": True}
    paths = {}
    for name, (mod, inputs) in stages.items():
        folder = os.path.join(out, f"{name}-{'x'.join(map(str, inputs[0].shape[2:]))}-onnx")
        path = os.path.join(folder, "model.onnx")
        if not os.path.exists(os.path.join(folder, "ok")):
            print(f"  torch.onnx.export {name} -> {path}", file=sys.stderr, flush=True)
            os.makedirs(folder, exist_ok=True)
            names = ["x", "t", "context"] if name == "unet" else ["z"]
            with torch.no_grad():
                torch.onnx.export(mod, tuple(inputs), path, input_names=names, output_names=["out"], **kw)
            open(os.path.join(folder, "ok"), "w").close()
        paths[name] = path
    return paths


def feeds(name, inputs):
    names = ["x", "t", "context"] if name == "unet" else ["z"]
    return {n: v.numpy() for n, v in zip(names, inputs)}


def ort_rows(paths, stages, args, results, notes):
    try:
        import onnxruntime as ort
    except ImportError as e:
        notes.append(f"ONNX Runtime: not installed ({e})")
        return
    label = f"ONNX Runtime {ort.__version__} fp32"
    for name, (mod, inputs) in stages.items():
        print(f"  {label} {name}", file=sys.stderr, flush=True)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = args.threads, 1
        sess = ort.InferenceSession(paths[name], so, providers=["CPUExecutionProvider"])
        f = feeds(name, inputs)
        results[(label, name)] = timed(lambda: sess.run(None, f), args)


def ov_rows(paths, stages, args, results, notes):
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
                                    {"INFERENCE_NUM_THREADS": args.threads, "INFERENCE_PRECISION_HINT": hint,
                                     "PERFORMANCE_HINT": "LATENCY"})
            notes.append(f"{label} {name}: {ov_kernels(cm)}")
            req = cm.create_infer_request()
            f = feeds(name, inputs)
            results[(label, name)] = timed(lambda: req.infer(f), args)


def ov_kernels(cm):
    """What a compiled OpenVINO model runs in: its inference precision and the
    CPU plugin's primitives for the convolutions and matrix products
    (e.g. brgconv_avx512_bf16)."""
    kinds = collections.Counter()
    for op in cm.get_runtime_model().get_ops():
        rt = op.get_rt_info()
        layer = rt["layerType"].astype(str)
        if layer in ("Convolution", "FullyConnected", "MatMul") and "primitiveType" in rt:
            kinds[f"{layer} {rt['primitiveType'].astype(str)}"] += 1
    hint = cm.get_property("INFERENCE_PRECISION_HINT")
    return (f"inference precision {getattr(hint, 'to_string', lambda: hint)()}; "
            + ", ".join(f"{k} x{v}" for k, v in kinds.most_common(5)))


def fmimage_rows(args, results, notes):
    js = os.path.join(args.out, "fmimage.json")
    cmd = [args.bench, "--cache", args.cache, "--reps", str(args.reps), "--warmup", str(args.warmup),
           "--threads", str(args.threads),
           "--px", str(args.px), "--only", "prec", "--dump", args.out, "--json", js]
    print("  " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    for s in json.load(open(js))["stages"]:
        key = s["key"]
        for name, stem in (("unet", "sd1.unet_b2."), ("vae", "sd1.vae_decode.")):
            if key.startswith(stem):
                results[(f"fmimage {s['precision']}", name)] = (s["cpu_s_per_thread"], s["wall_s"])


def sd1_rows(args, results, notes, agree, valid):
    """SD 1.5 U-Net batch 2 and VAE decode: fmimage's per-precision rows, the
    torch fp32 agreement check, PyTorch fp32/bf16, ONNX Runtime, OpenVINO."""
    lat, px = args.px // 8, args.px
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
    with torch.no_grad():
        for name, ref, shape in (("unet", "unet_out.f32", (2, 4, lat, lat)), ("vae", "vae_img.f32", (1, 3, px, px))):
            mod, inputs = stages[name]
            agree[name] = rel_err(raw(ref, shape).numpy(), mod(*inputs).numpy())

    torch_rows(stages, args, results, valid)
    try:
        paths = onnx_export(stages, args.out)
    except Exception as e:  # noqa: BLE001 - any exporter failure only drops those rows
        notes.append(f"ONNX export failed: {e}")
        paths = None
    if paths:
        ort_rows(paths, stages, args, results, notes)
        try:
            ov_rows(paths, stages, args, results, notes)
        except Exception as e:  # noqa: BLE001
            notes.append(f"OpenVINO failed: {e}")


def sdxl_rows(args, results, notes, agree):
    """--sdxl: one SDXL U-Net evaluation, batch 1, at twice the side (1024x1024
    by default): fmimage's sdxl rows (bench --only sdxl: fp32, bf16, Q8_0),
    then PyTorch fp32 (its output checked against fmimage fp32's on the dumped
    inputs) and PyTorch bf16 on the same module, converted in place."""
    js = os.path.join(args.out, "fmimage-sdxl.json")
    cmd = [args.bench, "--cache", args.cache, "--reps", str(args.reps), "--warmup", str(args.warmup),
           "--threads", str(args.threads),
           "--px", str(args.px), "--only", "sdxl", "--dump", args.out, "--json", js]
    print("  " + " ".join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, stdout=sys.stderr)
    for s in json.load(open(js))["stages"]:
        prec = {"sdxl.unet_b1": "fp32", "sdxl.unet_b1_bf16": "bf16", "sdxl.unet_b1_q8_0": "q8_0"}.get(s["key"])
        if prec:
            results[(f"fmimage {prec}", "sdxl")] = (s["cpu_s_per_thread"], s["wall_s"])
    lat = args.px // 4
    if "assign" not in inspect.signature(torch.nn.Module.load_state_dict).parameters:
        notes.append(f"PyTorch SDXL rows: left out, torch {torch.__version__} has no load_state_dict(assign=)")
        return

    def raw(name, shape):
        return torch.from_numpy(np.fromfile(os.path.join(args.out, name), np.float32).reshape(shape))

    inputs = [raw("sdxl_x.f32", (1, 4, lat, lat)), raw("sdxl_t.f32", (1,)), raw("sdxl_ctx.f32", (1, -1, 2048)),
              raw("sdxl_y.f32", (1, 2816))]
    from safetensors import safe_open
    pre = "model.diffusion_model."
    with safe_open(os.path.join(args.cache, "sdxl-f16.safetensors"), "np") as f:  # one tensor at a time
        sd = {k[len(pre):]: torch.from_numpy(f.get_tensor(k).astype(np.float32)) for k in f.keys() if k.startswith(pre)}
    with torch.device("meta"):
        net = models.UNetModel(SDXL_UNET)
    net.load_state_dict(sd, strict=True, assign=True)
    net.eval()
    del sd
    label = f"PyTorch {torch.__version__}"
    out = [None]
    with torch.no_grad():
        print(f"  {label} fp32 sdxl", file=sys.stderr, flush=True)
        results[(f"{label} fp32", "sdxl")] = timed(lambda: out.__setitem__(0, net(*inputs)), args)
        agree["sdxl"] = rel_err(raw("sdxl_out.f32", (1, 4, lat, lat)).numpy(), out[0].numpy())
        out[0] = None
        net.to(torch.bfloat16)
        inputs = [v if v.dim() == 1 else v.to(torch.bfloat16) for v in inputs]
        print(f"  {label} bf16 sdxl", file=sys.stderr, flush=True)
        results[(f"{label} bf16", "sdxl")] = timed(lambda: net(*inputs), args)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--cache", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=0, help="untimed runs before each row's reps")
    ap.add_argument("--px", type=int, default=512, help="image side (smaller only to check the harness)")
    ap.add_argument("--sdxl", action="store_true", help="also one SDXL U-Net evaluation at 2 x px (CACHE/sdxl-f16)")
    ap.add_argument("--sdxl-only", action="store_true", help="only the SDXL rows")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(args.threads)
    results, notes = {}, []
    valid, line = torch_peer()
    notes.append(line)
    notes.append("PyTorch oneDNN kernels: " + onednn_kernels())
    notes.append("PyTorch attention: " + ("F.scaled_dot_product_attention" if sdpa_attention()
                                          else "models.py's softmax(q k^T) v (no SDPA in this torch)"))
    print("peers: " + line, file=sys.stderr, flush=True)

    agree = {}
    if not args.sdxl_only:
        sd1_rows(args, results, notes, agree, valid)
    if args.sdxl or args.sdxl_only:
        sdxl_rows(args, results, notes, agree)
    for name, e in agree.items():
        print(f"check {name}: max |fmimage fp32 - torch fp32| / max |torch fp32| = {e:.2e}"
              f" ({'ok' if e <= 1e-3 else 'DIFFERENT NETWORKS?'}, bound 1e-3)")

    print_table(results, notes, args)
    js = os.path.join(args.out, "peers-sdxl.json" if args.sdxl_only else "peers.json")
    with open(js, "w") as f:
        json.dump({"threads": args.threads, "reps": args.reps, "warmup": args.warmup, "loadavg": os.getloadavg(), "agreement": agree,
                   "notes": notes, "rows": [{"runtime": k[0], "stage": k[1], "cpu_s_per_thread": v[0], "wall_s": v[1]}
                                            for k, v in results.items()]}, f, indent=1)
    print(f"\nJSON: {js}")


def print_table(results, notes, args):
    px = args.px
    heads = {"unet": f"SD1.5 U-Net b2 {px // 8}x{px // 8}", "vae": f"VAE decode {px}x{px}",
             "sdxl": f"SDXL U-Net {2 * px}x{2 * px}"}
    stages = [n for n in heads if any(k[1] == n for k in results)]
    runtimes = list(dict.fromkeys(k[0] for k in results))
    auto = next((r for r in runtimes if r.startswith("fmimage auto=")), None)
    mode = auto.split("=")[1] if auto else ("bf16" if ("fmimage bf16", "sdxl") in results else "fp32")
    ours = {n: results.get((auto, n)) or results.get((f"fmimage {mode}", n)) for n in stages}
    cpu = os.popen("LC_ALL=C lscpu | sed -n 's/^Model name: *//p'").read().strip()
    print(f"\nbench-peers: {cpu}, {args.threads} threads each, medians of {args.reps}{f' after {args.warmup} untimed' if args.warmup else ''}; load now {os.getloadavg()}")
    print(f"CPU s/thread (wall s); ratio = that row's CPU time / fmimage {mode}'s (auto's mode; > 1: fmimage faster)")
    print(f"{'runtime':34}" + "".join(f" {heads[n]:>24}" for n in stages))
    for r in runtimes:
        cells = []
        for n in stages:
            v = results.get((r, n))
            cells.append(f"{v[0]:7.2f} ({v[1]:6.2f}) {v[0] / ours[n][0]:5.2f}x" if v and ours[n] else "-")
        print(f"{r:34}" + "".join(f" {c:>24}" for c in cells))
    for n in notes:
        print(n)


if __name__ == "__main__":
    main()
