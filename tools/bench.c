/* bench: the measuring side of `make bench` (tools/bench.sh prepares the
 * checkpoints and calls this). Times each stage of SD 1.5, SD-Turbo and SDXL
 * in-process through the modules' own APIs, so every stage is isolated,
 * counts the stage's FLOPs from the model config, measures the machine's
 * FP32 peak in the same run, runs whole generations (fmimage, and
 * stable-diffusion.cpp when given) as child processes for wall time and peak
 * RSS, then prints a table and writes JSON.
 *
 *   bench [--reps N] [--warmup N] [--threads T] [--px 512] [--cache DIR] [--fmimage BIN] [--sdcpp BIN]
 *         [--json OUT] [--dump DIR] [--only LIST] [--precision MODE] [--estimate-only] [--flops]
 *
 * --only      comma list of peak,sd1,prec,gen,turbo,sdxl,sdcpp,lora,upscale,hires,sd1x20,sdxlq8
 *             (default: all but sd1x20 and sdxlq8, the long runs beside sd.cpp (20 steps at
 *             512; SDXL 1024 on the same Q8_0 file), which only run when named)
 * --precision fp32|bf16|auto: the SD 1.5 stage rows' and sd1.gen's mode
 *             (default auto, the CLI's; the per-precision rows run all three)
 * --dump DIR  with prec / sdxl: the fp32 rows' inputs and outputs as raw float32 (tools/peers)
 * --flops     print the FLOP counts of the stages and exit
 * --px        image side for SD 1.5 / SD-Turbo, SDXL twice that (default
 *             512; smaller only for a smoke test of the harness)
 * Checkpoints: DIR/sd1-f16.safetensors, sdturbo-f16..., sdxl-f16...,
 * DIR/taesd.safetensors. Medians over N runs (default 3); wall clock and CPU
 * time per thread (which is what the run would take with the cores to itself
 * on a shared machine) are both reported. */
#include "diffusion/pipeline_internal.h"
#include "kernels/kernels.h"
#include "textenc/prompt.h"
#include "upscale/upscale.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif
#include "clocks.h"
#include "fma_peak.h"

#define MAX_REPS 15
#define PROMPT "a photograph of an astronaut riding a horse"

/* ------------------------------------------------------------- clocks -- */

static double median(double *v, int n)
{
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (v[j] < v[i]) { double s = v[i]; v[i] = v[j]; v[j] = s; }
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* ------------------------------------------------------- FLOP counts -- */
/* Multiply-adds count 2. Convolutions 2*Cin*Cout*k*k*Hout*Wout, linears
 * 2*in*out*tokens, attention 4*n_q*n_k*dim over all heads (QK^T and PV);
 * norms, activations and softmax are not counted. Per batch element. */

static double conv_flops(int cin, int cout, int k, int h, int w)
{
    return 2.0 * cin * cout * k * k * (double)h * w;
}

static double attention_flops(int c, double n_q, double n_k) { return 4.0 * n_q * n_k * c; }

/* ldm ResBlock: conv 3x3, emb linear (temb_dim 0 = none, the VAE's), conv
 * 3x3, 1x1 skip when the width changes. */
static double resblock_flops(int cin, int cout, int h, int w, int temb_dim)
{
    double f = conv_flops(cin, cout, 3, h, w) + conv_flops(cout, cout, 3, h, w) + 2.0 * temb_dim * cout;
    if (cin != cout) f += conv_flops(cin, cout, 1, h, w);
    return f;
}

/* SpatialTransformer: proj_in/out (1x1 conv or linear: the same count),
 * then depth x (self-attention, cross-attention, GEGLU feed-forward). */
static double transformer_flops(int c, int depth, int h, int w, int n_ctx, int ctx_dim)
{
    double n = (double)h * w, f = 2 * 2.0 * c * c * n;
    for (int d = 0; d < depth; d++) {
        f += 4 * 2.0 * c * c * n + attention_flops(c, n, n);
        f += 2 * 2.0 * c * c * n + 2 * 2.0 * ctx_dim * c * n_ctx + attention_flops(c, n, n_ctx);
        f += 2.0 * c * 8 * c * n + 2.0 * 4 * c * c * n;
    }
    return f;
}

static double unet_flops(const wt_unet_config *u, int batch, int h, int w, int n_ctx)
{
    int mc = u->model_channels, temb = 4 * mc, ch = mc, chans[64], nch = 0;
    double f = 2.0 * mc * temb + 2.0 * temb * temb;
    if (u->adm_in_channels) f += 2.0 * u->adm_in_channels * temb + 2.0 * temb * temb;
    f += conv_flops(u->in_channels, mc, 3, h, w);
    chans[nch++] = mc;
    for (int l = 0; l < u->n_levels; l++) {
        for (int r = 0; r < u->num_res_blocks; r++) {
            int co = mc * u->channel_mult[l];
            f += resblock_flops(ch, co, h, w, temb);
            ch = co;
            if (u->transformer_depth[l])
                f += transformer_flops(ch, u->transformer_depth[l], h, w, n_ctx, u->context_dim);
            chans[nch++] = ch;
        }
        if (l != u->n_levels - 1) {
            h = (h - 1) / 2 + 1;
            w = (w - 1) / 2 + 1;
            f += conv_flops(ch, ch, 3, h, w);
            chans[nch++] = ch;
        }
    }
    f += 2 * resblock_flops(ch, ch, h, w, temb);
    if (u->transformer_depth_middle) f += transformer_flops(ch, u->transformer_depth_middle, h, w, n_ctx, u->context_dim);
    for (int l = u->n_levels - 1; l >= 0; l--)
        for (int i = 0; i <= u->num_res_blocks; i++) {
            int co = mc * u->channel_mult[l];
            f += resblock_flops(ch + chans[--nch], co, h, w, temb);
            ch = co;
            if (u->transformer_depth[l])
                f += transformer_flops(ch, u->transformer_depth[l], h, w, n_ctx, u->context_dim);
            if (l > 0 && i == u->num_res_blocks) {
                h *= 2;
                w *= 2;
                f += conv_flops(ch, ch, 3, h, w);
            }
        }
    f += conv_flops(ch, u->out_channels, 3, h, w);
    return f * batch;
}

/* ldm Decoder with post_quant_conv, from an h x w latent. */
static double vae_decode_flops(const wt_vae_config *v, int h, int w)
{
    int bi = v->ch * v->ch_mult[v->n_levels - 1];
    double f = conv_flops(v->embed_dim, v->z_channels, 1, h, w) + conv_flops(v->z_channels, bi, 3, h, w);
    double n = (double)h * w;
    f += 2 * resblock_flops(bi, bi, h, w, 0) + 4 * 2.0 * bi * bi * n + attention_flops(bi, n, n);
    for (int l = v->n_levels - 1; l >= 0; l--) {
        int bo = v->ch * v->ch_mult[l];
        for (int i = 0; i <= v->num_res_blocks; i++) {
            f += resblock_flops(bi, bo, h, w, 0);
            bi = bo;
        }
        if (l != 0) {
            h *= 2;
            w *= 2;
            f += conv_flops(bi, bi, 3, h, w);
        }
    }
    return f + conv_flops(bi, v->out_ch, 3, h, w);
}

/* TAESD decoder (vae/taesd.c's table): 64-wide 3x3 convs, Blocks of three. */
static double taesd_decode_flops(int h, int w)
{
    double c64 = conv_flops(64, 64, 3, 1, 1), f = conv_flops(4, 64, 3, h, w);
    double hw = (double)h * w;
    f += 3 * 3 * c64 * hw;
    for (int up = 0; up < 3; up++) {
        hw *= 4;
        f += c64 * hw + (up < 2 ? 3 : 1) * 3 * c64 * hw;
    }
    return f + conv_flops(64, 3, 3, 1, 1) * hw;
}

/* n_seq sequences of 77 tokens through `layers` transformer layers. */
/* RRDBNet at input h x w (BasicSR's x4 form): conv_first, 3 dense blocks
 * of 5 convs per RRDB, conv_body at input size; two x2 stages, conv_hr and
 * conv_last at 4x. */
static double rrdbnet_flops(int nf, int gc, int blocks, int h, int w)
{
    double f = conv_flops(3, nf, 3, h, w) + conv_flops(nf, nf, 3, h, w);
    for (int k = 0; k < 5; k++) f += 3.0 * blocks * conv_flops(nf + k * gc, k == 4 ? nf : gc, 3, h, w);
    f += conv_flops(nf, nf, 3, 2 * h, 2 * w) + 2 * conv_flops(nf, nf, 3, 4 * h, 4 * w);
    return f + conv_flops(nf, 3, 3, 4 * h, 4 * w);
}

static double text_flops(const wt_text_config *t, int n_seq, int layers)
{
    double n = 77.0, W = t->width;
    double per = 4 * 2.0 * W * W * n + attention_flops(t->width, n, n) + 2 * 2.0 * W * t->intermediate_size * n;
    return per * layers * n_seq;
}

/* ----------------------------------------------------------- results -- */

typedef struct stage {
    char key[48], label[96];
    double flops;        /* 0 = not a compute stage */
    double wall, cpu;    /* medians, seconds; cpu per thread */
    int runs;
    double rss_gib;      /* child runs: peak RSS, else 0 */
    char note[160];
    char prec[16];       /* the precision the row computed in ("fp32", "auto=bf16"), "" if none */
} stage;

typedef struct bench {
    int reps, threads;
    int warmup;           /* --warmup N: untimed runs before each compute stage's reps */
    int px;               /* image side of SD 1.5 / SD-Turbo (SDXL: 2 px) */
    int upscale_px;       /* input side of the CLI-to-CLI upscale rows beside sd.cpp */
    const char *cache, *fmimage, *sdcpp;
    const char *dump;     /* --dump DIR: stage inputs/outputs for tools/peers, or NULL */
    fm_precision prec;    /* --precision: the SD 1.5 stage rows' and sd1.gen's mode (default auto) */
    const char *prec_name;
    double fma_peak, gemm_gflops; /* GFLOP/s, CPU time based */
    double cpu_share;             /* CPU time per thread / wall clock while measuring the peak */
    stage st[64];
    int n;
    cJSON *json;
} bench;

static stage *add_stage(bench *b, const char *key, const char *label, double flops)
{
    stage *s = &b->st[b->n++];
    memset(s, 0, sizeof *s);
    snprintf(s->key, sizeof s->key, "%s", key);
    snprintf(s->label, sizeof s->label, "%s", label);
    s->flops = flops;
    /* in-process compute stages call the modules as fm_model_load leaves
     * them, in fp32; the rows that run fm_generate or the CLI say so */
    snprintf(s->prec, sizeof s->prec, "%s", flops > 0 ? "fp32" : "");
    return s;
}

static void fail(const char *what, const fm_error *err)
{
    fprintf(stderr, "bench: %s: %s\n", what, err->msg);
    exit(1);
}

typedef int (*stage_fn)(void *ctx, fm_error *err);

/* Runs f reps times and records the medians; a compute stage first runs
 * b->warmup untimed times (--warmup: first-call costs such as packing the
 * weights left out even when reps < 3; without it the median drops a cold
 * first run when reps >= 3). On an error: a message, the stage dropped,
 * non-zero (the caller skips the rest of that model). */
static int time_stage(bench *b, stage *s, stage_fn f, void *ctx)
{
    double w[MAX_REPS] = {0}, c[MAX_REPS] = {0};
    fm_error err = {0};
    for (int r = s->flops > 0 ? -b->warmup : 0; r < b->reps; r++) {
        double t0 = now(), c0 = cpu_now();
        if (f(ctx, &err)) {
            fprintf(stderr, "bench: %s: %s\n", s->label, err.msg);
            printf("%s: FAILED (%s)\n", s->label, err.msg);
            b->n--;
            return 1;
        }
        if (r < 0) {
            fprintf(stderr, "  %-44s warm-up: %7.2f s wall, untimed\n", s->label, now() - t0);
            continue;
        }
        w[r] = now() - t0;
        c[r] = (cpu_now() - c0) / b->threads;
        fprintf(stderr, "  %-44s run %d/%d: %7.2f s wall, %7.2f s CPU/thread\n", s->label, r + 1, b->reps, w[r], c[r]);
    }
    s->runs = b->reps;
    s->wall = median(w, b->reps);
    s->cpu = median(c, b->reps);
    return 0;
}

/* --------------------------------------------------------------- peak -- */


typedef struct sq_ctx { float *a, *b, *c; int n; } sq_ctx;
static int run_sgemm(void *p, fm_error *err)
{
    (void)err;
    sq_ctx *s = p;
    kn_sgemm(s->n, s->n, s->n, s->a, s->n, s->b, s->n, 0, 0.0f, s->c, s->n);
    return 0;
}

static void bench_peak(bench *b)
{
    fprintf(stderr, "peak: FMA loop and kn_sgemm 2048^3\n");
    double t0 = now(), c0 = cpu_now();
    b->fma_peak = fma_peak_gflops();
    sq_ctx sq = {.n = 2048};
    size_t nn = (size_t)sq.n * sq.n;
    sq.a = core_alloc(4 * nn);
    sq.b = core_alloc(4 * nn);
    sq.c = core_alloc(4 * nn);
    if (!sq.a || !sq.b || !sq.c) { fprintf(stderr, "bench: out of memory\n"); exit(1); }
    for (size_t i = 0; i < nn; i++) {
        sq.a[i] = (float)((i * 7919) % 1000) * 1e-3f - 0.5f;
        sq.b[i] = (float)((i * 104729) % 1000) * 1e-3f - 0.5f;
    }
    stage *s = add_stage(b, "sgemm_2048", "kn_sgemm 2048x2048x2048 (FP32 GEMM)", 2.0 * sq.n * sq.n * sq.n);
    run_sgemm(&sq, NULL); /* warm: packing buffers, page faults */
    int reps = b->reps;
    b->reps = reps < 3 ? 3 : reps;
    time_stage(b, s, run_sgemm, &sq);
    b->reps = reps;
    b->gemm_gflops = s->flops / s->cpu * 1e-9;
    b->cpu_share = (cpu_now() - c0) / b->threads / (now() - t0);
    core_free(sq.a);
    core_free(sq.b);
    core_free(sq.c);
}

/* ------------------------------------------------------------ stages -- */

typedef struct model_ctx {
    fm_model *m;
    const char *path;
    int batch, lh, lw;
    te_cond cond, uncond;
    float *x, *out, *ctx, *y, t[2];
    float *img, *z;
    vae_taesd *taesd;
    fm_params p;
    uint8_t *rgb;
    const char *type; /* --type at load (issue 17 rows), NULL = as stored */
} model_ctx;

static int run_load(void *p, fm_error *err)
{
    model_ctx *c = p;
    fm_model_free(c->m);
    c->m = fm_model_load_with(c->path, &(fm_load_options){.type = c->type}, err);
    return c->m ? 0 : err->code;
}

/* The pipeline's conditioning: prompt and (with CFG) the empty negative. */
static int run_text(void *p, fm_error *err)
{
    model_ctx *c = p;
    te_cond_free(&c->cond);
    te_cond_free(&c->uncond);
    te_token_chunks tc = {0}, tu = {0};
    te_size_cond sizes = {8 * c->lh, 8 * c->lw, 0, 0, 8 * c->lh, 8 * c->lw};
    int rc = te_prompt_to_chunks(c->m->tokenizer, PROMPT, FM_CLIP_EOS, &tc, err);
    if (!rc) rc = te_prompt_to_chunks(c->m->tokenizer, "", FM_CLIP_EOS, &tu, err);
    if (!rc) rc = te_encode(&c->m->text, &tc, 1, &sizes, &c->cond, err);
    if (!rc && c->batch == 2) rc = te_encode(&c->m->text, &tu, 1, &sizes, &c->uncond, err);
    te_token_chunks_free(&tc);
    te_token_chunks_free(&tu);
    return rc;
}

static void fill_normal(float *x, size_t n, uint64_t seed)
{
    smp_rng rng;
    smp_rng_init(&rng, FM_RNG_CPU, seed);
    smp_rng_randn(&rng, x, n);
}

/* U-Net inputs from the encoded conditioning (run_text first). */
static void unet_inputs(model_ctx *c)
{
    const wt_unet_config *u = &c->m->cfg.unet;
    size_t lat = (size_t)u->in_channels * c->lh * c->lw, ctx = (size_t)c->cond.n_tokens * c->cond.context_dim;
    c->x = malloc(sizeof(float) * lat * c->batch);
    c->out = malloc(sizeof(float) * (size_t)u->out_channels * c->lh * c->lw * c->batch);
    c->ctx = malloc(sizeof(float) * ctx * c->batch);
    if (c->cond.adm_dim) c->y = malloc(sizeof(float) * (size_t)c->cond.adm_dim * c->batch);
    if (!c->x || !c->out || !c->ctx || (c->cond.adm_dim && !c->y)) { fprintf(stderr, "bench: out of memory\n"); exit(1); }
    fill_normal(c->x, lat * c->batch, 1);
    for (int b = 0; b < c->batch; b++) {
        const te_cond *k = b ? &c->uncond : &c->cond;
        memcpy(c->ctx + b * ctx, k->context, sizeof(float) * ctx);
        if (c->y) memcpy(c->y + (size_t)b * c->cond.adm_dim, k->y, sizeof(float) * c->cond.adm_dim);
        c->t[b] = 500.0f;
    }
}

static int run_unet(void *p, fm_error *err)
{
    model_ctx *c = p;
    return un_forward(c->m->unet, c->out, c->x, c->batch, c->lh, c->lw, c->t, c->ctx, c->cond.n_tokens, c->y, err);
}

/* One sampler step: the pipeline's denoiser (c_in scaling, U-Net on
 * [cond; uncond], CFG 7 combine) under smp_sample's euler update. */
static int denoise(void *user, float *denoised, const float *x, size_t n, double sigma, fm_error *err)
{
    model_ctx *c = user;
    smp_scalings s = smp_denoiser_scalings(c->m->prediction, sigma);
    float t = (float)smp_discrete_sigma_to_t(&c->m->schedule, sigma);
    for (int b = 0; b < c->batch; b++) {
        c->t[b] = t;
        for (size_t i = 0; i < n; i++) c->x[b * n + i] = (float)(x[i] * s.c_in);
    }
    int rc = run_unet(c, err);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++) {
        float dc = (float)(x[i] * s.c_skip + c->out[i] * s.c_out);
        if (c->batch == 2) {
            float du = (float)(x[i] * s.c_skip + c->out[n + i] * s.c_out);
            dc = du + (dc - du) * 7.0f;
        }
        denoised[i] = dc;
    }
    return 0;
}

