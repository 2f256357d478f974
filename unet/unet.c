/* The U-Net forward pass, block by block as ldm writes it
 * (ldm/modules/diffusionmodules/openaimodel.py and ldm/modules/attention.py).
 *
 * Feature maps are NCHW; inside a SpatialTransformer the tokens are
 * channels-last [batch*h*w][C], so every projection is one kn_linear over
 * all tokens and attention runs on [batch][tokens][heads*dim_head]. */
#include "unet/unet_model.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

/* What every block of one forward call shares. */
typedef struct run {
    const un_model *u;
    int batch;
    const float *emb_silu; /* SiLU(emb) [batch][time_dim], the input of every emb_layers */
    float *emb_out;        /* one ResBlock's emb_layers output [batch][cout] */
    const float *context;  /* [batch][n_ctx][context_dim] */
    int n_ctx;
    float *ctx_k, *ctx_v;  /* cross-attention keys/values [batch][n_ctx][C] */
    const kn_scratch *ks;  /* the kernels' scratch, planned with the activations */
    int *failed;           /* set when a kernel found its scratch too small */
} run;

/* The kernels on the planned scratch. A call the plan did not size fails
 * the forward (an error value, see un_forward), it is never skipped. */
static void linear(const run *R, float *y, const float *x, int n, const kn_mat *w, const float *bias)
{
    if (kn_linear_ws(R->ks, y, x, n, w, bias)) *R->failed = 1;
}

static void conv2d(const run *R, float *y, const float *x, const kn_conv *c, int h, int w)
{
    if (kn_conv2d_ws(R->ks, y, x, c, R->batch, h, w)) *R->failed = 1;
}

static void probe(const un_model *u, const char *name, const float *data, int n, int c, int h, int w)
{
    if (u->probe) u->probe(u->probe_user, name, data, n, c, h, w);
}

/* ldm timestep_embedding (cos half first). t*freq and cos/sin in double:
 * float32 arguments near t = 1000 are off by ~1e-4 rad. */
static void timestep_embedding(float *emb, const float *t, int batch, int dim)
{
    int half = dim / 2;
    for (int b = 0; b < batch; b++) {
        float *e = emb + (size_t)b * dim;
        for (int i = 0; i < half; i++) {
            double freq = exp(-log(10000.0) * i / half), arg = (double)t[b] * freq;
            e[i] = (float)cos(arg);
            e[half + i] = (float)sin(arg);
        }
        if (dim % 2) e[dim - 1] = 0.0f;
    }
}

/* h[b][c][:] += v[b][c] */
static void add_per_channel(float *h, const float *v, int batch, int c, size_t hw)
{
#pragma omp parallel for collapse(2) schedule(static) if ((size_t)batch * c * hw > 65536)
    for (int b = 0; b < batch; b++)
        for (int ch = 0; ch < c; ch++) {
            float *p = h + ((size_t)b * c + ch) * hw, add = v[(size_t)b * c + ch];
            for (size_t i = 0; i < hw; i++) p[i] += add;
        }
}

/* ResBlock._forward: out = skip_connection(x) + out_layers(in_layers(x) + emb_layers(emb)).
 * out must not alias x. scratch: see resblock_scratch in unet_workspace.c. */
static void resblock(const run *R, const un_resblock *r, float *out, const float *x, int h, int w,
                     float *scratch)
{
    int B = R->batch;
    size_t hw = (size_t)h * w;
    float *g = scratch, *hid = scratch + (size_t)B * hw * (r->cin > r->cout ? r->cin : r->cout);

    kn_group_norm(g, x, B, r->cin, (int)hw, UN_GROUPS, UN_RES_EPS, r->in_norm.gamma, r->in_norm.beta, 1);
    conv2d(R, hid, g, &r->in_conv, h, w);

    linear(R, R->emb_out, R->emb_silu, B, &r->emb_proj.w, r->emb_proj.bias);
    add_per_channel(hid, R->emb_out, B, r->cout, hw);

    kn_group_norm(hid, hid, B, r->cout, (int)hw, UN_GROUPS, UN_RES_EPS, r->out_norm.gamma, r->out_norm.beta, 1);
    conv2d(R, out, hid, &r->out_conv, h, w);

    size_t n = (size_t)B * r->cout * hw;
    if (r->has_skip) {
        conv2d(R, g, x, &r->skip, h, w);
        kn_add(out, out, g, n);
    } else {
        kn_add(out, out, x, n);
    }
}

/* CrossAttention: out = to_out(softmax(q k^T / sqrt(d)) v) with q from x
 * [batch][nq][C] and k, v from kv_src [batch][nk][kv_dim] (x itself for
 * self-attention). out may alias x. qkvo: [batch*nq][C] x 2 (+2 more when
 * k and v are NULL, i.e. placed after q and o). */
