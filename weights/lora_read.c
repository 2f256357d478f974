/* Adapter files: keys sorted into modules, module names mapped onto the
 * checkpoint's ldm names as A1111's networks.py maps them, every module's
 * factors checked against its layer before anything is merged. */
#include "weights/lora_internal.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the model's layers under A1111's network names ---- */

/* A layer an update can target: A1111's network_layer_mapping name (the
 * module's path with '.' as '_', relative to the U-Net's "model." and the
 * text encoders' wrappers) and the checkpoint's tensors. */
typedef struct layer {
    char name[WT_NAME_MAX];
    const wt_tensor *weight, *bias;
    int mha; /* nn.MultiheadAttention: weight is the fused in_proj [q; k; v] */
} layer;

typedef struct layers {
    layer *v;
    int n;
} layers;

static int cmp_layer(const void *a, const void *b) { return strcmp(((const layer *)a)->name, ((const layer *)b)->name); }

/* A1111's name for the module of a checkpoint tensor, "" when it is no
 * module an adapter can change. */
static void layer_name(const char *tensor, char out[WT_NAME_MAX], size_t module_len)
{
    static const struct { const char *ckpt, *net; } roots[] = {
        {"model.diffusion_model.", "diffusion_model."}, /* shared.sd_model.model */
        {"cond_stage_model.", ""},                      /* cond_stage_model(.wrapped) */
        {"conditioner.embedders.0.", "0."},             /* SDXL: f"{i}_{name}" */
        {"conditioner.embedders.1.", "1."},
    };
    out[0] = 0;
    for (size_t r = 0; r < sizeof roots / sizeof roots[0]; r++) {
        size_t pl = strlen(roots[r].ckpt);
        if (module_len <= pl || strncmp(tensor, roots[r].ckpt, pl)) continue;
        int n = snprintf(out, WT_NAME_MAX, "%s%.*s", roots[r].net, (int)(module_len - pl), tensor + pl);
        if (n < 0 || n >= WT_NAME_MAX) { out[0] = 0; return; }
        for (char *c = out; *c; c++)
            if (*c == '.') *c = '_';
        return;
    }
}

static int has_suffix(const char *s, const char *suf, size_t *stem)
{
    size_t n = strlen(s), k = strlen(suf);
    if (n < k || strcmp(s + n - k, suf)) return 0;
    *stem = n - k;
    return 1;
}

static int layers_build(layers *L, const wt_source *src, fm_error *err)
{
    int n = wt_count(src);
    L->n = 0;
    if (!(L->v = malloc(sizeof *L->v * (size_t)(n ? n : 1)))) return core_fail(err, FM_EINPUT, "out of memory");
    for (int i = 0; i < n; i++) {
        const wt_tensor *t = wt_at(src, i);
        size_t stem;
        int mha = 0;
        if (has_suffix(t->name, ".in_proj_weight", &stem)) mha = 1;
        else if (!has_suffix(t->name, ".weight", &stem)) continue;
        /* linear and conv weights; 1-D: a norm's scale (LyCORIS' norm modules) */
        if (!wt_is_float(t->dtype) || (t->ndim != 2 && t->ndim != 4 && (t->ndim != 1 || mha))) continue;
        layer *l = &L->v[L->n];
        layer_name(t->name, l->name, stem);
        if (!l->name[0]) continue;
        char bias[WT_NAME_MAX];
        snprintf(bias, sizeof bias, "%.*s%s", (int)stem, t->name, mha ? ".in_proj_bias" : ".bias");
        l->weight = t;
        l->bias = wt_find(src, bias);
        l->mha = mha && t->ndim == 2 && t->shape[0] % 3 == 0;
        L->n++;
    }
    qsort(L->v, (size_t)L->n, sizeof *L->v, cmp_layer);
    return 0;
}

static const layer *layers_find(const layers *L, const char *name)
{
    layer key;
    if (!L->n || snprintf(key.name, sizeof key.name, "%s", name) >= (int)sizeof key.name) return NULL;
    return bsearch(&key, L->v, (size_t)L->n, sizeof *L->v, cmp_layer);
}

/* ---- A1111's convert_diffusers_name_to_compvis ---- */

/* Reads "DIGITS" at *s; 1 and advances, or 0. */
static int digits(const char **s, long *v)
{
    if (!isdigit((unsigned char)**s)) return 0;
    char *end;
    *v = strtol(*s, &end, 10);
    *s = end;
    return *v >= 0 && *v < 100000;
}

static int skip(const char **s, const char *lit)
{
    size_t n = strlen(lit);
    if (strncmp(*s, lit, n)) return 0;
    *s += n;
    return 1;
}

/* "(attentions|resnets)_(\d+)_(.+)": kind 1 attentions, 0 resnets. */
static int block_tail(const char *s, int *att, long *idx, const char **rest)
{
    if (skip(&s, "attentions_")) *att = 1;
    else if (skip(&s, "resnets_")) *att = 0;
    else return 0;
    if (!digits(&s, idx) || !skip(&s, "_") || !*s) return 0;
    *rest = s;
    return 1;
}

/* A1111's suffix_conversion: a resnet's diffusers layer names in ldm. */
static const char *resnet_suffix(const char *s)
{
    static const char *const conv[][2] = {
        {"conv1", "in_layers_2"}, {"conv2", "out_layers_3"}, {"norm1", "in_layers_0"},
        {"norm2", "out_layers_0"}, {"time_emb_proj", "emb_layers_1"}, {"conv_shortcut", "skip_connection"},
    };
    for (size_t i = 0; i < sizeof conv / sizeof conv[0]; i++)
        if (!strcmp(s, conv[i][0])) return conv[i][1];
    return s;
}

