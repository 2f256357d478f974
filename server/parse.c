/* The A1111 request body (modules/api/models.py: the txt2img/img2img
 * processing fields) to an srv_gen. As FastAPI with pydantic v1 does:
 * unknown keys are ignored, null means the default, a number is accepted
 * for an int field (truncated) and a numeric string for a number, and
 * anything else is a 422 naming the field. */
#include "server.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct pctx {
    char *msg, *loc;
    size_t msg_n, loc_n;
} pctx;

static int bad(pctx *c, int status, const char *field, const char *why)
{
    snprintf(c->loc, c->loc_n, "%s", field ? field : "");
    snprintf(c->msg, c->msg_n, "%s", why);
    return status;
}

static int is_null(const cJSON *v) { return !v || cJSON_IsNull(v); }

static int get_number(pctx *c, const cJSON *v, const char *field, double *out, const char *type)
{
    if (cJSON_IsNumber(v)) { *out = v->valuedouble; return 0; }
    if (cJSON_IsString(v) && v->valuestring[0]) {
        char *end;
        double d = strtod(v->valuestring, &end);
        if (!*end && isfinite(d)) { *out = d; return 0; }
    }
    return bad(c, 422, field, !strcmp(type, "int") ? "value is not a valid integer" : "value is not a valid float");
}

static int get_int(pctx *c, const cJSON *o, const char *field, int *out, int lo, int hi)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);
    if (is_null(v)) return 0;
    double d;
    if (get_number(c, v, field, &d, "int")) return 422;
    if (d < lo || d > hi) {
        char why[128];
        snprintf(why, sizeof why, "%.0f is not in %d..%d", d, lo, hi);
        return bad(c, 422, field, why);
    }
    *out = (int)d;
    return 0;
}

static int get_double(pctx *c, const cJSON *o, const char *field, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);
    if (is_null(v)) return 0;
    double d;
    if (get_number(c, v, field, &d, "float")) return 422;
    if (fabs(d) > 1e6) return bad(c, 422, field, "value out of range");
    *out = d;
    return 0;
}

static int get_float(pctx *c, const cJSON *o, const char *field, float *out)
{
    double d = *out;
    if (get_double(c, o, field, &d)) return 422;
    *out = (float)d;
    return 0;
}

/* pydantic v1's bool: true/false, 0/1, or one of its strings */
static int get_bool(pctx *c, const cJSON *o, const char *field, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);
    if (is_null(v)) return 0;
    if (cJSON_IsBool(v)) { *out = cJSON_IsTrue(v); return 0; }
    if (cJSON_IsNumber(v) && (v->valuedouble == 0 || v->valuedouble == 1)) { *out = v->valuedouble == 1; return 0; }
    if (cJSON_IsString(v)) {
        static const char *const yes[] = {"1", "on", "t", "true", "y", "yes"}, *const no[] = {"0", "off", "f", "false", "n", "no"};
        for (int i = 0; i < 6; i++) {
            if (!strcasecmp(v->valuestring, yes[i])) { *out = 1; return 0; }
            if (!strcasecmp(v->valuestring, no[i])) { *out = 0; return 0; }
        }
    }
    return bad(c, 422, field, "value could not be parsed to a boolean");
}

static int get_str(pctx *c, const cJSON *o, const char *field, const char **out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, field);
    if (is_null(v)) return 0;
    if (!cJSON_IsString(v)) return bad(c, 422, field, "str type expected");
    *out = v->valuestring;
    return 0;
}

static int get_name(pctx *c, const cJSON *o, const char *field, char *out, size_t n)
{
    const char *s = NULL;
    if (get_str(c, o, field, &s)) return 422;
    if (!s) return 0;
    if (strlen(s) >= n) return bad(c, 422, field, "name too long");
    snprintf(out, n, "%s", s);
    return 0;
}

static char *dup_or_empty(const char *s) { return strdup(s ? s : ""); }

