#!/usr/bin/python3
"""GGUF reference files for tests/test_gguf.c, made with the gguf PyPI package.

What it runs: the `gguf` package (gguf-py of llama.cpp, version 0.19.0, as
installed for Debian's /usr/bin/python3 with pip --no-deps): its GGUFWriter
writes the files, and gguf/quants.py (numpy, written from ggml's block
definitions; its Q8_0 quantiser is documented bit-exact with ggml-quants.c)
quantises and dequantises.

Writes into tests/data/:
  gguf-quants.gguf             every tensor type fmimage reads, every metadata
                               value type (nested arrays too), alignment 64
  gguf-quants-expected.safetensors
                               the numpy dequantisation of each quantised tensor
                               and the float inputs of the quantiser tensors
  gguf-tiny-sd1.sha256         SHA-256 of tests/data/tiny-sd1.safetensors made
                               F16 (every float tensor, numpy's round to nearest
                               even) and written as GGUF by GGUFWriter (tensors in
                               name order, KVs general.architecture = fmimage-test
                               and the file's fmimage.config), and of that F16
                               model quantised to Q8_0 with stable-diffusion.cpp's
                               per-tensor rule (tensor_should_be_converted; fmimage
                               keeps 1-D tensors float too). The files themselves
                               are 3.7 MB, so only their hashes are committed:
                               tests/test_gguf_e2e.c writes the same models with
                               wt_gguf_write and wt_quantised and must get these
                               bytes exactly.
  gguf-names-sd2.gguf, gguf-names-sdxl.gguf
                               the tensor names of tests/data/layouts/{sd2,sdxl}.tsv
                               renamed as stable-diffusion.cpp's converter writes
                               them (src/name_conversion.cpp convert_tensor_name at
                               commit 97d2990807fe6d558e395f8764198d7c7e7b411c,
                               transcribed below), each an F32 [1] tensor

Re-run: /usr/bin/python3 tools/ref/gguf_refs.py   (from the repository root;
deterministic: numpy seed 17)
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf import quants
from safetensors.numpy import save_file

OUT = "tests/data"
rng = np.random.default_rng(17)

ROWS, COLS = 3, 512  # a multiple of every block (32 and 256)

# byte offsets of the fp16 fields of each block (random bytes there could be
# inf or NaN: they are replaced by sane scales)
F16_FIELDS = {
    T.Q4_0: [0], T.Q4_1: [0, 2], T.Q5_0: [0], T.Q5_1: [0, 2], T.Q8_0: [0],
    T.Q2_K: [80, 82], T.Q3_K: [108], T.Q4_K: [0, 2], T.Q5_K: [0, 2], T.Q6_K: [208],
}
SIMPLE = [T.Q4_0, T.Q4_1, T.Q5_0, T.Q5_1, T.Q8_0]
KQ = [T.Q2_K, T.Q3_K, T.Q4_K, T.Q5_K, T.Q6_K]


def random_blocks(qtype):
    bs, ts = gguf.GGML_QUANT_SIZES[qtype]
    nb = ROWS * COLS // bs
    b = rng.integers(0, 256, size=(nb, ts), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        d = (rng.uniform(-1, 1, size=nb) * 0.05).astype(np.float16)
        b[:, off:off + 2] = d.view(np.uint8).reshape(nb, 2)
    return b.reshape(ROWS, COLS // bs * ts)


def quants_file():
    w = gguf.GGUFWriter(os.path.join(OUT, "gguf-quants.gguf"), "fmimage-test")
    w.add_custom_alignment(64)
    w.add_string("general.name", "fmimage gguf reader test")
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_float32("test.f32", 0.1)
    w.add_bool("test.bool", True)
    w.add_uint64("test.u64", 18000000000000000000)
    w.add_int64("test.i64", -9000000000000000000)
    w.add_float64("test.f64", 0.1)
    w.add_array("test.array_i32", [1, -2, 3])
    w.add_array("test.array_str", ["a", "bc", ""])
    w.add_array("test.array_nested", [[1, 2], [3]])
    w.add_string("test.text", "x = 1; y = \"two\"")
    expected = {}
    # float types
    x = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    w.add_tensor("t.F32", x)
    expected["t.F32"] = x
    h = x.astype(np.float16)
    w.add_tensor("t.F16", h)
    expected["t.F16"] = h.astype(np.float32)
    bf = quants.quantize(x, T.BF16)
    w.add_tensor("t.BF16", bf, raw_dtype=T.BF16)
    expected["t.BF16"] = quants.dequantize(bf, T.BF16)
    # quantised from floats (the quantiser test) and from random blocks
    for q in SIMPLE:
        src = (rng.standard_normal((ROWS, COLS)) * rng.uniform(0.01, 2.0, size=(ROWS, 1))).astype(np.float32)
        src[0, :32] = 0.0  # an all-zero block: d = 0
        qb = quants.quantize(src, q)
        w.add_tensor("q." + q.name, qb, raw_dtype=q)
        expected["src." + q.name] = src
        expected["q." + q.name] = quants.dequantize(qb, q)
    for q in SIMPLE + KQ:
        rb = random_blocks(q)
        w.add_tensor("r." + q.name, rb, raw_dtype=q)
        expected["r." + q.name] = quants.dequantize(rb, q)
    # shapes: ne is stored fastest first; the reader gives PyTorch order
    conv = rng.standard_normal((5, 3, 3, 3)).astype(np.float16)
    w.add_tensor("conv.weight", conv)
    expected["conv.weight"] = conv.astype(np.float32)
    w.add_tensor("conv.bias", np.arange(5, dtype=np.float32))
    expected["conv.bias"] = np.arange(5, dtype=np.float32)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in expected.items()},
              os.path.join(OUT, "gguf-quants-expected.safetensors"))


# ---- stable-diffusion.cpp's tensor names (src/name_conversion.cpp) ----

OPEN_CLIP_MODEL = {
    "model.ln_final.bias": "transformer.text_model.final_layer_norm.bias",
    "model.ln_final.weight": "transformer.text_model.final_layer_norm.weight",
    "model.positional_embedding": "transformer.text_model.embeddings.position_embedding.weight",
    "model.token_embedding.weight": "transformer.text_model.embeddings.token_embedding.weight",
    "model.text_projection": "transformer.text_model.text_projection",
}
OPEN_CLIP_RESBLOCK = {
    "attn.in_proj_bias": "self_attn.in_proj.bias",
    "attn.in_proj_weight": "self_attn.in_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "ln_1.bias": "layer_norm1.bias",
    "ln_1.weight": "layer_norm1.weight",
    "ln_2.bias": "layer_norm2.bias",
    "ln_2.weight": "layer_norm2.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
}
CLIP_NAME_MAP = [
    ("transformer.text_projection.weight", "transformer.text_model.text_projection"),
    ("model.text_projection.weight", "transformer.text_model.text_projection"),
    ("vision_model.visual_projection.weight", "visual_projection.weight"),
]
PREFIX_MAP = [  # those an ldm SD checkpoint's names can start with
    ("conditioner.embedders.0.open_clip.", "cond_stage_model."),
    ("conditioner.embedders.0.", "cond_stage_model."),
    ("conditioner.embedders.1.", "cond_stage_model.1."),
]
COND_PREFIXES = ["cond_stage_model.1.", "cond_stage_model.", "conditioner.embedders.", "text_encoders."]


def open_clip_to_hf(name):
    name = OPEN_CLIP_MODEL.get(name, name)
    pre, hf = "model.transformer.resblocks.", "transformer.text_model.encoder.layers."
    if name.startswith(pre):
        rem = name[len(pre):]
        idx, suffix = rem.split(".", 1)
        if suffix in OPEN_CLIP_RESBLOCK:
            name = hf + idx + "." + OPEN_CLIP_RESBLOCK[suffix]
    return name


def sdcpp_name(name):
    for old, new in PREFIX_MAP:
        if name.startswith(old):
            name = new + name[len(old):]
            break
    for p in COND_PREFIXES:
        if name.startswith(p):
            rest = open_clip_to_hf(name[len(p):])
            for a, b in CLIP_NAME_MAP:
                if a in rest:
                    rest = rest.replace(a, b, 1)
            name = p + rest
            break
    return name


def names_file(layout, out):
    w = gguf.GGUFWriter(os.path.join(OUT, out), "fmimage-test")
    w.add_string("fmimage.layout", layout)
    with open(os.path.join("tests/data/layouts", layout)) as f:
        names = [line.split("\t")[0] for line in f if line.strip() and not line.startswith("#")]
    seen = set()
    for n in names:
        s = sdcpp_name(n)
        assert s not in seen, s
        seen.add(s)
        w.add_tensor(s, np.zeros(1, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def sdcpp_keeps(name, shape, block):
    """stable-diffusion.cpp's tensor_should_be_converted, negated (1-D norm
    weights are converted too: its -M convert output shows it), plus: the
    top-level DDPM buffers (no dot in the name) stay."""
    if shape[-1] % block or "." not in name:
        return True
    if name.endswith(".bias") or name.endswith(".scale") or name.endswith(".weight_scale"):
        return True
    return "time_embed." in name or "label_emb." in name or "embedding" in name


def tiny_sd1_hashes():
    import hashlib
    from safetensors import safe_open
    path = "tests/data/tiny-sd1.safetensors"
    with safe_open(path, "np") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    f16 = {k: (v.astype(np.float16) if v.dtype.kind == "f" else v) for k, v in tensors.items()}
    out = []
    for kind in ("f16", "q8_0"):
        tmp = "/tmp/fmimage-tiny-sd1-%s.gguf" % kind
        w = gguf.GGUFWriter(tmp, "fmimage-test")
        w.add_string("fmimage.config", meta["fmimage.config"])
        for k in sorted(f16):
            v = f16[k]
            if kind == "q8_0" and v.dtype == np.float16 and not sdcpp_keeps(k, v.shape, 32):
                w.add_tensor(k, quants.quantize(v.astype(np.float32), T.Q8_0), raw_dtype=T.Q8_0)
            else:
                w.add_tensor(k, v)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        with open(tmp, "rb") as g:
            out.append("%s %s\n" % (kind, hashlib.sha256(g.read()).hexdigest()))
        os.unlink(tmp)
    with open(os.path.join(OUT, "gguf-tiny-sd1.sha256"), "w") as g:
        g.writelines(out)


if __name__ == "__main__":
    if not os.path.isdir(OUT):
        sys.exit("run from the repository root")
    quants_file()
    names_file("sd2.tsv", "gguf-names-sd2.gguf")
    names_file("sdxl.tsv", "gguf-names-sdxl.gguf")
    tiny_sd1_hashes()
