/* ComfyUI's API (server.py, execution.py) for its default txt2img workflow:
 * CheckpointLoaderSimple -> CLIPTextEncode x2 + EmptyLatentImage ->
 * KSampler -> VAEDecode -> SaveImage / PreviewImage. POST /prompt checks
 * the graph as ComfyUI's validate_prompt does (unknown node types and bad
 * links are a 400 in its error shape), queues the job and answers at once;
 * /history, /view, /queue, /object_info and /interrupt report and control.
 * The noise is ComfyUI's (PyTorch CPU, as `fmimage --rng cpu`). */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "samplers/samplers.h"

typedef struct node_def {
    const char *type;
    const char *outputs[3];
} node_def;

static const node_def nodes[] = {
    {"CheckpointLoaderSimple", {"MODEL", "CLIP", "VAE"}},
    {"CLIPTextEncode", {"CONDITIONING"}},
    {"EmptyLatentImage", {"LATENT"}},
    {"KSampler", {"LATENT"}},
    {"VAEDecode", {"IMAGE"}},
    {"SaveImage", {NULL}},
    {"PreviewImage", {NULL}},
};

static const node_def *def_of(const char *type)
{
    for (size_t i = 0; i < sizeof nodes / sizeof nodes[0]; i++)
        if (!strcmp(nodes[i].type, type)) return &nodes[i];
    return NULL;
}

