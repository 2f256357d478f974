/* AutoencoderKL (ldm/modules/diffusionmodules/model.py Encoder/Decoder and
 * ldm/models/autoencoder.py): encode = quant_conv(Encoder(x)) split into
 * mean/logvar; decode = Decoder(post_quant_conv(z)).
 *
 * Activations live in three workspace slots, reused layer after layer:
 * X holds the running feature map, A the GroupNorm'd copy or shortcut, B
 * the first conv of a ResnetBlock (q, k, v in the attention; the input of
 * an Upsample). Large convolutions (and every Upsample) run in row bands,
 * a fourth slot, so neither the kernels' im2col nor the upsampled map is
 * ever whole in memory. A planning pass of the same code sizes the slots. */
#include "vae/kl_internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static size_t zmax(size_t a, size_t b) { return a > b ? a : b; }

int vae_latent_factor(const wt_vae_config *cfg) { return 1 << (cfg->n_levels - 1); }

/* ---------------------------------------------------------------- structure */

static void conv_shape(kn_conv *c, int cin, int cout, int k, int stride)
{
    memset(c, 0, sizeof *c);
    c->cin = cin;
    c->cout = cout;
    c->kh = c->kw = k;
    c->stride = stride;
    c->pad_t = c->pad_l = c->pad_b = c->pad_r = k / 2;
    c->w.rows = cout;
    c->w.cols = cin * k * k;
}

static void resblock_shape(vae_resblock *b, int cin, int cout)
{
    b->cin = cin;
    b->cout = cout;
    b->has_nin = cin != cout;
    b->norm1.c = cin;
    b->norm2.c = cout;
    conv_shape(&b->conv1, cin, cout, 3, 1);
    conv_shape(&b->conv2, cout, cout, 3, 1);
    if (b->has_nin) conv_shape(&b->nin_shortcut, cin, cout, 1, 1);
}

static void mid_shape(vae_mid *m, int c)
{
    resblock_shape(&m->block_1, c, c);
    resblock_shape(&m->block_2, c, c);
    m->attn_1.c = c;
    m->attn_1.norm.c = c;
    m->attn_1.q.rows = m->attn_1.q.cols = c;
    m->attn_1.k = m->attn_1.v = m->attn_1.proj_out = m->attn_1.q;
}

static int validate_config(const wt_vae_config *cfg, fm_error *err)
{
    if (cfg->n_levels < 1 || cfg->n_levels > FM_MAX_LEVELS)
        return core_fail(err, FM_EINPUT, "vae config: %d levels (1..%d)", cfg->n_levels, FM_MAX_LEVELS);
    if (cfg->ch < 1 || cfg->num_res_blocks < 1 || cfg->z_channels < 1 || cfg->embed_dim < 1 ||
        cfg->in_channels < 1 || cfg->out_ch < 1)
        return core_fail(err, FM_EINPUT, "vae config: non-positive size");
    for (int i = 0; i < cfg->n_levels; i++)
        if (cfg->ch_mult[i] < 1 || (cfg->ch * cfg->ch_mult[i]) % VAE_GROUPS)
            return core_fail(err, FM_EINPUT, "vae config: level %d has %d channels, not a multiple of %d",
                           i, cfg->ch * cfg->ch_mult[i], VAE_GROUPS);
    if (cfg->latent_factor && cfg->latent_factor != vae_latent_factor(cfg))
        return core_fail(err, FM_EINPUT, "vae config: latent factor %d contradicts %d levels",
                       cfg->latent_factor, cfg->n_levels);
    if (!(cfg->scale_factor > 0))
        return core_fail(err, FM_EINPUT, "vae config: scale factor %g", (double)cfg->scale_factor);
    return 0;
}

/* The Encoder: in_ch_mult = (1,) + ch_mult, num_res_blocks per level,
 * Downsample below every level but the last. */