static void attention(const run *R, const un_attention *a, const un_spatial_transformer *s,
                      float *out, const float *x, int nq, const float *kv_src, int nk,
                      float *k, float *v, float *qkvo)
{
    int batch = R->batch;
    size_t rows = (size_t)batch * nq, c = (size_t)s->c;
    float *q = qkvo, *o = qkvo + rows * c;
    if (!k) {
        k = o + rows * c;
        v = k + rows * c;
    }
    linear(R, q, x, (int)rows, &a->to_q, NULL);
    linear(R, k, kv_src, batch * nk, &a->to_k, NULL);
    linear(R, v, kv_src, batch * nk, &a->to_v, NULL);
    if (kn_attention_ws(R->ks, o, q, (int)c, k, v, (int)c, batch, nq, nk, s->heads, s->dim_head,
                        1.0f / sqrtf((float)s->dim_head), 0, R->u->prec))
        *R->failed = 1;
    linear(R, out, o, (int)rows, &a->to_out.w, a->to_out.bias);
}

/* FeedForward with GEGLU: x = net.2(a * gelu(gate)), [a | gate] = net.0.proj(x),
 * in place on x [rows][C], a chunk of rows at a time. */
static void feed_forward(const run *R, const un_transformer_block *b, float *x, size_t rows, int c, float *tmp)
{
    size_t chunk = un_ff_rows(rows);
    float *proj = tmp, *gated = tmp + chunk * 8 * (size_t)c;
    for (size_t r0 = 0; r0 < rows; r0 += chunk) {
        int nr = (int)(rows - r0 < chunk ? rows - r0 : chunk);
        float *xr = x + r0 * c;
        linear(R, proj, xr, nr, &b->ff_proj.w, b->ff_proj.bias);
        kn_geglu(gated, proj, nr, 4 * c);
        linear(R, xr, gated, nr, &b->ff_out.w, b->ff_out.bias);
    }
}

/* BasicTransformerBlock on the residual stream xt [batch*hw][C]:
 *   x += attn1(norm1(x)); x += attn2(norm2(x), context); x += ff(norm3(x)).
 * nrm [batch*hw][C] and big (q, k, v, o / FF chunks) are scratch. */
static void transformer_block(const run *R, const un_spatial_transformer *s,
                              const un_transformer_block *b, float *xt, int hw, float *nrm,
                              float *big)
{
    int B = R->batch, c = s->c;
    size_t rows = (size_t)B * hw, n = rows * c;

    kn_layer_norm(nrm, xt, (int)rows, c, b->norm1.gamma, b->norm1.beta, UN_LN_EPS);
    attention(R, &b->attn1, s, nrm, nrm, hw, nrm, hw, NULL, NULL, big);
    kn_add(xt, xt, nrm, n);

    kn_layer_norm(nrm, xt, (int)rows, c, b->norm2.gamma, b->norm2.beta, UN_LN_EPS);
    attention(R, &b->attn2, s, nrm, nrm, hw, R->context, R->n_ctx, R->ctx_k, R->ctx_v, big);
    kn_add(xt, xt, nrm, n);

    kn_layer_norm(nrm, xt, (int)rows, c, b->norm3.gamma, b->norm3.beta, UN_LN_EPS);
    feed_forward(R, b, nrm, rows, c, big);
    kn_add(xt, xt, nrm, n);
}

/* SpatialTransformer, in place on x [batch][C][h*w]:
 *   x += proj_out(blocks(proj_in(norm(x)) as tokens)) */
static void spatial_transformer(const run *R, const un_spatial_transformer *s, float *x, int hw,
                                float *scratch)
{
    int B = R->batch, c = s->c;
    size_t n = (size_t)B * hw * c;
    float *nrm = scratch, *xt = scratch + n, *big = scratch + 2 * n;

    kn_group_norm(big, x, B, c, hw, UN_GROUPS, UN_ST_EPS, s->norm.gamma, s->norm.beta, 0);
    kn_nchw_to_nhwc(nrm, big, B, c, hw);
    linear(R, xt, nrm, B * hw, &s->proj_in.w, s->proj_in.bias);
    for (int d = 0; d < s->depth; d++)
        transformer_block(R, s, &s->blocks[d], xt, hw, nrm, big);
    linear(R, nrm, xt, B * hw, &s->proj_out.w, s->proj_out.bias);
    kn_nhwc_to_nchw(big, nrm, B, c, hw);
    kn_add(x, x, big, n);
}

/* Upsample: nearest resize to the skip connection's size (x2 when it is
 * even), then conv 3x3. */
static void upsample(const run *R, const kn_conv *conv, float *out, const float *x, int h, int w,
                     int oh, int ow, float *scratch)
{
    kn_upsample_nearest(scratch, oh, ow, x, R->batch * conv->cin, h, w);
    conv2d(R, out, scratch, conv, oh, ow);
}