static char *print(cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
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

/* {"error": {...}, "node_errors": {...}} as server.py's post_prompt */
static int prompt_error(int status, const char *type, const char *message, const char *details, cJSON *node_errors,
                        char **out)
{
    cJSON *r = cJSON_CreateObject();
    cJSON_AddItemToObject(r, "error", error_obj(type, message, details));
    cJSON_AddItemToObject(r, "node_errors", node_errors ? node_errors : cJSON_CreateObject());
    *out = print(r);
    return status;
}

/* One node's validation error, in node_errors[id]. */
static int node_error(const char *id, const char *class_type, const char *type, const char *message,
                      const char *details, char **out)
{
    cJSON *ne = cJSON_CreateObject(), *n = cJSON_AddObjectToObject(ne, id), *errs = cJSON_AddArrayToObject(n, "errors");
    cJSON_AddItemToArray(errs, error_obj(type, message, details));
    cJSON_AddItemToObject(n, "dependent_outputs", cJSON_CreateArray());
    cJSON_AddStringToObject(n, "class_type", class_type);
    return prompt_error(400, "prompt_outputs_failed_validation", "Prompt outputs failed validation", "", ne, out);
}

typedef struct walk {
    const cJSON *graph;
    char **out;
    int status;
} walk;

/* inputs[name] must be a link [id, index] to a node whose output index is
 * `type`; returns that node (and its id) or NULL with the error set. */
static const cJSON *follow(walk *w, const char *id, const cJSON *node, const char *name, const char *type,
                           const char **target_id)
{
    const char *ct = cJSON_GetObjectItem(node, "class_type")->valuestring;
    const cJSON *in = cJSON_GetObjectItem(cJSON_GetObjectItem(node, "inputs"), name);
    char details[300];
    snprintf(details, sizeof details, "%s", name);
    if (!in) {
        w->status = node_error(id, ct, "required_input_missing", "Required input is missing", details, w->out);
        return NULL;
    }
    const cJSON *tid = cJSON_GetArrayItem(in, 0), *idx = cJSON_GetArrayItem(in, 1);
    if (!cJSON_IsArray(in) || cJSON_GetArraySize(in) != 2 || !cJSON_IsString(tid) || !cJSON_IsNumber(idx)) {
        w->status = node_error(id, ct, "bad_linked_input", "Bad linked input, must be a length-2 list of [node_id, slot_index]", details, w->out);
        return NULL;
    }
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(w->graph, tid->valuestring);
    const node_def *d = t ? def_of(cJSON_GetObjectItem(t, "class_type")->valuestring) : NULL;
    int k = idx->valueint;
    if (!d || k < 0 || k > 2 || !d->outputs[k] || strcmp(d->outputs[k], type)) {
        snprintf(details, sizeof details, "%s, received_type(%s) mismatch input_type(%s)", name,
                 d && k >= 0 && k <= 2 && d->outputs[k] ? d->outputs[k] : "none", type);
        w->status = node_error(id, ct, "return_type_mismatch", "Return type mismatch between linked nodes", details, w->out);
        return NULL;
    }
    *target_id = tid->valuestring;
    return t;
}

static const cJSON *widget(walk *w, const char *id, const cJSON *node, const char *name, int string)
{
    const char *ct = cJSON_GetObjectItem(node, "class_type")->valuestring;
    const cJSON *v = cJSON_GetObjectItem(cJSON_GetObjectItem(node, "inputs"), name);
    if (!v) {
        w->status = node_error(id, ct, "required_input_missing", "Required input is missing", name, w->out);
        return NULL;
    }
    if (string ? !cJSON_IsString(v) : !cJSON_IsNumber(v)) {
        w->status = node_error(id, ct, "invalid_input_type", string ? "Failed to convert an input value to a STRING value"
                                                                      : "Failed to convert an input value to a number", name, w->out);
        return NULL;
    }
    return v;
}

static int text_of(walk *w, const char *ks_id, const cJSON *ks, const char *name, const char *ckpt_id, char **text)
{
    const char *cid, *clip_id;
    const cJSON *c = follow(w, ks_id, ks, name, "CONDITIONING", &cid);
    if (!c) return -1;
    const cJSON *t = widget(w, cid, c, "text", 1);
    if (!t || !follow(w, cid, c, "clip", "CLIP", &clip_id)) return -1;
    if (strcmp(clip_id, ckpt_id)) {
        w->status = node_error(cid, "CLIPTextEncode", "bad_linked_input", "fmimage: clip must come from the model's checkpoint", "clip", w->out);
        return -1;
    }
    if (strlen(t->valuestring) > SRV_STRING_MAX) {
        w->status = node_error(cid, "CLIPTextEncode", "value_bigger_than_max", "text too long", "text", w->out);
        return -1;
    }
    *text = strdup(t->valuestring);
    return 0;
}

/* The default workflow from its output node back to the checkpoint. */
static int walk_graph(srv_state *s, walk *w, const char *out_id, const cJSON *out_node, srv_job *j)
{
    const char *dec_id, *ks_id, *ck_id, *vae_id, *lat_id;
    const cJSON *dec = follow(w, out_id, out_node, "images", "IMAGE", &dec_id);
    const cJSON *ks = dec ? follow(w, dec_id, dec, "samples", "LATENT", &ks_id) : NULL;
    if (ks && strcmp(cJSON_GetObjectItem(ks, "class_type")->valuestring, "KSampler")) {
        w->status = node_error(dec_id, "VAEDecode", "bad_linked_input", "fmimage: samples must come from a KSampler", "samples", w->out);
        return -1;
    }
    const cJSON *ck = ks ? follow(w, ks_id, ks, "model", "MODEL", &ck_id) : NULL;
    if (!ck || !follow(w, dec_id, dec, "vae", "VAE", &vae_id)) return -1;
    if (strcmp(vae_id, ck_id)) {
        w->status = node_error(dec_id, "VAEDecode", "bad_linked_input", "fmimage: the VAE must come from the model's checkpoint", "vae", w->out);
        return -1;
    }
    const cJSON *lat = follow(w, ks_id, ks, "latent_image", "LATENT", &lat_id);
    if (!lat) return -1;
    if (strcmp(cJSON_GetObjectItem(lat, "class_type")->valuestring, "EmptyLatentImage")) {
        w->status = node_error(ks_id, "KSampler", "bad_linked_input", "fmimage: latent_image must be an EmptyLatentImage", "latent_image", w->out);
        return -1;
    }
    const cJSON *ckpt = widget(w, ck_id, ck, "ckpt_name", 1), *seed = widget(w, ks_id, ks, "seed", 0),
                *steps = seed ? widget(w, ks_id, ks, "steps", 0) : NULL, *cfg = steps ? widget(w, ks_id, ks, "cfg", 0) : NULL,
                *smp = cfg ? widget(w, ks_id, ks, "sampler_name", 1) : NULL,
                *sch = smp ? widget(w, ks_id, ks, "scheduler", 1) : NULL,
                *den = sch ? widget(w, ks_id, ks, "denoise", 0) : NULL,
                *wd = den ? widget(w, lat_id, lat, "width", 0) : NULL, *ht = wd ? widget(w, lat_id, lat, "height", 0) : NULL,
                *bs = ht ? widget(w, lat_id, lat, "batch_size", 0) : NULL;
    if (!ckpt || !bs) return -1;
    char path[PATH_MAX];
    if (strlen(ckpt->valuestring) > 255 || srv_model_path(s, ckpt->valuestring, path, sizeof path)) {
        w->status = 404; /* a name outside --models-dir: 404, as every name of the server */
        cJSON *ne = cJSON_CreateObject(), *n = cJSON_AddObjectToObject(ne, ck_id), *errs = cJSON_AddArrayToObject(n, "errors");
        cJSON_AddItemToArray(errs, error_obj("value_not_in_list", "Value not in list", "ckpt_name: not found"));
        cJSON_AddItemToObject(n, "dependent_outputs", cJSON_CreateArray());
        cJSON_AddStringToObject(n, "class_type", "CheckpointLoaderSimple");
        prompt_error(404, "prompt_outputs_failed_validation", "Prompt outputs failed validation", "", ne, w->out);
        return -1;
    }
    const char *bad = NULL;
    smp_id sid;
    smp_scheduler_id schid;
    if (seed->valuedouble < 0 || seed->valuedouble > 4294967295.0) bad = "seed: fmimage takes 0..4294967295";
    else if (bs->valueint != 1) bad = "batch_size: fmimage makes one image per prompt (1)";
    else if (fabs(den->valuedouble - 1) > 1e-9) bad = "denoise: txt2img needs 1.0";
    else if (smp_find(smp->valuestring) < 0 || smp_scheduler_find(sch->valuestring) < 0 ||
             smp_pair(smp->valuestring, sch->valuestring, &sid, &schid, NULL))
        bad = "sampler_name/scheduler: not one of /object_info's";
    if (bad) {
        w->status = node_error(ks_id, "KSampler", "value_not_in_list", "Value not in list", bad, w->out);
        return -1;
    }
    srv_gen *g = &j->g;
    memset(g, 0, sizeof *g);
    g->batch_size = g->n_iter = 1;
    g->seed = (int64_t)seed->valuedouble;
    g->steps = steps->valueint;
    g->cfg = (float)cfg->valuedouble;
    g->width = wd->valueint;
    g->height = ht->valueint;
    g->rng_cpu = 1;
    snprintf(g->sampler, sizeof g->sampler, "%s", smp->valuestring);
    snprintf(g->scheduler, sizeof g->scheduler, "%s", sch->valuestring);
    snprintf(j->model, sizeof j->model, "%s", ckpt->valuestring);
    if (text_of(w, ks_id, ks, "positive", ck_id, &g->prompt) || text_of(w, ks_id, ks, "negative", ck_id, &g->negative))
        return -1;
    if (g->steps < 1 || g->steps > 1000 || g->width < 1 || g->height < 1 || g->width > 16384 || g->height > 16384) {
        w->status = node_error(ks_id, "KSampler", "value_bigger_than_max", "Value out of range", "steps/width/height", w->out);
        return -1;
    }
    return 0;
}

static void new_id(char id[40])
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    static const char hex[] = "0123456789abcdef";
    uint64_t x = (uint64_t)t.tv_nsec * 0x9E3779B97F4A7C15ull ^ (uint64_t)t.tv_sec, y = x * 0xBF58476D1CE4E5B9ull + (uint64_t)&id;
    char raw[33];
    for (int i = 0; i < 16; i++) raw[i] = hex[(x >> (4 * i)) & 15], raw[16 + i] = hex[(y >> (4 * i)) & 15];
    snprintf(id, 40, "%.8s-%.4s-4%.3s-a%.3s-%.12s", raw, raw + 8, raw + 12, raw + 15, raw + 18);
}

