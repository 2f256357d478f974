/* The fmimage.config metadata (tests/data/README.md#checkpoint-metadata):
 * values the shapes already determined are checked, the others fill the
 * config. */
#include "diffusion/detect_meta.h"
#include "diffusion/family.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct meta {
    const wt_source *st;
    fm_error *err;
    const char *section; /* "unet", "vae", "text[1]", ... for messages */
} meta;

static int fail(const meta *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(const meta *m, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return wt_fail(m->err, m->st, "fmimage.config: %s", why);
}

static const cJSON *item(const cJSON *obj, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(obj, key);
}

/* An integer (JSON number without fraction, or a boolean as 0/1). */
static int as_int(const meta *m, const cJSON *j, const char *key, int *out)
{
    if (cJSON_IsBool(j)) {
        *out = cJSON_IsTrue(j);
        return 0;
    }
    double d = cJSON_IsNumber(j) ? j->valuedouble : NAN;
    if (!(d >= -1e9 && d <= 1e9) || d != floor(d))
        return fail(m, "%s.%s is not an integer", m->section, key);
    *out = (int)d;
    return 0;
}

/* key, if present, must equal what the shapes say. */
static int check_int(const meta *m, const cJSON *obj, const char *key, int have)
{
    const cJSON *j = item(obj, key);
    int v = 0, rc;
    if (!j || cJSON_IsNull(j)) return 0;
    if ((rc = as_int(m, j, key, &v))) return rc;
    if (v != have) return fail(m, "%s.%s is %d, the tensors say %d", m->section, key, v, have);
    return 0;
}

static int set_int(const meta *m, const cJSON *obj, const char *key, int *field)
{
    const cJSON *j = item(obj, key);
    if (!j || cJSON_IsNull(j)) return 0;
    return as_int(m, j, key, field);
}

static int set_float(const meta *m, const cJSON *obj, const char *key, double lo, double hi, double *field)
{
    const cJSON *j = item(obj, key);
    if (!j || cJSON_IsNull(j)) return 0;
    if (!cJSON_IsNumber(j) || !(j->valuedouble >= lo && j->valuedouble <= hi))
        return fail(m, "%s.%s is not a number in [%g, %g]", m->section, key, lo, hi);
    *field = j->valuedouble;
    return 0;
}

/* A list of n integers equal to have[] (a single integer stands for all). */
static int check_list(const meta *m, const cJSON *obj, const char *key, const int *have, int n)
{
    const cJSON *j = item(obj, key);
    int rc, v = 0;
    if (!j || cJSON_IsNull(j)) return 0;
    if (cJSON_IsNumber(j)) {
        if ((rc = as_int(m, j, key, &v))) return rc;
        for (int i = 0; i < n; i++)
            if (have[i] != v) return fail(m, "%s.%s is %d, the tensors say %d at level %d", m->section, key, v, have[i], i);
        return 0;
    }
    if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) != n)
        return fail(m, "%s.%s is not a list of %d integers (the tensors have %d levels)", m->section, key, n, n);
    for (int i = 0; i < n; i++) {
        if ((rc = as_int(m, cJSON_GetArrayItem(j, i), key, &v))) return rc;
        if (v != have[i]) return fail(m, "%s.%s[%d] is %d, the tensors say %d", m->section, key, i, v, have[i]);
    }
    return 0;
}

