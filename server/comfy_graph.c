/* A ComfyUI graph (API format) to one fmimage job. The graph is walked
 * from its output node back to the checkpoint, checking every link as
 * ComfyUI's validate_prompt does (errors in its shape), and each node's
 * semantics is mapped onto fm_params where the library can run it:
 *   MODEL  <- CheckpointLoaderSimple | LoraLoader (strength_model)
 *   CLIP   <- CheckpointLoaderSimple | LoraLoader (strength_clip) | CLIPSetLastLayer
 *   LATENT <- EmptyLatentImage (txt2img) | VAEEncode(LoadImage) (img2img)
 *   KSampler / KSamplerAdvanced -> VAEDecode -> SaveImage / PreviewImage
 *   KSampler -> LatentUpscale -> KSampler (A1111's latent hires fix)
 * A KSampler at denoise d < 1 runs ComfyUI's KSampler.set_steps: the last
 * `steps` sigmas of an int(steps / d)-step schedule; KSamplerAdvanced's
 * start_at_step s runs the last steps - s of a `steps` schedule. Both are
 * img2img with fm_params.steps = the schedule's length and a strength
 * whose A1111 rule (t_enc = int(strength * steps)) picks exactly that tail.
 * What the library cannot run (leftover noise, no added noise, a partial
 * denoise of an empty latent, a second pass with another seed, cfg or
 * text, area/bislerp upscales) is a 400 naming it. */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "samplers/samplers.h"

static const srv_node_def nodes[] = {
    {"CheckpointLoaderSimple", {"MODEL", "CLIP", "VAE"}},
    {"CLIPTextEncode", {"CONDITIONING"}},
    {"CLIPSetLastLayer", {"CLIP"}},
    {"LoraLoader", {"MODEL", "CLIP"}},
    {"EmptyLatentImage", {"LATENT"}},
    {"LoadImage", {"IMAGE", "MASK"}},
    {"VAEEncode", {"LATENT"}},
    {"LatentUpscale", {"LATENT"}},
    {"KSampler", {"LATENT"}},
    {"KSamplerAdvanced", {"LATENT"}},
    {"VAEDecode", {"IMAGE"}},
    {"SaveImage", {NULL}},
    {"PreviewImage", {NULL}},
};

const srv_node_def *srv_comfy_node(const char *type)
{
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++)
        if (!strcmp(nodes[i].type, type)) return &nodes[i];
    return NULL;
}

static cJSON *error_obj(const char *type, const char *message, const char *details)
{
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "type", type);
    cJSON_AddStringToObject(e, "message", message);
    cJSON_AddStringToObject(e, "details", details);
    cJSON_AddObjectToObject(e, "extra_info");
    return e;
}

int srv_comfy_error(int status, const char *type, const char *message, const char *details, cJSON *node_errors,
                    char **out)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddItemToObject(r, "error", error_obj(type, message, details));
    cJSON_AddItemToObject(r, "node_errors", node_errors ? node_errors : cJSON_CreateObject());
    *out = cJSON_PrintUnformatted(r);
    cJSON_Delete(r);
    return status;
}

typedef struct walk {
    srv_state *s;
    const cJSON *graph;
    char **out;
    int status;
} walk;

static const char *class_of(const cJSON *node) { return cJSON_GetObjectItem(node, "class_type")->valuestring; }

/* One node's validation error, in node_errors[id] (ComfyUI's shape). */
static int fail(walk *w, int status, const char *id, const char *type, const char *message, const char *details)
{
    const cJSON *node = cJSON_GetObjectItemCaseSensitive(w->graph, id);
    cJSON *ne = cJSON_CreateObject(), *n = cJSON_AddObjectToObject(ne, id), *errs = cJSON_AddArrayToObject(n, "errors");
    cJSON_AddItemToArray(errs, error_obj(type, message, details));
    cJSON_AddItemToObject(n, "dependent_outputs", cJSON_CreateArray());
    cJSON_AddStringToObject(n, "class_type", node ? class_of(node) : "");
    w->status = srv_comfy_error(status, "prompt_outputs_failed_validation", "Prompt outputs failed validation", "",
                                ne, w->out);
    return -1;
}

