/* TAESD / TAESDXL (madebyollin/taesd taesd.py): Encoder and Decoder are
 * nn.Sequential stacks of 3x3 convs, ReLUs, residual Blocks and nearest x2
 * upsamples, all 64 channels wide. The layer tables below are those
 * Sequentials, index for index, so tensor names and traces use upstream
 * indices (diffusers' DecoderTiny is the same list shifted by one).
 *
 * Conventions (golden/TAESD.md): latents are in U-Net space (no
 * scale_factor), images in [0, 1], the decoder output is not clamped. */
#include "kernels/kernels.h"
#include "vae/vae.h"
#include "weights/binder.h"
#include "weights/safetensors.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TAESD_CH 64
#define TAESD_MAX_LAYERS 20

typedef enum { L_CLAMP, L_CONV, L_RELU, L_BLOCK, L_UPSAMPLE } layer_kind;

/* One Sequential entry. conv: cin -1 = latent channels; cout -1 likewise. */
typedef struct layer_spec {
    layer_kind kind;
    int cin, cout, stride, bias;
} layer_spec;

#define CONV(ci, co, s, b) {L_CONV, ci, co, s, b}
#define BLOCK {L_BLOCK, TAESD_CH, TAESD_CH, 1, 1}
#define RELU {L_RELU, 0, 0, 0, 0}
#define UP {L_UPSAMPLE, 0, 0, 0, 0}

static const layer_spec decoder_spec[] = {
    {L_CLAMP, 0, 0, 0, 0}, CONV(-1, 64, 1, 1), RELU, BLOCK, BLOCK, BLOCK,
    UP, CONV(64, 64, 1, 0), BLOCK, BLOCK, BLOCK,
    UP, CONV(64, 64, 1, 0), BLOCK, BLOCK, BLOCK,
    UP, CONV(64, 64, 1, 0), BLOCK, CONV(64, 3, 1, 1),
};

static const layer_spec encoder_spec[] = {
    CONV(3, 64, 1, 1), BLOCK,
    CONV(64, 64, 2, 0), BLOCK, BLOCK, BLOCK,
    CONV(64, 64, 2, 0), BLOCK, BLOCK, BLOCK,
    CONV(64, 64, 2, 0), BLOCK, BLOCK, BLOCK,
    CONV(64, -1, 1, 1),
};

#define N_DEC ((int)(sizeof decoder_spec / sizeof decoder_spec[0]))
#define N_ENC ((int)(sizeof encoder_spec / sizeof encoder_spec[0]))

/* Block: conv.0, ReLU, conv.2, ReLU, conv.4, then ReLU(h + x). */
typedef struct layer {
    layer_kind kind;
    fm_conv conv[3]; /* L_CONV uses conv[0]; L_BLOCK all three */
} layer;

typedef struct half {
    int present, n;
    layer layers[TAESD_MAX_LAYERS];
} half;

typedef enum { NAMES_COMBINED, NAMES_SPLIT, NAMES_DIFFUSERS } name_scheme;

struct fm_taesd {
    fm_safetensors file; /* when opened by path */
    int owns_file;
    int latent_ch;
    half enc, dec;
    wt_weights *weights; /* the binding records and any converted copies */
    fm_vae_trace_fn trace;
    void *trace_user;
};

/* ---------------------------------------------------------------- loading */

typedef struct loader {
    const wt_source *src;
    name_scheme scheme;
    fm_taesd *t;
    fm_error *err;
    wt_binder b;
} loader;

/* The tensor name of Sequential entry idx of "encoder"/"decoder", + rest. */
static void tensor_name(char *out, size_t n, name_scheme s, const char *part, int idx, const char *rest)
{
    switch (s) {
    case NAMES_COMBINED: snprintf(out, n, "%s.%d.%s", part, idx, rest); break;
    case NAMES_SPLIT: snprintf(out, n, "%d.%s", idx, rest); break;
    case NAMES_DIFFUSERS:
        /* DecoderTiny keeps the Clamp outside its Sequential */
        snprintf(out, n, "%s.layers.%d.%s", part, part[0] == 'd' ? idx - 1 : idx, rest);
        break;
    }
}