static int run_step(void *p, fm_error *err)
{
    model_ctx *c = p;
    size_t n = (size_t)c->m->cfg.unet.in_channels * c->lh * c->lw;
    int sampler = smp_find("euler"), n_sigmas = 0;
    double *sigmas = smp_sigmas(&c->m->schedule, (smp_id)sampler, (smp_scheduler_id)smp_scheduler_find("karras"),
                                       20, &n_sigmas, err);
    float *lat = malloc(sizeof(float) * n);
    if (!sigmas || !lat) {
        free(sigmas);
        free(lat);
        return err->code ? err->code : core_fail(err, FM_EINPUT, "out of memory");
    }
    fill_normal(lat, n, 2);
    for (size_t i = 0; i < n; i++) lat[i] *= (float)sigmas[0];
    smp_io io;
    smp_io_init(&io);
    io.denoise = denoise;
    io.denoise_user = c;
    int rc = smp_sample((smp_id)sampler, &io, lat, n, sigmas, 2, err);
    free(sigmas);
    free(lat);
    return rc;
}

static int run_vae(void *p, fm_error *err)
{
    model_ctx *c = p;
    return vae_decode(c->m->vae, c->img, c->z, c->lh, c->lw, err);
}

static int run_taesd(void *p, fm_error *err)
{
    model_ctx *c = p;
    return vae_taesd_decode(c->taesd, c->img, (size_t)3 * 64 * c->lh * c->lw, c->z, (size_t)4 * c->lh * c->lw, c->lh,
                           c->lw, err);
}

static int run_generate(void *p, fm_error *err)
{
    model_ctx *c = p;
    return fm_generate(c->m, &c->p, c->rgb, err);
}

static void ctx_free(model_ctx *c)
{
    te_cond_free(&c->cond);
    te_cond_free(&c->uncond);
    free(c->x);
    free(c->out);
    free(c->ctx);
    free(c->y);
    free(c->img);
    free(c->z);
    free(c->rgb);
    vae_taesd_free(c->taesd);
    fm_model_free(c->m);
    memset(c, 0, sizeof *c);
}

static void path_in(char *out, size_t size, const char *dir, const char *name)
{
    snprintf(out, size, "%s/%s", dir, name);
}

static int exists(const char *path)
{
    struct stat s;
    return stat(path, &s) == 0;
}

/* The U-Net and VAE set to --precision's mode (fm_generate's own
 * resolution of it); shown gets what the rows print ("auto=bf16"). */
