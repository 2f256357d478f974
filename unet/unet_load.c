/* Building the U-Net from a checkpoint: the walk over ldm's UNetModel
 * constructor (openaimodel.py), requiring every tensor with its shape.
 * The same walk lists the tensors without a file (un_list_tensors). */
#include "unet/unet_model.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NAME_MAX_LEN WT_NAME_MAX

typedef struct loader {
    un_model *u;
    wt_binder b; /* binding or list mode */
} loader;

/* Number of heads and their width for a transformer of c channels:
 * num_head_channels given (SD 2.x, SDXL): heads = c / num_head_channels;
 * otherwise (SD 1.x) dim_head = c / num_heads. Returns 0, or -1 when c does
 * not split evenly. */
static int un_heads(const wt_unet_config *cfg, int c, int *heads, int *dim_head)
{
    if (cfg->num_head_channels > 0) {
        if (c % cfg->num_head_channels) return -1;
        *heads = c / cfg->num_head_channels;
        *dim_head = cfg->num_head_channels;
    } else {
        if (cfg->num_heads <= 0 || c % cfg->num_heads) return -1;
        *heads = cfg->num_heads;
        *dim_head = c / cfg->num_heads;
    }
    return 0;
}

static void vformat(char *dst, const char *fmt, va_list ap)
{
    vsnprintf(dst, NAME_MAX_LEN, fmt, ap);
}

/* A tensor name into dst [NAME_MAX_LEN]; real names are far shorter. */
static void fmt_name(char *dst, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vformat(dst, fmt, ap);
    va_end(ap);
}

/* A float32 view or copy of the 1-D tensor NAME [n]. */
static const float *vec(loader *L, int n, const char *fmt, ...)
{
    char name[NAME_MAX_LEN];
    va_list ap;
    va_start(ap, fmt);
    vformat(name, fmt, ap);
    va_end(ap);
    const float *f;
    wt_bind_vec(&L->b, &f, n, "%s", name);
    return f;
}

/* Matrix [rows][cols] mapped from NAME, stored with shape[ndim]. */
static void mat_nd(loader *L, kn_mat *m, int rows, int cols, int ndim, const int64_t *shape,
                   const char *name)
{
    wt_bind_mat(&L->b, m, rows, cols, ndim, shape, "%s", name);
}

static void mat(loader *L, kn_mat *m, int rows, int cols, const char *fmt, ...)
{
    char name[NAME_MAX_LEN];
    va_list ap;
    va_start(ap, fmt);
    vformat(name, fmt, ap);
    va_end(ap);
    int64_t shape[2] = {rows, cols};
    mat_nd(L, m, rows, cols, 2, shape, name);
}

/* nn.Linear BASE.weight [out][in] (+ BASE.bias [out]). */
static void linear(loader *L, un_linear *l, int in, int out, int with_bias, const char *base)
{
    mat(L, &l->w, out, in, "%s.weight", base);
    l->bias = with_bias ? vec(L, out, "%s.bias", base) : NULL;
}

/* Linear weights that may be stored as a 1x1 conv [out][in][1][1] (SD 1.x proj_in/out). */
static void linear_or_1x1(loader *L, un_linear *l, int in, int out, int as_conv, const char *base)
{
    if (!as_conv) {
        linear(L, l, in, out, 1, base);
        return;
    }
    char name[NAME_MAX_LEN];
    fmt_name(name, "%s.weight", base);
    int64_t shape[4] = {out, in, 1, 1};
    mat_nd(L, &l->w, out, in, 4, shape, name);
    l->bias = vec(L, out, "%s.bias", base);
}

/* nn.Conv2d BASE [cout][cin][k][k] with bias, symmetric zero padding. */
static void conv(loader *L, kn_conv *c, int cin, int cout, int k, int stride, int pad,
                 const char *base)
{
    memset(c, 0, sizeof *c);
    char name[NAME_MAX_LEN];
    fmt_name(name, "%s.weight", base);
    int64_t shape[4] = {cout, cin, k, k};
    mat_nd(L, &c->w, cout, cin * k * k, 4, shape, name);
    c->bias = vec(L, cout, "%s.bias", base);
    c->cin = cin;
    c->cout = cout;
    c->kh = c->kw = k;
    c->stride = stride;
    c->pad_t = c->pad_l = c->pad_b = c->pad_r = pad;
}