static int encoder_shape(vae_encoder *e, const wt_vae_config *cfg)
{
    int L = cfg->n_levels, block_in = cfg->ch;
    conv_shape(&e->conv_in, cfg->in_channels, cfg->ch, 3, 1);
    for (int i = 0; i < L; i++) {
        vae_level *lv = &e->down[i];
        int block_out = cfg->ch * cfg->ch_mult[i];
        lv->n_blocks = cfg->num_res_blocks;
        lv->block = calloc((size_t)lv->n_blocks, sizeof *lv->block);
        if (!lv->block) return -1;
        for (int b = 0; b < lv->n_blocks; b++, block_in = block_out)
            resblock_shape(&lv->block[b], block_in, block_out);
        lv->has_resample = i != L - 1;
        if (lv->has_resample) {
            /* torch pad (0,1,0,1), then 3x3 stride 2 without padding */
            conv_shape(&lv->resample, block_in, block_in, 3, 2);
            lv->resample.pad_t = lv->resample.pad_l = 0;
            lv->resample.pad_b = lv->resample.pad_r = 1;
        }
    }
    mid_shape(&e->mid, block_in);
    e->norm_out.c = block_in;
    int zc = cfg->double_z ? 2 * cfg->z_channels : cfg->z_channels;
    conv_shape(&e->conv_out, block_in, zc, 3, 1);
    conv_shape(&e->quant_conv, 2 * cfg->z_channels, 2 * cfg->embed_dim, 1, 1);
    return 0;
}

/* The Decoder: levels from the deepest up, num_res_blocks + 1 blocks each,
 * Upsample (nearest x2, conv) above every level but level 0. */
static int decoder_shape(vae_decoder *d, const wt_vae_config *cfg)
{
    int L = cfg->n_levels, block_in = cfg->ch * cfg->ch_mult[L - 1];
    conv_shape(&d->post_quant_conv, cfg->embed_dim, cfg->z_channels, 1, 1);
    conv_shape(&d->conv_in, cfg->z_channels, block_in, 3, 1);
    mid_shape(&d->mid, block_in);
    for (int i = L - 1; i >= 0; i--) {
        vae_level *lv = &d->up[i];
        int block_out = cfg->ch * cfg->ch_mult[i];
        lv->n_blocks = cfg->num_res_blocks + 1;
        lv->block = calloc((size_t)lv->n_blocks, sizeof *lv->block);
        if (!lv->block) return -1;
        for (int b = 0; b < lv->n_blocks; b++, block_in = block_out)
            resblock_shape(&lv->block[b], block_in, block_out);
        lv->has_resample = i != 0;
        if (lv->has_resample) conv_shape(&lv->resample, block_in, block_in, 3, 1);
    }
    d->norm_out.c = block_in;
    conv_shape(&d->conv_out, block_in, cfg->out_ch, 3, 1);
    return 0;
}

int vae_build(vae_kl *vae, const wt_vae_config *cfg, fm_error *err)
{
    if (validate_config(cfg, err)) return err ? err->code : FM_EINPUT;
    vae->cfg = *cfg;
    vae->cfg.latent_factor = vae_latent_factor(cfg);
    vae->conv_scratch = VAE_DEFAULT_CONV_SCRATCH;
    if (encoder_shape(&vae->enc, cfg) || decoder_shape(&vae->dec, cfg))
        return core_fail(err, FM_EINPUT, "vae: out of memory");
    return 0;
}

int vae_decoder_norm_calls(const wt_vae_config *cfg)
{
    /* mid: 2 per ResnetBlock + the AttnBlock's; 2 per up block; norm_out */
    return 5 + 2 * cfg->n_levels * (cfg->num_res_blocks + 1) + 1;
}

/* ---------------------------------------------------------------- weights */

/* Names are relative to cfg.prefix (weights/binder.h binds them). */

#define NAME_LEN WT_NAME_MAX

static void fmt_name(char *out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, NAME_LEN, fmt, ap);
    va_end(ap);
}

/* Small matrices stay float32 in every mode (too little work to gain). */
static int is_packed_size(const kn_mat *m) { return (size_t)m->rows * m->cols >= 16384; }