static void use_bench_precision(const bench *b, fm_model *m, char *shown, size_t size)
{
    fm_precision p = fm_model_precision(m, b->prec, NULL, 0);
    un_set_precision(m->unet, p);
    vae_set_precision(m->vae, p);
    snprintf(shown, size, "%s%s", b->prec == FM_PREC_AUTO ? "auto=" : "", p == FM_PREC_BF16 ? "bf16" : "fp32");
}

static void bench_sd1(bench *b)
{
    char path[1024], taesd[1024];
    path_in(path, sizeof path, b->cache, "sd1-f16.safetensors");
    path_in(taesd, sizeof taesd, b->cache, "taesd.safetensors");
    if (!exists(path)) { fprintf(stderr, "bench: %s missing, SD 1.5 skipped\n", path); return; }
    int px = b->px, l = px / 8;
    char label[96];
    fprintf(stderr, "SD 1.5, %dx%d, CFG (batch 2)\n", px, px);
    model_ctx c = {.path = path, .batch = 2, .lh = l, .lw = l};
    if (time_stage(b, add_stage(b, "sd1.load", "SD 1.5 load (page cache warm)", 0), run_load, &c)) goto done;
    const wt_model_config *cfg = &c.m->cfg;
    int layer = 0, final_ln = 0;
    fm_error err = {0};
    char prec[16];
    use_bench_precision(b, c.m, prec, sizeof prec); /* the text encoder stays fp32, as in fm_generate */
    if (te_output_layer(&cfg->text[0], 1, &layer, &final_ln, &err)) fail("text layer", &err);
    if (time_stage(b, add_stage(b, "sd1.text_encode", "SD 1.5 text encode (prompt + negative)", text_flops(&cfg->text[0], 2, layer)),
               run_text, &c)) goto done;
    unet_inputs(&c);
    double uf = unet_flops(&cfg->unet, 2, l, l, c.cond.n_tokens);
    snprintf(label, sizeof label, "SD 1.5 U-Net, batch 2, %dx%d latent", l, l);
    stage *s = add_stage(b, "sd1.unet_b2", label, uf);
    snprintf(s->prec, sizeof s->prec, "%s", prec);
    if (time_stage(b, s, run_unet, &c)) goto done;
    s = add_stage(b, "sd1.step", "SD 1.5 sampling step (euler, CFG 7)", uf);
    snprintf(s->prec, sizeof s->prec, "%s", prec);
    if (time_stage(b, s, run_step, &c)) goto done;
    c.img = malloc(sizeof(float) * 3 * px * px);
    c.z = malloc(sizeof(float) * 4 * l * l);
    if (!c.img || !c.z) { fprintf(stderr, "bench: out of memory\n"); exit(1); }
    fill_normal(c.z, (size_t)4 * l * l, 3);
    snprintf(label, sizeof label, "VAE decode %dx%d -> %dx%d", l, l, px, px);
    s = add_stage(b, "sd1.vae_decode", label, vae_decode_flops(&cfg->vae, l, l));
    snprintf(s->prec, sizeof s->prec, "%s", prec);
    if (time_stage(b, s, run_vae, &c)) goto done;
    snprintf(label, sizeof label, "TAESD decode %dx%d -> %dx%d", l, l, px, px);
    if (exists(taesd) && (c.taesd = vae_taesd_open(taesd, &err)))
        time_stage(b, add_stage(b, "sd1.taesd_decode", label, taesd_decode_flops(l, l)), run_taesd, &c);
    else
        fprintf(stderr, "bench: TAESD %s: %s\n", taesd, err.code ? err.msg : "missing");
done:
    ctx_free(&c);
}

/* The precisions the per-precision rows run in; one line each. "auto" is
 * what --precision auto resolves to on this machine (fm_model_precision).
 * A mode the machine lacks (bf16 without AVX512_BF16) gives no row. */
static const struct { const char *name; fm_precision prec; } precisions[] = {
    {"fp32", FM_PREC_FP32},
    {"bf16", FM_PREC_BF16},
    {"auto", FM_PREC_AUTO},
};
#define N_PRECISIONS (sizeof precisions / sizeof precisions[0])

/* Raw float32 arrays for tools/peers (--dump DIR): the inputs and fp32
 * outputs of the stages, so the peers run the same numbers and check them. */
static void dump_f32(const char *dir, const char *name, const float *v, size_t n)
{
    char path[1024];
    path_in(path, sizeof path, dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(v, sizeof *v, n, f) != n) fprintf(stderr, "bench: %s: %s\n", path, strerror(errno));
    if (f) fclose(f);
}

/* One timed run of f for row s, after `prec` is set on the model's U-Net
 * and VAE; 0 or the error (the message printed, as time_stage). */
static int time_run(bench *b, stage *s, fm_precision prec, stage_fn f, model_ctx *c, double *w, double *cpu)
{
    fm_error err = {0};
    un_set_precision(c->m->unet, prec);
    vae_set_precision(c->m->vae, prec);
    double t0 = now(), c0 = cpu_now();
    if (f(c, &err)) {
        fprintf(stderr, "bench: %s: %s\n", s->label, err.msg);
        printf("%s: FAILED (%s)\n", s->label, err.msg);
        return 1;
    }
    *w = now() - t0;
    *cpu = (cpu_now() - c0) / b->threads;
    fprintf(stderr, "  %-44s %7.2f s wall, %7.2f s CPU/thread\n", s->label, *w, *cpu);
    return 0;
}

/* The n rows of one stage in n modes, interleaved: round r runs each mode
 * once, so the machine's load drifts over all of them alike (one mode
 * after the other measured the later ones under a different load). */
static int time_interleaved(bench *b, stage **s, const fm_precision *prec, int n, stage_fn f, model_ctx *c)
{
    double w[N_PRECISIONS][MAX_REPS], cpu[N_PRECISIONS][MAX_REPS];
    for (int r = 0; r < b->reps; r++)
        for (int i = 0; i < n; i++)
            if (time_run(b, s[i], prec[i], f, c, &w[i][r], &cpu[i][r])) return 1;
    for (int i = 0; i < n; i++) {
        s[i]->runs = b->reps;
        s[i]->wall = median(w[i], b->reps);
        s[i]->cpu = median(cpu[i], b->reps);
    }
    return 0;
}

/* SD 1.5 U-Net (batch 2) and VAE decode in each precision (issue 22): the
 * rows "sd1.unet_b2.<prec>", "sd1.vae_decode.<prec>", the modes
 * interleaved run by run after one untimed fp32 run of each stage (page
 * faults of the mapping, the first plan, the Winograd probe: costs of the
 * first call in a process that no mode should be charged alone). */
static void bench_precisions(bench *b)
{
    char path[1024], label[96], key[48];
    path_in(path, sizeof path, b->cache, "sd1-f16.safetensors");
    if (!exists(path)) { fprintf(stderr, "bench: %s missing, precision rows skipped\n", path); return; }
    int px = b->px, l = px / 8;
    fprintf(stderr, "SD 1.5 per precision, %dx%d, modes interleaved\n", px, px);
    model_ctx c = {.path = path, .batch = 2, .lh = l, .lw = l};
    fm_error err = {0};
    if (run_load(&c, &err) || run_text(&c, &err)) fail("SD 1.5", &err);
    unet_inputs(&c);
    c.img = malloc(sizeof(float) * 3 * px * px);
    c.z = malloc(sizeof(float) * 4 * l * l);
    if (!c.img || !c.z) { fprintf(stderr, "bench: out of memory\n"); exit(1); }
    fill_normal(c.z, (size_t)4 * l * l, 3);
    const wt_model_config *cfg = &c.m->cfg;
    double uf = unet_flops(&cfg->unet, 2, l, l, c.cond.n_tokens), vf = vae_decode_flops(&cfg->vae, l, l);
    stage *su[N_PRECISIONS], *sv[N_PRECISIONS];
    fm_precision mode[N_PRECISIONS];
    int n = 0;
    for (size_t i = 0; i < N_PRECISIONS; i++) {
        const char *name = precisions[i].name;
        fm_precision prec = fm_model_precision(c.m, precisions[i].prec, NULL, 0);
        if (precisions[i].prec != FM_PREC_AUTO && prec != precisions[i].prec) {
            printf("%s: not available on this CPU (no row)\n", name);
            continue;
        }
        char shown[16];
        snprintf(shown, sizeof shown, precisions[i].prec == FM_PREC_AUTO ? "auto=%s" : "%s",
                 prec == FM_PREC_BF16 ? "bf16" : "fp32");
        mode[n] = prec;
        snprintf(key, sizeof key, "sd1.unet_b2.%s", name);
        snprintf(label, sizeof label, "SD 1.5 U-Net, batch 2, %dx%d latent, %s", l, l, name);
        su[n] = add_stage(b, key, label, uf);
        snprintf(su[n]->prec, sizeof su[n]->prec, "%s", shown);
        snprintf(key, sizeof key, "sd1.vae_decode.%s", name);
        snprintf(label, sizeof label, "VAE decode %dx%d -> %dx%d, %s", l, l, px, px, name);
        sv[n] = add_stage(b, key, label, vf);
        snprintf(sv[n]->prec, sizeof sv[n]->prec, "%s", shown);
        n++;
    }
    double w, cpu;
    stage warm = {.label = "warm-up (fp32, not a row)"};
    int failed = time_run(b, &warm, FM_PREC_FP32, run_unet, &c, &w, &cpu) ||
                 time_run(b, &warm, FM_PREC_FP32, run_vae, &c, &w, &cpu);
    if (!failed && b->dump) { /* the warm-up's fp32 outputs */
        size_t lat = (size_t)cfg->unet.in_channels * l * l * 2;
        dump_f32(b->dump, "unet_x.f32", c.x, lat);
        dump_f32(b->dump, "unet_t.f32", c.t, 2);
        dump_f32(b->dump, "unet_ctx.f32", c.ctx, (size_t)c.cond.n_tokens * c.cond.context_dim * 2);
        dump_f32(b->dump, "unet_out.f32", c.out, (size_t)cfg->unet.out_channels * l * l * 2);
        dump_f32(b->dump, "vae_z.f32", c.z, (size_t)4 * l * l);
        dump_f32(b->dump, "vae_img.f32", c.img, (size_t)3 * px * px);
    }
    if (failed || time_interleaved(b, su, mode, n, run_unet, &c) || time_interleaved(b, sv, mode, n, run_vae, &c))
        b->n -= 2 * n; /* a failed run: none of these rows */
    ctx_free(&c);
}