/* Workspace regions (floats), laid out as un_plan says, then the kernels'
 * scratch. */
typedef struct ws_view {
    float *tsin, *emb_hidden, *emb, *emb_silu, *label, *emb_out;
    float *ctx_k, *ctx_v, *skips, *act[2], *scratch;
    kn_scratch ks;
} ws_view;

/* Sizes the workspace for this forward (allocating through hook when it
 * has to grow) and lays it out in v. */
static int ensure_workspace(un_model *u, int batch, int h, int w, int n_ctx, const core_alloc_hook *hook,
                            ws_view *v, fm_error *err)
{
    un_plan p;
    un_plan_workspace(&u->cfg, batch, h, w, n_ctx, &p);
    int threads = kn_scratch_threads();
    size_t acts = un_plan_bytes(&p), kbytes = un_plan_kernel_bytes(u, batch, h, w, n_ctx, threads);
    size_t bytes = acts + kbytes;
    if (bytes > u->ws_bytes) {
        core_free(u->ws);
        u->ws = core_alloc_hooked(hook, bytes);
        u->ws_bytes = u->ws ? bytes : 0;
        if (!u->ws)
            return core_fail(err, FM_EINPUT, "U-Net: out of memory for %zu MB of activations", bytes >> 20);
    }

    size_t B = (size_t)batch, td = (size_t)u->time_dim, td_al = (B * td + 15) & ~(size_t)15;
    float *f = u->ws;
    v->tsin = f, f += (B * u->cfg.model_channels + 15) & ~(size_t)15;
    v->emb_hidden = f, f += td_al;
    v->emb = f, f += td_al;
    v->emb_silu = f, f += td_al;
    v->label = f, f += td_al;
    v->emb_out = f;
    f = (float *)u->ws + p.small;
    v->ctx_k = f, f += p.ctx;
    v->ctx_v = f, f += p.ctx;
    v->skips = f, f += p.skips;
    v->act[0] = f, f += p.act;
    v->act[1] = f, f += p.act;
    v->scratch = f;
    /* un_plan_bytes is a multiple of 64 bytes, so this is aligned as core_alloc's base */
    v->ks = (kn_scratch){.base = (char *)u->ws + acts, .bytes = u->ws_bytes - acts, .threads = threads};
    return 0;
}

size_t un_prepare_bytes(const un_model *u, int batch, int h, int w, int n_ctx)
{
    if (batch < 1 || h < 1 || w < 1 || n_ctx < 1) return 0;
    un_plan p;
    un_plan_workspace(&u->cfg, batch, h, w, n_ctx, &p);
    return un_plan_bytes(&p) + un_plan_kernel_bytes(u, batch, h, w, n_ctx, kn_scratch_threads());
}

int un_prepare(un_model *u, int batch, int h, int w, int n_ctx, const core_alloc_hook *hook, fm_error *err)
{
    if (batch < 1 || h < 1 || w < 1 || n_ctx < 1)
        return core_fail(err, FM_EINPUT, "U-Net: batch %d, latent %dx%d, %d context tokens", batch, w, h, n_ctx);
    ws_view v;
    return ensure_workspace(u, batch, h, w, n_ctx, hook, &v, err) ? FM_EINPUT : 0;
}

/* emb = time_embed(timestep_embedding(t)) (+ label_emb(y)). */
static void embed(const run *R, const ws_view *v, const float *t, const float *y)
{
    const un_model *u = R->u;
    int td = u->time_dim, B = R->batch;
    timestep_embedding(v->tsin, t, B, u->cfg.model_channels);
    probe(u, "temb_sin", v->tsin, B, u->cfg.model_channels, 1, 1);
    linear(R, v->emb_hidden, v->tsin, B, &u->time_embed0.w, u->time_embed0.bias);
    kn_silu(v->emb_hidden, (size_t)B * td);
    linear(R, v->emb, v->emb_hidden, B, &u->time_embed2.w, u->time_embed2.bias);
    if (u->has_label) {
        linear(R, v->emb_hidden, y, B, &u->label_emb0.w, u->label_emb0.bias);
        kn_silu(v->emb_hidden, (size_t)B * td);
        linear(R, v->label, v->emb_hidden, B, &u->label_emb2.w, u->label_emb2.bias);
        kn_add(v->emb, v->emb, v->label, (size_t)B * td);
    }
    probe(u, "emb", v->emb, B, td, 1, 1);
    memcpy(v->emb_silu, v->emb, sizeof(float) * (size_t)B * td);
    kn_silu(v->emb_silu, (size_t)B * td);
}

typedef struct skip {
    const float *data;
    int c, h, w;
} skip;