/* Strings longer than SRV_STRING_MAX are refused anywhere but in image
 * fields (init_images, mask, image). */
static int strings_ok(const cJSON *j, int in_image)
{
    for (const cJSON *e = j; e; e = e->next) {
        int img = in_image || (e->string && (!strcmp(e->string, "init_images") || !strcmp(e->string, "mask") ||
                                             !strcmp(e->string, "image")));
        if (e->string && strlen(e->string) > 1024) return 0;
        if (cJSON_IsString(e) && !img && strlen(e->valuestring) > SRV_STRING_MAX) return 0;
        if (e->child && !strings_ok(e->child, img)) return 0;
    }
    return 1;
}

/* img2img's inpainting fields, with the defaults of A1111's
 * StableDiffusionProcessingImg2Img (which the API's model copies): blur 4,
 * "fill", "Only masked" with 0 padding. inpainting_fill is A1111's index
 * (0 fill, 1 original, 2 latent noise, 3 latent nothing). */
static int parse_mask(pctx *c, const cJSON *j, srv_gen *g)
{
    const cJSON *mask = cJSON_GetObjectItemCaseSensitive(j, "mask");
    if (is_null(mask) || (cJSON_IsString(mask) && !mask->valuestring[0])) return 0;
    if (!cJSON_IsString(mask)) return bad(c, 422, "mask", "str type expected");
    if (!(g->mask_png = srv_base64_decode(mask->valuestring, &g->mask_len)) || !g->mask_len)
        return bad(c, 422, "mask", "not a base64 image");
    int blur = -1, blur_x = 4, blur_y = 4, fill = 0, full_res = 1;
    g->inpaint_padding = 0;
    if (get_int(c, j, "mask_blur", &blur, 0, 256) || get_int(c, j, "mask_blur_x", &blur_x, 0, 256) ||
        get_int(c, j, "mask_blur_y", &blur_y, 0, 256) || get_int(c, j, "inpainting_fill", &fill, 0, 3) ||
        get_bool(c, j, "inpaint_full_res", &full_res) ||
        get_int(c, j, "inpaint_full_res_padding", &g->inpaint_padding, 0, 16384) ||
        get_int(c, j, "inpainting_mask_invert", &g->mask_invert, 0, 1))
        return 422;
    if (blur >= 0) blur_x = blur_y = blur;
    if (blur_x != blur_y) return bad(c, 422, "mask_blur_x", "a different x and y mask blur is not supported");
    static const int fills[] = {FM_FILL_FILL, FM_FILL_ORIGINAL, FM_FILL_LATENT_NOISE, FM_FILL_LATENT_NOTHING};
    g->mask_blur = blur_x;
    g->inpaint_fill = fills[fill];
    g->inpaint_only_masked = full_res;
    return 0;
}

/* txt2img's hires fix (A1111's StableDiffusionProcessingTxt2Img: hr_scale
 * 2, denoising_strength 0.75, hr_upscaler None = "Latent"). */
static int parse_hires(pctx *c, const cJSON *j, srv_gen *g)
{
    int on = 0;
    if (get_bool(c, j, "enable_hr", &on)) return 422;
    if (!on) return 0;
    double scale = 2.0, denoise = 0.75; /* doubles: the infotext prints them as given */
    const char *prompt = NULL, *negative = NULL;
    if (get_double(c, j, "hr_scale", &scale) || get_double(c, j, "denoising_strength", &denoise) ||
        get_int(c, j, "hr_resize_x", &g->hires_width, 0, 1 << 20) ||
        get_int(c, j, "hr_resize_y", &g->hires_height, 0, 1 << 20) ||
        get_int(c, j, "hr_second_pass_steps", &g->hires_steps, 0, 1 << 20) ||
        get_name(c, j, "hr_upscaler", g->hires_upscaler, sizeof g->hires_upscaler) ||
        get_name(c, j, "hr_sampler_name", g->hires_sampler, sizeof g->hires_sampler) ||
        get_str(c, j, "hr_prompt", &prompt) || get_str(c, j, "hr_negative_prompt", &negative))
        return 422;
    if (!(scale > 0 && scale <= 16)) return bad(c, 422, "hr_scale", "must be in (0, 16]");
    if (!(denoise > 0 && denoise <= 1)) return bad(c, 422, "denoising_strength", "must be in (0, 1] with enable_hr");
    g->hires_scale = g->hires_width || g->hires_height ? 0 : scale;
    g->hires_denoise = denoise;
    if (!strcmp(g->hires_sampler, "Use same sampler")) g->hires_sampler[0] = 0; /* A1111's UI choice */
    if ((prompt && prompt[0] && !(g->hires_prompt = strdup(prompt))) ||
        (negative && negative[0] && !(g->hires_negative = strdup(negative))))
        return bad(c, 500, NULL, "out of memory");
    return 0;
}

