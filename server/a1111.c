/* A1111's /sdapi/v1 routes (modules/api/api.py, modules/api/models.py):
 * the JSON each returns, built from the worker's results. */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diffusion/embeddings.h"
#include "samplers/samplers.h"

static char *print(cJSON *j)
{
    char *s = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    return s;
}

/* A1111's error shape: FastAPI's validation error for 422, else
 * api.py's handle_exception body. */
static int fail(int status, const char *loc, const char *msg, char **out)
{
    cJSON *j = cJSON_CreateObject();
    if (status == 422) {
        cJSON *d = cJSON_AddArrayToObject(j, "detail"), *e = cJSON_CreateObject(), *l = cJSON_CreateArray();
        cJSON_AddItemToArray(l, cJSON_CreateString("body"));
        if (loc && *loc) cJSON_AddItemToArray(l, cJSON_CreateString(loc));
        cJSON_AddItemToObject(e, "loc", l);
        cJSON_AddStringToObject(e, "msg", msg);
        cJSON_AddStringToObject(e, "type", "value_error");
        cJSON_AddItemToArray(d, e);
    } else {
        const char *kind = status == 404 ? "NotFound" : status == 503 ? "QueueFull" : status == 413 ? "PayloadTooLarge"
                                                                       : status == 400 ? "BadRequest" : "RuntimeError";
        cJSON_AddStringToObject(j, "error", kind);
        cJSON_AddStringToObject(j, "detail", msg);
        cJSON_AddStringToObject(j, "body", "");
        cJSON_AddStringToObject(j, "errors", msg);
    }
    *out = print(j);
    return status;
}

static void title(const srv_state *s, const char *file, char *buf, size_t n)
{
    char path[PATH_MAX];
    if (s->model && !srv_model_path(s, file, path, sizeof path) && !strcmp(path, s->model_path))
        snprintf(buf, n, "%s [%s]", file, s->model_hash);
    else snprintf(buf, n, "%s", file);
}

static char **checkpoints(const srv_state *s, int *n)
{
    static const char *const exts[] = {".safetensors", ".gguf", ".ckpt", NULL};
    if (s->c->model) {
        char **v = malloc(sizeof *v);
        const char *b = strrchr(s->c->model, '/');
        if (!v || !(v[0] = strdup(b ? b + 1 : s->c->model))) { free(v); *n = 0; return NULL; }
        *n = 1;
        return v;
    }
    return srv_list_files(s->c->models_dir, exts, 1, n);
}

static void stem(const char *file, char *buf, size_t n)
{
    const char *b = strrchr(file, '/');
    snprintf(buf, n, "%s", b ? b + 1 : file);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf) *dot = 0;
}

/* A1111's Processed.js(): the info string. */
static char *info_json(const srv_job *j)
{
    cJSON *o = cJSON_CreateObject(), *seeds = cJSON_CreateArray(), *texts = cJSON_CreateArray(),
          *prompts = cJSON_CreateArray(), *negs = cJSON_CreateArray(), *subs = cJSON_CreateArray();
    for (int i = 0; i < j->n_images; i++) {
        cJSON_AddItemToArray(seeds, cJSON_CreateNumber((double)j->seeds[i]));
        cJSON_AddItemToArray(subs, cJSON_CreateNumber((double)j->seeds[i]));
        cJSON_AddItemToArray(texts, cJSON_CreateString(j->infotexts[i]));
        cJSON_AddItemToArray(prompts, cJSON_CreateString(j->g.prompt));
        cJSON_AddItemToArray(negs, cJSON_CreateString(j->g.negative));
    }
    cJSON_AddStringToObject(o, "prompt", j->g.prompt);
    cJSON_AddItemToObject(o, "all_prompts", prompts);
    cJSON_AddStringToObject(o, "negative_prompt", j->g.negative);
    cJSON_AddItemToObject(o, "all_negative_prompts", negs);
    cJSON_AddNumberToObject(o, "seed", j->n_images ? (double)j->seeds[0] : -1);
    cJSON_AddItemToObject(o, "all_seeds", seeds);
    cJSON_AddNumberToObject(o, "subseed", j->n_images ? (double)j->seeds[0] : -1);
    cJSON_AddItemToObject(o, "all_subseeds", subs);
    cJSON_AddNumberToObject(o, "subseed_strength", 0);
    cJSON_AddNumberToObject(o, "width", j->width);
    cJSON_AddNumberToObject(o, "height", j->height);
    cJSON_AddStringToObject(o, "sampler_name", j->sampler_label);
    cJSON_AddNumberToObject(o, "cfg_scale", j->cfg);
    cJSON_AddNumberToObject(o, "steps", j->steps);
    cJSON_AddNumberToObject(o, "batch_size", j->g.batch_size);
    cJSON_AddBoolToObject(o, "restore_faces", 0);
    cJSON_AddNullToObject(o, "face_restoration_model");
    cJSON_AddStringToObject(o, "sd_model_name", j->model_name);
    cJSON_AddStringToObject(o, "sd_model_hash", j->model_hash);
    cJSON_AddNullToObject(o, "sd_vae_name");
    cJSON_AddNullToObject(o, "sd_vae_hash");
    if (j->g.img2img) cJSON_AddNumberToObject(o, "denoising_strength", j->g.strength);
    else cJSON_AddNullToObject(o, "denoising_strength");
    cJSON *extra = cJSON_AddObjectToObject(o, "extra_generation_params");
    cJSON_AddStringToObject(extra, "Schedule type", j->scheduler_label);
    cJSON_AddNumberToObject(o, "index_of_first_image", 0);
    cJSON_AddItemToObject(o, "infotexts", texts);
    cJSON_AddItemToObject(o, "styles", cJSON_CreateArray());
    cJSON_AddNumberToObject(o, "clip_skip", j->clip_skip);
    cJSON_AddBoolToObject(o, "is_using_inpainting_conditioning", 0);
    cJSON_AddStringToObject(o, "version", "fmimage " FM_VERSION);
    return print(o);
}