static int post_prompt(srv_state *s, const char *body, size_t n, char **out)
{
    if (srv_json_too_deep(body, n)) return prompt_error(400, "invalid_prompt", "JSON nested too deeply", "", NULL, out);
    cJSON *req = cJSON_ParseWithLength(body, n);
    cJSON *graph = req ? cJSON_DetachItemFromObject(req, "prompt") : NULL;
    cJSON_Delete(req);
    if (!cJSON_IsObject(graph)) {
        cJSON_Delete(graph);
        return prompt_error(400, "invalid_prompt", "Cannot execute because the prompt is not a graph", "", NULL, out);
    }
    const cJSON *node, *out_node = NULL;
    const char *out_id = NULL;
    cJSON_ArrayForEach(node, graph)
    {
        const cJSON *ct = cJSON_GetObjectItem(node, "class_type");
        char msg[300], det[300];
        if (!cJSON_IsObject(node) || !cJSON_IsString(ct) || !cJSON_IsObject(cJSON_GetObjectItem(node, "inputs"))) {
            snprintf(det, sizeof det, "Node ID '#%.200s'", node->string);
            cJSON_Delete(graph);
            return prompt_error(400, "invalid_prompt", "Cannot execute because a node is missing the class_type property.", det, NULL, out);
        }
        if (!def_of(ct->valuestring)) {
            snprintf(msg, sizeof msg, "Cannot execute because node %.200s does not exist.", ct->valuestring);
            snprintf(det, sizeof det, "Node ID '#%.200s'", node->string);
            cJSON_Delete(graph);
            return prompt_error(400, "invalid_prompt", msg, det, NULL, out);
        }
        if (!out_node && (!strcmp(ct->valuestring, "SaveImage") || !strcmp(ct->valuestring, "PreviewImage"))) {
            out_node = node;
            out_id = node->string;
        }
    }
    if (!out_node) {
        cJSON_Delete(graph);
        return prompt_error(400, "prompt_no_outputs", "Prompt has no outputs", "", NULL, out);
    }
    srv_job *j = calloc(1, sizeof *j);
    walk w = {graph, out, 0};
    if (!j || walk_graph(s, &w, out_id, out_node, j)) {
        int st = j ? w.status : prompt_error(500, "internal", "out of memory", "", NULL, out);
        srv_job_free(j);
        cJSON_Delete(graph);
        return st;
    }
    j->kind = SRV_JOB_GEN;
    j->async = 1;
    j->graph = graph;
    snprintf(j->save_node, sizeof j->save_node, "%s", out_id);
    new_id(j->prompt_id);
    pthread_mutex_lock(&s->mu);
    j->number = s->next_number++;
    pthread_mutex_unlock(&s->mu);
    char id[40];
    long number = j->number;
    memcpy(id, j->prompt_id, sizeof id);
    if (srv_queue_push(s, j)) {
        srv_job_free(j);
        return prompt_error(503, "queue_full", "the queue is full; retry later", "", NULL, out);
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "prompt_id", id);
    cJSON_AddNumberToObject(r, "number", (double)number);
    cJSON_AddObjectToObject(r, "node_errors");
    *out = print(r);
    return 200;
}