static int apply_unet(meta *m, const cJSON *o, wt_unet_config *u)
{
    int rc;
    m->section = "unet";
    if ((rc = check_int(m, o, "in_channels", u->in_channels)) ||
        (rc = check_int(m, o, "out_channels", u->out_channels)) ||
        (rc = check_int(m, o, "model_channels", u->model_channels)) ||
        (rc = check_int(m, o, "context_dim", u->context_dim)) ||
        (rc = check_int(m, o, "use_linear_in_transformer", u->use_linear_in_transformer)) ||
        (rc = check_int(m, o, "adm_in_channels", u->adm_in_channels)) ||
        (rc = check_list(m, o, "channel_mult", u->channel_mult, u->n_levels)))
        return rc;
    int nrb[FM_MAX_LEVELS];
    for (int l = 0; l < u->n_levels; l++) nrb[l] = u->num_res_blocks;
    if ((rc = check_list(m, o, "num_res_blocks", nrb, u->n_levels))) return rc;

    /* transformer_depth applies at the levels whose ds = 2^l is listed in
     * attention_resolutions; the middle block takes transformer_depth_middle,
     * else the last (sgm) or only (ldm) transformer_depth. */
    const cJSON *ar = item(o, "attention_resolutions"), *td = item(o, "transformer_depth");
    int depth_of[FM_MAX_LEVELS], middle = -1;
    for (int l = 0; l < u->n_levels; l++) depth_of[l] = 1;
    if (td && !cJSON_IsNull(td)) {
        if (cJSON_IsArray(td)) {
            if (cJSON_GetArraySize(td) != u->n_levels)
                return fail(m, "unet.transformer_depth has %d entries for %d levels", cJSON_GetArraySize(td), u->n_levels);
            for (int l = 0; l < u->n_levels; l++)
                if ((rc = as_int(m, cJSON_GetArrayItem(td, l), "transformer_depth", &depth_of[l]))) return rc;
            middle = depth_of[u->n_levels - 1];
        } else {
            if ((rc = as_int(m, td, "transformer_depth", &depth_of[0]))) return rc;
            for (int l = 1; l < u->n_levels; l++) depth_of[l] = depth_of[0];
            middle = depth_of[0];
        }
    }
    if (ar && !cJSON_IsNull(ar)) {
        if (!cJSON_IsArray(ar)) return fail(m, "unet.attention_resolutions is not a list");
        int want[FM_MAX_LEVELS] = {0};
        const cJSON *e;
        cJSON_ArrayForEach(e, ar) {
            int ds = 0;
            if ((rc = as_int(m, e, "attention_resolutions", &ds))) return rc;
            for (int l = 0; l < u->n_levels; l++)
                if (ds == 1 << l) want[l] = depth_of[l];
        }
        for (int l = 0; l < u->n_levels; l++)
            if (want[l] != u->transformer_depth[l])
                return fail(m, "unet: %d transformer blocks at level %d, the tensors have %d", want[l], l, u->transformer_depth[l]);
    }
    if ((rc = set_int(m, o, "transformer_depth_middle", &middle))) return rc;
    if (middle >= 0 && middle != u->transformer_depth_middle)
        return fail(m, "unet: %d transformer blocks in the middle block, the tensors have %d", middle, u->transformer_depth_middle);

    /* Heads: ldm uses num_head_channels unless it is -1. */
    const cJSON *nh = item(o, "num_heads"), *hc = item(o, "num_head_channels");
    if (nh || hc) {
        int heads = -1, channels = -1;
        if ((rc = set_int(m, o, "num_heads", &heads)) || (rc = set_int(m, o, "num_head_channels", &channels)))
            return rc;
        if (channels > 0) heads = -1;
        else if (heads < 1) return fail(m, "unet: neither num_heads nor num_head_channels is positive");
        u->num_heads = heads;
        u->num_head_channels = channels;
    }
    return 0;
}

static int apply_vae(meta *m, const cJSON *o, wt_vae_config *v)
{
    int rc;
    m->section = "vae";
    if ((rc = check_int(m, o, "ch", v->ch)) || (rc = check_int(m, o, "num_res_blocks", v->num_res_blocks)) ||
        (rc = check_int(m, o, "z_channels", v->z_channels)) || (rc = check_int(m, o, "embed_dim", v->embed_dim)) ||
        (rc = check_int(m, o, "out_ch", v->out_ch)) ||
        (rc = check_list(m, o, "ch_mult", v->ch_mult, v->n_levels)))
        return rc;
    if (v->has_encoder) {
        if ((rc = check_int(m, o, "in_channels", v->in_channels)) || (rc = check_int(m, o, "double_z", v->double_z)))
            return rc;
    } else if ((rc = set_int(m, o, "in_channels", &v->in_channels)) || (rc = set_int(m, o, "double_z", &v->double_z))) {
        return rc;
    }
    double sf = v->scale_factor;
    if ((rc = set_float(m, o, "scale_factor", 1e-6, 1e6, &sf))) return rc;
    v->scale_factor = (float)sf;
    return 0;
}

