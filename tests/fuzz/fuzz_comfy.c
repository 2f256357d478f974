/* libFuzzer: fmimage serve's ComfyUI graph validation (server/comfy.c's
 * POST /prompt, server/comfy_graph.c's walk and node mapping) on the bytes
 * as the request body, against -m tiny-sd1, --lora-dir tests/data/lora and
 * one uploaded image ("in.png" = tests/data/e2e.png, which LoadImage
 * decodes and crops); run from the repository root. The worker's side
 * (server/worker.c would bring the whole pipeline) is replaced below by a
 * queue that only holds the accepted jobs, -m's name as the one
 * checkpoint and a fixed LoRA listing. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/internal.h"

/* ---- server/worker.c's functions, as far as the graph walk uses them ---- */

int srv_queue_push(srv_state *s, srv_job *j)
{
    if (s->q_n >= s->q_cap) return 503;
    s->q[(s->q_head + s->q_n++) % s->q_cap] = j;
    return 0;
}

void srv_job_free(srv_job *j)
{
    if (!j) return;
    srv_gen_free(&j->g);
    cJSON_Delete(j->graph);
    free(j);
}

int srv_model_path(const srv_state *s, const char *name, char *path, size_t n)
{
    (void)s;
    if (strcmp(name, "tiny-sd1.safetensors")) return -1;
    snprintf(path, n, "tests/data/tiny-sd1.safetensors");
    return 0;
}

char **srv_list_files(const char *dir, const char *const *exts, int recurse, int *n)
{
    (void)dir; (void)exts; (void)recurse;
    static const char *const names[] = {"sd1_full.safetensors", "sd1_locon.safetensors"};
    char **v = malloc(sizeof names);
    for (int i = 0; i < 2; i++) v[i] = strdup(names[i]);
    *n = 2;
    return v;
}

void srv_free_list(char **v, int n)
{
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

static srv_state *state(void)
{
    static srv_config c = {.model = "tests/data/tiny-sd1.safetensors", .lora_dir = "tests/data/lora", .queue = 4};
    static srv_state s = {.c = &c, .q_cap = 4};
    static srv_job *q[4];
    if (s.q) return &s;
    s.q = q;
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.work, NULL);
    FILE *f = fopen("tests/data/e2e.png", "rb");
    static uint8_t png[1 << 20];
    srv_upload u = {.filename = "in.png", .data = png};
    u.has_image = 1;
    if (f) u.n = fread(png, 1, sizeof png, f), fclose(f);
    char *out = NULL;
    if (srv_comfy_upload(&s, &u, &out) != 200) abort();
    free(out);
    return &s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    srv_state *s = state();
    char *body = malloc(size + 1); /* srv_comfy reads n bytes; the NUL is for nobody */
    memcpy(body, data, size);
    body[size] = 0;
    char *out = NULL;
    size_t out_n = 0;
    const char *type;
    int st = srv_comfy(s, "POST", "/prompt", NULL, body, size, &out, &out_n, &type);
    if (st != 200 && st != 400 && st != 404 && st != 413 && st != 500 && st != 503) abort();
    if (!out) abort();
    free(out);
    while (s->q_n) { /* accepted: checked, never run */
        srv_job *j = s->q[s->q_head];
        if (!j->g.prompt || !j->g.negative || j->g.steps < 1 || j->g.steps > 1000) abort();
        if (j->g.img2img && (!j->g.init_png || !(j->g.strength > 0 && j->g.strength <= 1))) abort();
        srv_job_free(j);
        s->q_head = (s->q_head + 1) % s->q_cap;
        s->q_n--;
    }
    free(body);
    return 0;
}