void srv_history_add(srv_state *s, srv_job *j)
{
    int cap = (int)(sizeof s->history / sizeof s->history[0]);
    if (s->n_history == cap) {
        srv_job_free(s->history[0]);
        memmove(s->history, s->history + 1, sizeof s->history[0] * (size_t)(cap - 1));
        s->n_history--;
    }
    s->history[s->n_history++] = j;
}

void srv_history_free(srv_state *s)
{
    for (int i = 0; i < s->n_history; i++) srv_job_free(s->history[i]);
    s->n_history = 0;
}

static void image_name(const srv_job *j, int k, char *buf, size_t n)
{
    snprintf(buf, n, "fmimage_%.8s_%05d_.png", j->prompt_id, k + 1);
}

static cJSON *queue_item(const srv_job *j)
{
    cJSON *a = cJSON_CreateArray();
    cJSON_AddItemToArray(a, cJSON_CreateNumber((double)j->number));
    cJSON_AddItemToArray(a, cJSON_CreateString(j->prompt_id));
    cJSON_AddItemToArray(a, j->graph ? cJSON_Duplicate(j->graph, 1) : cJSON_CreateObject());
    cJSON_AddItemToArray(a, cJSON_CreateObject());
    cJSON *outs = cJSON_CreateArray();
    cJSON_AddItemToArray(outs, cJSON_CreateString(j->save_node));
    cJSON_AddItemToArray(a, outs);
    return a;
}

