#!/usr/bin/python3
"""Reference data for textual-inversion embeddings (issue 16 item 4): random
embeddings for the tiny SD 1.x golden checkpoint and the conditioning A1111
makes with them.

What it runs: AUTOMATIC1111/stable-diffusion-webui's own code, imported from a
directory given as A1111_TI (default build/ref-src/a1111-ti), holding the
upstream text of
  modules/sd_hijack_clip.py @ 00e09382cd85c77ac35545c7264855823dfc2eb1
    (PromptChunk, FrozenCLIPEmbedderWithCustomWordsBase: tokenize_line,
    process_texts, forward with the "TI hashes" bookkeeping, process_tokens;
    FrozenCLIPEmbedderWithCustomWords) as sd_hijack_clip.py,
  modules/textual_inversion/textual_inversion.py @ 22ecb78b51f7e6f0234cbc0efbde4ee9a2dc466f
    (Embedding, EmbeddingDatabase.register_embedding_by_name and
    find_embedding_at_position) as ti_database.py,
  modules/sd_hijack.py EmbeddingsWithFixes (with textual_inversion_key) as
    embeddings_with_fixes.py,
  modules/prompt_parser.py parse_prompt_attention as prompt_parser.py,
with stub modules for the rest of `modules.*` (devices: cpu, float32;
shared.opts: emphasis Original, comma_padding_backtrack 20, clip skip 1,
textual_inversion_add_hashes_to_infotext; sd_emphasis: EmphasisOriginal, the
mean-restoring multiply). The text encoder is Hugging Face transformers'
CLIPTextModel (what A1111's FrozenCLIPEmbedder wraps) loaded strictly from
tests/data/tiny-sd1.safetensors; its token_embedding is wrapped in
EmbeddingsWithFixes as sd_hijack does. The tokenizer is open_clip v2.20.0's
SimpleTokenizer (build/ref-src/open_clip, from mlfoundations/open_clip
a09d519f91358187d73debacfc2db5f154291d40): the same CLIP BPE vocabulary and
merges as the Hugging Face CLIPTokenizer A1111 calls, which gives the same ids
for the ASCII prompts used here (no network access for the HF vocabulary
files). Embeddings are registered in A1111's way (tokenize the name, longest
first) with the sha256 of each file as its hash.

Writes tests/data/embeddings/*.safetensors (the embeddings, SD 1.x
emb_params form), tests/data/embeddings-pt/ (tiv_pt.pt: tiv's vectors as
A1111's Embedding.save writes them; module.pt: the same in a ParameterDict) and tests/data/embeddings-ref.safetensors: "CASE.cond"
[chunks*77, 8] float32, the conditioning of the case's prompt; metadata
"CASE.prompt" (the prompt) and "CASE.ti_hashes" (A1111's "TI hashes" value).

Re-run: /usr/bin/python3 tools/ref/embed_refs.py (deterministic).
"""
import hashlib
import os
import sys
import types

import torch
from safetensors.torch import load_file, save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
DATA = os.path.join(ROOT, "tests", "data")
A1111 = os.environ.get("A1111_TI", os.path.join(ROOT, "build", "ref-src", "a1111-ti"))
OPEN_CLIP = os.environ.get("OPEN_CLIP_SRC", os.path.join(ROOT, "build", "ref-src"))


def stub_modules():
    """The few modules.* names the upstream files import."""
    pkg = types.ModuleType("modules")
    pkg.__path__ = []
    sys.modules["modules"] = pkg
    devices = types.ModuleType("modules.devices")
    devices.device = torch.device("cpu")
    devices.cond_cast_unet = lambda x: x
    devices.torch_npu_set_device = lambda: None
    shared = types.ModuleType("modules.shared")
    shared.opts = types.SimpleNamespace(emphasis="Original", comma_padding_backtrack=20, CLIP_stop_at_last_layers=1,
                                        textual_inversion_add_hashes_to_infotext=True,
                                        use_old_emphasis_implementation=False, sdxl_clip_l_skip=False)
    hijack = types.ModuleType("modules.sd_hijack")
    hijack.StableDiffusionModelHijack = object

    class EmphasisOriginal:
        """sd_emphasis.EmphasisOriginal.after_transformers"""
        name = "Original"

        def after_transformers(self):
            original_mean = self.z.mean()
            self.z = self.z * self.multipliers.reshape(self.multipliers.shape + (1,)).expand(self.z.shape)
            new_mean = self.z.mean()
            self.z = self.z * (original_mean / new_mean)

    emphasis = types.ModuleType("modules.sd_emphasis")
    emphasis.get_current_option = lambda name: EmphasisOriginal
    for name, m in [("devices", devices), ("shared", shared), ("sd_hijack", hijack), ("sd_emphasis", emphasis)]:
        sys.modules["modules." + name] = m
        setattr(pkg, name, m)
    sys.path.insert(0, A1111)
    import prompt_parser  # noqa: E402
    sys.modules["modules.prompt_parser"] = prompt_parser
    pkg.prompt_parser = prompt_parser


