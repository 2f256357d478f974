/* ComfyUI's routes (server.py, execution.py): POST /prompt checks the
 * graph (comfy_graph.c: unknown node types and bad links are a 400 in
 * ComfyUI's error shape), queues the job and answers at once; /history,
 * /view, /queue, /object_info and /interrupt report and control;
 * /upload/image keeps images for LoadImage in memory. The noise is
 * ComfyUI's (PyTorch CPU, as `fmimage --rng cpu`). */
#include "internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "samplers/samplers.h"

static char *print(cJSON *j)
{
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
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
    if (srv_json_too_deep(body, n)) return srv_comfy_error(400, "invalid_prompt", "JSON nested too deeply", "", NULL, out);
    cJSON *req = cJSON_ParseWithLength(body, n);
    cJSON *graph = req ? cJSON_DetachItemFromObject(req, "prompt") : NULL;
    cJSON_Delete(req);
    if (!cJSON_IsObject(graph)) {
        cJSON_Delete(graph);
        return srv_comfy_error(400, "invalid_prompt", "Cannot execute because the prompt is not a graph", "", NULL, out);
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
            return srv_comfy_error(400, "invalid_prompt", "Cannot execute because a node is missing the class_type property.", det, NULL, out);
        }
        if (!srv_comfy_node(ct->valuestring)) {
            snprintf(msg, sizeof msg, "Cannot execute because node %.200s does not exist.", ct->valuestring);
            snprintf(det, sizeof det, "Node ID '#%.200s'", node->string);
            cJSON_Delete(graph);
            return srv_comfy_error(400, "invalid_prompt", msg, det, NULL, out);
        }
        if (!out_node && (!strcmp(ct->valuestring, "SaveImage") || !strcmp(ct->valuestring, "PreviewImage"))) {
            out_node = node;
            out_id = node->string;
        }
    }
    if (!out_node) {
        cJSON_Delete(graph);
        return srv_comfy_error(400, "prompt_no_outputs", "Prompt has no outputs", "", NULL, out);
    }
    srv_job *j = calloc(1, sizeof *j);
    int st = j ? srv_comfy_graph(s, graph, out_id, j, out) : srv_comfy_error(500, "internal", "out of memory", "", NULL, out);
    if (st) {
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
        return srv_comfy_error(503, "queue_full", "the queue is full; retry later", "", NULL, out);
    }
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "prompt_id", id);
    cJSON_AddNumberToObject(r, "number", (double)number);
    cJSON_AddObjectToObject(r, "node_errors");
    *out = print(r);
    return 200;
}

/* ---- /upload/image: the images LoadImage reads, in memory ---- */

/* One path component ComfyUI would write: no "/", "\\", leading ".",
 * control characters, ':' (a LoadImage annotation) or "[". */
static int plain_name(const char *n)
{
    if (!*n || *n == '.' || strlen(n) > 200) return 0;
    for (const unsigned char *p = (const unsigned char *)n; *p; p++)
        if (*p < 32 || *p == 127 || strchr("/\\:[]", *p)) return 0;
    return 1;
}

static srv_input *find_input(srv_state *s, const char *name)
{
    for (int i = 0; i < s->n_inputs; i++)
        if (!strcmp(s->inputs[i].name, name)) return &s->inputs[i];
    return NULL;
}

static void drop_input(srv_state *s, int i)
{
    s->input_bytes -= s->inputs[i].n;
    free(s->inputs[i].data);
    memmove(s->inputs + i, s->inputs + i + 1, sizeof s->inputs[0] * (size_t)(s->n_inputs - i - 1));
    s->n_inputs--;
}

void srv_inputs_free(srv_state *s)
{
    while (s->n_inputs) drop_input(s, s->n_inputs - 1);
}

int srv_input_get(srv_state *s, const char *name, uint8_t **data, size_t *n)
{
    char key[256];
    snprintf(key, sizeof key, "%s", name);
    size_t len = strlen(key);
    if (len > 8 && !strcmp(key + len - 8, " [input]")) key[len - 8] = 0; /* folder_paths' annotation */
    pthread_mutex_lock(&s->mu);
    const srv_input *in = strlen(name) < sizeof key ? find_input(s, key) : NULL;
    *data = in ? malloc(in->n) : NULL;
    if (*data) memcpy(*data, in->data, *n = in->n);
    pthread_mutex_unlock(&s->mu);
    return *data ? 0 : -1;
}

/* server.py's upload_image: "name (1).ext" when the name is taken and
 * overwrite is not true; answers {name, subfolder, type}. */