/* What the library cannot run: a 400 saying so. */
static int unsupported(walk *w, const char *id, const char *what)
{
    char msg[300];
    snprintf(msg, sizeof msg, "fmimage cannot run this: %s", what);
    return fail(w, 400, id, "value_not_in_list", msg, what);
}

/* inputs[name] must be a link [id, index] to a node whose output index is
 * `type`; returns that node (its id in *target_id) or NULL, error set. */
static const cJSON *follow(walk *w, const char *id, const cJSON *node, const char *name, const char *type,
                           const char **target_id)
{
    const cJSON *in = cJSON_GetObjectItem(cJSON_GetObjectItem(node, "inputs"), name);
    char details[300];
    if (!in) return fail(w, 400, id, "required_input_missing", "Required input is missing", name), NULL;
    const cJSON *tid = cJSON_GetArrayItem(in, 0), *idx = cJSON_GetArrayItem(in, 1);
    if (!cJSON_IsArray(in) || cJSON_GetArraySize(in) != 2 || !cJSON_IsString(tid) || !cJSON_IsNumber(idx))
        return fail(w, 400, id, "bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                    name), NULL;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(w->graph, tid->valuestring);
    const srv_node_def *d = t ? srv_comfy_node(class_of(t)) : NULL;
    int k = idx->valueint;
    const char *got = d && k >= 0 && k < 3 ? d->outputs[k] : NULL;
    if (!got || strcmp(got, type)) {
        snprintf(details, sizeof details, "%s, received_type(%s) mismatch input_type(%s)", name, got ? got : "none", type);
        return fail(w, 400, id, "return_type_mismatch", "Return type mismatch between linked nodes", details), NULL;
    }
    *target_id = tid->valuestring;
    return t;
}

/* A widget value: a string (string = 1) or a number. */
static const cJSON *widget(walk *w, const char *id, const cJSON *node, const char *name, int string)
{
    const cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(node, "inputs"), name);
    if (!v) return fail(w, 400, id, "required_input_missing", "Required input is missing", name), NULL;
    if (string ? !cJSON_IsString(v) : !cJSON_IsNumber(v))
        return fail(w, 400, id, "invalid_input_type",
                    string ? "Failed to convert an input value to a STRING value"
                           : "Failed to convert an input value to a number", name), NULL;
    if (string && strlen(v->valuestring) > SRV_STRING_MAX)
        return fail(w, 413, id, "value_bigger_than_max", "Value bigger than max", name), NULL;
    return v;
}

static int number_in(walk *w, const char *id, const cJSON *node, const char *name, double lo, double hi, double *v)
{
    const cJSON *j = widget(w, id, node, name, 0);
    if (!j) return -1;
    char det[200];
    snprintf(det, sizeof det, "%s: %.17g not in %.17g..%.17g", name, j->valuedouble, lo, hi);
    if (!(j->valuedouble >= lo)) return fail(w, 400, id, "value_smaller_than_min", "Value smaller than min", det);
    if (!(j->valuedouble <= hi)) return fail(w, 400, id, "value_bigger_than_max", "Value bigger than max", det);
    *v = j->valuedouble;
    return 0;
}

/* ---- MODEL and CLIP: the checkpoint, its LoRAs, the last CLIP layer ---- */

#define MAX_CHAIN 16

typedef struct lora_use {
    const char *node;  /* the LoraLoader's id */
    char stem[256];
    double te, unet;   /* 0 where this chain does not pass through it */
} lora_use;

typedef struct chain {
    const char *ckpt;  /* the CheckpointLoaderSimple's id */
    lora_use v[MAX_CHAIN];
    int n;
    int clip_skip;     /* CLIP chains: -stop_at_clip_layer, 0 = none */
} chain;

/* A LoraLoader's lora_name: a .safetensors file inside --lora-dir whose
 * stem names it alone (prompt tags find LoRAs by stem). */