class Tokenizer:
    """The HF CLIPTokenizer calls A1111 makes, over open_clip's SimpleTokenizer."""

    def __init__(self):
        sys.path.insert(0, OPEN_CLIP)
        from open_clip.tokenizer import SimpleTokenizer
        self.t = SimpleTokenizer()
        self.bos_token_id = self.t.encoder["<start_of_text>"]
        self.eos_token_id = self.t.encoder["<end_of_text>"]
        assert (self.bos_token_id, self.eos_token_id) == (49406, 49407)

    def __call__(self, texts, truncation=False, add_special_tokens=False):
        assert not add_special_tokens
        return {"input_ids": [self.t.encode(t) for t in texts]}

    def get_vocab(self):
        return self.t.encoder


def text_model(path):
    from transformers import CLIPTextConfig, CLIPTextModel
    sd = load_file(path)
    pre = "cond_stage_model.transformer."
    w = {k[len(pre):]: v.float() for k, v in sd.items() if k.startswith(pre)}
    width = w["text_model.embeddings.token_embedding.weight"].shape[1]
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                         layer_norm_eps=1e-5)
    m = CLIPTextModel(cfg)
    # position_ids is a buffer some transformers versions persist and others do not
    missing, unexpected = m.load_state_dict(w, strict=False)
    assert all("position_ids" in k for k in missing + unexpected), (missing, unexpected)
    return m.eval(), width


# name -> vector count; "Style-Two" has a three-token name (style, -, two)
EMBEDDINGS = {"tiv": 1, "manyvec": 12, "big": 40, "Style-Two": 3}
WORDS = ("red fox snow forest river stone cloud light tree bird field hill road lake city moon star wind rain "
         "grass").split()


def long_text(n, start=0):
    return " ".join(WORDS[(start + i) % len(WORDS)] for i in range(n))


CASES = {
    "one": "a photo of tiv in snow",
    "many": "manyvec, a red fox",
    "case": "TIV and MANYVEC",
    "weighted": "(tiv:1.3) and [style-two]",
    # 70 one-token words, then 40 vectors: tokenize_line starts a new chunk
    "boundary": long_text(70) + " big",
    # a comma among the last 20 of a full chunk with an embedding after it:
    # A1111 moves the slots on (token 0, "!"), the fix stays with the first
    # chunk, whose EOS padding gets the vectors
    "backtrack": long_text(56) + ", manyvec " + long_text(10, 5),
    # the embedding rule: 69 tokens and 12 vectors do not fit, a new chunk
    "nofit": long_text(60) + ", " + long_text(8, 3) + " manyvec " + long_text(10, 5),
    "break": "manyvec BREAK tiv and big",
}