static cJSON *history_entry(const srv_job *j)
{
    cJSON *e = cJSON_CreateObject(), *outs = cJSON_AddObjectToObject(e, "outputs");
    cJSON_AddItemToObject(e, "prompt", queue_item(j));
    cJSON *imgs = cJSON_AddArrayToObject(cJSON_AddObjectToObject(outs, j->save_node), "images");
    for (int k = 0; k < j->n_images; k++) {
        char name[64];
        image_name(j, k, name, sizeof name);
        cJSON *im = cJSON_CreateObject();
        cJSON_AddStringToObject(im, "filename", name);
        cJSON_AddStringToObject(im, "subfolder", "");
        cJSON_AddStringToObject(im, "type", "output");
        cJSON_AddItemToArray(imgs, im);
    }
    cJSON *st = cJSON_AddObjectToObject(e, "status"), *msgs = cJSON_AddArrayToObject(st, "messages");
    int ok = j->status == 200;
    cJSON_AddStringToObject(st, "status_str", ok ? "success" : "error");
    cJSON_AddBoolToObject(st, "completed", ok);
    if (!ok) {
        cJSON *m = cJSON_CreateArray(), *d = cJSON_CreateObject();
        cJSON_AddItemToArray(m, cJSON_CreateString("execution_error"));
        cJSON_AddStringToObject(d, "prompt_id", j->prompt_id);
        cJSON_AddStringToObject(d, "exception_message", j->msg);
        cJSON_AddItemToArray(m, d);
        cJSON_AddItemToArray(msgs, m);
    }
    return e;
}

static int get_history(srv_state *s, const char *id, char **out)
{
    cJSON *r = cJSON_CreateObject();
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_history; i++)
        if (!id || !strcmp(id, s->history[i]->prompt_id))
            cJSON_AddItemToObject(r, s->history[i]->prompt_id, history_entry(s->history[i]));
    pthread_mutex_unlock(&s->mu);
    *out = print(r);
    return 200;
}

static int get_view(srv_state *s, const char *file, char **out, size_t *out_n, const char **type)
{
    pthread_mutex_lock(&s->mu);
    const char *b64 = NULL;
    for (int i = 0; i < s->n_history && !b64 && file; i++)
        for (int k = 0; k < s->history[i]->n_images; k++) {
            char name[64];
            image_name(s->history[i], k, name, sizeof name);
            if (!strcmp(name, file)) b64 = s->history[i]->images[k];
        }
    uint8_t *png = b64 ? srv_base64_decode(b64, out_n) : NULL;
    pthread_mutex_unlock(&s->mu);
    if (!png) return prompt_error(404, "not_found", "no such image", "", NULL, out);
    *out = (char *)png;
    *type = "image/png";
    return 200;
}

static int get_queue(srv_state *s, char **out)
{
    cJSON *r = cJSON_CreateObject(), *run = cJSON_AddArrayToObject(r, "queue_running"),
          *pend = cJSON_AddArrayToObject(r, "queue_pending");
    pthread_mutex_lock(&s->mu);
    if (s->current && s->current->async) cJSON_AddItemToArray(run, queue_item(s->current));
    for (int i = 0; i < s->q_n; i++) {
        const srv_job *j = s->q[(s->q_head + i) % s->q_cap];
        if (j->async) cJSON_AddItemToArray(pend, queue_item(j));
    }
    pthread_mutex_unlock(&s->mu);
    *out = print(r);
    return 200;
}

static cJSON *spec(cJSON *req, const char *name, const char *type)
{
    cJSON *a = cJSON_CreateArray();
    cJSON_AddItemToArray(a, cJSON_CreateString(type));
    cJSON_AddItemToObject(req, name, a);
    return a;
}

static void num_spec(cJSON *req, const char *name, const char *type, double def, double min, double max)
{
    cJSON *a = spec(req, name, type), *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "default", def);
    cJSON_AddNumberToObject(o, "min", min);
    cJSON_AddNumberToObject(o, "max", max);
    cJSON_AddItemToArray(a, o);
}

static cJSON *list_spec(cJSON *req, const char *name)
{
    cJSON *a = cJSON_CreateArray(), *l = cJSON_CreateArray();
    cJSON_AddItemToArray(a, l);
    cJSON_AddItemToObject(req, name, a);
    return l;
}