static int parse_img2img(pctx *c, const cJSON *j, srv_gen *g)
{
    const cJSON *imgs = cJSON_GetObjectItemCaseSensitive(j, "init_images");
    if (is_null(imgs) || !cJSON_IsArray(imgs) || !cJSON_GetArraySize(imgs))
        return bad(c, 422, "init_images", is_null(imgs) ? "field required" : "value is not a valid list");
    const cJSON *first = cJSON_GetArrayItem(imgs, 0);
    if (!cJSON_IsString(first)) return bad(c, 422, "init_images", "str type expected");
    if (!(g->init_png = srv_base64_decode(first->valuestring, &g->init_len)) || !g->init_len)
        return bad(c, 422, "init_images", "not a base64 image");
    g->strength = 0.75f; /* A1111's default denoising_strength */
    if (get_float(c, j, "denoising_strength", &g->strength)) return 422;
    return parse_mask(c, j, g);
}

static int parse_fields(pctx *c, const cJSON *j, srv_gen *g)
{
    const char *prompt = NULL, *negative = NULL;
    double seed = -1;
    int rc = get_str(c, j, "prompt", &prompt) || get_str(c, j, "negative_prompt", &negative) ||
             get_int(c, j, "width", &g->width, 0, 1 << 20) || get_int(c, j, "height", &g->height, 0, 1 << 20) ||
             get_int(c, j, "steps", &g->steps, 0, 1 << 20) || get_float(c, j, "cfg_scale", &g->cfg) ||
             get_int(c, j, "batch_size", &g->batch_size, 1, SRV_MAX_IMAGES) ||
             get_int(c, j, "n_iter", &g->n_iter, 1, SRV_MAX_IMAGES) ||
             get_name(c, j, "sampler_index", g->sampler, sizeof g->sampler) ||
             get_name(c, j, "sampler_name", g->sampler, sizeof g->sampler) ||
             get_name(c, j, "scheduler", g->scheduler, sizeof g->scheduler);
    if (rc) return 422;
    const cJSON *sv = cJSON_GetObjectItemCaseSensitive(j, "seed");
    if (!is_null(sv)) {
        if (get_number(c, sv, "seed", &seed, "int")) return 422;
        if (seed != -1 && (seed < 0 || seed > 4294967295.0)) return bad(c, 422, "seed", "not in 0..4294967295 or -1");
    }
    g->seed = (int64_t)seed;
    if (g->batch_size * g->n_iter > SRV_MAX_IMAGES)
        return bad(c, 422, "batch_size", "batch_size x n_iter is over 16 images");
    const cJSON *ov = cJSON_GetObjectItemCaseSensitive(j, "override_settings");
    if (!is_null(ov)) {
        if (!cJSON_IsObject(ov)) return bad(c, 422, "override_settings", "value is not a valid dict");
        if (get_name(c, ov, "sd_model_checkpoint", g->model, sizeof g->model) ||
            get_int(c, ov, "CLIP_stop_at_last_layers", &g->clip_skip, 1, 12))
            return 422;
    }
    if (!(g->prompt = dup_or_empty(prompt)) || !(g->negative = dup_or_empty(negative)))
        return bad(c, 500, NULL, "out of memory");
    return g->img2img ? parse_img2img(c, j, g) : parse_hires(c, j, g);
}