static void load_conv(loader *L, fm_conv *c, const char *part, int idx, const char *sub,
                      const layer_spec *sp)
{
    char rest[64], name[128];
    int cin = sp->cin < 0 ? L->t->latent_ch : sp->cin, cout = sp->cout < 0 ? L->t->latent_ch : sp->cout;
    memset(c, 0, sizeof *c);
    c->cin = cin;
    c->cout = cout;
    c->kh = c->kw = 3;
    c->stride = sp->stride;
    c->pad_t = c->pad_l = c->pad_b = c->pad_r = 1;
    snprintf(rest, sizeof rest, "%sweight", sub);
    tensor_name(name, sizeof name, L->scheme, part, idx, rest);
    int64_t shape[4] = {cout, cin, 3, 3};
    wt_bind_mat(&L->b, &c->w, cout, cin * 9, 4, shape, "%s", name);
    if (!sp->bias) return;
    snprintf(rest, sizeof rest, "%sbias", sub);
    tensor_name(name, sizeof name, L->scheme, part, idx, rest);
    wt_bind_vec(&L->b, &c->bias, cout, "%s", name);
}

static int load_half(loader *L, half *h, const char *part, const layer_spec *spec, int n)
{
    h->n = n;
    for (int i = 0; i < n; i++) {
        layer *ly = &h->layers[i];
        ly->kind = spec[i].kind;
        if (ly->kind == L_CONV) load_conv(L, &ly->conv[0], part, i, "", &spec[i]);
        if (ly->kind == L_BLOCK)
            for (int k = 0; k < 3; k++) {
                char sub[16];
                snprintf(sub, sizeof sub, "conv.%d.", 2 * k);
                load_conv(L, &ly->conv[k], part, i, sub, &spec[i]);
            }
    }
    h->present = wt_bind_ok(&L->b);
    return h->present ? 0 : FM_EINPUT;
}

/* Which scheme, which halves, and the latent channel count (from the first
 * decoder conv or the last encoder conv). */
static int detect(loader *L, int *has_enc, int *has_dec)
{
    static const struct { name_scheme s; const char *dec, *enc; } probes[] = {
        {NAMES_DIFFUSERS, "decoder.layers.0.weight", "encoder.layers.14.weight"},
        {NAMES_COMBINED, "decoder.1.weight", "encoder.14.weight"},
    };
    const wt_source *st = L->src;
    for (size_t i = 0; i < sizeof probes / sizeof probes[0]; i++) {
        const wt_tensor *d = wt_find(st, probes[i].dec), *e = wt_find(st, probes[i].enc);
        if (!d && !e) continue;
        L->scheme = probes[i].s;
        *has_dec = d != NULL;
        *has_enc = e != NULL;
        L->t->latent_ch = (int)(d && d->ndim == 4 ? d->shape[1] : e && e->ndim == 4 ? e->shape[0] : 0);
        return L->t->latent_ch > 0 ? 0 : wt_fail(L->err, st, "taesd: bad first/last conv");
    }
    /* split upstream files: decoder 1.weight [64,lat,3,3] + 19.weight; encoder 0.weight [64,3,3,3] + 14.weight */
    const wt_tensor *d = wt_find(st, "19.weight"), *e = wt_find(st, "14.weight");
    const wt_tensor *d1 = wt_find(st, "1.weight");
    L->scheme = NAMES_SPLIT;
    if (d && d1 && d1->ndim == 4 && !wt_find(st, "0.weight")) {
        *has_dec = 1;
        L->t->latent_ch = (int)d1->shape[1];
        return 0;
    }
    if (e && e->ndim == 4 && wt_find(st, "0.weight")) {
        *has_enc = 1;
        L->t->latent_ch = (int)e->shape[0];
        return 0;
    }
    return wt_fail(L->err, st, "not a TAESD file (no decoder.1.*, decoder.layers.0.*, 1.*/19.* or 0.*/14.* tensors)");
}