def main():
    stub_modules()
    import embeddings_with_fixes  # noqa: E402
    import sd_hijack_clip  # noqa: E402
    import ti_database  # noqa: E402

    model, width = text_model(os.path.join(DATA, "tiny-sd1.safetensors"))
    wrapped = types.SimpleNamespace(tokenizer=Tokenizer(), transformer=model)
    hijack = types.SimpleNamespace(embedding_db=ti_database.EmbeddingDatabase(), fixes=None,
                                   extra_generation_params={})
    clip = sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords(wrapped, hijack)
    emb_layer = model.text_model.embeddings
    emb_layer.token_embedding = embeddings_with_fixes.EmbeddingsWithFixes(emb_layer.token_embedding, hijack)
    sd_model = types.SimpleNamespace(cond_stage_model=clip)

    os.makedirs(os.path.join(DATA, "embeddings"), exist_ok=True)
    for i, (name, n) in enumerate(EMBEDDINGS.items()):
        g = torch.Generator().manual_seed(1000 + i)
        vec = torch.randn(n, width, generator=g) * 0.5
        path = os.path.join(DATA, "embeddings", name + ".safetensors")
        save_file({"emb_params": vec}, path)
        e = ti_database.Embedding(vec, name)
        e.vectors = n
        e.shape = width
        with open(path, "rb") as f:
            e.set_hash(hashlib.sha256(f.read()).hexdigest())
        hijack.embedding_db.register_embedding(e, sd_model)

    # .pt as A1111's Embedding.save writes it (the tiv vectors, a leaf that
    # requires grad), and one whose string_to_param is a torch.nn.ParameterDict
    # (older A1111 saves; A1111 reads its _parameters)
    os.makedirs(os.path.join(DATA, "embeddings-pt"), exist_ok=True)
    tiv = load_file(os.path.join(DATA, "embeddings", "tiv.safetensors"))["emb_params"].clone().requires_grad_(True)
    torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": tiv}, "name": "tiv_pt", "step": 0,
                "sd_checkpoint": None, "sd_checkpoint_name": None}, os.path.join(DATA, "embeddings-pt", "tiv_pt.pt"))
    torch.save({"string_to_param": torch.nn.ParameterDict({"*": torch.nn.Parameter(tiv.detach())})},
               os.path.join(DATA, "embeddings-pt", "module.pt"))

    out, meta = {}, {}
    with torch.no_grad():
        # the encoder as built here reproduces the golden conditioning (no embeddings)
        gold = load_file(os.path.join(DATA, "tiny-sd1-cases.safetensors"))["e2e.cond"].reshape(-1, width)
        d = (clip(["a red fox in snow"])[0] - gold.float()).abs().max().item()
        print("golden e2e.cond max |diff|", d)
        assert d < 1e-5
        for case, prompt in CASES.items():
            hijack.extra_generation_params = {}
            z = clip([prompt])[0]
            out[case + ".cond"] = z.contiguous().float()
            meta[case + ".prompt"] = prompt
            meta[case + ".ti_hashes"] = hijack.extra_generation_params.get("TI hashes", "")
            print(case, tuple(z.shape), meta[case + ".ti_hashes"])
    save_file(out, os.path.join(DATA, "embeddings-ref.safetensors"), metadata=meta)


class OpenCLIPEmbedder2:
    """sgm's FrozenOpenCLIPEmbedder2(layer="penultimate", always_return_pooled=True,
    legacy=False) as A1111 calls it: encode_with_transformer, pool and
    text_transformer_forward of Stability-AI/generative-models
    0ad7de9a5cb53fd63d6d30a4f385485e72e08597 sgm/modules/encoders/modules.py
    (the tower itself is open_clip v2.20.0's TextTransformer)."""
    layer = "penultimate"
    return_pooled = True  # sgm always_return_pooled: A1111 returns (z, pooled)
    legacy = False

    def __init__(self, model):
        self.model = model

    def encode_with_transformer(self, text):
        x = self.model.token_embedding(text)  # [batch_size, n_ctx, d_model]
        x = x + self.model.positional_embedding
        x = x.permute(1, 0, 2)  # NLD -> LND
        x = self.text_transformer_forward(x, attn_mask=self.model.attn_mask)
        o = x["last"]
        o = self.model.ln_final(o)
        pooled = self.pool(o, text)
        x["pooled"] = pooled
        return x

    def pool(self, x, text):
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.model.text_projection

    def text_transformer_forward(self, x, attn_mask=None):
        outputs = {}
        for i, r in enumerate(self.model.transformer.resblocks):
            if i == len(self.model.transformer.resblocks) - 1:
                outputs["penultimate"] = x.permute(1, 0, 2)  # LND -> NLD
            x = r(x, attn_mask=attn_mask)
        outputs["last"] = x.permute(1, 0, 2)  # LND -> NLD
        return outputs


def sdxl_towers(path):
    from transformers import CLIPTextConfig, CLIPTextModel
    torchvision = types.ModuleType("torchvision")  # open_clip's utils imports it for image towers only
    ops = types.ModuleType("torchvision.ops")
    misc = types.ModuleType("torchvision.ops.misc")
    misc.FrozenBatchNorm2d = object
    sys.modules.update({"torchvision": torchvision, "torchvision.ops": ops, "torchvision.ops.misc": misc})
    from open_clip.transformer import TextTransformer
    sd = {k: v.float() for k, v in load_file(path).items()}
    pre = "conditioner.embedders.0.transformer."
    w = {k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)}
    cfg = CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=128, num_hidden_layers=3,
                         num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
                         layer_norm_eps=1e-5)
    clip_l = CLIPTextModel(cfg)
    missing, unexpected = clip_l.load_state_dict(w, strict=False)
    assert all("position_ids" in k for k in missing + unexpected), (missing, unexpected)
    pre = "conditioner.embedders.1.model."
    w = {k[len(pre):]: v for k, v in sd.items() if k.startswith(pre) and not k.endswith("logit_scale")}
    g = TextTransformer(context_length=77, vocab_size=49408, width=32, heads=2, layers=2, output_dim=32,
                        act_layer=torch.nn.GELU)
    g.load_state_dict(w, strict=True)
    return clip_l.eval(), g.eval()


