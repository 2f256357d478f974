/* Several files as one source (compose.h): the union, and the per-role
 * renaming views of part files. */
#include "weights/compose.h"
#include "weights/gguf.h"
#include "weights/rename.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a source over a list of tensors it owns the index of ---- */

typedef struct listed {
    wt_source src;
    wt_source **parts; /* closed with it */
    int n_parts;
    wt_tensor *t;      /* sorted by name */
    int n, cap;
    char **names;      /* owned names (renamed ones), n_names of them */
    int n_names, names_cap;
    void **blocks;     /* owned data (synthesised tensors) */
    int n_blocks, blocks_cap;
    char **kv;         /* own metadata (wt_renamed), 2 * n_kv strings, before the parts' */
    int n_kv;
} listed;

static const listed *lof(const wt_source *s) { return (const listed *)s; }
static int l_count(const wt_source *s) { return lof(s)->n; }
static const wt_tensor *l_at(const wt_source *s, int i) { return &lof(s)->t[i]; }

static int cmp_name(const void *a, const void *b)
{
    return strcmp(((const wt_tensor *)a)->name, ((const wt_tensor *)b)->name);
}

static const wt_tensor *l_find(const wt_source *s, const char *name)
{
    wt_tensor key = {.name = name};
    return bsearch(&key, lof(s)->t, (size_t)lof(s)->n, sizeof key, cmp_name);
}

static const char *l_meta(const wt_source *s, const char *key)
{
    for (int i = 0; i < lof(s)->n_kv; i++)
        if (!strcmp(lof(s)->kv[2 * i], key)) return lof(s)->kv[2 * i + 1];
    for (int i = 0; i < lof(s)->n_parts; i++) {
        const char *v = wt_meta(lof(s)->parts[i], key);
        if (v) return v;
    }
    return NULL;
}

/* Own entries, then each part's in order, a key reported once (as l_meta finds it). */
static int l_meta_at(const wt_source *s, int i, const char **key, const char **value)
{
    const listed *l = lof(s);
    if (i < 0) return -1;
    if (i < l->n_kv) {
        *key = l->kv[2 * i];
        *value = l->kv[2 * i + 1];
        return 0;
    }
    int at = l->n_kv;
    for (int p = 0; p < l->n_parts; p++) {
        const char *k, *v;
        for (int j = 0; wt_meta_at(l->parts[p], j, &k, &v) == 0; j++) {
            if (!k || l_meta(s, k) != v) continue; /* shadowed by an earlier one */
            if (at++ == i) {
                *key = k;
                *value = v;
                return 0;
            }
        }
    }
    return -1;
}

static void l_free(listed *l)
{
    for (int i = 0; i < 2 * l->n_kv; i++) free(l->kv[i]);
    free(l->kv);
    for (int i = 0; i < l->n_parts; i++) wt_close(l->parts[i]);
    for (int i = 0; i < l->n_names; i++) free(l->names[i]);
    for (int i = 0; i < l->n_blocks; i++) core_free(l->blocks[i]);
    free(l->parts);
    free(l->t);
    free(l->names);
    free(l->blocks);
    free(l);
}

static void l_close(wt_source *s) { l_free((listed *)s); }
static const wt_source_ops listed_ops = {l_count, l_at, l_find, l_meta, l_close, l_meta_at, NULL};

