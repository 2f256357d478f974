/* fm_model: a checkpoint mapped, its family and config detected, and every
 * part (tokenizer, text encoder, U-Net, VAE, schedule) built on the mapping. */
#include "diffusion/pipeline_internal.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/sha256.h"
#include "diffusion/detect.h"
#include "weights/compose.h"
#include "weights/quantise.h"

/* The model's discrete schedule: its alphas_cumprod buffer when it has one
 * (every SD file does), else ldm's scaled_linear betas from the config. */
static int load_schedule(fm_model *m, fm_error *err)
{
    const wt_tensor *ac = wt_find(m->src, "alphas_cumprod");
    if (ac && wt_is_float(ac->dtype) && ac->ndim == 1 && ac->shape[0] >= 2 && ac->shape[0] <= 100000) {
        float *a = core_alloc(sizeof(float) * (size_t)ac->shape[0]);
        if (!a) return core_fail(err, FM_EINPUT, "out of memory");
        wt_convert_f32(a, ac);
        int rc = smp_discrete_init(&m->schedule, a, (int)ac->shape[0], err);
        core_free(a);
        if (rc) core_error_prefix(err, m->src->path);
        return rc;
    }
    return smp_discrete_init_scaled_linear(&m->schedule, m->cfg.linear_start, m->cfg.linear_end,
                                          m->cfg.timesteps, err);
}

/* A1111 decides eps or v for SD 2.x files with one probe call. */
static int df_probe_v_prediction(fm_model *m, int *is_v, fm_error *err)
{
    const wt_unet_config *u = &m->cfg.unet;
    enum { H = 8, W = 8, NCTX = 2 };
    size_t nx = (size_t)u->in_channels * H * W;
    float *x = malloc(sizeof(float) * nx), *out = malloc(sizeof(float) * u->out_channels * H * W);
    float *ctx = malloc(sizeof(float) * NCTX * u->context_dim);
    float *y = u->adm_in_channels ? calloc((size_t)u->adm_in_channels, sizeof(float)) : NULL;
    int rc = 0;
    if (!x || !out || !ctx || (u->adm_in_channels && !y)) {
        rc = core_fail(err, FM_EINPUT, "out of memory");
    } else {
        for (size_t i = 0; i < nx; i++) x[i] = 0.5f;
        for (int i = 0; i < NCTX * u->context_dim; i++) ctx[i] = 0.5f;
        float t = 999;
        rc = un_forward(m->unet, out, x, 1, H, W, &t, ctx, NCTX, y, err);
        if (!rc) {
            /* (unet(x) - x).mean() < -1 means v */
            size_t no = (size_t)u->out_channels * H * W; /* the latent channels of x come first */
            double sum = 0;
            for (size_t i = 0; i < no; i++) sum += out[i] - x[i];
            *is_v = sum / no < -1;
        }
    }
    free(x);
    free(out);
    free(ctx);
    free(y);
    return rc;
}

/* The model file with its part files (fm_load_options) and the --type
 * conversion: one source. NULL with err set. */
static wt_source *open_sources(const char *path, const fm_load_options *opt, fm_error *err)
{
    wt_source *src = wt_open(path, err);
    if (!src || !opt) return src;
    int want = -1;
    if (opt->type && *opt->type) {
        want = core_dtype_from_name(opt->type);
        if (want < 0 || (want != FM_DT_F32 && want != FM_DT_F16 && want != FM_DT_BF16 && !core_dtype_is_quant((core_dtype)want))) {
            core_fail(err, FM_EUSAGE, "--type: %.40s is not f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k or q6_k", opt->type);
            wt_close(src);
            return NULL;
        }
    }
    const char *files[3] = {opt->vae, opt->clip_l, opt->clip_g};
    static const wt_part roles[3] = {WT_PART_VAE, WT_PART_CLIP_L, WT_PART_CLIP_G};
    wt_source *parts[4] = {src};
    int n = 1;
    /* the family decides where CLIP-L goes: SDXL's U-Net has label_emb */
    int sdxl = wt_find(src, "model.diffusion_model.label_emb.0.0.weight") != NULL || opt->clip_g;
    for (int i = 0; i < 3; i++) {
        if (!files[i] || !*files[i]) continue;
        wt_source *p = wt_open(files[i], err);
        if (p) p = wt_part_view(p, roles[i], sdxl, err);
        if (!p) {
            for (int k = 0; k < n; k++) wt_close(parts[k]);
            return NULL;
        }
        parts[n++] = p;
    }
    if (n > 1 && !(src = wt_compose(parts, n, err))) return NULL;
    if (want >= 0 && !(src = wt_quantised(src, (core_dtype)want, 0, err))) return NULL;
    return src;
}