static int lora_stem(walk *w, const char *id, const cJSON *node, char *stem, size_t n)
{
    const cJSON *name = widget(w, id, node, "lora_name", 1);
    if (!name) return -1;
    char path[PATH_MAX];
    const char *b = strrchr(name->valuestring, '/');
    b = b ? b + 1 : name->valuestring;
    size_t len = strlen(b);
    if (srv_resolve(w->s->c->lora_dir, name->valuestring, path, sizeof path) || len <= 12 || len - 12 >= n ||
        strcasecmp(b + len - 12, ".safetensors"))
        return fail(w, 404, id, "value_not_in_list", "Value not in list", "lora_name: not found in --lora-dir");
    snprintf(stem, n, "%.*s", (int)(len - 12), b);
    if (strpbrk(stem, ":<>"))
        return unsupported(w, id, "lora_name: a name with ':', '<' or '>' (fmimage passes LoRAs as prompt tags)");
    static const char *const exts[] = {".safetensors", NULL};
    int nf = 0, same = 0;
    char **files = srv_list_files(w->s->c->lora_dir, exts, 1, &nf);
    for (int i = 0; i < nf; i++) {
        const char *fb = strrchr(files[i], '/');
        fb = fb ? fb + 1 : files[i];
        same += strlen(fb) == len && !strncmp(fb, stem, len - 12);
    }
    srv_free_list(files, nf);
    if (same != 1) return unsupported(w, id, "lora_name: two files in --lora-dir have this stem");
    return 0;
}

/* Follows inputs[name] of type MODEL or CLIP back to the checkpoint. */
static int walk_chain(walk *w, const char *id, const cJSON *node, const char *name, int clip, chain *c)
{
    memset(c, 0, sizeof *c);
    const char *type = clip ? "CLIP" : "MODEL";
    for (int depth = 0;; depth++) {
        const char *tid;
        const cJSON *t = follow(w, id, node, name, type, &tid);
        if (!t) return -1;
        const char *ct = class_of(t);
        if (!strcmp(ct, "CheckpointLoaderSimple")) {
            c->ckpt = tid;
            return 0;
        }
        if (depth >= MAX_CHAIN) return unsupported(w, tid, "more than 16 LoRA/CLIP nodes in a chain");
        if (!strcmp(ct, "CLIPSetLastLayer")) {
            double stop;
            if (number_in(w, tid, t, "stop_at_clip_layer", -24, -1, &stop)) return -1;
            if (!c->clip_skip) c->clip_skip = (int)-stop; /* the outermost wins, as each node overrides */
        } else { /* LoraLoader */
            lora_use *u = &c->v[c->n++];
            double sm, sc;
            if (lora_stem(w, tid, t, u->stem, sizeof u->stem) ||
                number_in(w, tid, t, "strength_model", -100, 100, &sm) ||
                number_in(w, tid, t, "strength_clip", -100, 100, &sc))
                return -1;
            u->node = tid;
            u->te = clip ? sc : 0;
            u->unet = clip ? 0 : sm;
        }
        id = tid;
        node = t;
        name = clip ? "clip" : "model";
    }
}

static int same_clip(const chain *a, const chain *b)
{
    if (a->n != b->n || a->clip_skip != b->clip_skip || strcmp(a->ckpt, b->ckpt)) return 0;
    for (int i = 0; i < a->n; i++)
        if (strcmp(a->v[i].node, b->v[i].node)) return 0;
    return 1;
}

/* The prompt with one <lora:STEM:TE:UNET> tag per LoraLoader, checkpoint
 * side first (the text itself is unchanged: the tags are removed before
 * it is encoded). */
static char *with_lora_tags(const char *text, const chain *model, const chain *clip)
{
    size_t cap = strlen(text) + 1 + (size_t)(2 * MAX_CHAIN) * 320;
    char *p = malloc(cap);
    if (!p) return NULL;
    size_t len = (size_t)snprintf(p, cap, "%s", text);
    for (int pass = 0; pass < 2; pass++) {
        const chain *c = pass ? clip : model, *other = pass ? model : clip;
        for (int i = c->n - 1; i >= 0; i--) {
            const lora_use *u = &c->v[i], *o = NULL;
            for (int k = 0; k < other->n; k++)
                if (!strcmp(other->v[k].node, u->node)) o = &other->v[k];
            if (pass && o) continue; /* already written from the model's side */
            double te = pass ? u->te : o ? o->te : 0, unet = pass ? 0 : u->unet;
            len += (size_t)snprintf(p + len, cap - len, "<lora:%s:%.9g:%.9g>", u->stem, te, unet);
        }
    }
    return p;
}