static void bind_conv(wt_binder *B, kn_conv *c, const char *fmt, ...)
{
    char base[NAME_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(base, NAME_LEN, fmt, ap);
    va_end(ap);
    int64_t wshape[4] = {c->cout, c->cin, c->kh, c->kw};
    wt_bind_mat(B, &c->w, c->w.rows, c->w.cols, 4, wshape, "%s.weight", base);
    wt_bind_vec(B, &c->bias, c->cout, "%s.bias", base);
}

static void bind_norm(wt_binder *B, vae_norm *n, const char *base)
{
    wt_bind_vec(B, &n->gamma, n->c, "%s.weight", base);
    wt_bind_vec(B, &n->beta, n->c, "%s.bias", base);
}

static void bind_resblock(wt_binder *B, vae_resblock *b, const char *base)
{
    char name[NAME_LEN];
    fmt_name(name, "%s.norm1", base);
    bind_norm(B, &b->norm1, name);
    fmt_name(name, "%s.norm2", base);
    bind_norm(B, &b->norm2, name);
    bind_conv(B, &b->conv1, "%s.conv1", base);
    bind_conv(B, &b->conv2, "%s.conv2", base);
    if (b->has_nin) bind_conv(B, &b->nin_shortcut, "%s.nin_shortcut", base);
}

/* q/k/v/proj_out are 1x1 convs [C,C,1,1]; converted files store them [C,C]. */
static void bind_attn_proj(wt_binder *B, kn_mat *m, const float **bias, const char *base, const char *which)
{
    const wt_tensor *t = wt_bind_peek(B, "%s.%s.weight", base, which);
    int64_t shape[4] = {m->rows, m->cols, 1, 1};
    wt_bind_mat(B, m, m->rows, m->cols, t && t->ndim == 2 ? 2 : 4, shape, "%s.%s.weight", base, which);
    wt_bind_vec(B, bias, m->rows, "%s.%s.bias", base, which);
}

static void bind_mid(wt_binder *B, vae_mid *m, const char *part)
{
    char base[NAME_LEN];
    fmt_name(base, "%s.mid.block_1", part);
    bind_resblock(B, &m->block_1, base);
    fmt_name(base, "%s.mid.block_2", part);
    bind_resblock(B, &m->block_2, base);
    vae_attn *a = &m->attn_1;
    fmt_name(base, "%s.mid.attn_1.norm", part);
    bind_norm(B, &a->norm, base);
    fmt_name(base, "%s.mid.attn_1", part);
    bind_attn_proj(B, &a->q, &a->bq, base, "q");
    bind_attn_proj(B, &a->k, &a->bk, base, "k");
    bind_attn_proj(B, &a->v, &a->bv, base, "v");
    bind_attn_proj(B, &a->proj_out, &a->bproj, base, "proj_out");
}

static void bind_levels(wt_binder *B, vae_level *levels, int n, const char *part, const char *kind,
                        const char *resample)
{
    for (int i = 0; i < n; i++) {
        vae_level *lv = &levels[i];
        for (int b = 0; b < lv->n_blocks; b++) {
            char base[NAME_LEN];
            fmt_name(base, "%s.%s.%d.block.%d", part, kind, i, b);
            bind_resblock(B, &lv->block[b], base);
        }
        if (lv->has_resample) bind_conv(B, &lv->resample, "%s.%s.%d.%s.conv", part, kind, i, resample);
    }
}

static void bind_decoder(wt_binder *B, vae_decoder *d, int n_levels)
{
    bind_conv(B, &d->post_quant_conv, "post_quant_conv");
    bind_conv(B, &d->conv_in, "decoder.conv_in");
    bind_mid(B, &d->mid, "decoder");
    bind_levels(B, d->up, n_levels, "decoder", "up", "upsample");
    bind_norm(B, &d->norm_out, "decoder.norm_out");
    bind_conv(B, &d->conv_out, "decoder.conv_out");
}

static void bind_encoder(wt_binder *B, vae_encoder *e, int n_levels)
{
    bind_conv(B, &e->conv_in, "encoder.conv_in");
    bind_levels(B, e->down, n_levels, "encoder", "down", "downsample");
    bind_mid(B, &e->mid, "encoder");
    bind_norm(B, &e->norm_out, "encoder.norm_out");
    bind_conv(B, &e->conv_out, "encoder.conv_out");
    bind_conv(B, &e->quant_conv, "quant_conv");
}

/* The matrices large enough to gain from it take the precision mode. */
static void pack_mat(kn_mat *m, void *prec)
{
    if (is_packed_size(m)) kn_mat_pack(m, *(const fm_precision *)prec);
}

vae_kl *vae_load(const wt_source *src, const wt_vae_config *cfg, fm_precision prec,
                    fm_error *err)
{
    vae_kl *vae = calloc(1, sizeof *vae);
    if (!vae) {
        core_fail(err, FM_EINPUT, "vae: out of memory");
        return NULL;
    }
    if (vae_build(vae, cfg, err)) {
        vae_free(vae);
        return NULL;
    }
    wt_binder B;
    wt_bind_begin(&B, src, cfg->prefix, "vae", err);
    do {
        bind_decoder(&B, &vae->dec, cfg->n_levels);
        if (wt_bind_peek(&B, "encoder.conv_in.weight")) {
            if (!cfg->double_z)
                wt_bind_fail(&B, "%s: vae encoder without double_z is not a KL autoencoder", src->path);
            bind_encoder(&B, &vae->enc, cfg->n_levels);
            vae->has_encoder = wt_bind_ok(&B);
        }
    } while (wt_bind_again(&B));
    if (!(vae->weights = wt_bind_end(&B))) {
        vae_free(vae);
        return NULL;
    }
    vae->prec = prec;
    wt_weights_each_mat(vae->weights, pack_mat, &prec);
    vae->has_weights = 1;
    return vae;
}

int vae_list_tensors(const wt_vae_config *cfg, wt_list_fn fn, void *user, fm_error *err)
{
    vae_kl *vae = calloc(1, sizeof *vae);
    if (!vae) return core_fail(err, FM_EINPUT, "vae: out of memory");
    int rc = vae_build(vae, cfg, err);
    if (!rc) {
        wt_binder B;
        wt_list_begin(&B, fn, user, cfg->prefix, "vae", err);
        bind_decoder(&B, &vae->dec, cfg->n_levels);
        if (cfg->has_encoder) bind_encoder(&B, &vae->enc, cfg->n_levels);
        wt_bind_end(&B);
        rc = B.failed ? FM_EINPUT : 0;
    }
    vae_free(vae);
    return rc;
}

void vae_free(vae_kl *vae)
{
    if (!vae) return;
    int L = vae->cfg.n_levels;
    if (L > FM_MAX_LEVELS) L = FM_MAX_LEVELS;
    for (int i = 0; i < L; i++) {
        free(vae->enc.down[i].block);
        free(vae->dec.up[i].block);
    }
    wt_weights_free(vae->weights);
    free(vae);
}

void vae_set_precision(vae_kl *vae, fm_precision prec)
{
    if (vae->prec == prec) return;
    wt_weights_each_mat(vae->weights, pack_mat, &prec);
    vae->prec = prec;
}

fm_precision vae_precision(const vae_kl *vae) { return vae->prec; }

const wt_vae_config *vae_config_of(const vae_kl *vae) { return &vae->cfg; }
int vae_has_encoder(const vae_kl *vae) { return vae->has_encoder; }

void vae_set_conv_scratch(vae_kl *vae, size_t bytes)
{
    vae->conv_scratch = bytes / sizeof(float) > 0 ? bytes / sizeof(float) : 1;
}

void vae_set_trace(vae_kl *vae, vae_trace_fn fn, void *user)
{
    vae->trace = fn;
    vae->trace_user = user;
}

/* ---------------------------------------------------------------- run state */

void *vae_take(vae_arena *a, size_t bytes)
{
    bytes = (bytes + 63) & ~(size_t)63;
    if (a->base && bytes > a->cap - a->used) {
        a->used = a->cap + 1; /* full: later takes fail too */
        return NULL;
    }
    void *p = a->base ? a->base + a->used : NULL;
    a->used += bytes;
    a->peak = zmax(a->peak, a->used);
    return p;
}

/* Slot s, which must hold n floats (planning: records that it must). */
static float *slot(vae_run *r, int s, size_t n)
{
    if (r->planning) {
        r->need[s] = zmax(r->need[s], n);
        return NULL;
    }
    if (n > r->cap[s]) r->overflow = 1;
    return r->buf[s];
}

static int computing(const vae_run *r) { return !r->planning && !r->overflow; }

/* Planning: a kernel call needing this much scratch. */
static void need_scratch(vae_run *r, size_t bytes) { r->kernel_bytes = zmax(r->kernel_bytes, bytes); }

/* A kernel call whose scratch the plan did not size fails the run. */
static void kernel_rc(vae_run *r, int rc)
{
    if (rc) r->overflow = 1;
}

static void trace(const vae_run *r, const char *name, const float *x, int c, int h, int w)
{
    if (computing(r) && r->trace && r->vae->trace) r->vae->trace(r->vae->trace_user, name, x, c, h, w);
}

/* Output rows per band so that the kernel's im2col stays within the limit
 * (all rows: no banding). */
static int band_rows(const vae_run *r, const kn_conv *c, int oh, int ow)
{
    size_t K = (size_t)c->cin * c->kh * c->kw;
    if (c->kh == 1 && c->kw == 1 && c->stride == 1) return oh; /* no im2col */
    size_t rows = r->vae->conv_scratch / (K * (size_t)ow);
    return rows >= (size_t)oh ? oh : rows < 1 ? 1 : (int)rows;
}

/* y = conv(x), x [cin][h][w]; or conv(upsample_x2(x)) with x [cin][h/2][w/2]
 * when up2, which always goes through bands so the upsampled map is never
 * whole in memory. */
static void conv_any(vae_run *r, const kn_conv *c, float *y, const float *x, int up2, int h, int w)
{
    int oh = kn_conv_out_h(c, h), ow = kn_conv_out_w(c, w), rows = band_rows(r, c, oh, ow);
    int banded = up2 || rows < oh;
    size_t band_in = (size_t)c->cin * w * ((size_t)(rows - 1) * c->stride + c->kh);
    size_t band_out = (size_t)c->cout * rows * ow;
    float *band = banded ? slot(r, VAE_SLOT_BAND, band_in + band_out) : NULL;
    if (r->planning) {
        if (!banded) need_scratch(r, kn_conv2d_scratch(c, 1, h, w, r->ks.threads));
        for (int r0 = 0; banded && r0 < oh; r0 += rows)
            need_scratch(r, kn_conv2d_rows_scratch(c, h, w, r0, r0 + rows < oh ? r0 + rows : oh, r->ks.threads));
        return;
    }
    if (!computing(r)) return;
    if (!banded) {
        kernel_rc(r, kn_conv2d_ws(&r->ks, y, x, c, 1, h, w));
        return;
    }
    for (int r0 = 0; r0 < oh && computing(r); r0 += rows)
        kernel_rc(r, kn_conv2d_rows_ws(&r->ks, c, y, x, up2, h, w, r0, r0 + rows < oh ? r0 + rows : oh, band,
                                       band + band_in));
}

static void run_conv(vae_run *r, const kn_conv *c, float *y, const float *x, int h, int w)
{
    conv_any(r, c, y, x, 0, h, w);
}

/* ldm Upsample: nearest x2, then conv; x [cin][h][w] -> y [cout][2h][2w]. */
static void run_upsample_conv(vae_run *r, const kn_conv *c, float *y, const float *x, int h, int w)
{
    conv_any(r, c, y, x, 1, 2 * h, 2 * w);
}

/* Adds the tile's own cells of x [c][h][w] to the statistics of call k. */
static void norm_collect(vae_norm_share *ns, int k, const float *x, int c, int h, int w)
{
    int sy = h / ns->tile_h, sx = w / ns->tile_w;
    size_t at = (size_t)k * VAE_GROUPS;
    kn_group_stats_add(ns->sum + at, ns->sumsq + at, ns->count + at, x, c, h, w, VAE_GROUPS, ns->core_y0 * sy,
                       ns->core_y1 * sy, ns->core_x0 * sx, ns->core_x1 * sx);
}

/* GroupNorm(32, eps 1e-6) of x [n->c][h][w], then SiLU if silu. y may be x. */
static void run_norm(vae_run *r, const vae_norm *n, float *y, const float *x, int h, int w, int silu)
{
    if (!computing(r)) return;
    vae_norm_share *ns = r->norms;
    int hw = h * w;
    if (!ns) {
        kn_group_norm(y, x, 1, n->c, hw, VAE_GROUPS, VAE_EPS, n->gamma, n->beta, silu);
        return;
    }
    int k = ns->call++;
    if (k >= ns->n_calls) {
        r->overflow = 1;
        return;
    }
    if (ns->collect) norm_collect(ns, k, x, n->c, h, w);
    if (ns->shared)
        kn_group_norm_apply(y, x, n->c, hw, VAE_GROUPS, ns->mean + (size_t)k * VAE_GROUPS,
                            ns->rstd + (size_t)k * VAE_GROUPS, n->gamma, n->beta, silu);
    else
        kn_group_norm(y, x, 1, n->c, hw, VAE_GROUPS, VAE_EPS, n->gamma, n->beta, silu);
}

static void run_add(vae_run *r, float *y, const float *a, const float *b, size_t n)
{
    if (computing(r)) kn_add(y, a, b, n);
}

static void run_copy(vae_run *r, float *y, const float *x, size_t n)
{
    if (computing(r) && y && x) memcpy(y, x, n * sizeof(float));
}

/* ---------------------------------------------------------------- blocks */

/* ldm ResnetBlock.forward (no timestep embedding, dropout off):
 *   h = conv1(silu(norm1(x)));  h = conv2(silu(norm2(h)));
 *   return nin_shortcut(x) + h   (x + h when the channels stay)
 * in place on the running map x (slot X). Views: `side` (slot A) holds the
 * shortcut when there is one, else norm1's output; `hid` (slot B) is h
 * between the convolutions. conv2 writes into whichever of x and side is
 * free by then, so the sum needs no extra map. */
static void resnet_block(vae_run *r, const vae_resblock *b, int h, int w)
{
    size_t P = (size_t)h * w;
    float *x = slot(r, VAE_SLOT_X, (size_t)(b->cin > b->cout ? b->cin : b->cout) * P);
    float *side = slot(r, VAE_SLOT_A, (size_t)(b->has_nin ? b->cout : b->cin) * P);
    float *hid = slot(r, VAE_SLOT_B, (size_t)b->cout * P);
    float *normed; /* norm1's output, conv1's input; free again once conv1 has run */
    if (b->has_nin) {
        run_conv(r, &b->nin_shortcut, side, x, h, w);
        run_norm(r, &b->norm1, x, x, h, w, 1);
        normed = x;
    } else {
        run_norm(r, &b->norm1, side, x, h, w, 1);
        normed = side;
    }
    run_conv(r, &b->conv1, hid, normed, h, w);
    run_norm(r, &b->norm2, hid, hid, h, w, 1);
    run_conv(r, &b->conv2, normed, hid, h, w);
    run_add(r, x, x, side, (size_t)b->cout * P); /* shortcut + h, or x + h */
}

/* ldm AttnBlock.forward: h = norm(x); q, k, v = 1x1 convs of h (linears
 * over the h*w tokens, channels-last); x + proj_out(softmax(q k^T / sqrt(C)) v),
 * one head. Views: x (slot X), the normed map and the attention output
 * (slot A), the tokens and q, k, v (slot B, four C x hw maps). */
static void attn_block(vae_run *r, const vae_attn *at, int h, int w)
{
    int C = at->c, P = h * w;
    size_t CP = (size_t)C * P;
    float *x = slot(r, VAE_SLOT_X, CP), *a = slot(r, VAE_SLOT_A, CP), *b = slot(r, VAE_SLOT_B, 4 * CP);
    run_norm(r, &at->norm, a, x, h, w, 0);
    const kn_mat *proj[4] = {&at->q, &at->k, &at->v, &at->proj_out};
    if (r->planning) {
        for (int i = 0; i < 4; i++) need_scratch(r, kn_linear_scratch(P, proj[i], r->ks.threads));
        need_scratch(r, kn_attention_scratch(1, P, P, 1, C, r->vae->prec, r->ks.threads));
    }
    if (!computing(r)) return;
    const kn_scratch *ks = &r->ks;
    float *tok = b, *q = b + CP, *k = b + 2 * CP, *v = b + 3 * CP;
    kn_nchw_to_nhwc(tok, a, 1, C, P);
    kernel_rc(r, kn_linear_ws(ks, q, tok, P, &at->q, at->bq));
    kernel_rc(r, kn_linear_ws(ks, k, tok, P, &at->k, at->bk));
    kernel_rc(r, kn_linear_ws(ks, v, tok, P, &at->v, at->bv));
    kernel_rc(r, kn_attention_ws(ks, a, q, C, k, v, C, 1, P, P, 1, C, 1.0f / sqrtf((float)C), 0, r->vae->prec));
    kernel_rc(r, kn_linear_ws(ks, tok, a, P, &at->proj_out, at->bproj));
    kn_nhwc_to_nchw(a, tok, 1, C, P);
    kn_add(x, x, a, CP);
}

static void mid_block(vae_run *r, const vae_mid *m, int h, int w)
{
    resnet_block(r, &m->block_1, h, w);
    attn_block(r, &m->attn_1, h, w);
    resnet_block(r, &m->block_2, h, w);
}

/* ---------------------------------------------------------------- decoder */

/* post_quant_conv, conv_in and the mid block: everything at latent
 * resolution, leaving the mid output in slot X. */
static void decoder_trunk(vae_run *r, const float *z, int h, int w)
{
    const wt_vae_config *cfg = &r->vae->cfg;
    const vae_decoder *d = &r->vae->dec;
    size_t P = (size_t)h * w;
    float *a = slot(r, VAE_SLOT_A, (size_t)cfg->z_channels * P);
    run_conv(r, &d->post_quant_conv, a, z, h, w);
    trace(r, "dec.post_quant", a, cfg->z_channels, h, w);
    float *x = slot(r, VAE_SLOT_X, (size_t)d->conv_in.cout * P);
    run_conv(r, &d->conv_in, x, a, h, w);
    trace(r, "dec.conv_in", x, d->conv_in.cout, h, w);
    mid_block(r, &d->mid, h, w);
    trace(r, "dec.mid", x, d->mid.attn_1.c, h, w);
}

/* The up levels, norm_out and conv_out, from the mid output in slot X. */
static void decoder_head(vae_run *r, float *img, int h, int w)
{
    const wt_vae_config *cfg = &r->vae->cfg;
    const vae_decoder *d = &r->vae->dec;
    float *x = slot(r, VAE_SLOT_X, (size_t)d->mid.attn_1.c * h * w);
    for (int i = cfg->n_levels - 1; i >= 0; i--) {
        const vae_level *lv = &d->up[i];
        for (int b = 0; b < lv->n_blocks; b++) resnet_block(r, &lv->block[b], h, w);
        int c = lv->block[lv->n_blocks - 1].cout;
        if (lv->has_resample) {
            /* the input moves to B so the upsampled output can take X */
            float *in = slot(r, VAE_SLOT_B, (size_t)c * h * w);
            run_copy(r, in, x, (size_t)c * h * w);
            x = slot(r, VAE_SLOT_X, (size_t)c * 4 * h * w);
            run_upsample_conv(r, &lv->resample, x, in, h, w);
            h *= 2;
            w *= 2;
        }
        char name[32];
        snprintf(name, sizeof name, "dec.up.%d", i);
        trace(r, name, x, c, h, w);
    }
    run_norm(r, &d->norm_out, x, x, h, w, 1);
    run_conv(r, &d->conv_out, img, x, h, w);
    trace(r, "dec", img, cfg->out_ch, h, w);
}

/* From z, or (r->from_mid) from a mid-block output [C][h][w]. */
static void decoder_forward(vae_run *r, float *img, const float *in, int h, int w)
{
    if (r->from_mid)
        run_copy(r, slot(r, VAE_SLOT_X, (size_t)r->vae->dec.mid.attn_1.c * h * w), in,
                 (size_t)r->vae->dec.mid.attn_1.c * h * w);
    else
        decoder_trunk(r, in, h, w);
    decoder_head(r, img, h, w);
}

static void run_init(vae_run *r, const vae_kl *vae)
{
    memset(r, 0, sizeof *r);
    r->vae = vae;
    r->planning = 1;
    r->ks.threads = kn_scratch_threads();
}

/* The planned slots and scratch from a; then the run computes. */
static int run_take(vae_run *r, vae_arena *a, fm_error *err)
{
    int ok = 1;
    for (int s = 0; s < VAE_SLOTS; s++) {
        r->cap[s] = r->need[s];
        r->buf[s] = vae_take(a, zmax(r->cap[s], 1) * sizeof(float));
        ok &= r->buf[s] != NULL;
    }
    r->ks.bytes = r->kernel_bytes;
    r->ks.base = vae_take(a, zmax(r->kernel_bytes, 1));
    ok &= r->ks.base != NULL;
    r->planning = 0;
    if (a->base && !ok) /* the caller sized a with the same walk: a bug if it is short */
        return core_fail(err, FM_EINPUT, "vae: internal error: arena of %zu bytes, the plan needs more", a->cap);
    return 0;
}

int vae_run_take_decode(vae_run *r, const vae_kl *vae, int h, int w, int from_mid, vae_arena *a, fm_error *err)
{
    run_init(r, vae);
    r->from_mid = from_mid;
    decoder_forward(r, NULL, NULL, h, w);
    return run_take(r, a, err);
}

int vae_decode_trunk(const vae_kl *vae, float *mid, const float *z, int h, int w, vae_arena *a, fm_error *err)
{
    vae_run r;
    size_t mark = a->used;
    run_init(&r, vae);
    decoder_trunk(&r, NULL, h, w);
    int rc = run_take(&r, a, err) ? FM_EINPUT : 0;
    if (!rc && a->base) {
        decoder_trunk(&r, z, h, w);
        rc = r.overflow ? core_fail(err, FM_EINPUT, "vae: internal error: workspace plan too small") : 0;
        if (!rc) memcpy(mid, r.buf[VAE_SLOT_X], sizeof(float) * vae->dec.mid.attn_1.c * h * w);
    }
    a->used = mark;
    return rc;
}

int vae_decode_with(vae_run *r, float *img, const float *z, int h, int w, fm_error *err)
{
    if (r->norms) r->norms->call = 0;
    decoder_forward(r, img, z, h, w);
    if (r->overflow) return core_fail(err, FM_EINPUT, "vae: internal error: workspace plan too small");
    return 0;
}

int vae_check_size(const vae_kl *vae, int h, int w, const char *what, fm_error *err)
{
    if (!vae || !vae->has_weights) return core_fail(err, FM_EINPUT, "vae: no model");
    if (h < 1 || w < 1 || h > 65536 || w > 65536)
        return core_fail(err, FM_EINPUT, "vae %s: bad size %dx%d", what, w, h);
    return 0;
}

int vae_decode_untiled(vae_kl *vae, float *img, const float *z, int h, int w, vae_arena *a, fm_error *err)
{
    vae_run r;
    if (vae_run_take_decode(&r, vae, h, w, 0, a, err)) return FM_EINPUT;
    if (!a->base) return 0;
    r.trace = 1;
    return vae_decode_with(&r, img, z, h, w, err);
}

/* ---------------------------------------------------------------- encoder */

static void encoder_forward(vae_run *r, float *mean, float *logvar, const float *img, int h, int w)
{
    const wt_vae_config *cfg = &r->vae->cfg;
    const vae_encoder *e = &r->vae->enc;
    float *x = slot(r, VAE_SLOT_X, (size_t)cfg->ch * h * w);
    run_conv(r, &e->conv_in, x, img, h, w);
    trace(r, "enc.conv_in", x, cfg->ch, h, w);
    for (int i = 0; i < cfg->n_levels; i++) {
        const vae_level *lv = &e->down[i];
        for (int b = 0; b < lv->n_blocks; b++) resnet_block(r, &lv->block[b], h, w);
        int c = lv->block[lv->n_blocks - 1].cout;
        if (lv->has_resample) {
            int oh = kn_conv_out_h(&lv->resample, h), ow = kn_conv_out_w(&lv->resample, w);
            float *down = slot(r, VAE_SLOT_A, (size_t)c * oh * ow);
            run_conv(r, &lv->resample, down, x, h, w);
            h = oh;
            w = ow;
            run_copy(r, x, down, (size_t)c * h * w);
        }
        char name[32];
        fmt_name(name, "enc.down.%d", i);
        trace(r, name, x, c, h, w);
    }
    mid_block(r, &e->mid, h, w);
    trace(r, "enc.mid", x, e->mid.attn_1.c, h, w);
    run_norm(r, &e->norm_out, x, x, h, w, 1);
    size_t P = (size_t)h * w, E = (size_t)cfg->embed_dim * P;
    float *hz = slot(r, VAE_SLOT_A, (size_t)e->conv_out.cout * P);
    float *moments = slot(r, VAE_SLOT_B, 2 * E);
    run_conv(r, &e->conv_out, hz, x, h, w);
    trace(r, "enc.h", hz, e->conv_out.cout, h, w);
    run_conv(r, &e->quant_conv, moments, hz, h, w);
    trace(r, "enc.moments", moments, 2 * cfg->embed_dim, h, w);
    if (!computing(r)) return;
    memcpy(mean, moments, E * sizeof(float));
    for (size_t i = 0; i < E; i++) logvar[i] = fminf(fmaxf(moments[E + i], -30.0f), 20.0f);
}

int vae_encode(vae_kl *vae, float *mean, float *logvar, const float *img, int H, int W,
                  fm_error *err)
{
    if (vae_check_size(vae, H, W, "encode", err)) return FM_EINPUT;
    if (!vae->has_encoder) return core_fail(err, FM_EINPUT, "vae: the file has no encoder");
    int f = vae->cfg.latent_factor;
    if (H % f || W % f)
        return core_fail(err, FM_EINPUT, "vae encode: %dx%d is not a multiple of %d", W, H, f);
    vae_run r;
    vae_arena a = {0};
    run_init(&r, vae);
    encoder_forward(&r, NULL, NULL, NULL, H, W);
    run_take(&r, &a, err); /* counts */
    a = (vae_arena){.base = core_alloc(a.peak), .cap = a.peak};
    if (!a.base) return core_fail(err, FM_EINPUT, "vae: out of memory for %zu MB of activations", a.cap >> 20);
    run_init(&r, vae);
    encoder_forward(&r, NULL, NULL, NULL, H, W);
    int rc = run_take(&r, &a, err);
    if (!rc) {
        r.trace = 1;
        encoder_forward(&r, mean, logvar, img, H, W);
        rc = r.overflow ? core_fail(err, FM_EINPUT, "vae: internal error: workspace plan too small") : 0;
    }
    core_free(a.base);
    return rc;
}