static void norm(loader *L, un_norm *n, int c, const char *base)
{
    n->gamma = vec(L, c, "%s.weight", base);
    n->beta = vec(L, c, "%s.bias", base);
}

static void sub(char *dst, const char *base, const char *fmt, ...)
{
    char tail[NAME_MAX_LEN];
    va_list ap;
    va_start(ap, fmt);
    vformat(tail, fmt, ap);
    va_end(ap);
    fmt_name(dst, "%s.%s", base, tail);
}

static void resblock(loader *L, un_resblock *r, int cin, int cout, const char *base)
{
    char n[NAME_MAX_LEN];
    r->cin = cin;
    r->cout = cout;
    sub(n, base, "in_layers.0"), norm(L, &r->in_norm, cin, n);
    sub(n, base, "in_layers.2"), conv(L, &r->in_conv, cin, cout, 3, 1, 1, n);
    sub(n, base, "emb_layers.1"), linear(L, &r->emb_proj, L->u->time_dim, cout, 1, n);
    sub(n, base, "out_layers.0"), norm(L, &r->out_norm, cout, n);
    sub(n, base, "out_layers.3"), conv(L, &r->out_conv, cout, cout, 3, 1, 1, n);
    r->has_skip = cin != cout;
    if (r->has_skip) sub(n, base, "skip_connection"), conv(L, &r->skip, cin, cout, 1, 1, 0, n);
}

static void attention(loader *L, un_attention *a, int c, int kv_dim, const char *base)
{
    char n[NAME_MAX_LEN];
    mat(L, &a->to_q, c, c, "%s.to_q.weight", base);
    mat(L, &a->to_k, c, kv_dim, "%s.to_k.weight", base);
    mat(L, &a->to_v, c, kv_dim, "%s.to_v.weight", base);
    sub(n, base, "to_out.0"), linear(L, &a->to_out, c, c, 1, n);
}

static void transformer_block(loader *L, un_transformer_block *b, int c, const char *base)
{
    char n[NAME_MAX_LEN];
    sub(n, base, "norm1"), norm(L, &b->norm1, c, n);
    sub(n, base, "attn1"), attention(L, &b->attn1, c, c, n);
    sub(n, base, "norm2"), norm(L, &b->norm2, c, n);
    sub(n, base, "attn2"), attention(L, &b->attn2, c, L->u->cfg.context_dim, n);
    sub(n, base, "norm3"), norm(L, &b->norm3, c, n);
    sub(n, base, "ff.net.0.proj"), linear(L, &b->ff_proj, c, 8 * c, 1, n);
    sub(n, base, "ff.net.2"), linear(L, &b->ff_out, 4 * c, c, 1, n);
}

static void spatial_transformer(loader *L, un_spatial_transformer *s, int c, int depth,
                                const char *base)
{
    const wt_unet_config *cfg = &L->u->cfg;
    char n[NAME_MAX_LEN];
    s->c = c;
    s->depth = depth;
    if (!wt_bind_ok(&L->b)) return;
    if (un_heads(cfg, c, &s->heads, &s->dim_head)) {
        wt_bind_fail(&L->b, "U-Net config: %d channels do not split into heads (num_heads %d, num_head_channels %d)",
                     c, cfg->num_heads, cfg->num_head_channels);
        return;
    }
    if (!s->blocks) s->blocks = calloc((size_t)depth, sizeof *s->blocks); /* once for both walks */
    if (!s->blocks) {
        wt_bind_fail(&L->b, "U-Net: out of memory");
        return;
    }
    sub(n, base, "norm"), norm(L, &s->norm, c, n);
    sub(n, base, "proj_in"), linear_or_1x1(L, &s->proj_in, c, c, !cfg->use_linear_in_transformer, n);
    for (int d = 0; d < depth; d++)
        sub(n, base, "transformer_blocks.%d", d), transformer_block(L, &s->blocks[d], c, n);
    sub(n, base, "proj_out"), linear_or_1x1(L, &s->proj_out, c, c, !cfg->use_linear_in_transformer, n);
}