static void pack_fp32(fm_mat *m, void *arg)
{
    (void)arg;
    fm_mat_pack(m, FM_PREC_FP32);
}

fm_taesd *fm_taesd_load(const wt_source *src, fm_error *err)
{
    fm_taesd *t = calloc(1, sizeof *t);
    if (!t) {
        fm_fail(err, FM_EINPUT, "taesd: out of memory");
        return NULL;
    }
    loader L = {src, NAMES_COMBINED, t, err, {0}};
    int has_enc = 0, has_dec = 0;
    if (detect(&L, &has_enc, &has_dec) || wt_bind_begin(&L.b, src, "", "taesd", err)) {
        fm_taesd_free(t);
        return NULL;
    }
    do {
        if (has_dec) load_half(&L, &t->dec, "decoder", decoder_spec, N_DEC);
        if (has_enc) load_half(&L, &t->enc, "encoder", encoder_spec, N_ENC);
    } while (wt_bind_again(&L.b));
    if (!(t->weights = wt_bind_end(&L.b))) {
        fm_taesd_free(t);
        return NULL;
    }
    wt_weights_each_mat(t->weights, pack_fp32, NULL);
    return t;
}

fm_taesd *fm_taesd_open(const char *path, fm_error *err)
{
    fm_safetensors st;
    if (fm_st_open(&st, path, err)) return NULL;
    fm_taesd *t = fm_taesd_load(&st.src, err);
    if (!t) {
        fm_st_close(&st);
        return NULL;
    }
    t->file = st; /* the mapping stays where it is; only the struct moves */
    t->owns_file = 1;
    return t;
}

void fm_taesd_free(fm_taesd *t)
{
    if (!t) return;
    wt_weights_free(t->weights);
    if (t->owns_file) fm_st_close(&t->file);
    free(t);
}

int fm_taesd_has_encoder(const fm_taesd *t) { return t->enc.present; }
int fm_taesd_has_decoder(const fm_taesd *t) { return t->dec.present; }
int fm_taesd_latent_channels(const fm_taesd *t) { return t->latent_ch; }

void fm_taesd_set_trace(fm_taesd *t, fm_vae_trace_fn fn, void *user)
{
    t->trace = fn;
    t->trace_user = user;
}

void fm_taesd_scale_latents(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = fminf(fmaxf(x[i] / 6.0f + 0.5f, 0.0f), 1.0f);
}

/* ---------------------------------------------------------------- forward */

static void relu(float *x, size_t n)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = x[i] > 0 ? x[i] : 0;
}

/* Three buffers of 64 x (largest h*w): cur holds the running map. */
typedef struct run {
    float *cur, *t1, *t2;
    int c, h, w;
} run;

static void swap(float **a, float **b)
{
    float *t = *a;
    *a = *b;
    *b = t;
}

/* x = ReLU(conv4(ReLU(conv2(ReLU(conv0(x))))) + x) */
static void block(run *r, const layer *ly)
{
    size_t n = (size_t)TAESD_CH * r->h * r->w;
    fm_conv2d(r->t1, r->cur, &ly->conv[0], 1, r->h, r->w);
    relu(r->t1, n);
    fm_conv2d(r->t2, r->t1, &ly->conv[1], 1, r->h, r->w);
    relu(r->t2, n);
    fm_conv2d(r->t1, r->t2, &ly->conv[2], 1, r->h, r->w);
    fm_add(r->cur, r->cur, r->t1, n);
    relu(r->cur, n);
}