int srv_parse_gen(const char *body, size_t n, int img2img, srv_gen *g, char *msg, size_t msg_n, char *loc,
                  size_t loc_n)
{
    pctx c = {msg, loc, msg_n, loc_n};
    memset(g, 0, sizeof *g);
    g->cfg = NAN;
    g->seed = -1;
    g->batch_size = g->n_iter = 1;
    g->img2img = img2img;
    if (srv_json_too_deep(body, n)) return bad(&c, 400, NULL, "JSON nested too deeply");
    cJSON *j = cJSON_ParseWithLength(body, n);
    if (!j) return bad(&c, 422, NULL, "body is not valid JSON");
    int rc;
    if (!cJSON_IsObject(j)) rc = bad(&c, 422, NULL, "value is not a valid dict");
    else if (!strings_ok(j->child, 0)) rc = bad(&c, 413, NULL, "a string is over the 1 MiB limit");
    else rc = parse_fields(&c, j, g);
    cJSON_Delete(j);
    if (rc) srv_gen_free(g);
    return rc;
}

void srv_gen_free(srv_gen *g)
{
    free(g->prompt);
    free(g->negative);
    free(g->init_png);
    free(g->mask_png);
    free(g->hires_prompt);
    free(g->hires_negative);
    g->prompt = g->negative = g->hires_prompt = g->hires_negative = NULL;
    g->init_png = g->mask_png = NULL;
}

/* A body that must be one JSON object: the parsed object, or NULL with
 * the status (400 too deep, 422 not an object) in *st. */
static cJSON *parse_object(pctx *c, const char *body, size_t n, int *st)
{
    *st = 0;
    if (srv_json_too_deep(body, n)) { *st = bad(c, 400, NULL, "JSON nested too deeply"); return NULL; }
    cJSON *j = cJSON_ParseWithLength(body, n);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        *st = bad(c, 422, NULL, "value is not a valid dict");
        return NULL;
    }
    return j;
}

int srv_parse_options(const char *body, size_t n, char *checkpoint, size_t cn, char *msg, size_t msg_n, char *loc,
                      size_t loc_n)
{
    pctx c = {msg, loc, msg_n, loc_n};
    int st;
    if (cn) checkpoint[0] = 0;
    cJSON *j = parse_object(&c, body, n, &st);
    if (!j) return st;
    const char *name = NULL;
    st = get_str(&c, j, "sd_model_checkpoint", &name);
    if (!st && name && strlen(name) >= cn) st = bad(&c, 404, NULL, "sd_model_checkpoint: no such checkpoint");
    else if (!st && name) {
        snprintf(checkpoint, cn, "%s", name);
        char *br = strstr(checkpoint, " ["); /* A1111's title: the " [hash]" dropped */
        if (br) *br = 0;
        if (!checkpoint[0]) st = bad(&c, 404, NULL, "sd_model_checkpoint: no such checkpoint");
    }
    cJSON_Delete(j);
    return st;
}

int srv_parse_png_info(const char *body, size_t n, uint8_t **png, size_t *len, char *msg, size_t msg_n, char *loc,
                       size_t loc_n)
{
    pctx c = {msg, loc, msg_n, loc_n};
    int st;
    *png = NULL;
    *len = 0;
    cJSON *j = parse_object(&c, body, n, &st);
    if (!j) return st;
    const cJSON *img = cJSON_GetObjectItemCaseSensitive(j, "image");
    if (!cJSON_IsString(img)) st = bad(&c, 422, "image", is_null(img) ? "field required" : "str type expected");
    else if (!(*png = srv_base64_decode(img->valuestring, len))) st = bad(&c, 422, "image", "not base64");
    cJSON_Delete(j);
    return st;
}