static int check_config(const wt_unet_config *cfg, fm_error *err)
{
    if (cfg->n_levels < 1 || cfg->n_levels > FM_MAX_LEVELS)
        return core_fail(err, FM_EINPUT, "U-Net config: %d levels (1..%d)", cfg->n_levels, FM_MAX_LEVELS);
    if (cfg->in_channels < 1 || cfg->out_channels < 1 || cfg->num_res_blocks < 1)
        return core_fail(err, FM_EINPUT, "U-Net config: in %d, out %d channels, %d res blocks",
                       cfg->in_channels, cfg->out_channels, cfg->num_res_blocks);
    int any_attn = cfg->transformer_depth_middle > 0;
    for (int l = 0; l < cfg->n_levels; l++) {
        int c = cfg->model_channels * cfg->channel_mult[l];
        if (cfg->channel_mult[l] < 1 || cfg->model_channels < UN_GROUPS || c % UN_GROUPS)
            return core_fail(err, FM_EINPUT, "U-Net config: level %d has %d channels (a multiple of %d needed)",
                           l, c, UN_GROUPS);
        if (cfg->transformer_depth[l] < 0)
            return core_fail(err, FM_EINPUT, "U-Net config: transformer depth %d", cfg->transformer_depth[l]);
        any_attn |= cfg->transformer_depth[l] > 0;
    }
    if (any_attn && cfg->context_dim < 1)
        return core_fail(err, FM_EINPUT, "U-Net config: context_dim %d", cfg->context_dim);
    if (cfg->adm_in_channels < 0)
        return core_fail(err, FM_EINPUT, "U-Net config: adm_in_channels %d", cfg->adm_in_channels);
    return 0;
}

static void count_blocks(const wt_unet_config *cfg, int *n_in, int *n_out)
{
    *n_in = 1 + cfg->n_levels * cfg->num_res_blocks + (cfg->n_levels - 1);
    *n_out = cfg->n_levels * (cfg->num_res_blocks + 1);
}

/* UNetModel.__init__, tensor by tensor. */
static void build(loader *L)
{
    un_model *u = L->u;
    const wt_unet_config *cfg = &u->cfg;
    const char *p = cfg->prefix;
    int mc = cfg->model_channels, td = u->time_dim;
    char n[NAME_MAX_LEN];

    fmt_name(n, "%stime_embed.0", p), linear(L, &u->time_embed0, mc, td, 1, n);
    fmt_name(n, "%stime_embed.2", p), linear(L, &u->time_embed2, td, td, 1, n);
    if (u->has_label) {
        fmt_name(n, "%slabel_emb.0.0", p), linear(L, &u->label_emb0, cfg->adm_in_channels, td, 1, n);
        fmt_name(n, "%slabel_emb.0.2", p), linear(L, &u->label_emb2, td, td, 1, n);
    }

    int chans[1 + FM_MAX_LEVELS * 65], n_chans = 0; /* input_block_chans */
    int ch = mc, bi = 0;
    un_block *b = &u->in[bi];
    b->has_conv = 1;
    fmt_name(n, "%sinput_blocks.0.0", p), conv(L, &b->conv, cfg->in_channels, mc, 3, 1, 1, n);
    b->cout = ch;
    chans[n_chans++] = ch;
    for (int l = 0; l < cfg->n_levels; l++) {
        int depth = cfg->transformer_depth[l];
        for (int r = 0; r < cfg->num_res_blocks; r++) {
            b = &u->in[++bi];
            int cout = mc * cfg->channel_mult[l];
            b->has_res = 1;
            fmt_name(n, "%sinput_blocks.%d.0", p, bi), resblock(L, &b->res, ch, cout, n);
            ch = cout;
            if (depth > 0) {
                b->has_attn = 1;
                fmt_name(n, "%sinput_blocks.%d.1", p, bi), spatial_transformer(L, &b->attn, ch, depth, n);
            }
            b->cout = ch;
            chans[n_chans++] = ch;
        }
        if (l != cfg->n_levels - 1) {
            b = &u->in[++bi];
            b->has_conv = 1;
            fmt_name(n, "%sinput_blocks.%d.0.op", p, bi), conv(L, &b->conv, ch, ch, 3, 2, 1, n);
            b->cout = ch;
            chans[n_chans++] = ch;
        }
    }

    b = &u->mid;
    b->has_res = 1;
    fmt_name(n, "%smiddle_block.0", p), resblock(L, &b->res, ch, ch, n);
    int next = 1;
    if (cfg->transformer_depth_middle > 0) {
        b->has_attn = 1;
        fmt_name(n, "%smiddle_block.1", p), spatial_transformer(L, &b->attn, ch, cfg->transformer_depth_middle, n);
        next = 2;
    }
    b->has_res2 = 1;
    fmt_name(n, "%smiddle_block.%d", p, next), resblock(L, &b->res2, ch, ch, n);
    b->cout = ch;

    bi = 0;
    for (int l = cfg->n_levels - 1; l >= 0; l--) {
        int depth = cfg->transformer_depth[l];
        for (int i = 0; i <= cfg->num_res_blocks; i++, bi++) {
            b = &u->out[bi];
            int ich = chans[--n_chans], cout = mc * cfg->channel_mult[l];
            b->has_res = 1;
            fmt_name(n, "%soutput_blocks.%d.0", p, bi), resblock(L, &b->res, ch + ich, cout, n);
            ch = cout;
            int k = 1;
            if (depth > 0) {
                b->has_attn = 1;
                fmt_name(n, "%soutput_blocks.%d.1", p, bi), spatial_transformer(L, &b->attn, ch, depth, n);
                k = 2;
            }
            if (l > 0 && i == cfg->num_res_blocks) {
                b->has_upsample = 1;
                fmt_name(n, "%soutput_blocks.%d.%d.conv", p, bi, k), conv(L, &b->upsample, ch, ch, 3, 1, 1, n);
            }
            b->cout = ch;
        }
    }

    fmt_name(n, "%sout.0", p), norm(L, &u->out_norm, ch, n);
    fmt_name(n, "%sout.2", p), conv(L, &u->out_conv, ch, cfg->out_channels, 3, 1, 1, n);
}

