/* The CLIP / OpenCLIP text transformer: loading (HF or open_clip names, every
 * shape checked) and the forward pass
 *   x = token_embedding[ids] + position_embedding
 *   per layer: x += out_proj(causal_mha(ln1(x))); x += fc2(act(fc1(ln2(x))))
 * with act = quick_gelu (CLIP) or exact GELU (OpenCLIP). */
#include "textenc/textenc.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kernels.h"
#include "weights/binder.h"

typedef struct tower_layer {
    const float *ln1_g, *ln1_b, *ln2_g, *ln2_b;
    kn_mat q, k, v, out, fc1, fc2;
    const float *q_b, *k_b, *v_b, *out_b, *fc1_b, *fc2_b;
    kn_mat in_proj;           /* OpenCLIP: the fused [q; k; v] that q, k, v view */
    const float *in_bias;
} tower_layer;

struct te_tower {
    wt_text_config cfg;
    int width, heads, inter, n_layers, proj_dim;
    float eps;
    kn_mat tok_emb;           /* [vocab][width], read a row at a time */
    const float *pos_emb;     /* [77][width] */
    tower_layer *layers;
    const float *lnf_g, *lnf_b;
    kn_mat proj;              /* text_projection [width][proj_dim], used as x @ proj; rows 0 if none */
    wt_weights *weights;      /* the binding records and any converted copies */
};

/* ---- loading (weights/binder.h; names are relative to cfg.prefix) ---- */

/* Biases, norms, the position embedding: float32. */
static void small(wt_binder *b, const float **dst, const char *suffix, int ndim, int64_t d0, int64_t d1)
{
    int64_t shape[2] = {d0, d1};
    wt_bind_f32(b, dst, ndim, shape, "%s", suffix);
}

/* A weight matrix as a view into the file (F64 converted). */
static void matrix(wt_binder *b, kn_mat *m, const char *suffix, int64_t rows, int64_t cols)
{
    int64_t shape[2] = {rows, cols};
    wt_bind_mat(b, m, (int)rows, (int)cols, 2, shape, "%s", suffix);
}

/* Rows [r0, r0+nr) of m as a matrix of its own (the fused in_proj's q, k, v). */
static kn_mat sub_rows(const kn_mat *m, int r0, int nr)
{
    kn_mat s = *m;
    s.data = (const char *)m->data + core_dtype_bytes(m->dtype, (size_t)r0 * m->cols);
    s.rows = nr;
    return s;
}

static void load_clip_layer(wt_binder *b, tower_layer *L, int i, int W, int I)
{
    char p[160];
#define HF(s) (snprintf(p, sizeof p, "encoder.layers.%d.%s", i, s), p)
    small(b, &L->ln1_g, HF("layer_norm1.weight"), 1, W, 0);
    small(b, &L->ln1_b, HF("layer_norm1.bias"), 1, W, 0);
    matrix(b, &L->q, HF("self_attn.q_proj.weight"), W, W);
    small(b, &L->q_b, HF("self_attn.q_proj.bias"), 1, W, 0);
    matrix(b, &L->k, HF("self_attn.k_proj.weight"), W, W);
    small(b, &L->k_b, HF("self_attn.k_proj.bias"), 1, W, 0);
    matrix(b, &L->v, HF("self_attn.v_proj.weight"), W, W);
    small(b, &L->v_b, HF("self_attn.v_proj.bias"), 1, W, 0);
    matrix(b, &L->out, HF("self_attn.out_proj.weight"), W, W);
    small(b, &L->out_b, HF("self_attn.out_proj.bias"), 1, W, 0);
    small(b, &L->ln2_g, HF("layer_norm2.weight"), 1, W, 0);
    small(b, &L->ln2_b, HF("layer_norm2.bias"), 1, W, 0);
    matrix(b, &L->fc1, HF("mlp.fc1.weight"), I, W);
    small(b, &L->fc1_b, HF("mlp.fc1.bias"), 1, I, 0);
    matrix(b, &L->fc2, HF("mlp.fc2.weight"), W, I);
    small(b, &L->fc2_b, HF("mlp.fc2.bias"), 1, W, 0);
#undef HF
}