/* A1111's sd_vae: get_loaded_vae_name (basename) and get_loaded_vae_hash
 * (hashes.sha256 of the file, 10 digits). */
static int vae_identity(fm_model *m, const char *path, fm_error *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return core_fail(err, FM_EINPUT, "%s: cannot be read", path);
    char hex[65];
    int bad = core_sha256_stream(fp, hex);
    fclose(fp);
    if (bad) return core_fail(err, FM_EINPUT, "%s: read error", path);
    memcpy(m->vae_hash, hex, 10);
    m->vae_hash[10] = 0;
    const char *base = strrchr(path, '/');
    if (!(m->vae_name = strdup(base ? base + 1 : path))) return core_fail(err, FM_EINPUT, "out of memory");
    return 0;
}

fm_model *fm_model_load(const char *path, fm_error *err) { return fm_model_load_with(path, NULL, err); }

fm_model *fm_model_load_with(const char *path, const fm_load_options *opt, fm_error *err)
{
    core_error_clear(err);
    if (!path) {
        core_fail(err, FM_EUSAGE, "--model: no path given");
        return NULL;
    }
    fm_model *m = calloc(1, sizeof *m);
    if (!m) {
        core_fail(err, FM_EINPUT, "out of memory");
        return NULL;
    }
    int rc = (m->src = open_sources(path, opt, err)) ? 0 : (err && err->code ? err->code : FM_EINPUT);
    if (!rc) rc = df_detect_config(m->src, &m->cfg, err);
    if (!rc && !(m->tokenizer = te_tokenizer_new(err))) rc = FM_EINPUT;
    if (!rc) rc = te_encoder_load(&m->text, m->src, &m->cfg, err);
    /* float32 at load, so the v-prediction probe below decides the same on
     * every CPU; fm_generate switches to the requested precision. */
    if (!rc && !(m->unet = un_load(m->src, &m->cfg.unet, FM_PREC_FP32, err))) rc = FM_EINPUT;
    if (!rc && !(m->vae = vae_load(m->src, &m->cfg.vae, FM_PREC_FP32, err))) rc = FM_EINPUT;
    if (!rc) rc = load_schedule(m, err);
    if (!rc && opt && opt->vae && *opt->vae) rc = vae_identity(m, opt->vae, err);
    m->prediction = m->cfg.prediction;
    if (!rc && m->prediction == FM_PRED_AUTO) {
        int is_v = 0;
        rc = df_probe_v_prediction(m, &is_v, err);
        m->prediction = is_v ? FM_PRED_V : FM_PRED_EPS;
        m->prediction_probed = 1;
        /* SD 2.x defaults depend on the parameterisation (768 px for v,
         * 512 for eps); keep defaults the file itself gave. */
        fm_model_defaults unknown;
        df_family_defaults(m->cfg.family, FM_PRED_AUTO, &unknown);
        if (unknown.width == m->cfg.defaults.width && unknown.height == m->cfg.defaults.height)
            df_family_defaults(m->cfg.family, m->prediction, &m->cfg.defaults);
    }
    if (rc) {
        if (err && err->code == FM_OK) core_fail(err, FM_EINPUT, "%s: cannot load", path);
        fm_model_free(m);
        return NULL;
    }
    return m;
}