static int apply_text(meta *m, const cJSON *o, wt_text_config *t)
{
    int rc;
    if (!cJSON_IsObject(o)) return fail(m, "%s is not an object", m->section);
    const cJSON *kind = item(o, "kind");
    if (kind) {
        const char *want = t->kind == FM_TEXT_CLIP ? "clip" : "openclip";
        if (!cJSON_IsString(kind) || strcmp(kind->valuestring, want))
            return fail(m, "%s.kind is not \"%s\" (the tensors are %s)", m->section, want,
                        t->kind == FM_TEXT_CLIP ? "Hugging Face CLIP names" : "open_clip names");
    }
    if ((rc = check_int(m, o, "width", t->width)) || (rc = check_int(m, o, "layers", t->layers)) ||
        (rc = check_int(m, o, "vocab_size", t->vocab_size)) || (rc = check_int(m, o, "max_length", t->max_length)) ||
        (rc = check_int(m, o, "intermediate_size", t->intermediate_size)) ||
        (rc = check_int(m, o, "mlp_dim", t->intermediate_size)))
        return rc;
    if (t->projection_dim && (rc = check_int(m, o, "projection_dim", t->projection_dim))) return rc;
    if ((rc = set_int(m, o, "heads", &t->heads)) || (rc = set_int(m, o, "pad_token", &t->pad_token))) return rc;
    if (t->heads < 1 || t->width % t->heads)
        return fail(m, "%s.heads %d does not divide the width %d", m->section, t->heads, t->width);
    const cJSON *act = item(o, "act");
    if (act) {
        if (cJSON_IsString(act) && !strcmp(act->valuestring, "quick_gelu")) t->act_quick_gelu = 1;
        else if (cJSON_IsString(act) && !strcmp(act->valuestring, "gelu")) t->act_quick_gelu = 0;
        else return fail(m, "%s.act is not \"quick_gelu\" or \"gelu\"", m->section);
    }
    double eps = t->layer_norm_eps;
    if ((rc = set_float(m, o, "layer_norm_eps", 0, 1, &eps))) return rc;
    t->layer_norm_eps = (float)eps;

    /* Which hidden state: "last" (+ final LN), "penultimate" (+ final LN
     * unless legacy is false: sgm's FrozenOpenCLIPEmbedder2), or "hidden"
     * with layer_idx into HF hidden_states (no final LN). */
    const cJSON *layer = item(o, "layer");
    if (layer) {
        const char *l = cJSON_IsString(layer) ? layer->valuestring : "";
        if (!strcmp(l, "last")) {
            t->penultimate = 0;
            t->final_ln_on_output = 1;
        } else if (!strcmp(l, "penultimate")) {
            int legacy = 1;
            if ((rc = set_int(m, o, "legacy", &legacy))) return rc;
            t->penultimate = 1;
            t->final_ln_on_output = legacy;
        } else if (!strcmp(l, "hidden")) {
            int idx = t->layers - 1;
            if ((rc = set_int(m, o, "layer_idx", &idx))) return rc;
            if (idx != t->layers && idx != t->layers - 1)
                return fail(m, "%s.layer_idx %d: only the last two of %d layers are supported", m->section, idx, t->layers);
            t->penultimate = idx == t->layers - 1;
            t->final_ln_on_output = 0;
        } else {
            return fail(m, "%s.layer is not \"last\", \"penultimate\" or \"hidden\"", m->section);
        }
    }
    return 0;
}

static int apply_defaults(meta *m, const cJSON *o, fm_model_defaults *d)
{
    int rc;
    m->section = "defaults";
    if (!cJSON_IsObject(o)) return fail(m, "defaults is not an object");
    if ((rc = set_int(m, o, "width", &d->width)) || (rc = set_int(m, o, "height", &d->height)) ||
        (rc = set_int(m, o, "steps", &d->steps)))
        return rc;
    if (d->width < 8 || d->width > 16384 || d->height < 8 || d->height > 16384 || d->steps < 1 || d->steps > 1000)
        return fail(m, "defaults: size %dx%d or steps %d out of range", d->width, d->height, d->steps);
    double cfg = d->cfg;
    if ((rc = set_float(m, o, "cfg", 0, 100, &cfg))) return rc;
    d->cfg = (float)cfg;
    const char *keys[2] = {"sampler", "scheduler"};
    char *fields[2] = {d->sampler, d->scheduler};
    for (int i = 0; i < 2; i++) {
        const cJSON *s = item(o, keys[i]);
        if (!s) continue;
        if (!cJSON_IsString(s) || !s->valuestring[0] || strlen(s->valuestring) >= sizeof d->sampler)
            return fail(m, "defaults.%s is not a name", keys[i]);
        snprintf(fields[i], sizeof d->sampler, "%s", s->valuestring);
    }
    return 0;
}

