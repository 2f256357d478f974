/* How much activation memory a forward needs: the same walk as the forward
 * pass (unet.c), on shapes only. Each helper states what its block keeps
 * live at once; the forward lays its buffers out the same way. */
#include "unet/unet_model.h"

#define MAXZ(a, b) ((a) > (b) ? (a) : (b))

/* ResBlock temporaries: GroupNorm of the input (and later the skip conv
 * output) [max(cin,cout)], then the hidden [cout]. */
static size_t resblock_scratch(size_t n_pix, int cin, int cout)
{
    return n_pix * (size_t)(MAXZ(cin, cout) + cout);
}

/* SpatialTransformer: normed tokens [N][C], residual stream [N][C], and one
 * region for the attention's q, k, v, o [N][4C] that the FeedForward chunks
 * and the GroupNorm output reuse. */
static size_t transformer_scratch(size_t n_tok, int c)
{
    size_t big = MAXZ(4 * n_tok * (size_t)c, un_ff_rows(n_tok) * 12 * (size_t)c);
    return 2 * n_tok * (size_t)c + big;
}

static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

void un_plan_workspace(const wt_unet_config *cfg, int batch, int h, int w, int n_ctx, un_plan *p)
{
    size_t B = (size_t)batch, H[FM_MAX_LEVELS], W[FM_MAX_LEVELS];
    int L = cfg->n_levels, mc = cfg->model_channels;
    H[0] = (size_t)h;
    W[0] = (size_t)w;
    for (int l = 1; l < L; l++) { /* Downsample: 3x3, stride 2, padding 1 */
        H[l] = (H[l - 1] - 1) / 2 + 1;
        W[l] = (W[l - 1] - 1) / 2 + 1;
    }
    size_t skips = 0, act = 0, scratch = 0, max_c = (size_t)mc, attn_c = 0;
    int chans[1 + FM_MAX_LEVELS * 65], n_chans = 0;

    int ch = mc;
    skips += B * (size_t)ch * H[0] * W[0];
    chans[n_chans++] = ch;
    for (int l = 0; l < L; l++) {
        size_t pix = B * H[l] * W[l];
        for (int r = 0; r < cfg->num_res_blocks; r++) {
            int cout = mc * cfg->channel_mult[l];
            scratch = MAXZ(scratch, resblock_scratch(pix, ch, cout));
            ch = cout;
            if (cfg->transformer_depth[l] > 0) {
                scratch = MAXZ(scratch, transformer_scratch(pix, ch));
                attn_c = MAXZ(attn_c, (size_t)ch);
            }
            skips += pix * (size_t)ch;
            chans[n_chans++] = ch;
        }
        if (l != L - 1) {
            skips += B * H[l + 1] * W[l + 1] * (size_t)ch;
            chans[n_chans++] = ch;
        }
        max_c = MAXZ(max_c, (size_t)ch);
    }

    size_t pix = B * H[L - 1] * W[L - 1];
    act = pix * (size_t)ch;
    scratch = MAXZ(scratch, resblock_scratch(pix, ch, ch));
    if (cfg->transformer_depth_middle > 0) {
        scratch = MAXZ(scratch, transformer_scratch(pix, ch));
        attn_c = MAXZ(attn_c, (size_t)ch);
    }

    for (int l = L - 1; l >= 0; l--) {
        pix = B * H[l] * W[l];
        for (int i = 0; i <= cfg->num_res_blocks; i++) {
            int cin = ch + chans[--n_chans], cout = mc * cfg->channel_mult[l];
            scratch = MAXZ(scratch, pix * (size_t)cin + resblock_scratch(pix, cin, cout));
            ch = cout;
            act = MAXZ(act, pix * (size_t)ch);
            if (cfg->transformer_depth[l] > 0) {
                scratch = MAXZ(scratch, transformer_scratch(pix, ch));
                attn_c = MAXZ(attn_c, (size_t)ch);
            }
            if (l > 0 && i == cfg->num_res_blocks) { /* nearest resize to the next skip's size */
                size_t up = B * H[l - 1] * W[l - 1] * (size_t)ch;
                scratch = MAXZ(scratch, up);
                act = MAXZ(act, up);
            }
        }
    }
    scratch = MAXZ(scratch, B * H[0] * W[0] * (size_t)ch); /* out: GroupNorm + SiLU */

    size_t td = 4 * (size_t)mc;
    p->small = align16(B * (size_t)mc) + 4 * align16(B * td) + align16(B * max_c);
    p->ctx = align16(B * (size_t)n_ctx * attn_c);
    p->skips = align16(skips);
    p->act = align16(act);
    p->scratch = align16(scratch);
}

size_t un_plan_bytes(const un_plan *p)
{
    return sizeof(float) * (p->small + 2 * p->ctx + p->skips + 2 * p->act + p->scratch);
}