int srv_comfy_upload(srv_state *s, const srv_upload *u, char **out)
{
    const char *type = u->type[0] ? u->type : "input";
    if (!u->has_image || u->too_long) return srv_comfy_error(400, "bad_request", "no image field", "", NULL, out);
    if (!plain_name(u->filename) || (u->subfolder[0] && !plain_name(u->subfolder)) || strcmp(type, "input"))
        return srv_comfy_error(400, "bad_request", "bad filename, subfolder or type (type must be input)", "", NULL, out);
    if (strlen(u->subfolder) + strlen(u->filename) + 16 >= sizeof s->inputs[0].name)
        return srv_comfy_error(400, "bad_request", "subfolder/filename too long", "", NULL, out);
    if (!u->n || u->n > SRV_INPUT_BYTES) return srv_comfy_error(413, "bad_request", "image empty or too large", "", NULL, out);
    int overwrite = !strcmp(u->overwrite, "true") || !strcmp(u->overwrite, "1");
    char key[sizeof s->inputs[0].name * 2], name[sizeof s->inputs[0].name];
    const char *dot = strrchr(u->filename, '.');
    size_t stem = dot && dot != u->filename ? (size_t)(dot - u->filename) : strlen(u->filename);
    uint8_t *copy = malloc(u->n);
    if (!copy) return srv_comfy_error(500, "internal", "out of memory", "", NULL, out);
    memcpy(copy, u->data, u->n);
    pthread_mutex_lock(&s->mu);
    snprintf(name, sizeof name, "%s", u->filename);
    for (int i = 1;; i++) {
        snprintf(key, sizeof key, "%s%s%s", u->subfolder, u->subfolder[0] ? "/" : "", name);
        srv_input *old = find_input(s, key);
        if (!old) break;
        if (overwrite) {
            drop_input(s, (int)(old - s->inputs));
            break;
        }
        snprintf(name, sizeof name, "%.*s (%d)%s", (int)stem, u->filename, i, u->filename + stem);
    }
    while (s->n_inputs && (s->n_inputs == SRV_INPUTS || s->input_bytes + u->n > SRV_INPUT_BYTES)) drop_input(s, 0);
    srv_input *in = &s->inputs[s->n_inputs++];
    snprintf(in->name, sizeof in->name, "%.255s", key); /* fits: checked above */
    in->data = copy;
    in->n = u->n;
    s->input_bytes += u->n;
    pthread_mutex_unlock(&s->mu);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "name", name);
    cJSON_AddStringToObject(r, "subfolder", u->subfolder);
    cJSON_AddStringToObject(r, "type", type);
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

cJSON *srv_comfy_images(const srv_job *j)
{
    cJSON *imgs = cJSON_CreateArray();
    for (int k = 0; k < j->n_images; k++) {
        char name[64];
        image_name(j, k, name, sizeof name);
        cJSON *im = cJSON_CreateObject();
        cJSON_AddStringToObject(im, "filename", name);
        cJSON_AddStringToObject(im, "subfolder", "");
        cJSON_AddStringToObject(im, "type", "output");
        cJSON_AddItemToArray(imgs, im);
    }
    return imgs;
}

static cJSON *history_entry(const srv_job *j)
{
    cJSON *e = cJSON_CreateObject(), *outs = cJSON_AddObjectToObject(e, "outputs");
    cJSON_AddItemToObject(e, "prompt", queue_item(j));
    cJSON_AddItemToObject(cJSON_AddObjectToObject(outs, j->save_node), "images", srv_comfy_images(j));
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
    if (!png) return srv_comfy_error(404, "not_found", "no such image", "", NULL, out);
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

static const char *const yes_no[] = {"enable", "disable", NULL}, *const no_yes[] = {"disable", "enable", NULL};

static void enum_spec(cJSON *req, const char *name, const char *const *values)
{
    cJSON *l = list_spec(req, name);
    for (int i = 0; values[i]; i++) cJSON_AddItemToArray(l, cJSON_CreateString(values[i]));
}

static cJSON *add_node(cJSON *r, const char *name, const char *category, int output_node, cJSON **req)
{
    cJSON *n = cJSON_AddObjectToObject(r, name), *in = cJSON_AddObjectToObject(n, "input");
    *req = cJSON_AddObjectToObject(in, "required");
    const srv_node_def *d = srv_comfy_node(name);
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
    cJSON *ks_req = req;
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
    num_spec(req, "denoise", "FLOAT", 1, 0, 1);
    add_node(r, "KSamplerAdvanced", "sampling", 0, &req);
    spec(req, "model", "MODEL");
    enum_spec(req, "add_noise", yes_no);
    num_spec(req, "noise_seed", "INT", 0, 0, 4294967295.0);
    num_spec(req, "steps", "INT", 20, 1, 1000);
    num_spec(req, "cfg", "FLOAT", 8, 0, 100);
    cJSON_AddItemToObject(req, "sampler_name", cJSON_Duplicate(cJSON_GetObjectItem(ks_req, "sampler_name"), 1));
    cJSON_AddItemToObject(req, "scheduler", cJSON_Duplicate(cJSON_GetObjectItem(ks_req, "scheduler"), 1));
    spec(req, "positive", "CONDITIONING");
    spec(req, "negative", "CONDITIONING");
    spec(req, "latent_image", "LATENT");
    num_spec(req, "start_at_step", "INT", 0, 0, 10000);
    num_spec(req, "end_at_step", "INT", 10000, 0, 10000);
    enum_spec(req, "return_with_leftover_noise", no_yes);
    add_node(r, "LoraLoader", "loaders", 0, &req);
    spec(req, "model", "MODEL");
    spec(req, "clip", "CLIP");
    cJSON *ll = list_spec(req, "lora_name");
    static const char *const lora_exts[] = {".safetensors", NULL};
    v = srv_list_files(s->c->lora_dir, lora_exts, 1, &n);
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(ll, cJSON_CreateString(v[i]));
    srv_free_list(v, n);
    num_spec(req, "strength_model", "FLOAT", 1, -100, 100);
    num_spec(req, "strength_clip", "FLOAT", 1, -100, 100);
    add_node(r, "CLIPSetLastLayer", "conditioning", 0, &req);
    spec(req, "clip", "CLIP");
    num_spec(req, "stop_at_clip_layer", "INT", -1, -24, -1);
    add_node(r, "LoadImage", "image", 0, &req);
    cJSON *il = list_spec(req, "image");
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->n_inputs; i++) cJSON_AddItemToArray(il, cJSON_CreateString(s->inputs[i].name));
    pthread_mutex_unlock(&s->mu);
    add_node(r, "VAEEncode", "latent", 0, &req);
    spec(req, "pixels", "IMAGE");
    spec(req, "vae", "VAE");
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
    return srv_comfy_error(404, "not_found", "Not Found", url, NULL, out);
}