static cJSON *add_node(cJSON *r, const char *name, const char *category, int output_node, cJSON **req)
{
    cJSON *n = cJSON_AddObjectToObject(r, name), *in = cJSON_AddObjectToObject(n, "input");
    *req = cJSON_AddObjectToObject(in, "required");
    const node_def *d = def_of(name);
    cJSON *o = cJSON_AddArrayToObject(n, "output"), *on = cJSON_AddArrayToObject(n, "output_name");
    for (int i = 0; i < 3 && d->outputs[i]; i++) {
        cJSON_AddItemToArray(o, cJSON_CreateString(d->outputs[i]));
        cJSON_AddItemToArray(on, cJSON_CreateString(d->outputs[i]));
    }
    cJSON_AddStringToObject(n, "name", name);
    cJSON_AddStringToObject(n, "display_name", name);
    cJSON_AddStringToObject(n, "category", category);
    cJSON_AddBoolToObject(n, "output_node", output_node);
    return n;
}

static int object_info(srv_state *s, char **out)
{
    cJSON *r = cJSON_CreateObject(), *req;
    add_node(r, "CheckpointLoaderSimple", "loaders", 0, &req);
    cJSON *ck = list_spec(req, "ckpt_name");
    static const char *const exts[] = {".safetensors", ".gguf", ".ckpt", NULL};
    int n = 0;
    char **v = NULL;
    if (s->c->model) {
        const char *b = strrchr(s->c->model, '/');
        cJSON_AddItemToArray(ck, cJSON_CreateString(b ? b + 1 : s->c->model));
    } else {
        v = srv_list_files(s->c->models_dir, exts, 1, &n);
        for (int i = 0; i < n; i++) cJSON_AddItemToArray(ck, cJSON_CreateString(v[i]));
        srv_free_list(v, n);
    }
    add_node(r, "CLIPTextEncode", "conditioning", 0, &req);
    spec(req, "text", "STRING");
    spec(req, "clip", "CLIP");
    add_node(r, "EmptyLatentImage", "latent", 0, &req);
    num_spec(req, "width", "INT", 512, 16, 16384);
    num_spec(req, "height", "INT", 512, 16, 16384);
    num_spec(req, "batch_size", "INT", 1, 1, 1);
    add_node(r, "KSampler", "sampling", 0, &req);
    spec(req, "model", "MODEL");
    num_spec(req, "seed", "INT", 0, 0, 4294967295.0);
    num_spec(req, "steps", "INT", 20, 1, 1000);
    num_spec(req, "cfg", "FLOAT", 8, 0, 100);
    cJSON *sl = list_spec(req, "sampler_name");
    for (int i = 0; i < FM_SAMPLER_COUNT; i++) cJSON_AddItemToArray(sl, cJSON_CreateString(smp_name((smp_id)i)));
    cJSON *schl = list_spec(req, "scheduler");
    for (int i = 0; i < FM_SCHED_COUNT; i++) cJSON_AddItemToArray(schl, cJSON_CreateString(smp_scheduler_name((smp_scheduler_id)i)));
    spec(req, "positive", "CONDITIONING");
    spec(req, "negative", "CONDITIONING");
    spec(req, "latent_image", "LATENT");
    num_spec(req, "denoise", "FLOAT", 1, 1, 1);
    add_node(r, "VAEDecode", "latent", 0, &req);
    spec(req, "samples", "LATENT");
    spec(req, "vae", "VAE");
    add_node(r, "SaveImage", "image", 1, &req);
    spec(req, "images", "IMAGE");
    add_node(r, "PreviewImage", "image", 1, &req);
    spec(req, "images", "IMAGE");
    *out = print(r);
    return 200;
}

int srv_comfy(srv_state *s, const char *method, const char *url, const char *query_file, const char *body, size_t n,
              char **out, size_t *out_n, const char **type)
{
    int get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    *type = "application/json";
    *out_n = 0;
    if (post && !strcmp(url, "/prompt")) return post_prompt(s, body, n, out);
    if (get && !strcmp(url, "/history")) return get_history(s, NULL, out);
    if (get && !strncmp(url, "/history/", 9)) return get_history(s, url + 9, out);
    if (get && !strcmp(url, "/view")) return get_view(s, query_file, out, out_n, type);
    if (get && !strcmp(url, "/queue")) return get_queue(s, out);
    if (get && !strcmp(url, "/object_info")) return object_info(s, out);
    if (post && !strcmp(url, "/interrupt")) {
        pthread_mutex_lock(&s->mu);
        if (s->current) s->interrupt = 1;
        pthread_mutex_unlock(&s->mu);
        *out = strdup("{}");
        return 200;
    }
    return prompt_error(404, "not_found", "Not Found", url, NULL, out);
}