size_t un_workspace_bytes(const wt_unet_config *cfg, int batch, int h, int w, int n_ctx)
{
    if (cfg->n_levels < 1 || cfg->n_levels > FM_MAX_LEVELS || batch < 1 || h < 1 || w < 1)
        return 0;
    un_plan p;
    un_plan_workspace(cfg, batch, h, w, n_ctx, &p);
    return un_plan_bytes(&p);
}

/* ---- the kernels' scratch: the forward's calls, in its order ---- */

typedef struct kplan {
    int B, n_ctx, threads;
    fm_precision prec;
    size_t bytes;
} kplan;

static void k_linear(kplan *k, int n, const kn_mat *w)
{
    k->bytes = MAXZ(k->bytes, kn_linear_scratch(n, w, k->threads));
}

static void k_conv(kplan *k, const kn_conv *c, int h, int w)
{
    k->bytes = MAXZ(k->bytes, kn_conv2d_scratch(c, k->B, h, w, k->threads));
}

static void k_resblock(kplan *k, const un_resblock *r, int h, int w)
{
    k_conv(k, &r->in_conv, h, w);
    k_linear(k, k->B, &r->emb_proj.w);
    k_conv(k, &r->out_conv, h, w);
    if (r->has_skip) k_conv(k, &r->skip, h, w);
}

static void k_attention(kplan *k, const un_attention *a, const un_spatial_transformer *s, int nq, int nk)
{
    k_linear(k, k->B * nq, &a->to_q);
    k_linear(k, k->B * nk, &a->to_k);
    k_linear(k, k->B * nk, &a->to_v);
    k->bytes = MAXZ(k->bytes, kn_attention_scratch(k->B, nq, nk, s->heads, s->dim_head, k->prec, k->threads));
    k_linear(k, k->B * nq, &a->to_out.w);
}

static void k_transformer(kplan *k, const un_spatial_transformer *s, int hw)
{
    size_t rows = (size_t)k->B * hw, chunk = un_ff_rows(rows), last = rows % chunk ? rows % chunk : chunk;
    k_linear(k, (int)rows, &s->proj_in.w);
    for (int d = 0; d < s->depth; d++) {
        const un_transformer_block *b = &s->blocks[d];
        k_attention(k, &b->attn1, s, hw, hw);
        k_attention(k, &b->attn2, s, hw, k->n_ctx);
        k_linear(k, (int)chunk, &b->ff_proj.w); /* full chunks, then the last */
        k_linear(k, (int)chunk, &b->ff_out.w);
        k_linear(k, (int)last, &b->ff_proj.w);
        k_linear(k, (int)last, &b->ff_out.w);
    }
    k_linear(k, (int)rows, &s->proj_out.w);
}

size_t un_plan_kernel_bytes(const un_model *u, int batch, int h, int w, int n_ctx, int threads)
{
    kplan k = {.B = batch, .n_ctx = n_ctx, .threads = threads, .prec = u->prec};
    k_linear(&k, batch, &u->time_embed0.w);
    k_linear(&k, batch, &u->time_embed2.w);
    if (u->has_label) {
        k_linear(&k, batch, &u->label_emb0.w);
        k_linear(&k, batch, &u->label_emb2.w);
    }
    int hs[1 + FM_MAX_LEVELS * 65][2], n_hs = 0;
    for (int i = 0; i < u->n_in; i++) {
        const un_block *b = &u->in[i];
        if (b->has_conv) {
            k_conv(&k, &b->conv, h, w);
            h = kn_conv_out_h(&b->conv, h);
            w = kn_conv_out_w(&b->conv, w);
        } else {
            k_resblock(&k, &b->res, h, w);
            if (b->has_attn) k_transformer(&k, &b->attn, h * w);
        }
        if (n_hs < (int)(sizeof hs / sizeof hs[0])) {
            hs[n_hs][0] = h;
            hs[n_hs++][1] = w;
        }
    }
    k_resblock(&k, &u->mid.res, h, w);
    if (u->mid.has_attn) k_transformer(&k, &u->mid.attn, h * w);
    k_resblock(&k, &u->mid.res2, h, w);
    for (int i = 0; i < u->n_out && n_hs > 0; i++) {
        const un_block *b = &u->out[i];
        n_hs--;
        k_resblock(&k, &b->res, h, w);
        if (b->has_attn) k_transformer(&k, &b->attn, h * w);
        if (b->has_upsample && n_hs > 0) {
            h = hs[n_hs - 1][0];
            w = hs[n_hs - 1][1];
            k_conv(&k, &b->upsample, h, w);
        }
    }
    k_conv(&k, &u->out_conv, h, w);
    return (k.bytes + 63) & ~(size_t)63;
}