/* s with every `from` replaced by `to` (Python's str.replace). */
static void replace_all(char out[WT_NAME_MAX], const char *s, const char *from, const char *to)
{
    size_t fl = strlen(from), o = 0;
    while (*s && o + 1 < WT_NAME_MAX) {
        if (fl && !strncmp(s, from, fl)) {
            int n = snprintf(out + o, WT_NAME_MAX - o, "%s", to);
            o += (n > 0 && (size_t)n < WT_NAME_MAX - o) ? (size_t)n : 0;
            s += fl;
        } else {
            out[o++] = *s++;
        }
    }
    out[o] = 0;
}

static void te_sd2(char out[WT_NAME_MAX], const char *head, long layer, const char *rest)
{
    char r[WT_NAME_MAX];
    if (strstr(rest, "mlp_fc1")) replace_all(r, rest, "mlp_fc1", "mlp_c_fc");
    else if (strstr(rest, "mlp_fc2")) replace_all(r, rest, "mlp_fc2", "mlp_c_proj");
    else replace_all(r, rest, "self_attn", "attn");
    snprintf(out, WT_NAME_MAX, "%smodel_transformer_resblocks_%ld_%.200s", head, layer, r);
}

static void convert_name(char out[WT_NAME_MAX], const char *key, int is_sd2)
{
    const char *s = key, *rest;
    long a, b;
    int att;
    snprintf(out, WT_NAME_MAX, "%s", key);
    if (skip(&s, "lora_unet_conv_in")) {
        snprintf(out, WT_NAME_MAX, "diffusion_model_input_blocks_0_0%s", s);
    } else if (skip(&s, "lora_unet_conv_out")) {
        snprintf(out, WT_NAME_MAX, "diffusion_model_out_2%s", s);
    } else if (skip(&s, "lora_unet_time_embedding_linear_")) {
        if (digits(&s, &a)) snprintf(out, WT_NAME_MAX, "diffusion_model_time_embed_%ld%s", a * 2 - 2, s);
    } else if (skip(&s, "lora_unet_down_blocks_")) {
        if (!digits(&s, &a) || !skip(&s, "_")) return;
        if (block_tail(s, &att, &b, &rest))
            snprintf(out, WT_NAME_MAX, "diffusion_model_input_blocks_%ld_%d_%s", 1 + a * 3 + b, att,
                     att ? rest : resnet_suffix(rest));
        else if (!strncmp(s, "downsamplers_0_conv", 19))
            snprintf(out, WT_NAME_MAX, "diffusion_model_input_blocks_%ld_0_op", 3 + a * 3);
    } else if (skip(&s, "lora_unet_mid_block_")) {
        if (block_tail(s, &att, &b, &rest))
            snprintf(out, WT_NAME_MAX, "diffusion_model_middle_block_%ld_%s", att ? 1 : b * 2,
                     att ? rest : resnet_suffix(rest));
    } else if (skip(&s, "lora_unet_up_blocks_")) {
        if (!digits(&s, &a) || !skip(&s, "_")) return;
        if (block_tail(s, &att, &b, &rest))
            snprintf(out, WT_NAME_MAX, "diffusion_model_output_blocks_%ld_%d_%s", a * 3 + b, att,
                     att ? rest : resnet_suffix(rest));
        else if (!strncmp(s, "upsamplers_0_conv", 17))
            snprintf(out, WT_NAME_MAX, "diffusion_model_output_blocks_%ld_%d_conv", 2 + a * 3, a > 0 ? 2 : 1);
    } else if (skip(&s, "lora_te_text_model_encoder_layers_")) {
        if (!digits(&s, &a) || !skip(&s, "_") || !*s) return;
        if (is_sd2) te_sd2(out, "", a, s);
        else snprintf(out, WT_NAME_MAX, "transformer_text_model_encoder_layers_%ld_%s", a, s);
    } else if (skip(&s, "lora_te2_text_model_encoder_layers_")) {
        if (!digits(&s, &a) || !skip(&s, "_") || !*s) return;
        te_sd2(out, "1_", a, s);
    }
}

/* ---- keys into modules ---- */

static const char *const part_names[WT_LP_COUNT] = {
    [WT_LP_UP] = "lora_up.weight", [WT_LP_DOWN] = "lora_down.weight", [WT_LP_MID] = "lora_mid.weight",
    [WT_LP_HADA_W1A] = "hada_w1_a", [WT_LP_HADA_W1B] = "hada_w1_b", [WT_LP_HADA_W2A] = "hada_w2_a",
    [WT_LP_HADA_W2B] = "hada_w2_b", [WT_LP_HADA_T1] = "hada_t1", [WT_LP_HADA_T2] = "hada_t2",
    [WT_LP_LOKR_W1] = "lokr_w1", [WT_LP_LOKR_W1A] = "lokr_w1_a", [WT_LP_LOKR_W1B] = "lokr_w1_b",
    [WT_LP_LOKR_W2] = "lokr_w2", [WT_LP_LOKR_W2A] = "lokr_w2_a", [WT_LP_LOKR_W2B] = "lokr_w2_b",
    [WT_LP_LOKR_T2] = "lokr_t2", [WT_LP_DIFF] = "diff", [WT_LP_DIFF_B] = "diff_b",
    [WT_LP_IA3_W] = "weight", [WT_LP_IA3_ON_INPUT] = "on_input", [WT_LP_W_NORM] = "w_norm",
    [WT_LP_B_NORM] = "b_norm", [WT_LP_GLORA_A1] = "a1.weight", [WT_LP_GLORA_A2] = "a2.weight",
    [WT_LP_GLORA_B1] = "b1.weight", [WT_LP_GLORA_B2] = "b2.weight", [WT_LP_OFT_BLOCKS] = "oft_blocks",
    [WT_LP_OFT_DIAG] = "oft_diag",
    [WT_LP_ALPHA] = "alpha", [WT_LP_SCALE] = "scale", [WT_LP_DORA] = "dora_scale",
};

