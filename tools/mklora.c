/* mklora: a random kohya-ss format LoRA / LoCon for a checkpoint layout, on
 * every layer A1111's Lora extension maps (for benchmarks: make bench's
 * sd1.gen_lora row).
 *
 *   mklora LAYOUT.tsv OUT.safetensors [--rank R] [--seed N] [--dtype F16|F32|BF16]
 *
 * Modules, named as kohya names the ldm layers ("lora_unet_" + the U-Net
 * module path, "lora_te_" + the text model's, dots as underscores):
 *   every U-Net Linear and Conv2d weight (2-D or 4-D under
 *   model.diffusion_model.): linears and 1x1 convs as LoRA, 3x3 convs as
 *   LoCon (lora_down [R][I][3][3], lora_up [O][R][1][1]);
 *   every Linear of the CLIP text encoder's layers (q, k, v, out_proj,
 *   fc1, fc2) for SD 1.x layouts, and of SDXL's two encoders (lora_te1_,
 *   lora_te2_ in Hugging Face's names; q, k, v thirds of OpenCLIP's in_proj).
 * Each module has lora_down U(-b, b) with b = sqrt(3 / fan_in), lora_up
 * U(-0.01, 0.01) and alpha = R / 2 (so scale 0.5): a small, dense update.
 * --rank default 64, --dtype default F16 (as kohya saves). Values depend
 * only on the seed and the module name. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/lib/randckpt.h"

static int usage(void)
{
    fprintf(stderr, "usage: mklora LAYOUT.tsv OUT.safetensors [--rank R] [--seed N] [--dtype F16|F32|BF16]\n");
    return 2;
}

static uint64_t mix(uint64_t x) /* splitmix64 */
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t name_hash(const char *s, uint64_t seed)
{
    uint64_t h = 1469598103934665603ull ^ seed;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* n values U(-b, b) into f, stream seeded by (seed, name). */
static void uniform(float *f, size_t n, float b, uint64_t seed, const char *name)
{
    uint64_t s = name_hash(name, seed);
    for (size_t i = 0; i < n; i++) {
        s = mix(s);
        f[i] = b * (float)((double)(s >> 11) * (2.0 / 9007199254740992.0) - 1.0);
    }
}

/* Dots as underscores after prefix, the ".weight" (7 bytes) cut. */
static int kohya_name(const char *prefix, const char *rest, size_t len, char *out, size_t cap)
{
    if (strlen(prefix) + len + 1 > cap) return 0;
    char *w = out + sprintf(out, "%s", prefix);
    for (size_t i = 0; i < len; i++) *w++ = rest[i] == '.' ? '_' : rest[i];
    *w = 0;
    return 1;
}

/* The kohya module names of a layout tensor (0 if A1111 maps no LoRA
 * module to it; 3 for an nn.MultiheadAttention in_proj, whose q, k, v
 * modules cover thirds of it). SDXL's second encoder (OpenCLIP) is named
 * as kohya names it, in Hugging Face's CLIP names (lora_te2_text_model_
 * encoder_layers_N_self_attn_q_proj, ..._mlp_fc1). */
static int module_names(const tl_st_entry *e, char out[3][128])
{
    static const char *const te2 = "conditioner.embedders.1.model.transformer.resblocks.";
    size_t n = strlen(e->name);
    if (!strncmp(e->name, te2, strlen(te2))) {
        char *end;
        long layer = strtol(e->name + strlen(te2), &end, 10);
        static const char *const map[][2] = {{".attn.out_proj.weight", "self_attn_out_proj"},
                                             {".mlp.c_fc.weight", "mlp_fc1"}, {".mlp.c_proj.weight", "mlp_fc2"}};
        if (!strcmp(end, ".attn.in_proj_weight")) {
            static const char *const qkv[] = {"q", "k", "v"};
            for (int i = 0; i < 3; i++)
                snprintf(out[i], 128, "lora_te2_text_model_encoder_layers_%ld_self_attn_%s_proj", layer, qkv[i]);
            return 3;
        }
        for (int i = 0; i < 3; i++)
            if (!strcmp(end, map[i][0])) {
                snprintf(out[0], 128, "lora_te2_text_model_encoder_layers_%ld_%s", layer, map[i][1]);
                return 1;
            }
        return 0;
    }
    if (n < 7 || strcmp(e->name + n - 7, ".weight") || (e->ndim != 2 && e->ndim != 4)) return 0;
    static const struct { const char *path, *prefix; int layers_only; } parts[] = {
        {"model.diffusion_model.", "lora_unet_", 0},
        {"cond_stage_model.transformer.", "lora_te_", 1},
        {"conditioner.embedders.0.transformer.", "lora_te1_", 1},
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        size_t k = strlen(parts[i].path);
        if (strncmp(e->name, parts[i].path, k) || (parts[i].layers_only && !strstr(e->name, ".encoder.layers.")))
            continue;
        return kohya_name(parts[i].prefix, e->name + k, n - 7 - k, out[0], 128);
    }
    return 0;
}

static void to_dtype(void *dst, const float *src, size_t n, core_dtype t)
{
    if (t == FM_DT_F16) core_f32_to_f16(dst, src, n);
    else if (t == FM_DT_BF16) core_f32_to_bf16(dst, src, n);
    else memcpy(dst, src, n * sizeof(float));
}

int main(int argc, char **argv)
{
    const char *in = NULL, *out = NULL;
    long rank = 64;
    uint64_t seed = 0;
    core_dtype dt = FM_DT_F16;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        char *end;
        errno = 0;
        if (!strcmp(a, "--rank") && i + 1 < argc) {
            rank = strtol(argv[++i], &end, 10);
            if (*end || errno || rank < 1 || rank > 4096) return usage();
        } else if (!strcmp(a, "--seed") && i + 1 < argc) {
            seed = strtoull(argv[++i], &end, 10);
            if (*end || errno) return usage();
        } else if (!strcmp(a, "--dtype") && i + 1 < argc) {
            const char *d = argv[++i];
            if (!strcmp(d, "F16")) dt = FM_DT_F16;
            else if (!strcmp(d, "F32")) dt = FM_DT_F32;
            else if (!strcmp(d, "BF16")) dt = FM_DT_BF16;
            else return usage();
        } else if (a[0] == '-') {
            return usage();
        } else if (!in) {
            in = a;
        } else if (!out) {
            out = a;
        } else {
            return usage();
        }
    }
    if (!in || !out) return usage();
    fm_error err = {0};
    tl_layout lay;
    if (tl_layout_read(&lay, in, &err)) {
        fprintf(stderr, "mklora: %s\n", err.msg);
        return 1;
    }
    /* three entries per module (lora_down, lora_up, alpha), up to three modules a tensor */
    tl_st_entry *e = calloc((size_t)lay.n * 9 + 1, sizeof *e);
    char *names = malloc((size_t)lay.n * 9 * 160 + 1);
    int n = 0, n_mod = 0, rc = 0;
    float alpha = (float)rank / 2;
    for (int i = 0; e && names && i < lay.n; i++) {
        const tl_st_entry *t = &lay.entries[i];
        char mods[3][128];
        int n_here = module_names(t, mods);
        for (int q = 0; q < n_here; q++) {
            const char *mod = mods[q];
            int64_t O = t->shape[0] / n_here, I = t->shape[1];
            int conv = t->ndim == 4;
            char *nd = names + (size_t)n * 160;
            snprintf(nd, 160, "%s.lora_down.weight", mod);
            e[n++] = (tl_st_entry){nd, dt, conv ? 4 : 2, {rank, I, conv ? t->shape[2] : 0, conv ? t->shape[3] : 0}, NULL};
            char *nu = names + (size_t)n * 160;
            snprintf(nu, 160, "%s.lora_up.weight", mod);
            e[n++] = (tl_st_entry){nu, dt, conv ? 4 : 2, {O, rank, 1, 1}, NULL};
            char *na = names + (size_t)n * 160;
            snprintf(na, 160, "%s.alpha", mod);
            e[n++] = (tl_st_entry){na, FM_DT_F32, 0, {0}, NULL};
            n_mod++;
        }
    }
    if (!e || !names) {
        fprintf(stderr, "mklora: out of memory\n");
        return 1;
    }
    if (!n_mod) {
        fprintf(stderr, "mklora: %s: no layer a LoRA maps to\n", in);
        return 1;
    }
    char rank_s[32];
    snprintf(rank_s, sizeof rank_s, "%ld", rank);
    wt_st_meta meta[] = {{"ss_network_dim", rank_s}, {"ss_network_module", "networks.lora"}};
    tl_st_writer *w = tl_st_writer_begin(out, e, n, meta, 2, &err);
    if (!w) rc = 1;
    for (int i = 0; !rc && i < n; i++) {
        size_t numel = 1;
        for (int d = 0; d < e[i].ndim; d++) numel *= (size_t)e[i].shape[d];
        float *f = malloc(sizeof(float) * numel);
        void *b = malloc(core_dtype_bytes(e[i].dtype, numel));
        if (!f || !b) {
            snprintf(err.msg, sizeof err.msg, "out of memory");
            rc = 1;
        } else {
            const char *part = strrchr(e[i].name, '.');
            if (!strcmp(part, ".alpha")) {
                f[0] = alpha;
            } else if (strstr(e[i].name, ".lora_down.")) {
                size_t fan_in = numel / (size_t)e[i].shape[0];
                uniform(f, numel, sqrtf(3.0f / (float)fan_in), seed, e[i].name);
            } else {
                uniform(f, numel, 0.01f, seed, e[i].name);
            }
            to_dtype(b, f, numel, e[i].dtype);
            if (tl_st_writer_put(w, i, b, &err)) rc = 1;
        }
        free(f);
        free(b);
    }
    if (rc && w) tl_st_writer_abort(w);
    else if (!rc && tl_st_writer_finish(w, &err)) rc = 1;
    if (rc) fprintf(stderr, "mklora: %s\n", err.msg);
    else fprintf(stderr, "mklora: %s: %d modules, rank %ld\n", out, n_mod, rank);
    free(e);
    free(names);
    tl_layout_free(&lay);
    return rc;
}