/* Runs layers [0, n) of h on r->cur; the last conv writes to out. */
static void forward(const fm_taesd *t, const half *hf, run *r, float *out, const char *part)
{
    for (int i = 0; i < hf->n; i++) {
        const layer *ly = &hf->layers[i];
        size_t n = (size_t)r->c * r->h * r->w;
        switch (ly->kind) {
        case L_CLAMP:
            for (size_t k = 0; k < n; k++) r->cur[k] = 3.0f * tanhf(r->cur[k] / 3.0f);
            break;
        case L_RELU: relu(r->cur, n); break;
        case L_BLOCK: block(r, ly); break;
        case L_UPSAMPLE:
            fm_upsample_nearest(r->t1, 2 * r->h, 2 * r->w, r->cur, r->c, r->h, r->w);
            swap(&r->cur, &r->t1);
            r->h *= 2;
            r->w *= 2;
            break;
        case L_CONV: {
            const fm_conv *c = &ly->conv[0];
            float *dst = i == hf->n - 1 ? out : r->t1;
            fm_conv2d(dst, r->cur, c, 1, r->h, r->w);
            r->c = c->cout;
            r->h = fm_conv_out_h(c, r->h);
            r->w = fm_conv_out_w(c, r->w);
            if (dst == r->t1) swap(&r->cur, &r->t1);
            else r->cur = dst;
            break;
        }
        }
        if (t->trace) {
            char name[32];
            snprintf(name, sizeof name, "%s.after.%d", part, i);
            t->trace(t->trace_user, name, r->cur, r->c, r->h, r->w);
        }
    }
}

static int run_alloc(run *r, size_t floats, fm_error *err)
{
    r->cur = fm_alloc(floats * sizeof(float));
    r->t1 = fm_alloc(floats * sizeof(float));
    r->t2 = fm_alloc(floats * sizeof(float));
    if (r->cur && r->t1 && r->t2) return 0;
    fm_free(r->cur);
    fm_free(r->t1);
    fm_free(r->t2);
    return fm_fail(err, FM_EINPUT, "taesd: out of memory for %zu MB of activations",
                   3 * floats * sizeof(float) >> 20);
}

int fm_taesd_decode(fm_taesd *t, float *img, const float *z, int h, int w, fm_error *err)
{
    if (!t || !t->dec.present) return fm_fail(err, FM_EINPUT, "taesd: the file has no decoder");
    if (h < 1 || w < 1 || h > 8192 || w > 8192) return fm_fail(err, FM_EINPUT, "taesd decode: bad size %dx%d", w, h);
    run r = {0};
    if (run_alloc(&r, (size_t)TAESD_CH * 64 * h * w, err)) return FM_EINPUT;
    float *bufs[3] = {r.cur, r.t1, r.t2};
    memcpy(r.cur, z, sizeof(float) * t->latent_ch * h * w);
    r.c = t->latent_ch;
    r.h = h;
    r.w = w;
    forward(t, &t->dec, &r, img, "dec");
    for (int i = 0; i < 3; i++) fm_free(bufs[i]);
    return 0;
}

int fm_taesd_encode(fm_taesd *t, float *z, const float *img, int H, int W, fm_error *err)
{
    if (!t || !t->enc.present) return fm_fail(err, FM_EINPUT, "taesd: the file has no encoder");
    if (H < 8 || W < 8 || H % 8 || W % 8 || H > 65536 || W > 65536)
        return fm_fail(err, FM_EINPUT, "taesd encode: %dx%d is not a multiple of 8", W, H);
    run r = {0};
    if (run_alloc(&r, (size_t)TAESD_CH * H * W, err)) return FM_EINPUT;
    float *bufs[3] = {r.cur, r.t1, r.t2};
    memcpy(r.cur, img, sizeof(float) * 3 * H * W);
    r.c = 3;
    r.h = H;
    r.w = W;
    forward(t, &t->enc, &r, z, "enc");
    for (int i = 0; i < 3; i++) fm_free(bufs[i]);
    return 0;
}