static int generate(srv_state *s, const char *body, size_t n, int img2img, int fd, char **out)
{
    srv_job *j = calloc(1, sizeof *j);
    char msg[600], loc[64];
    if (!j) return fail(500, NULL, "out of memory", out);
    int st = srv_parse_gen(body, n, img2img, &j->g, msg, sizeof msg, loc, sizeof loc);
    if (st) {
        free(j);
        return fail(st, loc, msg, out);
    }
    j->kind = SRV_JOB_GEN;
    snprintf(j->model, sizeof j->model, "%s", j->g.model);
    if (srv_queue_push(s, j)) {
        srv_job_free(j);
        return fail(503, NULL, "the queue is full; retry later", out);
    }
    srv_wait(s, j, fd);
    if (j->status != 200) {
        st = fail(j->status, "", j->msg, out);
        srv_job_free(j);
        return st;
    }
    cJSON *r = cJSON_CreateObject(), *imgs = cJSON_AddArrayToObject(r, "images");
    for (int i = 0; i < j->n_images; i++) cJSON_AddItemToArray(imgs, cJSON_CreateString(j->images[i]));
    /* parameters: the request as A1111 echoes it, images left out */
    cJSON *req = cJSON_ParseWithLength(body, n);
    if (!req) req = cJSON_CreateObject();
    if (img2img) {
        cJSON_ReplaceItemInObject(req, "init_images", cJSON_CreateNull());
        cJSON_DeleteItemFromObject(req, "mask");
        cJSON_AddNullToObject(req, "mask");
    }
    cJSON_AddItemToObject(r, "parameters", req);
    char *info = info_json(j);
    cJSON_AddStringToObject(r, "info", info ? info : "{}");
    free(info);
    srv_job_free(j);
    *out = print(r);
    return 200;
}

/* The live preview as A1111's current_image (base64 PNG), or NULL. */
static char *current_image(srv_state *s)
{
    pthread_mutex_lock(&s->mu);
    int w = s->current ? s->preview_w : 0, h = s->preview_h;
    size_t n = (size_t)w * h * 3;
    uint8_t *rgb = n ? malloc(n) : NULL;
    if (rgb) memcpy(rgb, s->preview, n);
    pthread_mutex_unlock(&s->mu);
    if (!rgb) return NULL;
    fm_error err = {0};
    size_t len = 0;
    uint8_t *png = srv_png_encode(rgb, w, h, NULL, &len, &err);
    char *b64 = png ? srv_base64_encode(png, len) : NULL;
    free(png);
    free(rgb);
    return b64;
}

