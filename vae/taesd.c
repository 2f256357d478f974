/* TAESD / TAESDXL (madebyollin/taesd taesd.py): Encoder and Decoder are
 * nn.Sequential stacks of 3x3 convs, ReLUs, residual Blocks and nearest x2
 * upsamples, all 64 channels wide. The layer tables below are those
 * Sequentials, index for index, so tensor names and traces use upstream
 * indices (diffusers' DecoderTiny is the same list shifted by one).
 *
 * Conventions (tests/data/README.md#taesd): latents are in U-Net space (no
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
    kn_conv conv[3]; /* L_CONV uses conv[0]; L_BLOCK all three */
} layer;

typedef struct half {
    int present, n;
    layer layers[TAESD_MAX_LAYERS];
} half;

typedef enum { NAMES_COMBINED, NAMES_SPLIT, NAMES_DIFFUSERS } name_scheme;

struct vae_taesd {
    wt_safetensors file; /* when opened by path */
    int owns_file;
    int latent_ch;
    half enc, dec;
    wt_weights *weights; /* the binding records and any converted copies */
    vae_trace_fn trace;
    void *trace_user;
};

/* ---------------------------------------------------------------- loading */

typedef struct loader {
    const wt_source *src;
    name_scheme scheme;
    vae_taesd *t;
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

static void load_conv(loader *L, kn_conv *c, const char *part, int idx, const char *sub,
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

static void pack_fp32(kn_mat *m, void *arg)
{
    (void)arg;
    kn_mat_pack(m, FM_PREC_FP32);
}

/* src must outlive the result (vae_taesd_open keeps its mapping). */
static vae_taesd *vae_taesd_load(const wt_source *src, fm_error *err)
{
    vae_taesd *t = calloc(1, sizeof *t);
    if (!t) {
        core_fail(err, FM_EINPUT, "taesd: out of memory");
        return NULL;
    }
    loader L = {src, NAMES_COMBINED, t, err, {0}};
    int has_enc = 0, has_dec = 0;
    if (detect(&L, &has_enc, &has_dec) || wt_bind_begin(&L.b, src, "", "taesd", err)) {
        vae_taesd_free(t);
        return NULL;
    }
    do {
        if (has_dec) load_half(&L, &t->dec, "decoder", decoder_spec, N_DEC);
        if (has_enc) load_half(&L, &t->enc, "encoder", encoder_spec, N_ENC);
    } while (wt_bind_again(&L.b));
    if (!(t->weights = wt_bind_end(&L.b))) {
        vae_taesd_free(t);
        return NULL;
    }
    wt_weights_each_mat(t->weights, pack_fp32, NULL);
    return t;
}

vae_taesd *vae_taesd_open(const char *path, fm_error *err)
{
    wt_safetensors st;
    if (wt_st_open(&st, path, err)) return NULL;
    vae_taesd *t = vae_taesd_load(&st.src, err);
    if (!t) {
        wt_st_close(&st);
        return NULL;
    }
    t->file = st; /* the mapping stays where it is; only the struct moves */
    t->owns_file = 1;
    return t;
}

void vae_taesd_free(vae_taesd *t)
{
    if (!t) return;
    wt_weights_free(t->weights);
    if (t->owns_file) wt_st_close(&t->file);
    free(t);
}

int vae_taesd_has_encoder(const vae_taesd *t) { return t->enc.present; }
int vae_taesd_has_decoder(const vae_taesd *t) { return t->dec.present; }
int vae_taesd_latent_channels(const vae_taesd *t) { return t->latent_ch; }

void vae_taesd_set_trace(vae_taesd *t, vae_trace_fn fn, void *user)
{
    t->trace = fn;
    t->trace_user = user;
}

void vae_taesd_scale_latents(float *y, const float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) y[i] = fminf(fmaxf(x[i] / 6.0f + 0.5f, 0.0f), 1.0f);
}

/* ---------------------------------------------------------------- forward */

static void relu(float *x, size_t n)
{
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) x[i] = x[i] > 0 ? x[i] : 0;
}

/* Three buffers of 64 x (largest h*w): cur holds the running map; the
 * convolutions' scratch. All of it from one caller-owned arena. */
typedef struct run {
    float *cur, *t1, *t2;
    int c, h, w;
    kn_scratch ks;
    int failed; /* a convolution found the scratch smaller than planned */
} run;

static void swap(float **a, float **b)
{
    float *t = *a;
    *a = *b;
    *b = t;
}

static void conv(run *r, float *y, const float *x, const kn_conv *c)
{
    if (kn_conv2d_ws(&r->ks, y, x, c, 1, r->h, r->w)) r->failed = 1;
}

/* x = ReLU(conv4(ReLU(conv2(ReLU(conv0(x))))) + x) */
static void block(run *r, const layer *ly)
{
    size_t n = (size_t)TAESD_CH * r->h * r->w;
    conv(r, r->t1, r->cur, &ly->conv[0]);
    relu(r->t1, n);
    conv(r, r->t2, r->t1, &ly->conv[1]);
    relu(r->t2, n);
    conv(r, r->t1, r->t2, &ly->conv[2]);
    kn_add(r->cur, r->cur, r->t1, n);
    relu(r->cur, n);
}