static int text_of(walk *w, const char *sid, const cJSON *ks, const char *name, chain *clip, char **text)
{
    const char *cid;
    const cJSON *c = follow(w, sid, ks, name, "CONDITIONING", &cid);
    if (!c) return -1;
    if (strcmp(class_of(c), "CLIPTextEncode")) return unsupported(w, sid, "conditioning from anything but CLIPTextEncode");
    const cJSON *t = widget(w, cid, c, "text", 1);
    if (!t || walk_chain(w, cid, c, "clip", 1, clip)) return -1;
    *text = strdup(t->valuestring);
    return *text ? 0 : fail(w, 500, cid, "internal", "out of memory", "text");
}

/* ---- LATENT: an empty one, or an uploaded image through the VAE ---- */

/* ComfyUI's VAE.vae_encode_crop_pixels: each side cut down to a multiple
 * of 8, centred (offset (side % 8) / 2). */
static uint8_t *crop_to_8(const uint8_t *rgb, int w, int h, int *cw, int *ch)
{
    *cw = w / 8 * 8;
    *ch = h / 8 * 8;
    int x0 = (w % 8) / 2, y0 = (h % 8) / 2;
    uint8_t *o = *cw && *ch ? malloc((size_t)*cw * *ch * 3) : NULL;
    for (int y = 0; o && y < *ch; y++) memcpy(o + (size_t)y * *cw * 3, rgb + ((size_t)(y + y0) * w + x0) * 3, (size_t)*cw * 3);
    return o;
}

/* An uploaded image cropped to multiples of 8 and encoded again as PNG. */
static uint8_t *reencode_cropped(const uint8_t *file, size_t n, int *w, int *h, size_t *png_n, char *why, size_t why_n)
{
    fm_error err = {0};
    uint8_t *rgb = NULL, *cropped = NULL, *png = NULL;
    int iw = 0, ih = 0;
    if (!(rgb = srv_image_decode("image", file, n, 0, &iw, &ih, &err))) snprintf(why, why_n, "not an image (PNG, JPEG)");
    else if (!(cropped = crop_to_8(rgb, iw, ih, w, h))) snprintf(why, why_n, "smaller than 8x8 pixels");
    else if (!(png = srv_png_encode(cropped, *w, *h, NULL, png_n, &err))) snprintf(why, why_n, "%s", err.msg);
    free(rgb);
    free(cropped);
    return png;
}

/* VAEEncode(pixels <- LoadImage): the job's init image (g->init_png). */
static int vae_encode(walk *w, const char *eid, const cJSON *enc, const char *ckpt, srv_gen *g)
{
    const char *lid, *vid;
    const cJSON *ld = follow(w, eid, enc, "pixels", "IMAGE", &lid);
    if (!ld || !follow(w, eid, enc, "vae", "VAE", &vid)) return -1;
    if (strcmp(vid, ckpt)) return unsupported(w, eid, "vae: a VAE from another checkpoint than the model's");
    if (strcmp(class_of(ld), "LoadImage")) return unsupported(w, eid, "pixels from anything but LoadImage");
    const cJSON *name = widget(w, lid, ld, "image", 1);
    if (!name) return -1;
    uint8_t *file = NULL;
    size_t n = 0;
    if (srv_input_get(w->s, name->valuestring, &file, &n))
        return fail(w, 404, lid, "value_not_in_list", "Value not in list", "image: not uploaded (POST /upload/image)");
    char why[600];
    g->init_png = reencode_cropped(file, n, &g->width, &g->height, &g->init_len, why, sizeof why);
    free(file);
    if (!g->init_png) {
        char det[700];
        snprintf(det, sizeof det, "image: %s", why);
        return fail(w, 400, lid, "invalid_input_type", "Invalid image file", det);
    }
    g->img2img = 1;
    return 0;
}

/* ---- the sampler ---- */

typedef struct sampling {
    int schedule_steps; /* the schedule's length */
    int run_steps;      /* its last steps that run */
    double denoise;     /* KSampler's (1 for KSamplerAdvanced) */
} sampling;