static int apply_vocabulary(meta *m, const cJSON *v, char *out, size_t cap)
{
    m->section = "vocabulary";
    if (cJSON_IsString(v)) {
        snprintf(out, cap, "%s", v->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(v)) return fail(m, "vocabulary is not a string or a list of strings");
    size_t len = 0;
    out[0] = 0;
    const cJSON *w;
    cJSON_ArrayForEach(w, v) {
        if (!cJSON_IsString(w)) return fail(m, "vocabulary is not a string or a list of strings");
        int n = snprintf(out + len, cap - len, "%s%s", len ? ", " : "", w->valuestring);
        if (n < 0 || (size_t)n >= cap - len) { out[len] = 0; break; } /* keep whole words */
        len += (size_t)n;
    }
    return 0;
}

static int apply(meta *m, const cJSON *root, wt_model_config *cfg)
{
    int rc, demo = 0;
    m->section = "";
    if (!cJSON_IsObject(root)) return fail(m, "not a JSON object");
    const cJSON *fam = item(root, "family");
    if (fam) {
        static const fm_family all[] = {FM_FAMILY_SD1, FM_FAMILY_SD2, FM_FAMILY_SD_TURBO, FM_FAMILY_SDXL};
        const char *s = cJSON_IsString(fam) ? fam->valuestring : "";
        int known = 0;
        demo = !strcmp(s, "demo");
        for (int i = 0; i < 4; i++)
            if (!strcmp(s, df_family_str(all[i]))) {
                known = 1;
                if (all[i] != cfg->family)
                    return fail(m, "family is %s, the tensors are %s", s, df_family_str(cfg->family));
            }
        if (!known && !demo) return fail(m, "family \"%.40s\" is not sd1, sd2, sd-turbo, sdxl or demo", s);
    }
    const cJSON *pred = item(root, "prediction");
    if (pred) {
        const char *s = cJSON_IsString(pred) ? pred->valuestring : "";
        if (!strcmp(s, "eps")) cfg->prediction = FM_PRED_EPS;
        else if (!strcmp(s, "v")) cfg->prediction = FM_PRED_V;
        else return fail(m, "prediction is not \"eps\" or \"v\"");
        df_family_defaults(cfg->family, cfg->prediction, &cfg->defaults);
    }
    const cJSON *o;
    if ((o = item(root, "unet")) && !cJSON_IsObject(o)) return fail(m, "unet is not an object");
    if (o && (rc = apply_unet(m, o, &cfg->unet))) return rc;
    if ((o = item(root, "vae")) && !cJSON_IsObject(o)) return fail(m, "vae is not an object");
    if (o && (rc = apply_vae(m, o, &cfg->vae))) return rc;
    if ((o = item(root, "text"))) {
        if (cfg->n_text == 1 && cJSON_IsObject(o)) {
            m->section = "text";
            if ((rc = apply_text(m, o, &cfg->text[0]))) return rc;
        } else if (cJSON_IsArray(o) && cJSON_GetArraySize(o) == cfg->n_text) {
            for (int i = 0; i < cfg->n_text; i++) {
                m->section = i ? "text[1]" : "text[0]";
                if ((rc = apply_text(m, cJSON_GetArrayItem(o, i), &cfg->text[i]))) return rc;
            }
        } else {
            return fail(m, "text is not %s", cfg->n_text == 1 ? "an object" : "a list of two objects");
        }
    }
    if ((o = item(root, "size_cond")) && cJSON_IsObject(o) && cfg->n_text == 2) {
        int outdim = 0;
        m->section = "size_cond";
        if ((rc = set_int(m, o, "outdim", &outdim))) return rc;
        if (outdim && cfg->unet.adm_in_channels != cfg->text[1].projection_dim + 6 * outdim)
            return fail(m, "size_cond.outdim %d: label_emb takes %d inputs, not %d + 6 x %d", outdim,
                        cfg->unet.adm_in_channels, cfg->text[1].projection_dim, outdim);
    }
    if ((o = item(root, "schedule"))) {
        m->section = "schedule";
        if (!cJSON_IsObject(o)) return fail(m, "schedule is not an object");
        int from_buffers = wt_find(m->st, "alphas_cumprod") || wt_find(m->st, "betas") ||
                           wt_find(m->st, "denoiser.sigmas");
        if (from_buffers) {
            if ((rc = check_int(m, o, "timesteps", cfg->timesteps))) return rc;
        } else if ((rc = set_int(m, o, "timesteps", &cfg->timesteps))) {
            return rc;
        }
        if (cfg->timesteps < 2 || cfg->timesteps > 100000) return fail(m, "schedule.timesteps out of range");
        if ((rc = set_float(m, o, "linear_start", 1e-8, 1, &cfg->linear_start)) ||
            (rc = set_float(m, o, "linear_end", 1e-8, 1, &cfg->linear_end)))
            return rc;
    }
    if ((o = item(root, "defaults")) && (rc = apply_defaults(m, o, &cfg->defaults))) return rc;
    if ((o = item(root, "vocabulary")) && (rc = apply_vocabulary(m, o, cfg->vocabulary, sizeof cfg->vocabulary)))
        return rc;
    if (demo) cfg->family = FM_FAMILY_DEMO;
    return 0;
}

int df_config_apply_meta(const char *json, wt_model_config *cfg, const wt_source *st, fm_error *err)
{
    meta m = {st, err, ""};
    cJSON *root = cJSON_Parse(json);
    if (!root) return fail(&m, "not valid JSON");
    int rc = apply(&m, root, cfg);
    cJSON_Delete(root);
    return rc;
}