static void bench_turbo(bench *b)
{
    char path[1024];
    path_in(path, sizeof path, b->cache, "sdturbo-f16.safetensors");
    if (!exists(path)) { fprintf(stderr, "bench: %s missing, SD-Turbo skipped\n", path); return; }
    int px = b->px, l = px / 8;
    char label[96];
    fprintf(stderr, "SD-Turbo, %dx%d, 1 step, no CFG\n", px, px);
    model_ctx c = {.path = path, .batch = 1, .lh = l, .lw = l};
    if (time_stage(b, add_stage(b, "turbo.load", "SD-Turbo load (page cache warm)", 0), run_load, &c)) goto done;
    const wt_model_config *cfg = &c.m->cfg;
    int layer = 0, final_ln = 0;
    fm_error err = {0};
    if (te_output_layer(&cfg->text[0], 1, &layer, &final_ln, &err)) fail("text layer", &err);
    double tf = text_flops(&cfg->text[0], 1, layer);
    if (time_stage(b, add_stage(b, "turbo.text_encode", "SD-Turbo text encode (prompt)", tf), run_text, &c)) goto done;
    unet_inputs(&c);
    double uf = unet_flops(&cfg->unet, 1, l, l, c.cond.n_tokens);
    snprintf(label, sizeof label, "SD-Turbo U-Net, batch 1, %dx%d latent", l, l);
    if (time_stage(b, add_stage(b, "turbo.unet_b1", label, uf), run_unet, &c)) goto done;
    fm_params_default(c.m, &c.p);
    c.p.prompt = PROMPT;
    c.p.width = c.p.height = px;
    c.p.steps = 1;
    c.p.cfg = 1.0f;
    c.p.seed = 1;
    c.rgb = malloc((size_t)3 * px * px);
    if (!c.rgb) { fprintf(stderr, "bench: out of memory\n"); exit(1); }
    stage *s = add_stage(b, "turbo.image", "SD-Turbo whole image, 1 step (load excluded)",
                         tf + uf + vae_decode_flops(&cfg->vae, l, l));
    snprintf(s->note, sizeof s->note, "sampler %s, full VAE", c.p.sampler);
    if (time_stage(b, s, run_generate, &c)) goto done;
    snprintf(s->prec, sizeof s->prec, "auto=%s",
             fm_model_precision(c.m, c.p.precision, NULL, 0) == FM_PREC_BF16 ? "bf16" : "fp32");
done:
    ctx_free(&c);
}

static void bench_sdxl(bench *b)
{
    char path[1024];
    path_in(path, sizeof path, b->cache, "sdxl-f16.safetensors");
    if (!exists(path)) { fprintf(stderr, "bench: %s missing, SDXL skipped\n", path); return; }
    int l = b->px / 4;
    char label[96];
    fprintf(stderr, "SDXL, %dx%d, one U-Net evaluation (batch 1)\n", 2 * b->px, 2 * b->px);
    model_ctx c = {.path = path, .batch = 1, .lh = l, .lw = l};
    fm_error err = {0};
    int reps = b->reps;
    b->reps = 1;
    int failed = time_stage(b, add_stage(b, "sdxl.load", "SDXL load (page cache warm)", 0), run_load, &c);
    b->reps = reps;
    if (failed) goto done;
    if (run_text(&c, &err)) {
        fprintf(stderr, "bench: SDXL text: %s\n", err.msg);
        goto done;
    }
    unet_inputs(&c);
    snprintf(label, sizeof label, "SDXL U-Net, batch 1, %dx%d latent", l, l);
    double uf = unet_flops(&c.m->cfg.unet, 1, l, l, c.cond.n_tokens);
    if (time_stage(b, add_stage(b, "sdxl.unet_b1", label, uf), run_unet, &c)) goto done;
    if (b->dump) { /* tools/peers --sdxl: the same inputs, and the fp32 output to check them */
        const wt_unet_config *u = &c.m->cfg.unet;
        dump_f32(b->dump, "sdxl_x.f32", c.x, (size_t)u->in_channels * l * l);
        dump_f32(b->dump, "sdxl_t.f32", c.t, 1);
        dump_f32(b->dump, "sdxl_ctx.f32", c.ctx, (size_t)c.cond.n_tokens * c.cond.context_dim);
        if (c.y) dump_f32(b->dump, "sdxl_y.f32", c.y, (size_t)c.cond.adm_dim);
        dump_f32(b->dump, "sdxl_out.f32", c.out, (size_t)u->out_channels * l * l);
    }
    /* the same in bf16 (sdxl.unet_b1 is fp32, as fm_model_load leaves the
     * modules): issue 17 compares Q8_0 with both */
    if (kn_has_bf16()) {
        un_set_precision(c.m->unet, FM_PREC_BF16);
        snprintf(label, sizeof label, "SDXL U-Net, batch 1, %dx%d latent, bf16", l, l);
        stage *s = add_stage(b, "sdxl.unet_b1_bf16", label, uf);
        snprintf(s->prec, sizeof s->prec, "bf16");
        if (time_stage(b, s, run_unet, &c)) goto done;
    }
    /* issue 17: the same evaluation on Q8_0 weights (--type q8_0 at load):
     * int8 products on its Q8_0 linears and convolutions */
    ctx_free(&c);
    c = (model_ctx){.path = path, .batch = 1, .lh = l, .lw = l, .type = "q8_0"};
    b->reps = 1;
    failed = time_stage(b, add_stage(b, "sdxl.load_q8_0", "SDXL load, --type q8_0 (converts at load)", 0), run_load, &c);
    b->reps = reps;
    if (failed || run_text(&c, &err)) goto done;
    unet_inputs(&c);
    snprintf(label, sizeof label, "SDXL U-Net Q8_0, batch 1, %dx%d latent", l, l);
    time_stage(b, add_stage(b, "sdxl.unet_b1_q8_0", label, unet_flops(&c.m->cfg.unet, 1, l, l, c.cond.n_tokens)), run_unet, &c);
done:
    ctx_free(&c);
}

/* ------------------------------------------------------ child processes -- */

/* Runs argv with stdout and stderr to log; wall time, CPU time (user +
 * system) and peak RSS (GiB). */
static int run_child(char *const argv[], const char *log, double *wall, double *cpu, double *rss_gib)
{
    fflush(stdout);
    fflush(stderr);
    double t0 = now();
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    int status = 0;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) return -1;
    *wall = now() - t0;
    *cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
    *rss_gib = ru.ru_maxrss / (1024.0 * 1024.0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

/* The median child run of reps (by wall time); each child a fresh process. */
static int child_stage(bench *b, stage *s, char *const argv[], const char *log, int reps)
{
    double w[MAX_REPS], c[MAX_REPS], r[MAX_REPS];
    for (int i = 0; i < reps; i++) {
        int rc = run_child(argv, log, &w[i], &c[i], &r[i]);
        if (rc) {
            fprintf(stderr, "bench: %s failed (exit %d), see %s\n", argv[0], rc, log);
            printf("%s: FAILED (exit %d, see %s)\n", s->label, rc, log);
            b->n--;
            return rc;
        }
        c[i] /= b->threads;
        fprintf(stderr, "  %-44s run %d/%d: %7.2f s wall, %7.2f s CPU/thread, %.2f GiB peak RSS\n", s->label, i + 1,
                reps, w[i], c[i], r[i]);
    }
    s->runs = reps;
    s->wall = median(w, reps);
    s->cpu = median(c, reps);
    s->rss_gib = median(r, reps);
    return 0;
}

/* The child's own "fmimage: precision: auto = fp32 (...)" line (-v) as
 * "auto=fp32" into s->prec ("fp32 (as asked)": "fp32"). */
static void child_precision(stage *s, const char *log)
{
    FILE *f = fopen(log, "r");
    char line[4096], mode[8];
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "fmimage: precision: auto = %7[a-z0-9]", mode) == 1)
            snprintf(s->prec, sizeof s->prec, "auto=%s", mode);
        else if (sscanf(line, "fmimage: precision: %7[a-z0-9] (as asked)", mode) == 1)
            snprintf(s->prec, sizeof s->prec, "%s", mode);
    if (f) fclose(f);
}

static void bench_gen(bench *b)
{
    char model[1024], out[1024], log[1024], threads[16], px[16];
    snprintf(px, sizeof px, "%d", b->px);
    path_in(model, sizeof model, b->cache, "sd1-f16.safetensors");
    path_in(out, sizeof out, b->cache, "fmimage-sd1.png");
    path_in(log, sizeof log, b->cache, "fmimage-sd1.log");
    snprintf(threads, sizeof threads, "%d", b->threads);
    if (!exists(model) || !b->fmimage) return;
    fprintf(stderr, "whole generations (child processes)\n");
    /* in the SD 1.5 stage rows' precision: the summary sets it beside their sum */
    char *argv[] = {(char *)b->fmimage, "-m", model, "-W", px, "-H", px, "--steps", "2", "--cfg", "7",
                    "--sampler", "euler", "--seed", "42", "-t", threads, "--precision", (char *)b->prec_name,
                    "--force", "-q", "-v", "-o", out, PROMPT, NULL};
    stage *s = add_stage(b, "sd1.gen", "fmimage SD 1.5 whole run, 2 steps CFG 7, with load", 0);
    snprintf(s->note, sizeof s->note, "fmimage CLI, euler, %d runs", b->reps);
    if (!child_stage(b, s, argv, log, b->reps)) child_precision(s, log);
    /* issue 17: the whole run with Q4_K weights (peak RSS target 1.3 GB) */
    char *qargv[] = {(char *)b->fmimage, "-m", model, "--type", "q4_k", "-W", px, "-H", px, "--steps", "2", "--cfg", "7",
                     "--sampler", "euler", "--seed", "42", "-t", threads, "--force", "-q", "-v", "-o", out, PROMPT, NULL};
    s = add_stage(b, "sd1.gen_q4_k", "fmimage SD 1.5 whole run, --type q4_k, with load", 0);
    snprintf(s->note, sizeof s->note, "fmimage CLI, euler, 1 run");
    if (!child_stage(b, s, qargv, log, 1)) child_precision(s, log);
    path_in(model, sizeof model, b->cache, "sdturbo-f16.safetensors");
    path_in(out, sizeof out, b->cache, "fmimage-turbo.png");
    path_in(log, sizeof log, b->cache, "fmimage-turbo.log");
    if (!exists(model)) return;
    char *targv[] = {(char *)b->fmimage, "-m", model, "-W", px, "-H", px, "--steps", "1", "--cfg", "1",
                     "--seed", "42", "-t", threads, "--force", "-q", "-v", "-o", out, PROMPT, NULL};
    s = add_stage(b, "turbo.gen", "fmimage SD-Turbo whole run, 1 step, with load", 0);
    snprintf(s->note, sizeof s->note, "fmimage CLI, 1 run");
    if (!child_stage(b, s, targv, log, 1)) child_precision(s, log);
}

