/* The `fmimage --info` text. */
#include "diffusion/detect.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct out {
    char *s;
    size_t len, cap;
    int oom;
} out;

static void put(out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(out *o, const char *fmt, ...)
{
    for (int tries = 0; tries < 2 && !o->oom; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->s + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) { o->oom = 1; return; }
        if ((size_t)n < o->cap - o->len) { o->len += (size_t)n; return; }
        size_t cap = o->cap * 2 + (size_t)n + 1;
        char *p = realloc(o->s, cap);
        if (!p) { o->oom = 1; return; }
        o->s = p;
        o->cap = cap;
    }
}

static void put_list(out *o, const int *v, int n)
{
    put(o, "[");
    for (int i = 0; i < n; i++) put(o, i ? ",%d" : "%d", v[i]);
    put(o, "]");
}

/* 1234567 -> "1,234,567" */
static void put_count(out *o, int64_t n)
{
    char digits[32], grouped[48];
    int len = snprintf(digits, sizeof digits, "%lld", (long long)n), k = 0;
    for (int i = 0; i < len; i++) {
        if (i && (len - i) % 3 == 0 && digits[i - 1] != '-') grouped[k++] = ',';
        grouped[k++] = digits[i];
    }
    grouped[k] = 0;
    put(o, "%s", grouped);
}

static const char *prediction_str(fm_prediction p)
{
    return p == FM_PRED_EPS ? "eps" : p == FM_PRED_V ? "v" : "auto (unknown from the file; probed at load)";
}

static void describe_text(out *o, const wt_text_config *t, int i)
{
    put(o, "text[%d]: %s, %s\n", i, t->kind == FM_TEXT_CLIP ? "CLIP (Hugging Face names)" : "OpenCLIP", t->prefix);
    put(o, "  width %d, layers %d, heads %d, intermediate_size %d, vocab_size %d, max_length %d\n", t->width,
        t->layers, t->heads, t->intermediate_size, t->vocab_size, t->max_length);
    put(o, "  act %s, pad_token %d, projection_dim %d, layer_norm_eps %g\n", t->act_quick_gelu ? "quick_gelu" : "gelu",
        t->pad_token, t->projection_dim, (double)t->layer_norm_eps);
    put(o, "  output: %s layer%s\n", t->penultimate ? "penultimate" : "last",
        t->final_ln_on_output ? " + final layer norm" : " (no final layer norm)");
}

char *df_config_describe(const wt_model_config *cfg, const wt_source *st)
{
    out o = {malloc(4096), 0, 4096, 0};
    if (!o.s) return NULL;
    o.s[0] = 0;
    const wt_unet_config *u = &cfg->unet;
    const wt_vae_config *v = &cfg->vae;
    put(&o, "family: %s\n", df_family_str(cfg->family));
    put(&o, "prediction: %s\n", prediction_str(cfg->prediction));
    put(&o, "unet: %s\n  in_channels %d, out_channels %d, model_channels %d, channel_mult ", u->prefix,
        u->in_channels, u->out_channels, u->model_channels);
    put_list(&o, u->channel_mult, u->n_levels);
    put(&o, ", num_res_blocks %d\n  transformer_depth ", u->num_res_blocks);
    put_list(&o, u->transformer_depth, u->n_levels);
    put(&o, " (per level), middle %d, ", u->transformer_depth_middle);
    if (u->num_head_channels > 0) put(&o, "num_head_channels %d", u->num_head_channels);
    else put(&o, "num_heads %d", u->num_heads);
    put(&o, "\n  context_dim %d, proj_in/out %s, adm_in_channels %d\n", u->context_dim,
        u->use_linear_in_transformer ? "linear" : "1x1 conv", u->adm_in_channels);
    put(&o, "vae: %s\n  ch %d, ch_mult ", v->prefix, v->ch);
    put_list(&o, v->ch_mult, v->n_levels);
    put(&o, ", num_res_blocks %d, z_channels %d, embed_dim %d, double_z %d\n", v->num_res_blocks, v->z_channels,
        v->embed_dim, v->double_z);
    put(&o, "  in_channels %d, out_ch %d, scale_factor %g, latent factor %d, encoder %s\n", v->in_channels, v->out_ch,
        (double)v->scale_factor, v->latent_factor, v->has_encoder ? "present" : "absent (no img2img)");
    for (int i = 0; i < cfg->n_text; i++) describe_text(&o, &cfg->text[i], i);
    put(&o, "schedule: scaled linear, linear_start %g, linear_end %g, timesteps %d\n", cfg->linear_start,
        cfg->linear_end, cfg->timesteps);
    const fm_model_defaults *d = &cfg->defaults;
    put(&o, "defaults: %dx%d, %d steps, cfg %g, sampler %s, scheduler %s\n", d->width, d->height, d->steps,
        (double)d->cfg, d->sampler, d->scheduler);
    if (cfg->vocabulary[0]) put(&o, "vocabulary: %s\n", cfg->vocabulary);

    put(&o, "parameters:\n");
    int64_t total = 0, n;
    put(&o, "  unet          ");
    put_count(&o, n = df_count_params(st, u->prefix));
    total += n;
    put(&o, "\n  vae           ");
    put_count(&o, n = df_count_params(st, v->prefix));
    total += n;
    for (int i = 0; i < cfg->n_text; i++) {
        put(&o, "\n  text[%d]       ", i);
        put_count(&o, n = df_count_params(st, cfg->text[i].prefix));
        total += n;
    }
    put(&o, "\n  total         ");
    put_count(&o, total);
    int64_t all = df_count_params(st, "");
    if (all != total) {
        put(&o, "\n  (other float tensors: ");
        put_count(&o, all - total);
        put(&o, ")");
    }
    put(&o, "\n");
    if (o.oom) {
        free(o.s);
        return NULL;
    }
    return o.s;
}