static void load_openclip_layer(wt_binder *b, tower_layer *L, int i, int W, int I)
{
    char p[160];
#define OC(s) (snprintf(p, sizeof p, "transformer.resblocks.%d.%s", i, s), p)
    small(b, &L->ln1_g, OC("ln_1.weight"), 1, W, 0);
    small(b, &L->ln1_b, OC("ln_1.bias"), 1, W, 0);
    matrix(b, &L->in_proj, OC("attn.in_proj_weight"), 3 * W, W);
    small(b, &L->in_bias, OC("attn.in_proj_bias"), 1, 3 * W, 0);
    matrix(b, &L->out, OC("attn.out_proj.weight"), W, W);
    small(b, &L->out_b, OC("attn.out_proj.bias"), 1, W, 0);
    small(b, &L->ln2_g, OC("ln_2.weight"), 1, W, 0);
    small(b, &L->ln2_b, OC("ln_2.bias"), 1, W, 0);
    matrix(b, &L->fc1, OC("mlp.c_fc.weight"), I, W);
    small(b, &L->fc1_b, OC("mlp.c_fc.bias"), 1, I, 0);
    matrix(b, &L->fc2, OC("mlp.c_proj.weight"), W, I);
    small(b, &L->fc2_b, OC("mlp.c_proj.bias"), 1, W, 0);
#undef OC
    if (!wt_bind_ok(b) || !L->in_bias) return; /* list mode binds nothing */
    /* nn.MultiheadAttention's in_proj rows are [q; k; v]. */
    L->q = sub_rows(&L->in_proj, 0, W);
    L->k = sub_rows(&L->in_proj, W, W);
    L->v = sub_rows(&L->in_proj, 2 * W, W);
    L->q_b = L->in_bias;
    L->k_b = L->in_bias + W;
    L->v_b = L->in_bias + 2 * W;
}

/* CLIPTextModel / open_clip TextTransformer.__init__, tensor by tensor. */
static void bind_tower(wt_binder *b, te_tower *t)
{
    const wt_text_config *cfg = &t->cfg;
    int W = t->width, I = t->inter;
    if (cfg->kind == FM_TEXT_CLIP) {
        matrix(b, &t->tok_emb, "embeddings.token_embedding.weight", cfg->vocab_size, W);
        small(b, &t->pos_emb, "embeddings.position_embedding.weight", 2, FM_CLIP_LEN, W);
        for (int i = 0; i < t->n_layers; i++) load_clip_layer(b, &t->layers[i], i, W, I);
        small(b, &t->lnf_g, "final_layer_norm.weight", 1, W, 0);
        small(b, &t->lnf_b, "final_layer_norm.bias", 1, W, 0);
        if (wt_bind_ok(b) && cfg->projection_dim)
            wt_bind_fail(b, "%s: a CLIPTextModel has no text_projection (projection_dim %d)", cfg->prefix,
                         cfg->projection_dim);
    } else {
        matrix(b, &t->tok_emb, "token_embedding.weight", cfg->vocab_size, W);
        small(b, &t->pos_emb, "positional_embedding", 2, FM_CLIP_LEN, W);
        for (int i = 0; i < t->n_layers; i++) load_openclip_layer(b, &t->layers[i], i, W, I);
        small(b, &t->lnf_g, "ln_final.weight", 1, W, 0);
        small(b, &t->lnf_b, "ln_final.bias", 1, W, 0);
        if (cfg->projection_dim) {
            matrix(b, &t->proj, "text_projection", W, cfg->projection_dim);
            t->proj_dim = cfg->projection_dim;
        }
    }
}

static int check_config(const wt_text_config *c, fm_error *err)
{
    const char *what = c->prefix[0] ? c->prefix : "text encoder";
    if (c->kind != FM_TEXT_CLIP && c->kind != FM_TEXT_OPENCLIP)
        return core_fail(err, FM_EINPUT, "%s: unknown text encoder kind %d", what, (int)c->kind);
    if (c->width <= 0 || c->layers <= 0 || c->heads <= 0 || c->width % c->heads)
        return core_fail(err, FM_EINPUT, "%s: width %d, %d heads, %d layers is not a transformer", what,
                       c->width, c->heads, c->layers);
    if (c->vocab_size <= 0 || c->intermediate_size < 0 || c->projection_dim < 0)
        return core_fail(err, FM_EINPUT, "%s: bad vocab_size/intermediate_size/projection_dim", what);
    if (c->max_length != 0 && c->max_length != FM_CLIP_LEN)
        return core_fail(err, FM_EINPUT, "%s: max_length %d, only %d is supported", what, c->max_length,
                       FM_CLIP_LEN);
    return 0;
}

/* The tower's shape from cfg, no weights yet. */
static te_tower *tower_new(const wt_text_config *cfg, fm_error *err)
{
    if (check_config(cfg, err))
        return NULL;
    te_tower *t = calloc(1, sizeof *t);
    if (t) {
        t->cfg = *cfg;
        t->width = cfg->width;
        t->heads = cfg->heads;
        t->n_layers = cfg->layers;
        t->inter = cfg->intermediate_size ? cfg->intermediate_size : 4 * cfg->width;
        t->eps = cfg->layer_norm_eps > 0 ? cfg->layer_norm_eps : 1e-5f;
        t->layers = calloc((size_t)t->n_layers, sizeof *t->layers);
    }
    if (!t || !t->layers) {
        te_tower_free(t);
        core_fail(err, FM_EINPUT, "text encoder: out of memory");
        return NULL;
    }
    return t;
}