/* A1111's ProgressResponse (modules/api/models.py). */
static int progress(srv_state *s, char **out)
{
    char *image = current_image(s);
    pthread_mutex_lock(&s->mu);
    int busy = s->current != NULL;
    double frac = 0;
    if (busy && s->image_count && s->steps)
        frac = (s->image_no + (double)s->step / s->steps) / s->image_count;
    double elapsed = busy ? srv_now() - s->t_start : 0;
    cJSON *r = cJSON_CreateObject(), *st;
    cJSON_AddNumberToObject(r, "progress", frac);
    cJSON_AddNumberToObject(r, "eta_relative", frac > 0 ? elapsed / frac - elapsed : 0);
    st = cJSON_AddObjectToObject(r, "state");
    cJSON_AddBoolToObject(st, "skipped", s->skip);
    cJSON_AddBoolToObject(st, "interrupted", s->interrupt);
    cJSON_AddBoolToObject(st, "stopping_generation", 0);
    cJSON_AddStringToObject(st, "job", busy ? "txt2img" : "");
    cJSON_AddNumberToObject(st, "job_count", busy ? 1 + s->q_n : s->q_n);
    cJSON_AddStringToObject(st, "job_timestamp", "0");
    cJSON_AddNumberToObject(st, "job_no", busy ? s->image_no : 0);
    cJSON_AddNumberToObject(st, "sampling_step", busy ? s->step : 0);
    cJSON_AddNumberToObject(st, "sampling_steps", busy ? s->steps : 0);
    pthread_mutex_unlock(&s->mu);
    if (image) cJSON_AddStringToObject(r, "current_image", image);
    else cJSON_AddNullToObject(r, "current_image");
    cJSON_AddNullToObject(r, "textinfo");
    free(image);
    *out = print(r);
    return 200;
}

static int stop_current(srv_state *s, int skip, char **out)
{
    pthread_mutex_lock(&s->mu);
    if (s->current) {
        if (skip) s->skip = 1;
        else s->interrupt = 1;
    }
    pthread_mutex_unlock(&s->mu);
    *out = strdup("{}");
    return 200;
}

static int options_get(srv_state *s, char **out)
{
    cJSON *r = cJSON_CreateObject();
    char t[300];
    pthread_mutex_lock(&s->mu);
    title(s, s->checkpoint, t, sizeof t);
    pthread_mutex_unlock(&s->mu);
    cJSON_AddStringToObject(r, "sd_model_checkpoint", t);
    cJSON_AddNumberToObject(r, "CLIP_stop_at_last_layers", 1);
    cJSON_AddStringToObject(r, "samples_format", "png");
    cJSON_AddBoolToObject(r, "samples_save", s->c->save_dir != NULL);
    cJSON_AddStringToObject(r, "outdir_samples", "");
    *out = print(r);
    return 200;
}

static int options_set(srv_state *s, const char *body, size_t n, int fd, char **out)
{
    char name[256], msg[300], loc[64], path[PATH_MAX];
    int st = srv_parse_options(body, n, name, sizeof name, msg, sizeof msg, loc, sizeof loc);
    if (st) return fail(st, loc, msg, out);
    if (!name[0]) return (*out = strdup("null")), 200;
    if (srv_model_path(s, name, path, sizeof path)) return fail(404, NULL, "sd_model_checkpoint: no such checkpoint", out);
    srv_job *job = calloc(1, sizeof *job);
    if (!job) return fail(500, NULL, "out of memory", out);
    snprintf(job->model, sizeof job->model, "%s", name);
    job->kind = SRV_JOB_LOAD;
    if (srv_queue_push(s, job)) st = fail(503, NULL, "the queue is full; retry later", out);
    else {
        srv_wait(s, job, fd);
        st = job->status == 200 ? ((*out = strdup("null")), 200) : fail(job->status, NULL, job->msg, out);
    }
    srv_job_free(job);
    return st;
}

static int samplers(char **out)
{
    cJSON *r = cJSON_CreateArray();
    for (int i = 0; i < FM_SAMPLER_COUNT; i++) {
        cJSON *e = cJSON_CreateObject(), *a = cJSON_AddArrayToObject(e, "aliases");
        cJSON_AddStringToObject(e, "name", smp_label((smp_id)i));
        cJSON_AddItemToArray(a, cJSON_CreateString(smp_name((smp_id)i)));
        cJSON_AddObjectToObject(e, "options");
        cJSON_AddItemToArray(r, e);
    }
    *out = print(r);
    return 200;
}