static int part_of(const char *s)
{
    if (!strcmp(s, "lora_B.weight")) return WT_LP_UP; /* PEFT's names (A1111's ModuleTypeLora takes both) */
    if (!strcmp(s, "lora_A.weight")) return WT_LP_DOWN;
    for (int p = 0; p < WT_LP_COUNT; p++)
        if (!strcmp(s, part_names[p])) return p;
    return -1;
}

/* A part name in a diffusers file: PEFT's (lora_A/lora_B, kohya's parts),
 * or the older diffusers names of the same factors, as ComfyUI's lora.py
 * reads them: LoRACompatibleLinear/Conv's "lora.down/up.weight"
 * (diffusers 0.19-0.23 save_lora_weights) and the text encoder's
 * PatchedLoraProjection "lora_linear_layer.down/up.weight". */
static int diffusers_part_of(const char *s)
{
    static const struct { const char *name; int part; } old[] = {
        {"lora.down.weight", WT_LP_DOWN}, {"lora.up.weight", WT_LP_UP},
        {"lora_linear_layer.down.weight", WT_LP_DOWN}, {"lora_linear_layer.up.weight", WT_LP_UP},
    };
    for (size_t i = 0; i < sizeof old / sizeof old[0]; i++)
        if (!strcmp(s, old[i].name)) return old[i].part;
    return part_of(s);
}

/* A file key as (module, part). kohya/A1111: "MODULE.PART" split at the
 * first '.'. PEFT/diffusers ("unet.down_blocks.0....to_q.lora_A.weight",
 * "....to_q.lora.down.weight") become the kohya module name diffusers'
 * converter gives them. *part: the part, -1 if unknown. 0 when the key
 * is neither form. */
static int split_key(const char *key, int sdxl, char module[WT_NAME_MAX], int *part)
{
    static const struct { const char *peft, *kohya_sd, *kohya_xl; } roots[] = {
        {"unet.", "lora_unet_", "lora_unet_"},
        {"text_encoder.", "lora_te_", "lora_te1_"},
        {"text_encoder_2.", "lora_te2_", "lora_te2_"},
    };
    for (size_t r = 0; r < sizeof roots / sizeof roots[0]; r++) {
        size_t rl = strlen(roots[r].peft);
        if (strncmp(key, roots[r].peft, rl)) continue;
        const char *p = NULL;
        for (const char *c = key + rl; (c = strchr(c, '.')); c++)
            if (diffusers_part_of(c + 1) >= 0) { p = c; break; }
        if (!p) return 0;
        int n = snprintf(module, WT_NAME_MAX, "%s%.*s", sdxl ? roots[r].kohya_xl : roots[r].kohya_sd,
                         (int)(p - key - rl), key + rl);
        if (n < 0 || n >= WT_NAME_MAX) return 0;
        for (char *c = module; *c; c++)
            if (*c == '.') *c = '_';
        *part = diffusers_part_of(p + 1);
        return 1;
    }
    const char *dot = strchr(key, '.');
    if (!dot || dot - key >= WT_NAME_MAX) return 0;
    snprintf(module, WT_NAME_MAX, "%.*s", (int)(dot - key), key);
    *part = part_of(dot + 1);
    return 1;
}

static int add_unmapped(wt_lora *l, const char *key)
{
    if (l->n_unmapped == l->cap_unmapped) {
        int cap = l->cap_unmapped ? 2 * l->cap_unmapped : 64;
        char **v = realloc(l->unmapped, sizeof *v * (size_t)cap);
        if (!v) return -1;
        l->unmapped = v;
        l->cap_unmapped = cap;
    }
    if (!(l->unmapped[l->n_unmapped] = strdup(key))) return -1;
    l->n_unmapped++;
    return 0;
}

static wt_lora_module *module_get(wt_lora *l, const char *key)
{
    for (int i = l->n_mods - 1; i >= 0; i--) /* a module's keys usually come together */
        if (!strcmp(l->mods[i].key, key)) return &l->mods[i];
    if (l->n_mods == l->cap_mods) {
        int cap = l->cap_mods ? 2 * l->cap_mods : 64;
        wt_lora_module *v = realloc(l->mods, sizeof *v * (size_t)cap);
        if (!v) return NULL;
        l->mods = v;
        l->cap_mods = cap;
    }
    wt_lora_module *m = &l->mods[l->n_mods++];
    memset(m, 0, sizeof *m);
    snprintf(m->key, sizeof m->key, "%s", key);
    return m;
}

/* ---- checks: every factor fits the layer ---- */