te_tower *te_tower_load(const wt_source *src, const wt_text_config *cfg, fm_error *err)
{
    te_tower *t = tower_new(cfg, err);
    if (!t)
        return NULL;
    wt_binder b;
    wt_bind_begin(&b, src, cfg->prefix, "text encoder", err);
    do bind_tower(&b, t);
    while (wt_bind_again(&b));
    if (!(t->weights = wt_bind_end(&b))) {
        te_tower_free(t);
        return NULL;
    }
    return t;
}

int te_tower_list_tensors(const wt_text_config *cfg, wt_list_fn fn, void *user, fm_error *err)
{
    te_tower *t = tower_new(cfg, err);
    if (!t)
        return FM_EINPUT;
    wt_binder b;
    wt_list_begin(&b, fn, user, cfg->prefix, "text encoder", err);
    bind_tower(&b, t);
    wt_bind_end(&b);
    te_tower_free(t);
    return b.failed ? FM_EINPUT : 0;
}

void te_tower_free(te_tower *t)
{
    if (!t)
        return;
    wt_weights_free(t->weights);
    free(t->layers);
    free(t);
}

const wt_text_config *te_tower_config(const te_tower *t) { return &t->cfg; }

int te_output_layer(const wt_text_config *cfg, int clip_skip, int *layer, int *final_ln, fm_error *err)
{
    int L = cfg->layers;
    if (cfg->penultimate) {
        *layer = L - 1;
    } else {
        if (clip_skip < 1)
            clip_skip = 1;
        if (clip_skip > L)
            return core_fail(err, FM_EUSAGE, "clip skip %d: the text encoder has only %d layers", clip_skip, L);
        /* A1111: hidden_states[-N] = the output after L+1-N layers. */
        *layer = L + 1 - clip_skip;
    }
    *final_ln = cfg->final_ln_on_output;
    return 0;
}

/* ---- forward ---- */

typedef struct workspace {
    float *x, *h, *q, *k, *v, *att, *mlp; /* [rows][W] each, mlp [rows][inter] */
} workspace;

static void transformer_layer(const te_tower *t, const tower_layer *L, workspace *ws, int n)
{
    int W = t->width, rows = n * FM_CLIP_LEN, hd = W / t->heads;
    size_t rw = (size_t)rows * W;

    kn_layer_norm(ws->h, ws->x, rows, W, L->ln1_g, L->ln1_b, t->eps);
    kn_linear(ws->q, ws->h, rows, &L->q, L->q_b);
    kn_linear(ws->k, ws->h, rows, &L->k, L->k_b);
    kn_linear(ws->v, ws->h, rows, &L->v, L->v_b);
    kn_attention(ws->att, ws->q, W, ws->k, ws->v, W, n, FM_CLIP_LEN, FM_CLIP_LEN, t->heads, hd,
                 1.0f / sqrtf((float)hd), 1);
    kn_linear(ws->h, ws->att, rows, &L->out, L->out_b);
    kn_add(ws->x, ws->x, ws->h, rw);

    kn_layer_norm(ws->h, ws->x, rows, W, L->ln2_g, L->ln2_b, t->eps);
    kn_linear(ws->mlp, ws->h, rows, &L->fc1, L->fc1_b);
    if (t->cfg.act_quick_gelu)
        kn_quick_gelu(ws->mlp, (size_t)rows * t->inter);
    else
        kn_gelu(ws->mlp, (size_t)rows * t->inter);
    kn_linear(ws->h, ws->mlp, rows, &L->fc2, L->fc2_b);
    kn_add(ws->x, ws->x, ws->h, rw);
}

/* token_embedding[ids], with the embeddings' vectors in their slots (A1111's
 * EmbeddingsWithFixes wraps the token embedding: the vectors go in before
 * the position embedding is added), then + position_embedding. */
static void embed(const te_tower *t, float *x, const int32_t (*ids)[FM_CLIP_LEN], int n,
                  const te_token_fix *fixes, int n_fixes, int tower)
{
    int W = t->width;
    for (int s = 0; s < n; s++)
        for (int p = 0; p < FM_CLIP_LEN; p++)
            kn_mat_row(x + ((size_t)s * FM_CLIP_LEN + p) * W, &t->tok_emb, ids[s][p]);
    for (int f = 0; f < n_fixes; f++) {
        const te_token_fix *fx = &fixes[f];
        int len = FM_CLIP_LEN - fx->offset - 1; /* emb_len = min(77 - offset - 1, vectors) */
        if (len > fx->n_vectors)
            len = fx->n_vectors;
        memcpy(x + ((size_t)fx->chunk * FM_CLIP_LEN + fx->offset + 1) * W, fx->vec[tower],
               sizeof(float) * (size_t)len * W);
    }
    for (int s = 0; s < n; s++)
        for (int p = 0; p < FM_CLIP_LEN; p++) {
            float *row = x + ((size_t)s * FM_CLIP_LEN + p) * W;
            kn_add(row, row, t->pos_emb + (size_t)p * W, (size_t)W);
        }
}