SDXL_EMBEDDINGS = {"xlemb": 5, "XlOne": 1}
SDXL_CASES = {
    "xl_one": "a photo of xlone in snow",
    "xl_many": "(xlemb:1.2), a red fox",
    "xl_boundary": long_text(72) + " xlemb",
}


def main_sdxl():
    """SDXL: A1111 hijacks both embedders (clip_l and clip_g keys of the same
    Embedding); context = concat along features, pooled from bigG's first chunk."""
    import embeddings_with_fixes  # noqa: E402
    import sd_hijack_clip  # noqa: E402
    sys.modules["modules.sd_hijack_clip"] = sd_hijack_clip
    sys.modules["modules"].sd_hijack_clip = sd_hijack_clip
    import sd_hijack_open_clip  # noqa: E402
    import ti_database  # noqa: E402

    clip_l, bigg = sdxl_towers(os.path.join(DATA, "tiny-sdxl.safetensors"))
    hijack = types.SimpleNamespace(embedding_db=ti_database.EmbeddingDatabase(), fixes=None,
                                   extra_generation_params={})
    wrapped_l = types.SimpleNamespace(tokenizer=Tokenizer(), transformer=clip_l, layer="hidden", layer_idx=2)
    enc_l = sd_hijack_clip.FrozenCLIPEmbedderForSDXLWithCustomWords(wrapped_l, hijack)
    e = clip_l.text_model.embeddings
    e.token_embedding = embeddings_with_fixes.EmbeddingsWithFixes(e.token_embedding, hijack, "clip_l")
    wrapped_g = OpenCLIPEmbedder2(bigg)
    enc_g = sd_hijack_open_clip.FrozenOpenCLIPEmbedder2WithCustomWords(wrapped_g, hijack)
    bigg.token_embedding = embeddings_with_fixes.EmbeddingsWithFixes(bigg.token_embedding, hijack, "clip_g")
    sd_model = types.SimpleNamespace(cond_stage_model=enc_l)

    os.makedirs(os.path.join(DATA, "embeddings-sdxl"), exist_ok=True)
    for i, (name, n) in enumerate(SDXL_EMBEDDINGS.items()):
        g = torch.Generator().manual_seed(2000 + i)
        vec = {"clip_g": torch.randn(n, 32, generator=g) * 0.5, "clip_l": torch.randn(n, 32, generator=g) * 0.5}
        path = os.path.join(DATA, "embeddings-sdxl", name + ".safetensors")
        save_file(vec, path)
        emb = ti_database.Embedding(vec, name)
        emb.vectors = n
        emb.shape = 64
        with open(path, "rb") as f:
            emb.set_hash(hashlib.sha256(f.read()).hexdigest())
        hijack.embedding_db.register_embedding(emb, sd_model)

    out, meta = {}, {}
    with torch.no_grad():
        gold = load_file(os.path.join(DATA, "sdxl-cases.safetensors"))
        zl, zg = enc_l(["a red fox in snow"])[0], enc_g(["a red fox in snow"])
        ctx = torch.cat([zl, zg[0][0]], dim=-1)
        d = max((ctx - gold["e2e.cond.context"][0].float()).abs().max().item(),
                (zg[1][0] - gold["e2e.cond.vector"][0, :32].float()).abs().max().item())
        print("golden sdxl e2e.cond max |diff|", d)
        assert d < 1e-5
        for case, prompt in SDXL_CASES.items():
            zl = enc_l([prompt])[0]
            zg, pooled = enc_g([prompt])
            out[case + ".cond"] = torch.cat([zl, zg[0]], dim=-1).contiguous().float()
            out[case + ".pooled"] = pooled[0].contiguous().float()
            meta[case + ".prompt"] = prompt
            print(case, tuple(out[case + ".cond"].shape))
    save_file(out, os.path.join(DATA, "embeddings-sdxl-ref.safetensors"), metadata=meta)


if __name__ == "__main__":
    main()
    main_sdxl()