int un_forward(un_model *u, float *out, const float *x, int batch, int h, int w,
                    const float *t, const float *context, int n_ctx, const float *y,
                    fm_error *err)
{
    const wt_unet_config *cfg = &u->cfg;
    if (batch < 1 || h < 1 || w < 1 || n_ctx < 1 || !x || !t || !context || !out)
        return core_fail(err, FM_EINPUT, "U-Net: batch %d, latent %dx%d, %d context tokens", batch, w, h, n_ctx);
    if (u->has_label && !y)
        return core_fail(err, FM_EINPUT, "U-Net: this model needs the ADM vector y (%d values)", cfg->adm_in_channels);
    ws_view v = {0};
    if (ensure_workspace(u, batch, h, w, n_ctx, NULL, &v, err)) return err ? err->code : FM_EINPUT;

    int B = batch, failed = 0;
    run R = {.u = u, .batch = B, .emb_silu = v.emb_silu, .emb_out = v.emb_out,
             .context = context, .n_ctx = n_ctx, .ctx_k = v.ctx_k, .ctx_v = v.ctx_v,
             .ks = &v.ks, .failed = &failed};
    embed(&R, &v, t, u->has_label ? y : NULL);
    char name[32];

    /* input_blocks: each output is a skip connection, kept where it is written */
    skip hs[1 + FM_MAX_LEVELS * 65];
    int n_hs = 0, c = cfg->in_channels;
    const float *hcur = x;
    float *dst = v.skips;
    for (int i = 0; i < u->n_in; i++) {
        const un_block *b = &u->in[i];
        if (b->has_conv) { /* conv_in, or Downsample */
            conv2d(&R, dst, hcur, &b->conv, h, w);
            h = kn_conv_out_h(&b->conv, h);
            w = kn_conv_out_w(&b->conv, w);
        } else {
            resblock(&R, &b->res, dst, hcur, h, w, v.scratch);
            if (b->has_attn) spatial_transformer(&R, &b->attn, dst, h * w, v.scratch);
        }
        c = b->cout;
        hs[n_hs++] = (skip){dst, c, h, w};
        snprintf(name, sizeof name, "in.%d", i);
        probe(u, name, dst, B, c, h, w);
        hcur = dst;
        dst += (size_t)B * c * h * w;
    }

    /* middle_block */
    resblock(&R, &u->mid.res, v.act[0], hcur, h, w, v.scratch);
    if (u->mid.has_attn) spatial_transformer(&R, &u->mid.attn, v.act[0], h * w, v.scratch);
    resblock(&R, &u->mid.res2, v.act[1], v.act[0], h, w, v.scratch);
    int cur = 1; /* v.act[cur] holds h */
    probe(u, "mid", v.act[cur], B, c, h, w);

    /* output_blocks: cat([h, hs.pop()]) first */
    for (int i = 0; i < u->n_out; i++) {
        const un_block *b = &u->out[i];
        skip s = hs[--n_hs];
        if (s.h != h || s.w != w)
            return core_fail(err, FM_EINPUT, "U-Net: output block %d is %dx%d, its skip %dx%d", i, w, h, s.w, s.h);
        size_t hw = (size_t)h * w;
        float *cat = v.scratch;
        kn_concat_channels(cat, v.act[cur], c, s.data, s.c, B, (int)hw);
        float *o = v.act[!cur];
        resblock(&R, &b->res, o, cat, h, w, v.scratch + (size_t)B * (c + s.c) * hw);
        c = b->cout;
        if (b->has_attn) spatial_transformer(&R, &b->attn, o, (int)hw, v.scratch);
        cur = !cur;
        if (b->has_upsample) {
            const skip *next = &hs[n_hs - 1];
            upsample(&R, &b->upsample, v.act[!cur], v.act[cur], h, w, next->h, next->w, v.scratch);
            h = next->h;
            w = next->w;
            cur = !cur;
        }
        snprintf(name, sizeof name, "out.%d", i);
        probe(u, name, v.act[cur], B, c, h, w);
    }

    /* out: GroupNorm, SiLU, conv */
    kn_group_norm(v.scratch, v.act[cur], B, c, h * w, UN_GROUPS, UN_RES_EPS, u->out_norm.gamma,
                  u->out_norm.beta, 1);
    conv2d(&R, out, v.scratch, &u->out_conv, h, w);
    if (failed) /* un_plan_kernel_bytes missed a call shape */
        return core_fail(err, FM_EINPUT, "U-Net: internal error: kernel scratch smaller than a call needs");
    probe(u, "out", out, B, cfg->out_channels, h, w);
    return 0;
}

void un_set_probe(un_model *u, un_probe_fn fn, void *user)
{
    u->probe = fn;
    u->probe_user = user;
}