static int sampler_node(walk *w, const char *sid, const cJSON *ks, srv_gen *g, sampling *sm)
{
    int adv = !strcmp(class_of(ks), "KSamplerAdvanced");
    double seed, steps, cfg;
    const cJSON *smp, *sch;
    if (number_in(w, sid, ks, adv ? "noise_seed" : "seed", 0, 4294967295.0, &seed) ||
        number_in(w, sid, ks, "steps", 1, 1000, &steps) || number_in(w, sid, ks, "cfg", 0, 100, &cfg) ||
        !(smp = widget(w, sid, ks, "sampler_name", 1)) || !(sch = widget(w, sid, ks, "scheduler", 1)))
        return -1;
    smp_id id;
    smp_scheduler_id schid;
    if (smp_find(smp->valuestring) < 0 || smp_scheduler_find(sch->valuestring) < 0 ||
        smp_pair(smp->valuestring, sch->valuestring, &id, &schid, NULL))
        return fail(w, 400, sid, "value_not_in_list", "Value not in list", "sampler_name/scheduler: not one of /object_info's");
    g->seed = (int64_t)seed;
    g->cfg = (float)cfg;
    snprintf(g->sampler, sizeof g->sampler, "%s", smp->valuestring);
    snprintf(g->scheduler, sizeof g->scheduler, "%s", sch->valuestring);
    int n = (int)steps;
    sm->schedule_steps = sm->run_steps = n;
    sm->denoise = 1;
    if (!adv) {
        double d;
        if (number_in(w, sid, ks, "denoise", 0, 1, &d)) return -1;
        sm->denoise = d;
        if (d <= 0) return unsupported(w, sid, "denoise 0 (the latent unchanged)");
        if (d <= 0.9999) sm->schedule_steps = (int)(n / d); /* KSampler.set_steps */
        if (sm->schedule_steps > 1000) return unsupported(w, sid, "steps / denoise over 1000");
        return 0;
    }
    const cJSON *add = widget(w, sid, ks, "add_noise", 1), *left = add ? widget(w, sid, ks, "return_with_leftover_noise", 1) : NULL;
    double start, end;
    if (!left || number_in(w, sid, ks, "start_at_step", 0, 10000, &start) || number_in(w, sid, ks, "end_at_step", 0, 10000, &end))
        return -1;
    if (strcmp(add->valuestring, "enable")) return unsupported(w, sid, "add_noise disable (fmimage always adds the seed's noise)");
    if (end < n) return unsupported(w, sid, "end_at_step before the last step (a latent with leftover noise)");
    if (start >= n) return unsupported(w, sid, "start_at_step at or past steps (the latent unchanged)");
    sm->run_steps = n - (int)start;
    return 0;
}

/* One sampler's settings but its latent: the sampler's widgets, the
 * model chain to the checkpoint (its name must resolve), the two texts
 * through one CLIP chain; g->prompt carries the LoRA tags. */
typedef struct pass {
    const char *id;
    const cJSON *node;
    sampling sm;
    chain model, clip;
    char *positive;    /* the text without tags */
} pass;

static int pass_settings(walk *w, const char *ks_id, const cJSON *ks, srv_job *j, pass *ps)
{
    srv_gen *g = &j->g;
    chain neg;
    memset(ps, 0, sizeof *ps);
    ps->id = ks_id;
    ps->node = ks;
    if (walk_chain(w, ks_id, ks, "model", 0, &ps->model)) return -1;
    const cJSON *ck = cJSON_GetObjectItemCaseSensitive(w->graph, ps->model.ckpt),
                *ckpt = widget(w, ps->model.ckpt, ck, "ckpt_name", 1);
    if (!ckpt) return -1;
    char path[PATH_MAX];
    if (strlen(ckpt->valuestring) > 255 || srv_model_path(w->s, ckpt->valuestring, path, sizeof path))
        return fail(w, 404, ps->model.ckpt, "value_not_in_list", "Value not in list", "ckpt_name: not found");
    snprintf(j->model, sizeof j->model, "%s", ckpt->valuestring);
    if (sampler_node(w, ks_id, ks, g, &ps->sm) || text_of(w, ks_id, ks, "positive", &ps->clip, &ps->positive) ||
        text_of(w, ks_id, ks, "negative", &neg, &g->negative))
        return -1;
    if (!same_clip(&ps->clip, &neg) || strcmp(ps->clip.ckpt, ps->model.ckpt))
        return unsupported(w, ks_id, "positive and negative through different CLIPs (LoRAs, last layer, checkpoint)");
    free(g->prompt);
    if (!(g->prompt = with_lora_tags(ps->positive, &ps->model, &ps->clip)))
        return fail(w, 500, ks_id, "internal", "out of memory", "");
    g->clip_skip = ps->clip.clip_skip;
    return 0;
}