/* open_clip: x[argmax(ids)] -- the first EOS, 49407 being the largest id. */
static int eos_position(const int32_t ids[FM_CLIP_LEN])
{
    int at = 0;
    for (int p = 1; p < FM_CLIP_LEN; p++)
        if (ids[p] > ids[at])
            at = p;
    return at;
}

/* pooled[P] = ln_final(x_eos) @ text_projection; tmp holds W + P floats,
 * acc P doubles. */
static void pool(const te_tower *t, float *pooled, const float *x_eos, float *tmp, double *acc)
{
    int W = t->width, P = t->proj_dim;
    float *xn = tmp, *row = tmp + W;
    kn_layer_norm(xn, x_eos, 1, W, t->lnf_g, t->lnf_b, t->eps);
    for (int j = 0; j < P; j++)
        acc[j] = 0;
    for (int i = 0; i < W; i++) {
        kn_mat_row(row, &t->proj, i);
        for (int j = 0; j < P; j++)
            acc[j] += (double)xn[i] * row[j];
    }
    for (int j = 0; j < P; j++)
        pooled[j] = (float)acc[j];
}

int te_tower_forward(const te_tower *t, const int32_t (*ids)[FM_CLIP_LEN], int n, int layer,
                          int final_ln, float *hidden, float *pooled, fm_error *err)
{
    return te_tower_forward_fixed(t, ids, n, NULL, 0, 0, layer, final_ln, hidden, pooled, err);
}

int te_tower_forward_fixed(const te_tower *t, const int32_t (*ids)[FM_CLIP_LEN], int n,
                           const te_token_fix *fixes, int n_fixes, int tower, int layer, int final_ln,
                           float *hidden, float *pooled, fm_error *err)
{
    const char *what = t->cfg.prefix;
    if (n < 1)
        return core_fail(err, FM_EINPUT, "%s: no sequences to encode", what);
    if (layer < 0 || layer > t->n_layers)
        return core_fail(err, FM_EINPUT, "%s: hidden state %d requested, the encoder has %d layers", what,
                       layer, t->n_layers);
    if (pooled && !t->proj_dim)
        return core_fail(err, FM_EINPUT, "%s: pooled output requested, the encoder has no text_projection", what);
    for (int s = 0; s < n; s++)
        for (int p = 0; p < FM_CLIP_LEN; p++)
            if (ids[s][p] < 0 || ids[s][p] >= t->cfg.vocab_size)
                return core_fail(err, FM_EINPUT, "%s: token id %d outside the vocabulary (%d)", what,
                               (int)ids[s][p], t->cfg.vocab_size);

    int W = t->width, rows = n * FM_CLIP_LEN;
    size_t rw = (size_t)rows * W, P = (size_t)t->proj_dim;
    /* the pooling accumulator first, so the doubles are aligned */
    double *acc = core_alloc(sizeof(double) * P + sizeof(float) * (6 * rw + (size_t)rows * t->inter + W + P));
    if (!acc)
        return core_fail(err, FM_EINPUT, "%s: out of memory for %d sequences", what, n);
    float *mem = (float *)(acc + P);
    workspace ws = {mem, mem + rw, mem + 2 * rw, mem + 3 * rw, mem + 4 * rw, mem + 5 * rw, mem + 6 * rw};
    float *tmp = ws.mlp + (size_t)rows * t->inter;

    for (int f = 0; f < n_fixes; f++)
        if (fixes[f].chunk < 0 || fixes[f].chunk >= n || fixes[f].offset < 0 || fixes[f].offset >= FM_CLIP_LEN - 1 ||
            !fixes[f].vec[tower]) {
            core_free(acc);
            return core_fail(err, FM_EINPUT, "%s: an embedding placed outside the prompt's chunks", what);
        }
    embed(t, ws.x, ids, n, fixes, n_fixes, tower);
    int run = pooled ? t->n_layers : layer;
    for (int l = 0; l <= run; l++) {
        if (l == layer && hidden) {
            if (final_ln)
                kn_layer_norm(hidden, ws.x, rows, W, t->lnf_g, t->lnf_b, t->eps);
            else
                memcpy(hidden, ws.x, sizeof(float) * rw);
        }
        if (l < run)
            transformer_layer(t, &t->layers[l], &ws, n);
    }
    if (pooled)
        for (int s = 0; s < n; s++)
            pool(t, pooled + (size_t)s * t->proj_dim,
                 ws.x + ((size_t)s * FM_CLIP_LEN + eos_position(ids[s])) * W, tmp, acc);
    core_free(acc);
    return 0;
}