/* Issue 22's whole-run target: SD 1.5 512x512, 20 steps, CFG 7, euler,
 * fmimage (--precision auto, its default) beside sd.cpp, 1 run each, load
 * included. Long (sd.cpp: about 10 x its 2-step run), so only when asked
 * for by name (--only sd1x20). */
static void bench_sd1x20(bench *b)
{
    char model[1024], out[1024], log[1024], threads[16], px[16];
    snprintf(px, sizeof px, "%d", b->px);
    path_in(model, sizeof model, b->cache, "sd1-f16.safetensors");
    snprintf(threads, sizeof threads, "%d", b->threads);
    if (!exists(model)) return;
    fprintf(stderr, "SD 1.5, 20 steps (child processes)\n");
    if (b->fmimage) {
        path_in(out, sizeof out, b->cache, "fmimage-sd1x20.png");
        path_in(log, sizeof log, b->cache, "fmimage-sd1x20.log");
        char *argv[] = {(char *)b->fmimage, "-m", model, "-W", px, "-H", px, "--steps", "20", "--cfg", "7",
                        "--sampler", "euler", "--seed", "42", "-t", threads, "--force", "-q", "-v", "-o", out, PROMPT,
                        NULL};
        stage *s = add_stage(b, "sd1x20.gen", "fmimage SD 1.5 whole run, 20 steps CFG 7, with load", 0);
        snprintf(s->note, sizeof s->note, "fmimage CLI, euler, 1 run");
        if (!child_stage(b, s, argv, log, 1)) child_precision(s, log);
    }
    if (b->sdcpp) {
        path_in(out, sizeof out, b->cache, "sdcpp-sd1x20.png");
        path_in(log, sizeof log, b->cache, "sdcpp-sd1x20.log");
        char *argv[] = {(char *)b->sdcpp, "-m", model, "-p", PROMPT, "-W", px, "-H", px, "--steps", "20",
                        "--cfg-scale", "7", "--sampling-method", "euler", "-s", "42", "-t", threads, "-o", out, "-v",
                        NULL};
        stage *s = add_stage(b, "sdcpp.sd1x20.gen", "sd.cpp SD 1.5 whole run, 20 steps CFG 7, with load", 0);
        snprintf(s->note, sizeof s->note, "sd-cli -t %s, euler, 1 run", threads);
        child_stage(b, s, argv, log, 1);
    }
}

/* The hires fix (issue 18): SD 1.5 at px, upscaled x2 in the latent,
 * second pass at 2px; 2 + 2 steps. Beside sd.cpp's --hires when it is
 * built. */
static void bench_hires(bench *b)
{
    char model[1024], out[1024], log[1024], threads[16], px[16];
    snprintf(px, sizeof px, "%d", b->px);
    path_in(model, sizeof model, b->cache, "sd1-f16.safetensors");
    snprintf(threads, sizeof threads, "%d", b->threads);
    if (!exists(model)) return;
    char label[96];
    snprintf(label, sizeof label, "fmimage SD 1.5 hires fix %d->%d, 2+2 steps, with load", b->px, 2 * b->px);
    if (b->fmimage) {
        path_in(out, sizeof out, b->cache, "fmimage-sd1-hires.png");
        path_in(log, sizeof log, b->cache, "fmimage-sd1-hires.log");
        char *argv[] = {(char *)b->fmimage, "-m", model, "-W", px, "-H", px, "--steps", "2", "--cfg", "7",
                        "--sampler", "euler", "--seed", "42", "--hires-scale", "2", "--hires-steps", "2", "-t", threads,
                        "--force", "-q", "-v", "-o", out, PROMPT, NULL};
        stage *s = add_stage(b, "sd1.hires", label, 0);
        snprintf(s->note, sizeof s->note, "fmimage CLI, euler, Latent, 1 run");
        if (!child_stage(b, s, argv, log, 1)) child_precision(s, log);
    }
    if (b->sdcpp) {
        path_in(out, sizeof out, b->cache, "sdcpp-sd1-hires.png");
        path_in(log, sizeof log, b->cache, "sdcpp-sd1-hires.log");
        char *argv[] = {(char *)b->sdcpp, "-m", model, "-p", PROMPT, "-W", px, "-H", px, "--steps", "2",
                        "--cfg-scale", "7", "--sampling-method", "euler", "-s", "42", "--hires", "--hires-scale", "2",
                        "--hires-steps", "2", "-t", threads, "-o", out, "-v", NULL};
        snprintf(label, sizeof label, "sd.cpp SD 1.5 --hires %d->%d, 2+2 steps, with load", b->px, 2 * b->px);
        stage *s = add_stage(b, "sdcpp.sd1.hires", label, 0);
        snprintf(s->note, sizeof s->note, "sd-cli -t %s, euler, Latent, 1 run", threads);
        child_stage(b, s, argv, log, 1);
    }
}

/* "... taking 12.34s" / "... completed in 12.34s" after key in sd.cpp's
 * log: the last such line, or the sum of all of them (sd.cpp loads each
 * model's tensors lazily, at its first use). */
static double log_seconds(const char *log, const char *key, int sum)
{
    FILE *f = fopen(log, "r");
    if (!f) return -1;
    char line[4096];
    double v = -1, total = 0;
    while (fgets(line, sizeof line, f)) {
        char *k = strstr(line, key);
        if (!k) continue;
        char *t = strstr(k, "taking ");
        if (t) v = atof(t + 7);
        else if ((t = strstr(k, " in "))) v = atof(t + 4);
        else continue;
        total += v;
    }
    if (sum && v >= 0) v = total;
    fclose(f);
    return v;
}

static void bench_sdcpp(bench *b)
{
    if (!b->sdcpp) {
        printf("sd.cpp: not available\n");
        return;
    }
    char model[1024], out[1024], log[1024], threads[16], px[16];
    snprintf(px, sizeof px, "%d", b->px);
    path_in(model, sizeof model, b->cache, "sd1-f16.safetensors");
    path_in(out, sizeof out, b->cache, "sdcpp-sd1.png");
    path_in(log, sizeof log, b->cache, "sdcpp-sd1.log");
    snprintf(threads, sizeof threads, "%d", b->threads);
    if (!exists(model)) return;
    fprintf(stderr, "stable-diffusion.cpp (%s)\n", b->sdcpp);
    char *argv[] = {(char *)b->sdcpp, "-m", model, "-p", PROMPT, "-W", px, "-H", px, "--steps", "2",
                    "--cfg-scale", "7", "--sampling-method", "euler", "-s", "42", "-t", threads, "-o", out, "-v", NULL};
    stage *s = add_stage(b, "sdcpp.sd1.gen", "sd.cpp SD 1.5 whole run, 2 steps CFG 7, with load", 0);
    snprintf(s->note, sizeof s->note, "sd-cli -t %s, euler, 1 run", threads);
    if (child_stage(b, s, argv, log, 1)) return;
    static const struct { const char *key, *label, *log_key; int sum; } parts[] = {
        {"sdcpp.sd1.load", "sd.cpp SD 1.5 loading tensors (all, lazy)", "loading tensors completed", 1},
        {"sdcpp.sd1.text_encode", "sd.cpp SD 1.5 text encode (+ its load)", "get_learned_condition completed", 0},
        {"sdcpp.sd1.sampling", "sd.cpp SD 1.5 sampling, 2 steps (+ U-Net load)", "sampling completed", 0},
        {"sdcpp.sd1.vae_decode", "sd.cpp VAE decode (+ its load)", "decode_first_stage completed", 0},
        {"sdcpp.sd1.generate", "sd.cpp generate_image", "generate_image completed", 0},
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
        double v = log_seconds(log, parts[i].log_key, parts[i].sum);
        if (v < 0) continue;
        stage *p = add_stage(b, parts[i].key, parts[i].label, 0);
        p->wall = v;
        p->runs = 1;
        snprintf(p->note, sizeof p->note, "from sd-cli -v output");
    }
}

/* "LABEL: STAGE SECONDS s" (fmimage -v) after ": STAGE " in fmimage's
 * log: the last such line, or -1. */
static double fm_log_seconds(const char *log, const char *stage)
{
    FILE *f = fopen(log, "r");
    if (!f) return -1;
    char line[4096], key[64];
    snprintf(key, sizeof key, ": %s ", stage);
    double v = -1;
    while (fgets(line, sizeof line, f)) {
        char *k = strstr(line, key);
        if (k) v = atof(k + strlen(key));
    }
    fclose(f);
    return v;
}

/* A stage from a child's log: its wall seconds (1 run), or nothing when
 * the log lacks the line. */
static void log_stage(bench *b, const char *key, const char *label, double seconds, const char *note)
{
    if (seconds < 0) return;
    stage *p = add_stage(b, key, label, 0);
    p->wall = seconds;
    p->runs = 1;
    snprintf(p->note, sizeof p->note, "%s", note);
}

/* Issue 17: SDXL 1024x1024, 1 step, CFG 7 (one U-Net evaluation of cond
 * and uncond), euler, whole runs as child processes: fmimage on the F16
 * file (the peak RSS the Q8_0 run is measured against), fmimage and sd.cpp
 * on the same Q8_0 GGUF file (CACHE/sdxl-q8_0.gguf, bench.sh writes it with
 * `fmimage convert --type q8_0`); wall, CPU, peak RSS, and each program's
 * sampling time from its -v log. */