static void pass_free(pass *ps)
{
    free(ps->positive);
    ps->positive = NULL;
}

/* LatentUpscale's upscale_method as A1111's latent upscaler: the same
 * torch.nn.functional.interpolate mode, no antialias. */
static const char *latent_upscaler(const char *method)
{
    static const char *const map[][2] = {
        {"nearest-exact", "Latent (nearest-exact)"}, {"bilinear", "Latent"}, {"bicubic", "Latent (bicubic)"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (!strcmp(method, map[i][0])) return map[i][1];
    return NULL;
}

/* first -> LatentUpscale -> second (a KSampler): A1111's latent hires fix,
 * whose second pass takes the last `steps` of an int(steps / denoise)
 * schedule from the seed's fresh noise, as ComfyUI's second KSampler. */
static int hires_pass(walk *w, const char *up_id, const cJSON *up, const pass *second, const srv_job *sj, srv_job *j,
                      const pass *first)
{
    const srv_gen *g2 = &sj->g;
    srv_gen *g = &j->g;
    const cJSON *method = widget(w, up_id, up, "upscale_method", 1), *crop = method ? widget(w, up_id, up, "crop", 1) : NULL;
    double wd, ht;
    if (!crop || number_in(w, up_id, up, "width", 0, 16384, &wd) || number_in(w, up_id, up, "height", 0, 16384, &ht))
        return -1;
    const char *upscaler = latent_upscaler(method->valuestring);
    if (!upscaler) return unsupported(w, up_id, "upscale_method area or bislerp (A1111's latent modes: nearest-exact, bilinear, bicubic)");
    int w2 = (int)wd / 8 * 8, h2 = (int)ht / 8 * 8; /* ComfyUI: width // 8 latent pixels */
    if (!w2 || !h2) return unsupported(w, up_id, "width or height 0 (kept from the aspect ratio)");
    if ((long)w2 * g->height != (long)h2 * g->width)
        return unsupported(w, up_id, "another aspect ratio than the first pass's (crop and stretch differ from A1111's)");
    if (strcmp(class_of(second->node), "KSampler")) return unsupported(w, second->id, "a KSamplerAdvanced second pass");
    if (g2->seed != g->seed || g2->cfg != g->cfg || strcmp(g2->scheduler, g->scheduler))
        return unsupported(w, second->id, "a second pass with another seed, cfg or scheduler than the first");
    if (strcmp(g2->prompt, g->prompt) || strcmp(g2->negative, g->negative) || !same_clip(&first->model, &second->model) ||
        g2->clip_skip != g->clip_skip)
        return unsupported(w, second->id, "a second pass with other texts, model or CLIP than the first");
    g->hires_width = w2;
    g->hires_height = h2;
    /* A1111's hires pass runs the last steps of int(steps / min(denoise,
     * 0.999)): ComfyUI's set_steps for every denoise but (0.999, 0.9999] */
    g->hires_steps = second->sm.run_steps;
    g->hires_denoise = second->sm.denoise;
    if ((int)(g->hires_steps / fmin(g->hires_denoise, 0.999)) != second->sm.schedule_steps)
        return unsupported(w, second->id, "this steps/denoise pair (A1111's 0.999 cap gives another schedule)");
    snprintf(g->hires_upscaler, sizeof g->hires_upscaler, "%s", upscaler);
    if (strcmp(g2->sampler, g->sampler)) snprintf(g->hires_sampler, sizeof g->hires_sampler, "%s", g2->sampler);
    return 0;
}

/* The default, img2img and two-pass (LatentUpscale) workflows, from the
 * output node back. */
int srv_comfy_graph(srv_state *s, const cJSON *graph, const char *out_id, srv_job *j, char **out)
{
    walk w = {s, graph, out, 0};
    walk *wp = &w;
    const cJSON *out_node = cJSON_GetObjectItemCaseSensitive(graph, out_id);
    const char *dec_id, *ks_id, *vae_id, *lat_id;
    const cJSON *dec = follow(wp, out_id, out_node, "images", "IMAGE", &dec_id);
    if (!dec) return w.status;
    if (strcmp(class_of(dec), "VAEDecode")) return unsupported(wp, out_id, "images from anything but VAEDecode"), w.status;
    const cJSON *ks = follow(wp, dec_id, dec, "samples", "LATENT", &ks_id);
    if (!ks) return w.status;
    if (strncmp(class_of(ks), "KSampler", 8)) return unsupported(wp, dec_id, "samples from anything but a KSampler"), w.status;
    srv_gen *g = &j->g;
    memset(g, 0, sizeof *g);
    g->batch_size = g->n_iter = 1;
    g->rng_cpu = 1;
    pass last, first;
    int rc = pass_settings(wp, ks_id, ks, j, &last);
    if (!rc && !follow(wp, dec_id, dec, "vae", "VAE", &vae_id)) rc = -1;
    if (!rc && strcmp(vae_id, last.model.ckpt)) rc = unsupported(wp, dec_id, "vae: a VAE from another checkpoint than the model's");
    const cJSON *lat = rc ? NULL : follow(wp, ks_id, ks, "latent_image", "LATENT", &lat_id);
    if (!lat) {
        pass_free(&last);
        return w.status;
    }
    snprintf(j->sampler_node, sizeof j->sampler_node, "%.63s", ks_id);
    pass *main_pass = &last;
    const char *up_id = NULL;
    const cJSON *up = NULL;
    srv_job *second = NULL;
    if (!strcmp(class_of(lat), "LatentUpscale")) { /* the last sampler is the second pass */
        up = lat;
        up_id = lat_id;
        const char *first_id;
        const cJSON *fk = follow(wp, up_id, up, "samples", "LATENT", &first_id);
        if (fk && strncmp(class_of(fk), "KSampler", 8)) rc = unsupported(wp, up_id, "samples from anything but a KSampler");
        if (!fk || rc || !(second = calloc(1, sizeof *second))) {
            pass_free(&last);
            return w.status ? w.status : srv_comfy_error(500, "internal", "out of memory", "", NULL, out);
        }
        second->g = *g; /* the second pass's settings move aside; the first's fill g */
        memset(g, 0, sizeof *g);
        g->batch_size = g->n_iter = 1;
        g->rng_cpu = 1;
        rc = pass_settings(wp, first_id, fk, j, &first);
        lat = rc ? NULL : follow(wp, first_id, fk, "latent_image", "LATENT", &lat_id);
        if (!lat) rc = -1;
        main_pass = &first;
        ks_id = first_id;
    }
    const char *lt = rc ? "" : class_of(lat);
    const sampling *sm = &main_pass->sm;
    if (rc) {
        /* the error is set */
    } else if (!strcmp(lt, "EmptyLatentImage")) {
        double wd = 0, ht = 0, bs = 0;
        if (number_in(wp, lat_id, lat, "width", 16, 16384, &wd) || number_in(wp, lat_id, lat, "height", 16, 16384, &ht) ||
            number_in(wp, lat_id, lat, "batch_size", 1, 4096, &bs))
            rc = -1;
        else if (bs != 1)
            rc = unsupported(wp, lat_id, "batch_size over 1 (fmimage makes one image per prompt)");
        else if (sm->run_steps != sm->schedule_steps)
            rc = unsupported(wp, ks_id, "a partial denoise (denoise < 1, start_at_step > 0) of an empty latent");
        g->width = (int)wd;
        g->height = (int)ht;
        g->steps = sm->schedule_steps;
        if (!rc && up) rc = hires_pass(wp, up_id, up, &last, second, j, &first);
    } else if (!strcmp(lt, "VAEEncode") && !up) {
        rc = vae_encode(wp, lat_id, lat, main_pass->model.ckpt, g);
        g->steps = sm->schedule_steps;
        /* A1111's img2img runs int(min(strength, 0.999) * steps) + 1 steps:
         * half a step below run_steps / steps picks exactly run_steps. */
        g->strength = sm->run_steps == sm->schedule_steps ? 1.0f : (float)((sm->run_steps - 0.5) / sm->schedule_steps);
    } else {
        rc = unsupported(wp, ks_id, up ? "a two-pass workflow whose first pass is not txt2img" : "latent_image from this node");
    }
    if (second) {
        srv_gen_free(&second->g);
        free(second);
        pass_free(&first);
    }
    pass_free(&last);
    return rc ? w.status : 0;
}