/* Runs layers [0, n) of h on r->cur; the last conv writes to out. */
static void forward(const vae_taesd *t, const half *hf, run *r, float *out, const char *part)
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
            kn_upsample_nearest(r->t1, 2 * r->h, 2 * r->w, r->cur, r->c, r->h, r->w);
            swap(&r->cur, &r->t1);
            r->h *= 2;
            r->w *= 2;
            break;
        case L_CONV: {
            const kn_conv *c = &ly->conv[0];
            float *dst = i == hf->n - 1 ? out : r->t1;
            conv(r, dst, r->cur, c);
            r->c = c->cout;
            r->h = kn_conv_out_h(c, r->h);
            r->w = kn_conv_out_w(c, r->w);
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

/* The largest convolution scratch of forward on an h x w input: the same
 * walk on shapes. */
static size_t forward_scratch(const half *hf, int h, int w, int threads)
{
    size_t most = 0;
    for (int i = 0; i < hf->n; i++) {
        const layer *ly = &hf->layers[i];
        for (int k = 0; k < (ly->kind == L_BLOCK ? 3 : ly->kind == L_CONV ? 1 : 0); k++) {
            size_t b = kn_conv2d_scratch(&ly->conv[k], 1, h, w, threads);
            most = b > most ? b : most;
        }
        if (ly->kind == L_UPSAMPLE) h *= 2, w *= 2;
        if (ly->kind == L_CONV) h = kn_conv_out_h(&ly->conv[0], h), w = kn_conv_out_w(&ly->conv[0], w);
    }
    return most;
}

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Arena bytes of a forward whose largest map has `floats` values. */
static size_t run_bytes(const half *hf, size_t floats, int h, int w, int threads)
{
    return 3 * align64(floats * sizeof(float)) + align64(forward_scratch(hf, h, w, threads));
}

static void run_carve(run *r, const half *hf, size_t floats, int h, int w, int threads, void *arena)
{
    char *p = arena;
    size_t b = align64(floats * sizeof(float));
    r->cur = (float *)p;
    r->t1 = (float *)(p + b);
    r->t2 = (float *)(p + 2 * b);
    r->ks = (kn_scratch){.base = p + 3 * b, .bytes = align64(forward_scratch(hf, h, w, threads)), .threads = threads};
}

static int run_forward(const vae_taesd *t, const half *hf, float *out, const float *in, int c, int h, int w,
                       size_t floats, void *arena, size_t bytes, const char *part, fm_error *err)
{
    int threads = kn_scratch_threads();
    if (!arena || bytes < run_bytes(hf, floats, h, w, threads))
        return core_fail(err, FM_EINPUT, "taesd: the arena is smaller than the %s needs", part);
    run r = {0};
    run_carve(&r, hf, floats, h, w, threads, arena);
    memcpy(r.cur, in, sizeof(float) * c * h * w);
    r.c = c;
    r.h = h;
    r.w = w;
    forward(t, hf, &r, out, part);
    return r.failed ? core_fail(err, FM_EINPUT, "taesd: internal error: convolution scratch smaller than planned") : 0;
}

static int decode_size(const vae_taesd *t, int h, int w, fm_error *err)
{
    if (!t || !t->dec.present) return core_fail(err, FM_EINPUT, "taesd: the file has no decoder");
    if (h < 1 || w < 1 || h > 8192 || w > 8192) return core_fail(err, FM_EINPUT, "taesd decode: bad size %dx%d", w, h);
    return 0;
}

size_t vae_taesd_decode_bytes(const vae_taesd *t, int h, int w)
{
    if (decode_size(t, h, w, NULL)) return 0;
    return run_bytes(&t->dec, (size_t)TAESD_CH * 64 * h * w, h, w, kn_scratch_threads());
}

int vae_taesd_decode_in(vae_taesd *t, float *img, size_t img_len, const float *z, size_t z_len, int h, int w,
                       void *arena, size_t bytes, fm_error *err)
{
    if (decode_size(t, h, w, err)) return FM_EINPUT;
    /* The sizes the caller's buffers must have, checked here where they are
     * read and written: a latent of latent_ch x h x w in, 3 x 8h x 8w out. */
    if ((size_t)t->latent_ch * h * w > z_len)
        return core_fail(err, FM_EINPUT, "taesd decode: a %dx%d latent of %d channels is more than the %zu values given",
                       w, h, t->latent_ch, z_len);
    if ((size_t)3 * 64 * h * w > img_len)
        return core_fail(err, FM_EINPUT, "taesd decode: a %dx%d image does not fit the %zu values given", 8 * w, 8 * h,
                       img_len);
    return run_forward(t, &t->dec, img, z, t->latent_ch, h, w, (size_t)TAESD_CH * 64 * h * w, arena, bytes,
                       "dec", err);
}

int vae_taesd_decode(vae_taesd *t, float *img, size_t img_len, const float *z, size_t z_len, int h, int w,
                    fm_error *err)
{
    if (decode_size(t, h, w, err)) return FM_EINPUT;
    size_t bytes = vae_taesd_decode_bytes(t, h, w);
    void *arena = core_alloc(bytes);
    if (!arena) return core_fail(err, FM_EINPUT, "taesd: out of memory for %zu MB of activations", bytes >> 20);
    int rc = vae_taesd_decode_in(t, img, img_len, z, z_len, h, w, arena, bytes, err);
    core_free(arena);
    return rc;
}

int vae_taesd_encode(vae_taesd *t, float *z, const float *img, int H, int W, fm_error *err)
{
    if (!t || !t->enc.present) return core_fail(err, FM_EINPUT, "taesd: the file has no encoder");
    if (H < 8 || W < 8 || H % 8 || W % 8 || H > 65536 || W > 65536)
        return core_fail(err, FM_EINPUT, "taesd encode: %dx%d is not a multiple of 8", W, H);
    size_t floats = (size_t)TAESD_CH * H * W, bytes = run_bytes(&t->enc, floats, H, W, kn_scratch_threads());
    void *arena = core_alloc(bytes);
    if (!arena) return core_fail(err, FM_EINPUT, "taesd: out of memory for %zu MB of activations", bytes >> 20);
    int rc = run_forward(t, &t->enc, z, img, 3, H, W, floats, arena, bytes, "enc", err);
    core_free(arena);
    return rc;
}