static int grow(void **p, int *cap, int n, size_t size)
{
    if (n < *cap) return 0;
    int c = *cap ? 2 * *cap : 64;
    void *q = realloc(*p, size * (size_t)c);
    if (!q) return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* Adds t (its data kept) under name (copied when not NULL). */
static int add(listed *l, const wt_tensor *t, const char *name)
{
    if (grow((void **)&l->t, &l->cap, l->n, sizeof *l->t)) return -1;
    wt_tensor c = *t;
    if (name) {
        if (grow((void **)&l->names, &l->names_cap, l->n_names, sizeof *l->names)) return -1;
        if (!(c.name = strdup(name))) return -1;
        l->names[l->n_names++] = (char *)c.name;
    }
    l->t[l->n++] = c;
    return 0;
}

static void *own_block(listed *l, size_t bytes)
{
    if (grow((void **)&l->blocks, &l->blocks_cap, l->n_blocks, sizeof *l->blocks)) return NULL;
    void *p = core_alloc(bytes ? bytes : 1);
    if (p) l->blocks[l->n_blocks++] = p;
    return p;
}

static listed *l_new(wt_source *const *parts, int n_parts, const char *path)
{
    listed *l = calloc(1, sizeof *l);
    if (!l || !(l->parts = calloc((size_t)n_parts + 1, sizeof *l->parts))) {
        free(l);
        return NULL;
    }
    for (int i = 0; i < n_parts; i++) l->parts[i] = parts[i];
    l->n_parts = n_parts;
    l->src = (wt_source){&listed_ops, path};
    return l;
}

static void close_all(wt_source *const *parts, int n)
{
    for (int i = 0; i < n; i++) wt_close(parts[i]);
}

/* ---- the union ---- */

wt_source *wt_compose(wt_source *const *parts, int n, fm_error *err)
{
    listed *l = n > 0 ? l_new(parts, n, parts[0]->path) : NULL;
    if (!l) {
        if (n > 0) wt_fail(err, parts[0], "out of memory");
        close_all(parts, n);
        return NULL;
    }
    /* later parts first, so that a name seen again (an earlier part's) is dropped */
    for (int p = n - 1; p >= 0; p--)
        for (int i = 0; i < wt_count(parts[p]); i++) {
            const wt_tensor *t = wt_at(parts[p], i);
            int seen = 0;
            for (int q = p + 1; q < n && !seen; q++) seen = wt_find(parts[q], t->name) != NULL;
            if (!seen && add(l, t, NULL)) {
                wt_fail(err, parts[0], "out of memory");
                l_free(l);
                return NULL;
            }
        }
    qsort(l->t, (size_t)l->n, sizeof *l->t, cmp_name);
    return &l->src;
}

/* ---- part views ---- */

static int starts(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

static const char *after(const char *name, const char *const *prefixes, const char *root)
{
    for (int i = 0; prefixes[i]; i++) {
        size_t n = strlen(prefixes[i]);
        if (!strncmp(name, prefixes[i], n) && starts(name + n, root)) return name + n + strlen(root);
    }
    return NULL;
}

static int vae_name(char *out, size_t size, const char *name)
{
    static const char *const roots[] = {"encoder.", "decoder.", "quant_conv.", "post_quant_conv."};
    const char *rest = starts(name, "first_stage_model.") ? name + 18 : starts(name, "vae.") ? name + 4 : name;
    for (size_t i = 0; i < sizeof roots / sizeof roots[0]; i++)
        if (starts(rest, roots[i])) return snprintf(out, size, "first_stage_model.%s", rest) < (int)size ? 1 : -1;
    return 0;
}

static const char *const clip_l_prefixes[] = {
    "", "cond_stage_model.transformer.", "conditioner.embedders.0.transformer.", "transformer.",
    "text_encoders.clip_l.transformer.", "clip_l.", "te1.", "text_encoder.", NULL,
};

static int clip_l_name(char *out, size_t size, const char *name, int sdxl)
{
    const char *rest = after(name, clip_l_prefixes, "text_model.");
    if (!rest) return 0;
    const char *to = sdxl ? "conditioner.embedders.0.transformer.text_model." : "cond_stage_model.transformer.text_model.";
    return snprintf(out, size, "%s%s", to, rest) < (int)size ? 1 : -1;
}

static const char *const bigg_prefixes[] = {"conditioner.embedders.1.model.", "cond_stage_model.model.", "model.", "", NULL};
static const char *const bigg_roots[] = {"transformer.resblocks.", "token_embedding.", "positional_embedding",
                                         "ln_final.", "text_projection"};
static const char *const hf_g_prefixes[] = {
    "", "conditioner.embedders.1.transformer.", "cond_stage_model.1.transformer.", "transformer.",
    "text_encoders.clip_g.transformer.", "clip_g.", "te2.", "text_encoder_2.", NULL,
};

/* 1: an ldm name in out; 2: a Hugging Face q/k/v or text_projection.weight
 * (synthesised later); 0: not this role's. */
static int clip_g_name(char *out, size_t size, const char *name)
{
    for (int i = 0; bigg_prefixes[i]; i++)
        for (size_t r = 0; r < sizeof bigg_roots / sizeof bigg_roots[0]; r++) {
            const char *rest = after(name, (const char *const[]){bigg_prefixes[i], NULL}, bigg_roots[r]);
            const char *root = bigg_roots[r];
            if (rest && root[strlen(root) - 1] != '.' && *rest) rest = NULL; /* a whole name (not text_projection.weight) */
            if (rest)
                return snprintf(out, size, "conditioner.embedders.1.model.%s%s", bigg_roots[r], rest) < (int)size ? 1 : -1;
        }
    const char *rest = after(name, hf_g_prefixes, "text_model.");
    if (rest) {
        char tmp[512];
        snprintf(tmp, sizeof tmp, "cond_stage_model.1.transformer.text_model.%s", rest);
        if (wt_gguf_ldm_name(out, size, tmp, 0, 1)) return -1;
        return strstr(out, ".self_attn.q_proj.") || strstr(out, ".self_attn.k_proj.") || strstr(out, ".self_attn.v_proj.") ? 2 : 1;
    }
    if (after(name, hf_g_prefixes, "text_projection.weight")) return 2;
    return 0;
}

/* A 2-D copy of t, transposed: in t's own dtype (so a converted file keeps
 * it, as torch's .T.contiguous() does), float32 for a quantised t. */
static int transposed(listed *l, const wt_tensor *t, wt_tensor *out, const char *name)
{
    int64_t r = t->shape[0], c = t->shape[1];
    int quant = core_dtype_is_quant(t->dtype);
    size_t es = quant ? sizeof(float) : core_dtype_size(t->dtype), n = (size_t)(r * c);
    uint8_t *dst = own_block(l, es * n);
    float *f32 = quant ? core_alloc(sizeof(float) * n) : NULL;
    if (!dst || (quant && !f32)) {
        core_free(f32);
        return -1;
    }
    if (quant) wt_convert_f32(f32, t);
    const uint8_t *src = quant ? (const uint8_t *)f32 : t->data;
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < c; j++) memcpy(dst + (size_t)(j * r + i) * es, src + (size_t)(i * c + j) * es, es);
    core_free(f32);
    *out = (wt_tensor){.dtype = quant ? FM_DT_F32 : t->dtype, .ndim = 2, .shape = {c, r}, .nbytes = es * n, .data = dst};
    return add(l, out, name);
}

/* q, k, v (same dtype and shape) stacked along rows, as nn.MultiheadAttention's in_proj. */
static int stacked(listed *l, const wt_tensor *const qkv[3], const char *name)
{
    for (int i = 1; i < 3; i++)
        if (qkv[i]->dtype != qkv[0]->dtype || qkv[i]->ndim != qkv[0]->ndim || qkv[i]->shape[0] != qkv[0]->shape[0] ||
            (qkv[0]->ndim == 2 && qkv[i]->shape[1] != qkv[0]->shape[1]))
            return -2;
    uint8_t *d = own_block(l, 3 * qkv[0]->nbytes);
    if (!d) return -1;
    for (int i = 0; i < 3; i++) memcpy(d + i * qkv[0]->nbytes, qkv[i]->data, qkv[0]->nbytes);
    wt_tensor t = *qkv[0];
    t.shape[0] *= 3;
    t.nbytes *= 3;
    t.data = d;
    return add(l, &t, name);
}

/* The in_proj of every layer that has Hugging Face q/k/v. */
static int fuse_qkv(listed *l, wt_source *src, fm_error *err)
{
    static const char *const kinds[] = {"weight", "bias"};
    for (int layer = 0; layer < 1000; layer++) {
        int found = 0;
        for (int k = 0; k < 2; k++) {
            const wt_tensor *qkv[3] = {NULL, NULL, NULL};
            static const char *const which[] = {"q", "k", "v"};
            for (int w = 0; w < 3; w++)
                for (int i = 0; hf_g_prefixes[i] && !qkv[w]; i++) {
                    char n[300];
                    snprintf(n, sizeof n, "%stext_model.encoder.layers.%d.self_attn.%s_proj.%s", hf_g_prefixes[i], layer,
                             which[w], kinds[k]);
                    qkv[w] = wt_find(src, n);
                }
            if (!qkv[0] && !qkv[1] && !qkv[2]) continue;
            found = 1;
            if (!qkv[0] || !qkv[1] || !qkv[2])
                return wt_fail(err, src, "layer %d: q_proj, k_proj and v_proj %s must all be there", layer, kinds[k]);
            char name[200];
            snprintf(name, sizeof name, "conditioner.embedders.1.model.transformer.resblocks.%d.attn.in_proj_%s", layer, kinds[k]);
            int rc = stacked(l, qkv, name);
            if (rc == -2) return wt_fail(err, src, "layer %d: q_proj, k_proj and v_proj %s differ in type or shape", layer, kinds[k]);
            if (rc) return wt_fail(err, src, "out of memory");
        }
        if (!found) break;
    }
    return 0;
}

/* A diffusers AutoencoderKL's levels: 1 + the largest up_blocks (down_blocks) index. */
static int diffusers_vae_levels(const wt_source *src)
{
    int levels = 0;
    for (int i = 0; i < wt_count(src); i++) {
        const char *n = wt_at(src, i)->name, *b;
        if (!strncmp(n, "vae.", 4)) n += 4;
        if ((b = strstr(n, "decoder.up_blocks.")) == n || (b = strstr(n, "encoder.down_blocks.")) == n) {
            int k = atoi(strchr(b, '_') + 8); /* after "_blocks." */
            if (k >= 0 && k < 1000 && k + 1 > levels) levels = k + 1;
        }
    }
    return levels;
}

/* A diffusers VAE tensor under its ldm name (a view, rename.h). 0: not a
 * VAE tensor (left out). */
static int add_diffusers_vae(listed *l, const wt_tensor *t, int levels, wt_source *src, fm_error *err)
{
    char name[512];
    wt_tensor c;
    int k = wt_vae_diffusers_tensor(t, levels, name, sizeof name, &c);
    if (k < 0) return wt_fail(err, src, "tensor %.200s: name too long", t->name);
    return k && add(l, &c, name) ? wt_fail(err, src, "out of memory") : 0;
}

static const char *const part_names[] = {"a VAE", "a CLIP-L text encoder", "an OpenCLIP bigG text encoder"};

wt_source *wt_part_view(wt_source *src, wt_part role, int sdxl, fm_error *err)
{
    listed *l = l_new(&src, 1, src->path);
    if (!l) {
        wt_fail(err, src, "out of memory");
        wt_close(src);
        return NULL;
    }
    int rc = 0, levels = 0;
    /* diffusers names (down_blocks, mid_block, ...): renamed as diffusers'
     * conversion script does */
    for (int i = 0; role == WT_PART_VAE && i < wt_count(src) && !levels; i++)
        if (wt_vae_is_diffusers(wt_at(src, i)->name)) levels = diffusers_vae_levels(src);
    for (int i = 0; i < wt_count(src) && !rc && levels; i++) rc = add_diffusers_vae(l, wt_at(src, i), levels, src, err);
    for (int i = 0; i < wt_count(src) && !rc && !levels; i++) {
        const wt_tensor *t = wt_at(src, i);
        char name[512];
        int k = role == WT_PART_VAE ? vae_name(name, sizeof name, t->name)
              : role == WT_PART_CLIP_L ? clip_l_name(name, sizeof name, t->name, sdxl)
                                       : clip_g_name(name, sizeof name, t->name);
        if (k < 0) rc = wt_fail(err, src, "tensor %.200s: name too long", t->name);
        else if (k == 1 && add(l, t, name)) rc = wt_fail(err, src, "out of memory");
        else if (k == 2 && strstr(t->name, "text_projection.weight")) {
            wt_tensor out;
            if (t->ndim != 2) rc = wt_fail(err, src, "tensor %.200s: not a matrix", t->name);
            else if (transposed(l, t, &out, "conditioner.embedders.1.model.text_projection"))
                rc = wt_fail(err, src, "out of memory");
        }
    }
    if (!rc && role == WT_PART_CLIP_G) rc = fuse_qkv(l, src, err);
    if (!rc && !l->n) rc = wt_fail(err, src, "holds no tensors of %s", part_names[role]);
    if (rc) {
        l_free(l);
        return NULL;
    }
    qsort(l->t, (size_t)l->n, sizeof *l->t, cmp_name);
    for (int i = 1; i < l->n; i++)
        if (!strcmp(l->t[i - 1].name, l->t[i].name)) {
            wt_fail(err, src, "tensor %.200s: given twice (under two prefixes)", l->t[i].name);
            l_free(l);
            return NULL;
        }
    return &l->src;
}

/* ---- renaming views (diffusers folders) ---- */

wt_source *wt_renamed(wt_source *src, wt_rename_fn fn, void *ctx, const char *const (*kv)[2], int n_kv, fm_error *err)
{
    listed *l = l_new(&src, 1, src->path);
    if (!l || (n_kv > 0 && !(l->kv = calloc(2 * (size_t)n_kv, sizeof *l->kv)))) {
        wt_fail(err, src, "out of memory");
        if (l) l_free(l);
        else wt_close(src);
        return NULL;
    }
    int rc = 0;
    for (int i = 0; i < n_kv && !rc; i++) {
        l->kv[2 * i] = strdup(kv[i][0]);
        l->kv[2 * i + 1] = strdup(kv[i][1]);
        l->n_kv = i + 1;
        if (!l->kv[2 * i] || !l->kv[2 * i + 1]) rc = wt_fail(err, src, "out of memory");
    }
    for (int i = 0; i < wt_count(src) && !rc; i++) {
        const wt_tensor *t = wt_at(src, i);
        wt_tensor out = *t;
        char name[512];
        int k = fn(ctx, t, name, sizeof name, &out);
        if (k < 0) rc = wt_fail(err, src, "tensor %.200s: %s", t->name, k == -2 ? "not a name of this part" : "name too long");
        else if (k == 1 && wt_numel(&out) != wt_numel(t)) rc = wt_fail(err, src, "tensor %.200s: bad reshape", t->name);
        else if (k == 1 && add(l, &out, name)) rc = wt_fail(err, src, "out of memory");
    }
    if (!rc) {
        qsort(l->t, (size_t)l->n, sizeof *l->t, cmp_name);
        for (int i = 1; i < l->n && !rc; i++)
            if (!strcmp(l->t[i - 1].name, l->t[i].name))
                rc = wt_fail(err, src, "tensor %.200s: given twice", l->t[i].name);
    }
    if (rc) {
        l_free(l);
        return NULL;
    }
    return &l->src;
}