static int schedulers(char **out)
{
    cJSON *r = cJSON_CreateArray();
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "name", "automatic");
    cJSON_AddStringToObject(e, "label", "Automatic");
    cJSON_AddNullToObject(e, "aliases");
    cJSON_AddNumberToObject(e, "default_rho", -1);
    cJSON_AddBoolToObject(e, "need_inner_model", 0);
    cJSON_AddItemToArray(r, e);
    for (int i = 0; i < FM_SCHED_COUNT; i++) {
        e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "name", smp_scheduler_name((smp_scheduler_id)i));
        cJSON_AddStringToObject(e, "label", smp_scheduler_label((smp_scheduler_id)i));
        cJSON_AddNullToObject(e, "aliases");
        cJSON_AddNumberToObject(e, "default_rho", i == FM_SCHED_KARRAS ? 7 : -1);
        cJSON_AddBoolToObject(e, "need_inner_model", 0);
        cJSON_AddItemToArray(r, e);
    }
    *out = print(r);
    return 200;
}

static int sd_models(srv_state *s, char **out)
{
    int n;
    char **v = checkpoints(s, &n);
    cJSON *r = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_CreateObject();
        char t[300], st[256];
        pthread_mutex_lock(&s->mu);
        title(s, v[i], t, sizeof t);
        pthread_mutex_unlock(&s->mu);
        stem(v[i], st, sizeof st);
        cJSON_AddStringToObject(e, "title", t);
        cJSON_AddStringToObject(e, "model_name", st);
        char *h = strchr(t, '[');
        if (h) {
            h[11] = 0;
            cJSON_AddStringToObject(e, "hash", h + 1);
        }
        else cJSON_AddNullToObject(e, "hash");
        cJSON_AddNullToObject(e, "sha256");
        cJSON_AddStringToObject(e, "filename", v[i]); /* relative: the server's paths are not the client's business */
        cJSON_AddNullToObject(e, "config");
        cJSON_AddItemToArray(r, e);
    }
    srv_free_list(v, n);
    *out = print(r);
    return 200;
}

static int loras(srv_state *s, char **out)
{
    static const char *const exts[] = {".safetensors", NULL};
    int n;
    char **v = srv_list_files(s->c->lora_dir, exts, 1, &n);
    cJSON *r = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        cJSON *e = cJSON_CreateObject();
        char st[256];
        stem(v[i], st, sizeof st);
        cJSON_AddStringToObject(e, "name", st);
        cJSON_AddStringToObject(e, "alias", st);
        cJSON_AddStringToObject(e, "path", v[i]);
        cJSON_AddObjectToObject(e, "metadata");
        cJSON_AddItemToArray(r, e);
    }
    srv_free_list(v, n);
    *out = print(r);
    return 200;
}

/* A1111's EmbeddingItem for one file (step and checkpoint unknown: fmimage
 * reads no training metadata). */
static cJSON *embedding_item(const te_embedding *e, int shape)
{
    cJSON *i = cJSON_CreateObject();
    cJSON_AddNullToObject(i, "step");
    cJSON_AddNullToObject(i, "sd_checkpoint");
    cJSON_AddNullToObject(i, "sd_checkpoint_name");
    cJSON_AddNumberToObject(i, "shape", shape);
    cJSON_AddNumberToObject(i, "vectors", e->n_vectors);
    return i;
}

/* Loads the current checkpoint through the worker (the embeddings' shape
 * is the model's); 0 when one is loaded. */
static int ensure_loaded(srv_state *s, int fd, char **out)
{
    pthread_mutex_lock(&s->mu);
    int loaded = s->model != NULL;
    pthread_mutex_unlock(&s->mu);
    if (loaded) return 0;
    srv_job *job = calloc(1, sizeof *job);
    if (!job) return fail(500, NULL, "out of memory", out);
    job->kind = SRV_JOB_LOAD;
    int st = 0;
    if (srv_queue_push(s, job)) st = fail(503, NULL, "the queue is full; retry later", out);
    else {
        srv_wait(s, job, fd);
        if (job->status != 200) st = fail(job->status, NULL, job->msg, out);
    }
    srv_job_free(job);
    return st;
}

/* A1111's EmbeddingsResponse: the files of --embeddings-dir the loaded
 * model can use (loaded), and those it cannot (skipped: wrong width or
 * tower count, not an embedding). */