static void bench_sdxl_q8(bench *b)
{
    char f16[1024], q8[1024], out[1024], log[1024], threads[16], px[16];
    snprintf(px, sizeof px, "%d", 2 * b->px);
    snprintf(threads, sizeof threads, "%d", b->threads);
    path_in(f16, sizeof f16, b->cache, "sdxl-f16.safetensors");
    path_in(q8, sizeof q8, b->cache, "sdxl-q8_0.gguf");
    path_in(out, sizeof out, b->cache, "fmimage-sdxl.png");
    path_in(log, sizeof log, b->cache, "fmimage-sdxl.log");
    if (!exists(q8)) {
        fprintf(stderr, "bench: %s missing, SDXL Q8_0 rows skipped\n", q8);
        return;
    }
    fprintf(stderr, "SDXL Q8_0 whole runs, %sx%s (child processes)\n", px, px);
    char label[96];
    if (b->fmimage) {
        char *argv[] = {(char *)b->fmimage, "-m", f16, "-W", px, "-H", px, "--steps", "1", "--cfg", "7", "--sampler",
                        "euler", "--seed", "42", "-t", threads, "--force", "-q", "-v", "-o", out, PROMPT, NULL};
        snprintf(label, sizeof label, "fmimage SDXL F16 whole run, %s^2, 1 step CFG 7", px);
        stage *s = add_stage(b, "sdxl.gen", label, 0);
        snprintf(s->note, sizeof s->note, "fmimage CLI, euler, 1 run");
        if (!child_stage(b, s, argv, log, 1)) {
            child_precision(s, log);
            log_stage(b, "sdxl.sampling", "fmimage SDXL F16 sampling, 1 step CFG 7", fm_log_seconds(log, "sampling"),
                      "from fmimage -v output");
        }
        argv[2] = q8;
        snprintf(label, sizeof label, "fmimage SDXL Q8_0 GGUF whole run, %s^2, 1 step CFG 7", px);
        s = add_stage(b, "sdxl.gen_q8_0", label, 0);
        snprintf(s->note, sizeof s->note, "fmimage CLI, euler, 1 run");
        if (!child_stage(b, s, argv, log, 1)) {
            child_precision(s, log);
            log_stage(b, "sdxl.sampling_q8_0", "fmimage SDXL Q8_0 sampling, 1 step CFG 7",
                      fm_log_seconds(log, "sampling"), "from fmimage -v output");
        }
    }
    if (!b->sdcpp) return;
    path_in(out, sizeof out, b->cache, "sdcpp-sdxl.png");
    path_in(log, sizeof log, b->cache, "sdcpp-sdxl.log");
    char *sargv[] = {(char *)b->sdcpp, "-m", q8, "-p", PROMPT, "-W", px, "-H", px, "--steps", "1", "--cfg-scale",
                     "7", "--sampling-method", "euler", "-s", "42", "-t", threads, "-o", out, "-v", NULL};
    snprintf(label, sizeof label, "sd.cpp SDXL Q8_0 GGUF whole run, %s^2, 1 step CFG 7", px);
    stage *s = add_stage(b, "sdcpp.sdxl.gen_q8_0", label, 0);
    snprintf(s->note, sizeof s->note, "sd-cli -t %s, euler, 1 run", threads);
    if (child_stage(b, s, sargv, log, 1)) return;
    log_stage(b, "sdcpp.sdxl.sampling_q8_0", "sd.cpp SDXL Q8_0 sampling, 1 step (+ U-Net load)",
              log_seconds(log, "sampling completed", 0), "from sd-cli -v output");
}

/* Issue 16: the whole SD 1.5 run with one rank-64 LoRA / LoCon on every
 * layer (tools/mklora, bench.sh writes it to CACHE/loras), beside the same
 * run without it and sd.cpp given the same file (--lora-model-dir): time,
 * CPU time and peak RSS, b->reps runs each. */
static void bench_lora(bench *b)
{
    char model[1024], dir[1024], lora[1024], out[1024], log[1024], threads[16], px[16];
    snprintf(px, sizeof px, "%d", b->px);
    path_in(model, sizeof model, b->cache, "sd1-f16.safetensors");
    path_in(dir, sizeof dir, b->cache, "loras");
    path_in(lora, sizeof lora, b->cache, "loras/sd1-lora-r64.safetensors");
    path_in(out, sizeof out, b->cache, "fmimage-sd1-lora.png");
    path_in(log, sizeof log, b->cache, "fmimage-sd1-lora.log");
    snprintf(threads, sizeof threads, "%d", b->threads);
    if (!exists(model) || !exists(lora) || !b->fmimage) return;
    fprintf(stderr, "whole runs with a LoRA (child processes)\n");
    char tagged[256];
    snprintf(tagged, sizeof tagged, "%s <lora:sd1-lora-r64:1>", PROMPT);
    char *argv[] = {(char *)b->fmimage, "-m", model, "--lora-dir", dir, "-W", px, "-H", px, "--steps", "2",
                    "--cfg", "7", "--sampler", "euler", "--seed", "42", "-t", threads, "--force", "-q", "-v",
                    "-o", out, PROMPT, NULL};
    int last = (int)(sizeof argv / sizeof argv[0]) - 2;
    stage *s = add_stage(b, "sd1.gen_lora_without", "fmimage SD 1.5 whole run, 2 steps CFG 7, no LoRA", 0);
    snprintf(s->note, sizeof s->note, "fmimage CLI, euler, %d runs", b->reps);
    if (!child_stage(b, s, argv, log, b->reps)) child_precision(s, log);
    argv[last] = tagged;
    s = add_stage(b, "sd1.gen_lora", "fmimage SD 1.5 whole run, + rank-64 LoRA all layers", 0);
    snprintf(s->note, sizeof s->note, "fmimage CLI, euler, %d runs", b->reps);
    if (!child_stage(b, s, argv, log, b->reps)) child_precision(s, log);
    if (!b->sdcpp) return;
    path_in(out, sizeof out, b->cache, "sdcpp-sd1-lora.png");
    path_in(log, sizeof log, b->cache, "sdcpp-sd1-lora.log");
    char *sargv[] = {(char *)b->sdcpp, "-m", model, "--lora-model-dir", dir, "-p", tagged, "-W", px, "-H", px,
                     "--steps", "2", "--cfg-scale", "7", "--sampling-method", "euler", "-s", "42", "-t", threads,
                     "-o", out, "-v", NULL};
    s = add_stage(b, "sdcpp.sd1.gen_lora", "sd.cpp SD 1.5 whole run, + the same LoRA", 0);
    snprintf(s->note, sizeof s->note, "sd-cli -t %s --lora-model-dir, euler, %d runs", threads, b->reps);
    child_stage(b, s, sargv, log, b->reps);
}

/* ------------------------------------------------------------- output -- */

static const stage *find_stage(const bench *b, const char *key)
{
    for (int i = 0; i < b->n; i++)
        if (!strcmp(b->st[i].key, key)) return &b->st[i];
    return NULL;
}

static void cpu_info(cJSON *j, char *model, size_t size, char *flags, size_t fsize)
{
    snprintf(model, size, "unknown");
    flags[0] = 0;
    FILE *f = popen("LC_ALL=C lscpu 2>/dev/null", "r");
    char line[8192];
    int avx2 = 0, avx512f = 0, bf16 = 0;
    while (f && fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = 0;
        char *v = strchr(line, ':');
        if (!v) continue;
        for (v++; *v == ' '; v++) {}
        if (!strncmp(line, "Model name:", 11)) snprintf(model, size, "%s", v);
        if (!strncmp(line, "Flags:", 6)) {
            char *s = v;
            for (char *t = strtok(s, " "); t; t = strtok(NULL, " ")) {
                avx2 |= !strcmp(t, "avx2");
                avx512f |= !strcmp(t, "avx512f");
                bf16 |= !strcmp(t, "avx512_bf16");
            }
        }
    }
    if (f) pclose(f);
    snprintf(flags, fsize, "avx2=%s avx512f=%s avx512_bf16=%s", avx2 ? "yes" : "no", avx512f ? "yes" : "no",
             bf16 ? "yes" : "no");
    cJSON_AddStringToObject(j, "cpu_model", model);
    cJSON *fl = cJSON_AddObjectToObject(j, "cpu_flags");
    cJSON_AddBoolToObject(fl, "avx2", avx2);
    cJSON_AddBoolToObject(fl, "avx512f", avx512f);
    cJSON_AddBoolToObject(fl, "avx512_bf16", bf16);
}

static void print_table(const bench *b)
{
    printf("\n%-52s %-9s %9s %9s %9s %9s %7s %9s\n", "stage", "precision", "GFLOP", "wall s", "CPU s/thr", "GFLOP/s",
           "% peak", "peak RSS");
    for (int i = 0; i < b->n; i++) {
        const stage *s = &b->st[i];
        char gf[16] = "", gs[16] = "", pk[16] = "", cpu[16] = "", rss[16] = "";
        if (s->flops > 0) {
            snprintf(gf, sizeof gf, "%.0f", s->flops * 1e-9);
            snprintf(gs, sizeof gs, "%.1f", s->flops / s->wall * 1e-9);
            if (b->fma_peak > 0 && s->cpu > 0) snprintf(pk, sizeof pk, "%.1f", 100.0 * s->flops / s->cpu * 1e-9 / b->fma_peak);
        }
        if (s->cpu > 0) snprintf(cpu, sizeof cpu, "%.2f", s->cpu);
        if (s->rss_gib > 0) snprintf(rss, sizeof rss, "%.2f GiB", s->rss_gib);
        printf("%-52s %-9s %9s %9.2f %9s %9s %7s %9s\n", s->label, s->prec[0] ? s->prec : "-", gf, s->wall, cpu, gs, pk,
               rss);
    }
    printf("(medians of %d runs unless noted; GFLOP/s on wall clock; %% peak = FLOPs / CPU time per thread / FMA peak)\n",
           b->reps);
    static const struct { const char *ours, *theirs, *what; } vs[] = {
        {"sd1.gen", "sdcpp.sd1.gen", "SD 1.5 2 steps CFG 7, whole run"},
        {"sd1x20.gen", "sdcpp.sd1x20.gen", "SD 1.5 20 steps CFG 7, whole run (target 6x)"},
        {"sd1.gen_lora", "sdcpp.sd1.gen_lora", "SD 1.5 whole run + rank-64 LoRA"},
        {"sd1.vae_decode", "sdcpp.sd1.vae_decode", "VAE decode"},
        {"sd1.load", "sdcpp.sd1.load", "load (ours: a mapping; sd.cpp: reads)"},
        {"sd1.hires", "sdcpp.sd1.hires", "SD 1.5 hires fix x2, 2+2 steps, whole run"},
        {"upscale.cli", "sdcpp.upscale", "RRDBNet x4 upscale, CLI to CLI"},
        {"sdxl.gen_q8_0", "sdcpp.sdxl.gen_q8_0", "SDXL Q8_0 GGUF 1 step CFG 7, whole run"},
        {"sdxl.sampling_q8_0", "sdcpp.sdxl.sampling_q8_0", "SDXL Q8_0 sampling, 1 step CFG 7"},
    };
    int header = 0;
    for (size_t i = 0; i < sizeof vs / sizeof vs[0]; i++) {
        const stage *o = find_stage(b, vs[i].ours), *t = find_stage(b, vs[i].theirs);
        if (!o || !t || o->wall <= 0) continue;
        if (!header++) printf("\nside by side with stable-diffusion.cpp (%d threads each)\n%-44s %10s %10s %8s\n", b->threads, "", "fmimage", "sd.cpp", "sd.cpp/fmimage");
        printf("%-44s %9.2fs %9.2fs %8.2fx\n", vs[i].what, o->wall, t->wall, t->wall / o->wall);
        if (o->cpu > 0 && t->cpu > 0)
            printf("%-44s %9.2fs %9.2fs %8.2fx\n", "  CPU time per thread", o->cpu, t->cpu, t->cpu / o->cpu);
        if (o->rss_gib > 0 && t->rss_gib > 0)
            printf("%-44s %7.2fGiB %7.2fGiB %8.2fx\n", "  peak RSS", o->rss_gib, t->rss_gib, t->rss_gib / o->rss_gib);
    }
    const stage *st = find_stage(b, "sd1.step"), *sp = find_stage(b, "sdcpp.sd1.sampling");
    if (st && sp && st->wall > 0)
        printf("%-44s %9.2fs %9.2fs %8.2fx\n", "sampling, 2 steps (ours: 2 x one step)", 2 * st->wall, sp->wall,
               sp->wall / (2 * st->wall));
    const stage *q = find_stage(b, "sdxl.gen_q8_0"), *h = find_stage(b, "sdxl.gen");
    if (q && h && q->rss_gib > 0 && h->rss_gib > 0) /* issue 17's target: <= 0.60 */
        printf("\nSDXL peak RSS, fmimage Q8_0 GGUF / F16 safetensors: %.2f / %.2f GiB = %.3f\n", q->rss_gib, h->rss_gib,
               q->rss_gib / h->rss_gib);
}