static int64_t dim0(const wt_tensor *t) { return t->ndim ? t->shape[0] : 1; }
static int64_t rest(const wt_tensor *t) { return dim0(t) ? wt_numel(t) / dim0(t) : 0; }

static void shape_str(char *out, size_t n, const wt_tensor *t)
{
    size_t o = 0;
    o += (size_t)snprintf(out + o, n - o, "[");
    for (int d = 0; d < t->ndim && o < n; d++) o += (size_t)snprintf(out + o, n - o, d ? ", %lld" : "%lld", (long long)t->shape[d]);
    if (o < n) snprintf(out + o, n - o, "]");
}

typedef struct checker {
    const wt_lora *l;
    const wt_lora_module *m;
    fm_error *err;
} checker;

static int bad(const checker *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(const checker *c, const char *fmt, ...)
{
    char why[300];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return wt_fail(c->err, c->l->src, "%s: %s", c->m->key, why);
}

/* A 2-D (or 4-D with ndim4) factor, present. */
static int factor(const checker *c, int p, int ndim4)
{
    const wt_tensor *t = c->m->part[p];
    if (!t) return bad(c, "%s missing", part_names[p]);
    if (!wt_is_float(t->dtype)) return bad(c, "%s is not a float tensor", part_names[p]);
    if (t->ndim != 2 && !(ndim4 && t->ndim == 4)) return bad(c, "%s has %d dimensions", part_names[p], t->ndim);
    if (wt_numel(t) == 0) return bad(c, "%s is empty (rank 0)", part_names[p]);
    return 0;
}

/* The numel of the update the factors make. */
static int check_lora(const checker *c, int64_t *numel, int *dim)
{
    const wt_lora_module *m = c->m;
    if (factor(c, WT_LP_UP, 1) || factor(c, WT_LP_DOWN, 1)) return -1;
    const wt_tensor *up = m->part[WT_LP_UP], *down = m->part[WT_LP_DOWN], *mid = m->part[WT_LP_MID];
    int64_t r = dim0(down);
    if (mid) {
        if (factor(c, WT_LP_MID, 1) || mid->ndim != 4 || mid->shape[0] != rest(up) || mid->shape[1] != r)
            return bad(c, "lora_mid.weight does not fit lora_up/lora_down");
        *numel = dim0(up) * rest(down) * mid->shape[2] * mid->shape[3];
    } else {
        if (rest(up) != r) return bad(c, "lora_up.weight has rank %lld, lora_down.weight %lld", (long long)rest(up), (long long)r);
        *numel = dim0(up) * rest(down);
    }
    *dim = (int)r;
    return 0;
}

/* hada_wNa @ hada_wNb, or the Tucker form with hada_tN. */
static int check_hada_pair(const checker *c, int wa, int wb, int t, int64_t *numel)
{
    const wt_lora_module *m = c->m;
    if (factor(c, wa, 0) || factor(c, wb, 1)) return -1;
    const wt_tensor *a = m->part[wa], *b = m->part[wb], *tt = m->part[t];
    if (tt) {
        if (!wt_is_float(tt->dtype) || tt->ndim != 4 || tt->shape[0] != a->shape[0] || tt->shape[1] != b->shape[0] || b->ndim != 2)
            return bad(c, "%s does not fit %s/%s", part_names[t], part_names[wa], part_names[wb]);
        *numel = a->shape[1] * b->shape[1] * tt->shape[2] * tt->shape[3];
    } else {
        if (a->shape[1] != dim0(b)) return bad(c, "%s and %s do not multiply", part_names[wa], part_names[wb]);
        *numel = a->shape[0] * rest(b);
    }
    return 0;
}

static int check_lokr_side(const checker *c, int w, int wa, int wb, int t, int64_t *rows, int64_t *cols,
                           int64_t *kk)
{
    const wt_lora_module *m = c->m;
    *kk = 1;
    if (m->part[w]) {
        if (factor(c, w, t >= 0)) return -1;
        const wt_tensor *x = m->part[w];
        *rows = x->shape[0];
        *cols = x->shape[1];
        if (x->ndim == 4) *kk = x->shape[2] * x->shape[3];
        return 0;
    }
    if (factor(c, wa, 0) || factor(c, wb, 0)) return -1;
    const wt_tensor *a = m->part[wa], *b = m->part[wb], *tt = t >= 0 ? m->part[t] : NULL;
    if (tt) {
        if (!wt_is_float(tt->dtype) || tt->ndim != 4 || tt->shape[0] != a->shape[0] || tt->shape[1] != b->shape[0])
            return bad(c, "lokr_t2 does not fit lokr_w2_a/lokr_w2_b");
        *rows = a->shape[1];
        *cols = b->shape[1];
        *kk = tt->shape[2] * tt->shape[3];
        return 0;
    }
    if (a->shape[1] != b->shape[0]) return bad(c, "%s and %s do not multiply", part_names[wa], part_names[wb]);
    *rows = a->shape[0];
    *cols = b->shape[1];
    return 0;
}

static int scalar(const checker *c, int p, double *v)
{
    const wt_tensor *t = c->m->part[p];
    if (!wt_is_float(t->dtype) || wt_numel(t) != 1) return bad(c, "%s is not one number", part_names[p]);
    float f;
    wt_convert_f32(&f, t);
    if (!isfinite(f)) return bad(c, "%s is %s", part_names[p], isnan(f) ? "NaN" : "infinite");
    *v = f;
    return 0;
}

/* A one-value tensor read as a flag (IA3's on_input: a bool tensor). */
static int flag(const checker *c, int p, int *v)
{
    const wt_tensor *t = c->m->part[p];
    if (!t) return bad(c, "%s missing", part_names[p]);
    if (wt_numel(t) != 1) return bad(c, "%s is not one value", part_names[p]);
    if (wt_is_float(t->dtype)) {
        float f;
        wt_convert_f32(&f, t);
        *v = f != 0;
        return 0;
    }
    size_t es = core_dtype_size(t->dtype);
    if (t->dtype != FM_DT_U8 && t->dtype != FM_DT_I32 && t->dtype != FM_DT_I64) return bad(c, "%s is not a number", part_names[p]);
    int64_t x = 0;
    memcpy(&x, t->data, es); /* little-endian: the low bytes */
    *v = (es == 1 ? (x & 0xff) : es == 4 ? (int64_t)(int32_t)x : x) != 0;
    return 0;
}

/* IA3 (network_ia3.py): W * w, w per output row or (on_input) per input
 * column of a linear layer; torch's broadcasting fits no convolution. */
static int check_ia3(const checker *c, wt_lora_module *m, int64_t *numel)
{
    const wt_tensor *w = m->part[WT_LP_IA3_W];
    if (flag(c, WT_LP_IA3_ON_INPUT, &m->ia3_on_input)) return -1;
    if (!wt_is_float(w->dtype)) return bad(c, "weight is not a float tensor");
    if (m->target->ndim != 2) return bad(c, "IA3 on %s, not a linear layer", m->target->name);
    int64_t want = m->ia3_on_input ? m->cols : m->rows;
    int fits = wt_numel(w) == want && (!m->ia3_on_input || (w->ndim >= 1 && w->shape[w->ndim - 1] == want));
    if (!fits) return bad(c, "weight has %lld values, the layer %lld %s", (long long)wt_numel(w), (long long)want,
                          m->ia3_on_input ? "inputs" : "outputs");
    *numel = (int64_t)m->rows * m->cols;
    return 0;
}

/* GLoRA (network_glora.py): b2 b1 + W a2 a1 on a linear layer. */
static int check_glora(const checker *c, const wt_lora_module *m, int64_t *numel)
{
    const wt_tensor *const *p = m->part;
    for (int q = WT_LP_GLORA_A1; q <= WT_LP_GLORA_B2; q++)
        if (factor(c, q, 0)) return -1;
    if (m->target->ndim != 2) return bad(c, "GLoRA on %s, not a linear layer", m->target->name);
    const wt_tensor *a1 = p[WT_LP_GLORA_A1], *a2 = p[WT_LP_GLORA_A2], *b1 = p[WT_LP_GLORA_B1], *b2 = p[WT_LP_GLORA_B2];
    int64_t o = m->rows, in = m->cols;
    if (a2->shape[0] != in || a2->shape[1] != a1->shape[0] || a1->shape[1] != in)
        return bad(c, "a1.weight/a2.weight do not fit %s [%lld, %lld]", m->target->name, (long long)o, (long long)in);
    if (b2->shape[0] != o || b2->shape[1] != b1->shape[0] || b1->shape[1] != in)
        return bad(c, "b1.weight/b2.weight do not fit %s [%lld, %lld]", m->target->name, (long long)o, (long long)in);
    *numel = o * in;
    return 0;
}

/* lyco_helpers.factorization(dimension, factor): dimension = m * n, m <= n,
 * m the factor if it divides, else the divisor pair nearest to it. */
static void factorization(int64_t dimension, int64_t factor, int64_t *m_out, int64_t *n_out)
{
    int64_t m, n;
    if (factor > 0 && dimension % factor == 0) {
        m = factor;
        n = dimension / factor;
    } else {
        if (factor < 0) factor = dimension;
        m = 1;
        n = dimension;
        int64_t length = m + n;
        while (m < n) {
            int64_t nm = m + 1;
            while (dimension % nm) nm++;
            int64_t nn = dimension / nm;
            if (nm + nn > length || nm > factor) break;
            m = nm;
            n = nn;
        }
    }
    *m_out = m < n ? m : n;
    *n_out = m < n ? n : m;
}

/* OFT (network_oft.py): the rows of W in blocks, each turned by its block
 * of R. kohya's oft_blocks [k][n][n] hold Q (R = Cayley of its skew part,
 * ||Q|| clamped to alpha * rows); LyCORIS' oft_diag [k][n][n] is R itself
 * with k, n as factorization(rows, n) gives them. */
static int check_oft(const checker *c, wt_lora_module *m, int64_t *numel)
{
    int kohya = m->part[WT_LP_OFT_BLOCKS] != NULL;
    int p = kohya ? WT_LP_OFT_BLOCKS : WT_LP_OFT_DIAG;
    const wt_tensor *b = m->part[p];
    if (!wt_is_float(b->dtype)) return bad(c, "%s is not a float tensor", part_names[p]);
    if (b->ndim != 3 || b->shape[1] != b->shape[2] || wt_numel(b) == 0)
        return bad(c, "%s is not [blocks, n, n]", part_names[p]);
    int64_t rows = m->rows, k, n;
    if (kohya) {
        double alpha;
        if (!m->part[WT_LP_ALPHA]) return bad(c, "alpha missing (kohya OFT's constraint)");
        if (scalar(c, WT_LP_ALPHA, &alpha)) return -1;
        k = b->shape[0];
        n = rows / k;
        m->oft_constraint = (float)alpha * (float)rows;
    } else {
        factorization(rows, b->shape[1], &n, &k);
        m->oft_constraint = -1;
    }
    if (k * n != rows || b->shape[0] != k || b->shape[1] != n) {
        char tgt[96];
        shape_str(tgt, sizeof tgt, m->target);
        return bad(c, "%s [%lld, %lld, %lld] does not fit %s %s", part_names[p], (long long)b->shape[0],
                   (long long)b->shape[1], (long long)b->shape[2], m->target->name, tgt);
    }
    m->oft_blocks = (int)k;
    m->oft_size = (int)n;
    *numel = (int64_t)m->rows * m->cols;
    return 0;
}

/* LyCORIS norm (network_norm.py): w_norm added to a norm's scale, b_norm
 * to its bias. */
static int check_norm(const checker *c, const wt_lora_module *m, int64_t *numel)
{
    const wt_tensor *w = m->part[WT_LP_W_NORM], *b = m->part[WT_LP_B_NORM];
    if (m->target->ndim != 1) return bad(c, "w_norm/b_norm for %s, not a norm layer", m->target->name);
    if (!wt_is_float(w->dtype) || !wt_is_float(b->dtype)) return bad(c, "w_norm/b_norm are not float tensors");
    if (!m->target_bias) return bad(c, "b_norm for a layer without a bias");
    if (wt_numel(b) != wt_numel(m->target_bias))
        return bad(c, "b_norm has %lld values, the bias %lld", (long long)wt_numel(b), (long long)wt_numel(m->target_bias));
    *numel = wt_numel(w);
    return 0;
}

/* Decides the module's kind (A1111 tries LoRA, LoHa, IA3, LoKr, full,
 * norm, GLoRA, OFT, in that order), checks its factors against the target
 * and fills scale. 1: no kind merged here (counted as unmapped). */
static int check_module(const checker *c, wt_lora_module *m)
{
    const wt_tensor *const *p = m->part;
    int64_t numel = 0;
    int dim = 0, rc;
    if (p[WT_LP_UP] && p[WT_LP_DOWN]) {
        m->kind = WT_LK_LORA;
        rc = check_lora(c, &numel, &dim);
    } else if (p[WT_LP_HADA_W1A] && p[WT_LP_HADA_W1B] && p[WT_LP_HADA_W2A] && p[WT_LP_HADA_W2B]) {
        m->kind = WT_LK_HADA;
        int64_t n2;
        rc = check_hada_pair(c, WT_LP_HADA_W1A, WT_LP_HADA_W1B, WT_LP_HADA_T1, &numel);
        if (!rc) rc = check_hada_pair(c, WT_LP_HADA_W2A, WT_LP_HADA_W2B, WT_LP_HADA_T2, &n2);
        if (!rc && n2 != numel) rc = bad(c, "the two Hadamard factors differ in size");
        dim = (int)dim0(p[WT_LP_HADA_W1B]);
    } else if (p[WT_LP_IA3_W]) {
        m->kind = WT_LK_IA3;
        rc = check_ia3(c, m, &numel);
    } else if ((p[WT_LP_LOKR_W1] || (p[WT_LP_LOKR_W1A] && p[WT_LP_LOKR_W1B])) &&
               (p[WT_LP_LOKR_W2] || (p[WT_LP_LOKR_W2A] && p[WT_LP_LOKR_W2B]))) {
        m->kind = WT_LK_LOKR;
        int64_t r1 = 0, c1 = 0, k1 = 0, r2 = 0, c2 = 0, k2 = 0;
        rc = check_lokr_side(c, WT_LP_LOKR_W1, WT_LP_LOKR_W1A, WT_LP_LOKR_W1B, -1, &r1, &c1, &k1);
        if (!rc) rc = check_lokr_side(c, WT_LP_LOKR_W2, WT_LP_LOKR_W2A, WT_LP_LOKR_W2B, WT_LP_LOKR_T2, &r2, &c2, &k2);
        numel = r1 * c1 * r2 * c2 * k2;
        if (p[WT_LP_LOKR_W1B]) dim = (int)dim0(p[WT_LP_LOKR_W1B]);
        if (p[WT_LP_LOKR_W2B]) dim = (int)dim0(p[WT_LP_LOKR_W2B]);
    } else if (p[WT_LP_DIFF]) {
        m->kind = WT_LK_FULL;
        rc = wt_is_float(p[WT_LP_DIFF]->dtype) ? 0 : bad(c, "diff is not a float tensor");
        numel = wt_numel(p[WT_LP_DIFF]);
        if (!rc && p[WT_LP_DIFF_B]) {
            if (!m->target_bias) rc = bad(c, "diff_b for a layer without a bias");
            else if (!wt_is_float(p[WT_LP_DIFF_B]->dtype) || wt_numel(p[WT_LP_DIFF_B]) != m->rows)
                rc = bad(c, "diff_b has %lld values, the bias %d", (long long)wt_numel(p[WT_LP_DIFF_B]), m->rows);
        }
    } else if (p[WT_LP_W_NORM] && p[WT_LP_B_NORM]) {
        m->kind = WT_LK_NORM;
        rc = check_norm(c, m, &numel);
    } else if (p[WT_LP_GLORA_A1] && p[WT_LP_GLORA_A2] && p[WT_LP_ALPHA] && p[WT_LP_GLORA_B1] && p[WT_LP_GLORA_B2]) {
        m->kind = WT_LK_GLORA;
        rc = check_glora(c, m, &numel);
    } else if (p[WT_LP_OFT_BLOCKS] || p[WT_LP_OFT_DIAG]) {
        m->kind = WT_LK_OFT;
        rc = check_oft(c, m, &numel);
    } else {
        return 1;
    }
    if (rc) return -1;
    if (m->target->ndim == 1 && m->kind != WT_LK_NORM)
        return bad(c, "%s is a norm's scale: only w_norm/b_norm update it", m->target->name);
    int64_t want = (int64_t)m->rows * m->cols;
    if (numel != want) {
        char have[96], tgt[96];
        shape_str(tgt, sizeof tgt, m->target);
        const wt_tensor *first = p[WT_LP_UP] ? p[WT_LP_UP] : p[WT_LP_HADA_W1A] ? p[WT_LP_HADA_W1A] : NULL;
        snprintf(have, sizeof have, "%lld values", (long long)numel);
        (void)first;
        return bad(c, "an update of %s does not fit %s %s%s", have, m->target->name, tgt,
                   m->rows != m->target->shape[0] ? " (a third of it)" : "");
    }
    double alpha = 0, scale = 1;
    if (p[WT_LP_ALPHA] && scalar(c, WT_LP_ALPHA, &alpha)) return -1;
    if (p[WT_LP_SCALE]) {
        if (scalar(c, WT_LP_SCALE, &scale)) return -1;
    } else if (dim && p[WT_LP_ALPHA]) {
        scale = alpha / dim; /* a Python float, used as float32 by the tensor product */
    }
    /* network_oft.py sets its scale to 1 whatever the file says */
    m->scale = m->kind == WT_LK_OFT ? 1.0f : (float)scale;
    if (p[WT_LP_DORA]) {
        const wt_tensor *d = p[WT_LP_DORA];
        int64_t in = m->target->ndim == 4 ? m->target->shape[1] : m->cols;
        int per_in = d->ndim >= 2 && d->shape[0] == 1 && wt_numel(d) == in;
        int per_out = dim0(d) == m->rows && wt_numel(d) == m->rows;
        if (!wt_is_float(d->dtype) || (!per_in && !per_out))
            return bad(c, "dora_scale fits neither the inputs (%lld) nor the outputs (%d)", (long long)in, m->rows);
    }
    return 0;
}

/* ---- mapping ---- */

typedef struct mapped {
    const layer *l;
    int qkv; /* 0, or 1..3 for q/k/v of a fused attention, 4 for its out_proj */
    char key[WT_NAME_MAX];
} mapped;

/* A1111's load_network lookups for one module name. */
static int map_module(const layers *L, const char *mk, int is_sd2, mapped *out)
{
    char key[WT_NAME_MAX];
    convert_name(key, mk, is_sd2);
    const layer *l = layers_find(L, key);
    out->qkv = 0;
    if (!l) { /* re_x_proj: "(.*)_([qkv]_proj)$" names a part of a MultiheadAttention */
        size_t n = strlen(key);
        if (n > 7 && key[n - 7] == '_' && strchr("qkv", key[n - 6]) && !strcmp(key + n - 5, "_proj")) {
            char parent[WT_NAME_MAX];
            snprintf(parent, sizeof parent, "%.*s", (int)(n - 7), key);
            const layer *p = layers_find(L, parent);
            if (p && p->mha) {
                l = p;
                out->qkv = key[n - 6] == 'q' ? 1 : key[n - 6] == 'k' ? 2 : 3;
            }
        }
    }
    if (!l && strstr(mk, "lora_unet")) {
        replace_all(key, mk, "lora_unet", "diffusion_model");
        l = layers_find(L, key);
    } else if (!l && strstr(mk, "lora_te1_text_model")) {
        replace_all(key, mk, "lora_te1_text_model", "0_transformer_text_model");
        if (!(l = layers_find(L, key))) { /* some SD1 LoRAs have these names too */
            replace_all(key, mk, "lora_te1_text_model", "transformer_text_model");
            l = layers_find(L, key);
        }
    }
    if (l && !out->qkv && l->mha) l = NULL; /* the fused layer itself takes no update */
    if (l && !out->qkv) { /* out_proj of a MultiheadAttention: applied with its q, k, v only */
        size_t n = strlen(key);
        if (n > 9 && !strcmp(key + n - 9, "_out_proj")) {
            char parent[WT_NAME_MAX];
            snprintf(parent, sizeof parent, "%.*s", (int)(n - 9), key);
            const layer *p = layers_find(L, parent);
            if (p && p->mha) out->qkv = 4;
        }
    }
    out->l = l;
    snprintf(out->key, sizeof out->key, "%s", key);
    return l != NULL;
}

/* Fused attentions need q, k, v and out together (A1111 applies them to a
 * MultiheadAttention only as a set): an incomplete set is unmapped. */
static int drop_incomplete_mha(wt_lora *l, mapped *maps)
{
    for (int i = 0; i < l->n_mods; i++) {
        if (!maps[i].l || !maps[i].qkv) continue;
        char parent[WT_NAME_MAX];
        size_t n = strlen(maps[i].key), cut = maps[i].qkv == 4 ? 9 : 7;
        snprintf(parent, sizeof parent, "%.*s", (int)(n - cut), maps[i].key);
        int have = 0;
        for (int j = 0; j < l->n_mods; j++) {
            if (!maps[j].l || !maps[j].qkv) continue;
            size_t nj = strlen(maps[j].key), cj = maps[j].qkv == 4 ? 9 : 7;
            if (nj - cj == n - cut && !strncmp(maps[j].key, parent, n - cut)) have |= 1 << maps[j].qkv;
        }
        if (have != 0x1e) maps[i].l = NULL, maps[i].qkv = -1;
    }
    return 0;
}

static void module_target(wt_lora_module *m, const mapped *mp)
{
    const layer *L = mp->l;
    m->te = strstr(mp->key, "transformer") && strstr(mp->key, "transformer") - mp->key < 20; /* A1111: 'transformer' in sd_key[:20] */
    int64_t rows = L->weight->shape[0];
    m->target = L->weight; /* an out_proj (qkv 4) is a layer of its own in the checkpoint */
    m->target_bias = L->bias;
    m->row0 = 0;
    m->rows = (int)rows;
    if (mp->qkv >= 1 && mp->qkv <= 3) {
        m->rows = (int)(rows / 3);
        m->row0 = (mp->qkv - 1) * m->rows;
        m->target_bias = NULL;
    }
    m->cols = (int)(wt_numel(L->weight) / rows);
}

static const char *family_name(fm_family f)
{
    switch (f) {
    case FM_FAMILY_SD1: return "SD 1.x";
    case FM_FAMILY_SD2: return "SD 2.x";
    case FM_FAMILY_SD_TURBO: return "SD-Turbo";
    case FM_FAMILY_SDXL: return "SDXL";
    case FM_FAMILY_DEMO: return "demo";
    default: return "unknown";
    }
}

static int is_sdxl_file(const wt_lora *l)
{
    for (int i = 0; i < l->n_mods; i++)
        if (!strncmp(l->mods[i].key, "lora_te2_", 9)) return 1;
    return 0;
}

wt_lora *wt_lora_open(const char *path, const wt_source *model, const wt_model_config *cfg, fm_error *err)
{
    wt_lora *l = calloc(1, sizeof *l);
    if (!l) return core_fail(err, FM_EINPUT, "out of memory"), NULL;
    layers L = {0};
    mapped *maps = NULL;
    int rc = (l->src = wt_open(path, err)) ? 0 : -1;
    if (!rc) rc = layers_build(&L, model, err);
    int sdxl = cfg->family == FM_FAMILY_SDXL;
    for (int i = 0; !rc && i < wt_count(l->src); i++) {
        const wt_tensor *t = wt_at(l->src, i);
        char mk[WT_NAME_MAX];
        int p;
        if (!split_key(t->name, sdxl, mk, &p)) p = -1;
        wt_lora_module *m = p >= 0 ? module_get(l, mk) : NULL;
        if (p >= 0 && !m) rc = core_fail(err, FM_EINPUT, "out of memory");
        else if (m) m->part[p] = t;
        else if (add_unmapped(l, t->name)) rc = core_fail(err, FM_EINPUT, "out of memory");
    }
    if (!rc && !l->n_mods) rc = wt_fail(err, l->src, "no LoRA/LyCORIS keys (lora_up/lora_down, hada_*, lokr_*, diff, IA3, OFT, GLoRA, norm): not an adapter file");
    if (!rc && is_sdxl_file(l) && !sdxl)
        rc = wt_fail(err, l->src, "a LoRA for SDXL (it has lora_te2_ keys), the model is %s", family_name(cfg->family));
    if (!rc && !(maps = calloc((size_t)l->n_mods, sizeof *maps))) rc = core_fail(err, FM_EINPUT, "out of memory");
    int is_sd2 = !rc && layers_find(&L, "model_transformer_resblocks_0_attn") != NULL;
    for (int i = 0; !rc && i < l->n_mods; i++) map_module(&L, l->mods[i].key, is_sd2, &maps[i]);
    if (!rc) drop_incomplete_mha(l, maps);
    int kept = 0;
    for (int i = 0; !rc && i < l->n_mods; i++) {
        wt_lora_module *m = &l->mods[i];
        int k = -1;
        if (maps[i].l) {
            module_target(m, &maps[i]);
            checker c = {l, m, err};
            k = check_module(&c, m);
            if (k < 0) rc = -1;
        }
        if (k == 0) {
            if (kept != i) l->mods[kept] = *m;
            kept++;
        } else if (k > 0 || !maps[i].l) {
            for (int p = 0; !rc && p < WT_LP_COUNT; p++)
                if (m->part[p] && add_unmapped(l, m->part[p]->name)) rc = core_fail(err, FM_EINPUT, "out of memory");
        }
    }
    if (!rc && !kept)
        rc = wt_fail(err, l->src, "none of its %d modules maps to a layer of this %s model", l->n_mods, family_name(cfg->family));
    if (!rc) l->n_mods = kept;
    free(maps);
    free(L.v);
    if (rc) {
        if (err && !err->code) core_fail(err, FM_EINPUT, "%s: cannot read", path);
        wt_lora_close(l);
        return NULL;
    }
    return l;
}

void wt_lora_close(wt_lora *l)
{
    if (!l) return;
    for (int i = 0; i < l->n_unmapped; i++) free(l->unmapped[i]);
    free(l->unmapped);
    free(l->mods);
    wt_close(l->src);
    free(l);
}

int wt_lora_n_modules(const wt_lora *l) { return l->n_mods; }
int wt_lora_n_unmapped(const wt_lora *l) { return l->n_unmapped; }