static int embeddings(srv_state *s, int fd, char **out)
{
    int st = s->c->embeddings_dir ? ensure_loaded(s, fd, out) : 0;
    if (st) return st;
    cJSON *r = cJSON_CreateObject(), *loaded = cJSON_AddObjectToObject(r, "loaded"),
          *skipped = cJSON_AddObjectToObject(r, "skipped");
    te_embeddings db = {0};
    fm_error err = {0};
    pthread_mutex_lock(&s->mu); /* the worker frees the model only under mu */
    if (s->model && s->c->embeddings_dir && !df_embeddings_open(s->model, s->c->embeddings_dir, 1, &db, &err)) {
        int shape = db.width[0] + (db.n_towers > 1 ? db.width[1] : 0);
        for (int i = 0; i < db.n; i++) {
            te_embedding *e = &db.e[i];
            int ok = e->loaded || !te_embedding_read(e, db.n_towers, db.width, &err);
            if (!cJSON_GetObjectItemCaseSensitive(ok ? loaded : skipped, e->name))
                cJSON_AddItemToObject(ok ? loaded : skipped, e->name, embedding_item(e, ok ? shape : 0));
        }
    }
    pthread_mutex_unlock(&s->mu);
    te_embeddings_free(&db);
    *out = print(r);
    return 200;
}

static int png_info(const char *body, size_t n, char **out)
{
    char msg[300], loc[64];
    uint8_t *png;
    size_t len;
    int st = srv_parse_png_info(body, n, &png, &len, msg, sizeof msg, loc, sizeof loc);
    if (st) return fail(st, loc, msg, out);
    char *text = srv_png_parameters(png, len);
    free(png);
    cJSON *r = cJSON_CreateObject(), *items = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "info", text ? text : "");
    if (text) cJSON_AddStringToObject(items, "parameters", text);
    cJSON_AddItemToObject(r, "items", items);
    cJSON_AddObjectToObject(r, "parameters");
    free(text);
    *out = print(r);
    return 200;
}

int srv_a1111(srv_state *s, const char *method, const char *url, const char *body, size_t n, int fd, char **out)
{
    int get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    const char *r = url + strlen("/sdapi/v1/");
    if (post && !strcmp(r, "txt2img")) return generate(s, body, n, 0, fd, out);
    if (post && !strcmp(r, "img2img")) return generate(s, body, n, 1, fd, out);
    if (get && !strcmp(r, "progress")) return progress(s, out);
    if (post && !strcmp(r, "interrupt")) return stop_current(s, 0, out);
    if (post && !strcmp(r, "skip")) return stop_current(s, 1, out);
    if (get && !strcmp(r, "options")) return options_get(s, out);
    if (post && !strcmp(r, "options")) return options_set(s, body, n, fd, out);
    if (get && !strcmp(r, "samplers")) return samplers(out);
    if (get && !strcmp(r, "schedulers")) return schedulers(out);
    if (get && !strcmp(r, "sd-models")) return sd_models(s, out);
    if (get && !strcmp(r, "loras")) return loras(s, out);
    if (get && !strcmp(r, "embeddings")) return embeddings(s, fd, out);
    if (get && !strcmp(r, "upscalers")) /* A1111's built-in ones (hr_upscaler); no model directory yet */
        return (*out = strdup("[{\"name\":\"None\",\"model_name\":null,\"model_path\":null,\"model_url\":null,\"scale\":4},"
                              "{\"name\":\"Lanczos\",\"model_name\":null,\"model_path\":null,\"model_url\":null,\"scale\":4},"
                              "{\"name\":\"Nearest\",\"model_name\":null,\"model_path\":null,\"model_url\":null,\"scale\":4}]")),
               200;
    if (get && !strcmp(r, "latent-upscale-modes"))
        return (*out = strdup("[{\"name\":\"Latent\"},{\"name\":\"Latent (antialiased)\"},{\"name\":\"Latent (bicubic)\"},"
                              "{\"name\":\"Latent (bicubic antialiased)\"},{\"name\":\"Latent (nearest)\"},"
                              "{\"name\":\"Latent (nearest-exact)\"}]")),
               200;
    if (post && !strcmp(r, "png-info")) return png_info(body, n, out);
    if (post && (!strcmp(r, "refresh-checkpoints") || !strcmp(r, "refresh-loras"))) return (*out = strdup("null")), 200;
    return fail(404, NULL, "Not Found", out);
}