/* Issue 22 item 4: the whole CLI run (sd1.gen, a child process) beside the
 * sum of its stages timed in-process in the same precision: load, text
 * encode, 2 sampling steps (U-Net + the sampler's own work), VAE decode. What
 * is left is the run's own cost: process start, planning, first-touch page
 * faults, PNG writing, exit. Target: at most 5% over the sum. */
static void print_overhead(const bench *b)
{
    const stage *g = find_stage(b, "sd1.gen"), *ld = find_stage(b, "sd1.load"), *te = find_stage(b, "sd1.text_encode"),
                *st = find_stage(b, "sd1.step"), *un = find_stage(b, "sd1.unet_b2"), *vd = find_stage(b, "sd1.vae_decode");
    if (!g || !ld || !te || !st || !un || !vd || g->cpu <= 0) return;
    double sum = ld->cpu + te->cpu + 2 * st->cpu + vd->cpu, over = g->cpu / sum - 1;
    printf("\nwhole run vs the sum of its stages (SD 1.5 %dx%d, 2 steps CFG 7; CPU s/thread; run %s, stages %s)\n",
           b->px, b->px, g->prec[0] ? g->prec : "?", st->prec);
    printf("  sd1.gen %.2f s vs load %.2f + text encode %.2f + 2 x step %.2f (U-Net %.2f + sampler %.2f) + VAE decode "
           "%.2f = %.2f s: %+.1f%% (target <= +5%%%s)\n",
           g->cpu, ld->cpu, te->cpu, st->cpu, un->cpu, st->cpu - un->cpu, vd->cpu, sum, 100 * over,
           strcmp(g->prec, st->prec) ? "; precisions differ: not comparable" : over <= 0.05 ? ": met" : ": not met");
    printf("  wall: sd1.gen %.2f s, stages %.2f s %+.1f%%\n", g->wall, ld->wall + te->wall + 2 * st->wall + vd->wall,
           100 * (g->wall / (ld->wall + te->wall + 2 * st->wall + vd->wall) - 1));
}

static void write_json(bench *b, const char *path)
{
    cJSON *j = b->json;
    cJSON_AddNumberToObject(j, "threads", b->threads);
    cJSON_AddNumberToObject(j, "reps", b->reps);
    cJSON_AddStringToObject(j, "kernels", kn_isa_name(kn_isa_chosen()));
    cJSON_AddBoolToObject(j, "kernels_bf16", kn_has_bf16());
    cJSON_AddNumberToObject(j, "fp32_fma_peak_gflops", b->fma_peak);
    cJSON_AddNumberToObject(j, "fp32_sgemm_gflops", b->gemm_gflops);
    cJSON_AddNumberToObject(j, "cpu_share_during_peak", b->cpu_share);
    double load[3];
    if (getloadavg(load, 3) == 3) {
        cJSON *l = cJSON_AddArrayToObject(j, "loadavg_at_end");
        for (int i = 0; i < 3; i++) cJSON_AddItemToArray(l, cJSON_CreateNumber(load[i]));
    }
    cJSON *arr = cJSON_AddArrayToObject(j, "stages");
    for (int i = 0; i < b->n; i++) {
        const stage *s = &b->st[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "key", s->key);
        cJSON_AddStringToObject(o, "label", s->label);
        cJSON_AddNumberToObject(o, "runs", s->runs);
        cJSON_AddNumberToObject(o, "wall_s", s->wall);
        if (s->cpu > 0) cJSON_AddNumberToObject(o, "cpu_s_per_thread", s->cpu);
        if (s->flops > 0) {
            cJSON_AddNumberToObject(o, "gflop", s->flops * 1e-9);
            cJSON_AddNumberToObject(o, "gflops_wall", s->flops / s->wall * 1e-9);
            if (s->cpu > 0) cJSON_AddNumberToObject(o, "gflops_cpu", s->flops / s->cpu * 1e-9);
            if (s->cpu > 0 && b->fma_peak > 0) cJSON_AddNumberToObject(o, "fraction_of_peak", s->flops / s->cpu * 1e-9 / b->fma_peak);
        }
        if (s->rss_gib > 0) cJSON_AddNumberToObject(o, "peak_rss_gib", s->rss_gib);
        if (s->note[0]) cJSON_AddStringToObject(o, "note", s->note);
        if (s->prec[0]) cJSON_AddStringToObject(o, "precision", s->prec);
        cJSON_AddItemToArray(arr, o);
    }
    char *text = cJSON_Print(j);
    FILE *f = path ? fopen(path, "w") : NULL;
    if (f && text) {
        fputs(text, f);
        fputc('\n', f);
        fclose(f);
        printf("\nJSON: %s\n", path);
    } else if (path) {
        fprintf(stderr, "bench: %s: %s\n", path, strerror(errno));
    }
    free(text);
}

static int wanted(const char *only, const char *what)
{
    if (!only) return 1;
    size_t n = strlen(what);
    for (const char *p = only; (p = strstr(p, what)); p += n)
        if ((p == only || p[-1] == ',') && (p[n] == ',' || p[n] == 0)) return 1;
    return 0;
}

/* ----------------------------------------------------------- estimate -- */

/* The published configs, for --flops and the estimate (the timed stages
 * count from the loaded model's own config). */
static const wt_unet_config sd1_unet = {.in_channels = 4, .out_channels = 4, .model_channels = 320, .n_levels = 4,
                                        .channel_mult = {1, 2, 4, 4}, .num_res_blocks = 2,
                                        .transformer_depth = {1, 1, 1, 0}, .transformer_depth_middle = 1,
                                        .context_dim = 768};
static const wt_unet_config sdxl_unet = {.in_channels = 4, .out_channels = 4, .model_channels = 320, .n_levels = 3,
                                         .channel_mult = {1, 2, 4}, .num_res_blocks = 2,
                                         .transformer_depth = {0, 2, 10}, .transformer_depth_middle = 10,
                                         .context_dim = 2048, .adm_in_channels = 2816};
static const wt_vae_config sd_vae = {.ch = 128, .n_levels = 4, .ch_mult = {1, 2, 4, 4}, .num_res_blocks = 2,
                                     .z_channels = 4, .embed_dim = 4, .out_ch = 3};
static const wt_text_config clip_l = {.width = 768, .intermediate_size = 3072};
static const wt_text_config openclip_h = {.width = 1024, .intermediate_size = 4096};

static void print_flops(void)
{
    wt_unet_config sd2 = sd1_unet;
    sd2.context_dim = 1024;
    printf("SD 1.5 U-Net 64x64 batch 1: %.1f GFLOP\n", unet_flops(&sd1_unet, 1, 64, 64, 77) * 1e-9);
    printf("SD 2.x U-Net 64x64 batch 1: %.1f GFLOP\n", unet_flops(&sd2, 1, 64, 64, 77) * 1e-9);
    printf("SDXL U-Net 128x128 batch 1: %.1f GFLOP\n", unet_flops(&sdxl_unet, 1, 128, 128, 77) * 1e-9);
    printf("VAE decode 512x512: %.1f GFLOP\n", vae_decode_flops(&sd_vae, 64, 64) * 1e-9);
    printf("TAESD decode 512x512: %.1f GFLOP\n", taesd_decode_flops(64, 64) * 1e-9);
    printf("RRDBNet x4plus, 512x512 input: %.1f GFLOP\n", rrdbnet_flops(64, 32, 23, 512, 512) * 1e-9);
    printf("CLIP-L 12 layers, 1 sequence: %.1f GFLOP\n", text_flops(&clip_l, 1, 12) * 1e-9);
    printf("OpenCLIP-H 23 layers, 1 sequence: %.1f GFLOP\n", text_flops(&openclip_h, 1, 23) * 1e-9);
}

/* ------------------------------------------------------------- upscale -- */

typedef struct upscale_ctx {
    fm_upscaler *u;
    uint8_t *in, *out;
    int side;
} upscale_ctx;

static int run_upscale(void *p, fm_error *err)
{
    upscale_ctx *c = p;
    return fm_upscale(c->u, c->in, c->side, c->side, c->out, NULL, err);
}

/* The same 4x upscale from the command line, fmimage's `upscale` beside
 * sd.cpp's `-M upscale` on the same file and input PNG (side upscale_px:
 * sd.cpp takes about ten times as long, so 512 would take it an hour
 * here): time, CPU time and peak RSS of each process, 1 run each. */
static void bench_upscale_cli(bench *b, const char *model)
{
    char in[1024], out[1024], log[1024], threads[16], name[64], label[96];
    int side = b->upscale_px;
    snprintf(threads, sizeof threads, "%d", b->threads);
    snprintf(name, sizeof name, "upscale-in-%d.png", side);
    path_in(in, sizeof in, b->cache, name);
    size_t n = (size_t)side * side * 3;
    uint8_t *rgb = malloc(n);
    if (!rgb) { fprintf(stderr, "bench: out of memory\n"); exit(1); }
    for (size_t i = 0; i < n; i++) rgb[i] = (uint8_t)((i * 2654435761u) >> 24);
    fm_error err = {0};
    if (fm_png_write(in, rgb, side, side, NULL, &err)) fail(in, &err);
    free(rgb);
    if (b->fmimage) {
        path_in(out, sizeof out, b->cache, "fmimage-upscale.png");
        path_in(log, sizeof log, b->cache, "fmimage-upscale.log");
        char *argv[] = {(char *)b->fmimage, "upscale", "-m", (char *)model, in, "-o", out, "-t", threads, "--force",
                        NULL};
        snprintf(label, sizeof label, "fmimage upscale RRDBNet x4 %dx%d -> %dx%d, CLI", side, side, 4 * side, 4 * side);
        stage *s = add_stage(b, "upscale.cli", label, 0);
        snprintf(s->note, sizeof s->note, "fmimage upscale -t %s, 1 run", threads);
        child_stage(b, s, argv, log, 1);
    }
    if (b->sdcpp) {
        path_in(out, sizeof out, b->cache, "sdcpp-upscale.png");
        path_in(log, sizeof log, b->cache, "sdcpp-upscale.log");
        char *argv[] = {(char *)b->sdcpp, "-M", "upscale", "--upscale-model", (char *)model, "-i", in, "-o", out,
                        "-t", threads, NULL};
        snprintf(label, sizeof label, "sd.cpp -M upscale RRDBNet x4 %dx%d -> %dx%d", side, side, 4 * side, 4 * side);
        stage *s = add_stage(b, "sdcpp.upscale", label, 0);
        snprintf(s->note, sizeof s->note, "sd-cli -t %s, tile 128, 1 run", threads);
        child_stage(b, s, argv, log, 1);
    }
}