const char *fm_model_vae(const fm_model *m, const char **hash)
{
    if (hash) *hash = m && m->vae_name ? m->vae_hash : NULL;
    return m ? m->vae_name : NULL;
}

void fm_model_free(fm_model *m)
{
    if (!m) return;
    free(m->vae_name);
    vae_taesd_free(m->taesd);
    free(m->taesd_path);
    vae_taesd_free(m->preview_taesd);
    free(m->preview_taesd_path);
    vae_free(m->vae);
    un_free(m->unet);
    te_encoder_free(&m->text);
    df_lora_state_free(&m->lora); /* after the parts: they view its merged tensors */
    te_tokenizer_free(m->tokenizer);
    smp_discrete_free(&m->schedule);
    wt_close(m->src);
    free(m);
}

fm_family fm_model_family(const fm_model *m) { return m->cfg.family; }

const char *fm_family_name(fm_family f) { return df_family_str(f); }

void fm_model_get_defaults(const fm_model *m, fm_model_defaults *out) { *out = m->cfg.defaults; }

int fm_model_latent_factor(const fm_model *m) { return m->cfg.vae.latent_factor; }

char *fm_model_describe(fm_model *m, fm_error *err)
{
    core_error_clear(err);
    if (!m) {
        core_fail(err, FM_EUSAGE, "fm_model_describe: no model");
        return NULL;
    }
    char *cfg = df_config_describe(&m->cfg, m->src);
    if (!cfg) {
        core_fail(err, FM_EINPUT, "out of memory");
        return NULL;
    }
    const char *pred = m->prediction == FM_PRED_V ? "v" : "eps";
    int64_t bound = 0, absent = 0;
    df_count_bound(&m->cfg, m->src, &bound, &absent); /* the model loaded: none absent */
    char prec[PATH_MAX + 256]; /* what --precision auto means here (may time the kernels once) */
    fm_model_precision(m, FM_PREC_AUTO, prec, sizeof prec);
    /* the weight types (GGUF, --type): "weight types: 602 F16, 384 Q8_0, ..." */
    char types[400] = "";
    size_t tl = 0;
    for (int d = 0; d < FM_DT_COUNT; d++) {
        int count = 0;
        for (int i = 0; i < wt_count(m->src); i++) count += wt_at(m->src, i)->dtype == (core_dtype)d;
        if (count && tl < sizeof types)
            tl += (size_t)snprintf(types + tl, sizeof types - tl, "%s%d %s", tl ? ", " : "", count, core_dtype_name((core_dtype)d));
    }
    char conv[320]; /* how the 3x3 convolutions run here (may time them once) */
    fm_conv_choice(conv, sizeof conv);
    size_t n = strlen(cfg) + 256 + sizeof prec + sizeof types + sizeof conv;
    char *s = malloc(n);
    if (s)
        snprintf(s, n,
                 "%stensors: %d in the file, %lld bound by the parts, %lld other\nweight types: %s\n"
                 "prediction used: %s (%s)\nprecision: %s\nconvolutions: %s\n",
                 cfg, wt_count(m->src), (long long)bound, (long long)(wt_count(m->src) - bound), types, pred,
                 m->prediction_probed ? "decided by the A1111 probe: the file does not say" : "from the file", prec,
                 conv);
    else
        core_fail(err, FM_EINPUT, "out of memory");
    free(cfg);
    return s;
}

int fm_tokenize(const fm_model *m, const char *text, int32_t ids[77], fm_error *err)
{
    core_error_clear(err);
    if (!text || !ids) {
        core_fail(err, FM_EUSAGE, "fm_tokenize: no text or no ids");
        return -1;
    }
    te_tokenizer *own = NULL;
    const te_tokenizer *tok = m ? m->tokenizer : (own = te_tokenizer_new(err));
    if (!tok) return -1;
    int pad = m ? m->cfg.text[0].pad_token : FM_CLIP_EOS;
    int kept = te_tokenize_77(tok, text, pad, ids, err);
    te_tokenizer_free(own);
    return kept < 0 ? -1 : 77;
}