static un_model *unet_new(const wt_unet_config *cfg, fm_error *err)
{
    if (check_config(cfg, err)) return NULL;
    if (cfg->num_res_blocks > 64)
        return core_fail(err, FM_EINPUT, "U-Net config: %d res blocks", cfg->num_res_blocks), NULL;
    un_model *u = calloc(1, sizeof *u);
    if (!u) return core_fail(err, FM_EINPUT, "U-Net: out of memory"), NULL;
    u->cfg = *cfg;
    u->time_dim = 4 * cfg->model_channels;
    u->has_label = cfg->adm_in_channels > 0;
    count_blocks(cfg, &u->n_in, &u->n_out);
    u->in = calloc((size_t)u->n_in, sizeof *u->in);
    u->out = calloc((size_t)u->n_out, sizeof *u->out);
    if (!u->in || !u->out) {
        un_free(u);
        return core_fail(err, FM_EINPUT, "U-Net: out of memory"), NULL;
    }
    return u;
}

static void pack(kn_mat *m, void *prec) { kn_mat_pack(m, *(const fm_precision *)prec); }

un_model *un_load(const wt_source *src, const wt_unet_config *cfg, fm_precision prec,
                      fm_error *err)
{
    un_model *u = unet_new(cfg, err);
    if (!u) return NULL;
    loader L = {.u = u};
    wt_bind_begin(&L.b, src, "", "U-Net", err);
    do build(&L);
    while (wt_bind_again(&L.b));
    if (!(u->weights = wt_bind_end(&L.b))) {
        un_free(u);
        return NULL;
    }
    u->prec = prec;
    wt_weights_each_mat(u->weights, pack, &prec);
    return u;
}

void un_set_precision(un_model *u, fm_precision prec)
{
    if (u->prec == prec) return;
    wt_weights_each_mat(u->weights, pack, &prec);
    u->prec = prec;
}

fm_precision un_precision(const un_model *u) { return u->prec; }

int un_list_tensors(const wt_unet_config *cfg, un_tensor_fn fn, void *user,
                         fm_error *err)
{
    un_model *u = unet_new(cfg, err);
    if (!u) return err ? err->code : FM_EINPUT;
    loader L = {.u = u};
    wt_list_begin(&L.b, fn, user, "", "U-Net", err);
    build(&L);
    wt_bind_end(&L.b);
    int rc = L.b.failed ? FM_EINPUT : 0;
    un_free(u);
    return rc;
}

static void free_blocks(un_block *b, int n)
{
    for (int i = 0; b && i < n; i++) free(b[i].attn.blocks);
}

void un_free(un_model *u)
{
    if (!u) return;
    wt_weights_free(u->weights);
    free_blocks(u->in, u->n_in);
    free_blocks(u->out, u->n_out);
    free_blocks(&u->mid, 1);
    free(u->in);
    free(u->out);
    core_free(u->ws);
    free(u);
}