/* 4x Real-ESRGAN x4plus (random weights in its layout) of a px x px image,
 * in fmimage's default tiles (192, overlap 8). */
static void bench_upscale(bench *b)
{
    char path[1024];
    path_in(path, sizeof path, b->cache, "realesrgan-x4plus-f16.safetensors");
    if (!exists(path)) { fprintf(stderr, "bench: %s missing, upscale skipped\n", path); return; }
    fm_error err = {0};
    upscale_ctx c = {.side = b->px};
    if (!(c.u = fm_upscaler_load(path, &err))) fail(path, &err);
    size_t n = (size_t)c.side * c.side * 3;
    c.in = malloc(n);
    c.out = malloc(16 * n);
    if (!c.in || !c.out) { fprintf(stderr, "bench: out of memory\n"); exit(1); }
    for (size_t i = 0; i < n; i++) c.in[i] = (uint8_t)((i * 2654435761u) >> 24);
    char label[96];
    snprintf(label, sizeof label, "RRDBNet x4plus upscale %dx%d -> %dx%d", c.side, c.side, 4 * c.side, 4 * c.side);
    fprintf(stderr, "%s\n", label);
    /* the tiles overlap: count the FLOPs of the tiles actually run */
    int step = 192 - 8, tiles = c.side <= 192 ? 1 : (c.side - 192 + step - 1) / step + 1;
    int side = c.side < 192 ? c.side : 192;
    time_stage(b, add_stage(b, "upscale.rrdbnet_x4", label, (double)tiles * tiles * rrdbnet_flops(64, 32, 23, side, side)),
               run_upscale, &c);
    free(c.in);
    free(c.out);
    fm_upscaler_free(c.u);
    if (b->upscale_px > 0) bench_upscale_cli(b, path);
}

/* FLOPs of everything the run will compute (sd.cpp not included). */
static double planned_flops(int reps, const char *only)
{
    double unet = unet_flops(&sd1_unet, 1, 64, 64, 77), vae = vae_decode_flops(&sd_vae, 64, 64);
    double clip = text_flops(&clip_l, 1, 12), h14 = text_flops(&openclip_h, 1, 23);
    double f = 0;
    if (wanted(only, "sd1")) f += reps * (2 * clip + 4 * unet + vae + taesd_decode_flops(64, 64));
    if (wanted(only, "prec")) f += (3 * reps + 1) * (2 * unet + vae); /* + the warm-up */
    if (wanted(only, "gen")) f += (reps + 1) * (2 * clip + 4 * unet + vae) + h14 + unet + vae;
    if (wanted(only, "lora")) f += 2 * reps * (2 * clip + 4 * unet + vae);
    if (wanted(only, "turbo")) f += reps * (2 * h14 + 2 * unet + vae);
    if (wanted(only, "sdxl")) f += reps * unet_flops(&sdxl_unet, 1, 128, 128, 77);
    if (wanted(only, "upscale")) f += reps * 9.0 * rrdbnet_flops(64, 32, 23, 192, 192);
    if (only && wanted(only, "sd1x20")) f += 2 * clip + 40 * unet + vae;
    if (wanted(only, "hires")) /* 2 steps at 512, 2 at 1024, CFG: twice for sd.cpp's run */
        f += 2 * (4 * unet + 4 * unet_flops(&sd1_unet, 1, 128, 128, 77) + vae_decode_flops(&sd_vae, 128, 128));
    if (only && wanted(only, "sdxlq8")) /* 3 runs (2 fmimage, sd.cpp) of 1 step with CFG at 1024 */
        f += 3 * (2 * unet_flops(&sdxl_unet, 1, 128, 128, 77) + vae_decode_flops(&sd_vae, 128, 128));
    return f;
}

/* --------------------------------------------------------------- main -- */

static int usage(void)
{
    fprintf(stderr, "usage: bench [--reps N] [--warmup N] [--threads T] [--px 512] [--upscale-px 128] [--precision auto] [--cache DIR] [--fmimage BIN] [--sdcpp BIN] [--json OUT]\n"
                    "             [--dump DIR] [--only peak,sd1,prec,gen,turbo,sdxl,sdcpp,lora,upscale,hires,sd1x20,sdxlq8] [--estimate-only] [--flops]\n");
    return 2;
}


/* The CLI's own default (cli/main.c, prefer_passive_waiting): OpenMP
 * threads sleep at barriers instead of spinning. libgomp reads
 * OMP_WAIT_POLICY before main(), hence the one re-exec; a setting of the
 * caller's is kept. Without it the in-process rows' CPU time would count
 * the spinning (on a loaded machine a quarter of it and more) that the
 * CLI's runs do not, and stage sums and whole runs would not compare. */
static void wait_as_the_cli(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv);
}

int main(int argc, char **argv)
{
    wait_as_the_cli(argv);
    bench b = {.reps = 3, .threads = 2, .px = 512, .upscale_px = 128, .prec = FM_PREC_AUTO, .prec_name = "auto"};
    const char *json = NULL, *only = NULL;
    int estimate_only = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--reps") && v) b.reps = atoi(argv[++i]);
        else if (!strcmp(a, "--warmup") && v) b.warmup = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && v) b.threads = atoi(argv[++i]);
        else if (!strcmp(a, "--px") && v) b.px = atoi(argv[++i]);
        else if (!strcmp(a, "--upscale-px") && v) b.upscale_px = atoi(argv[++i]);
        else if (!strcmp(a, "--cache") && v) b.cache = argv[++i];
        else if (!strcmp(a, "--fmimage") && v) b.fmimage = argv[++i];
        else if (!strcmp(a, "--sdcpp") && v) b.sdcpp = *argv[++i] ? argv[i] : NULL;
        else if (!strcmp(a, "--json") && v) json = argv[++i];
        else if (!strcmp(a, "--only") && v) only = argv[++i];
        else if (!strcmp(a, "--dump") && v) b.dump = argv[++i];
        else if (!strcmp(a, "--precision") && v) {
            b.prec_name = argv[++i];
            if (!strcmp(v, "fp32")) b.prec = FM_PREC_FP32;
            else if (!strcmp(v, "bf16")) b.prec = FM_PREC_BF16;
            else if (!strcmp(v, "auto")) b.prec = FM_PREC_AUTO;
            else return usage();
        }
        else if (!strcmp(a, "--estimate-only")) estimate_only = 1;
        else if (!strcmp(a, "--flops")) { print_flops(); return 0; }
        else return usage();
    }
    if (b.reps < 1 || b.reps > MAX_REPS || b.warmup < 0 || b.threads < 1 || b.px < 64 || b.px % 64 || !b.cache) return usage();
    omp_set_num_threads(b.threads);
    b.json = cJSON_CreateObject();
    char model[256], flags[128];
    cpu_info(b.json, model, sizeof model, flags, sizeof flags);
    printf("fmimage bench: %s (%s), kernels %s%s, %d threads, %d runs per stage\n", model, flags,
           kn_isa_name(kn_isa_chosen()), kn_has_bf16() ? " +bf16" : "", b.threads, b.reps);
    fflush(stdout);
    if (wanted(only, "peak")) {
        bench_peak(&b);
        printf("FP32 peak: FMA loop %.1f GFLOP/s, kn_sgemm 2048^3 %.1f GFLOP/s (CPU time, all threads)\n", b.fma_peak,
               b.gemm_gflops);
    } else {
        /* the % peak column needs the FMA loop (under a second); the sgemm row is peak's own */
        b.fma_peak = fma_peak_gflops();
        printf("FP32 peak: FMA loop %.1f GFLOP/s (CPU time, all threads); kn_sgemm 2048^3 not run (only with peak)\n",
               b.fma_peak);
    }
    if (b.gemm_gflops > 0 && b.cpu_share > 0) {
        /* Stages ran at 40-60% of the sgemm rate in the first runs; the
         * machine's load scales the wall clock by 1 / cpu_share. sd.cpp
         * took about 160 s for its run on an idle machine (issue 7). */
        double s = planned_flops(b.reps, only) / (0.5 * b.gemm_gflops * 1e9) + 20;
        if (b.sdcpp && wanted(only, "sdcpp")) s += 160;
        if (b.sdcpp && only && wanted(only, "sd1x20")) s += 1200; /* 20 steps: about 10 x the 2-step run's U-Net part */
        printf("estimated time: about %.0f min (%.0f min of CPU per thread; this process gets %.0f%% of its %d "
               "threads now)\n", s / b.cpu_share / 60, s / 60, 100 * b.cpu_share, b.threads);
    }
    fflush(stdout);
    if (estimate_only) return 0;
    double t0 = now();
    if (wanted(only, "sd1")) bench_sd1(&b);
    if (wanted(only, "prec")) bench_precisions(&b);
    if (wanted(only, "gen")) bench_gen(&b);
    if (wanted(only, "sdcpp")) bench_sdcpp(&b);
    if (wanted(only, "lora")) bench_lora(&b);
    if (wanted(only, "turbo")) bench_turbo(&b);
    if (wanted(only, "sdxl")) bench_sdxl(&b);
    if (wanted(only, "upscale")) bench_upscale(&b);
    if (wanted(only, "hires")) bench_hires(&b);
    if (only && wanted(only, "sd1x20")) bench_sd1x20(&b);
    if (only && wanted(only, "sdxlq8")) bench_sdxl_q8(&b);
    cJSON_AddNumberToObject(b.json, "total_s", now() - t0);
    print_table(&b);
    print_overhead(&b);
    write_json(&b, json);
    cJSON_Delete(b.json);
    return 0;
}
