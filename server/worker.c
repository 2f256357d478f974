/* The one worker thread: takes jobs from the bounded FIFO, keeps one model
 * (and, inside it, the LoRA merge) loaded between jobs, and makes the
 * images exactly as `fmimage` does: the same fm_params from the same
 * settings, the same infotext, the same PNG writer. */
#include "internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "core/sha256.h"
#include "diffusion/lora.h"
#include "samplers/samplers.h"

double srv_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec * 1e-9;
}

int srv_queue_push(srv_state *s, srv_job *j)
{
    pthread_mutex_lock(&s->mu);
    int rc = 0;
    if (s->stopping || s->q_n >= s->q_cap) {
        rc = 503;
    } else {
        s->q[(s->q_head + s->q_n++) % s->q_cap] = j;
        pthread_cond_signal(&s->work);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

static int hung_up(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN | POLLRDHUP};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) return 1;
    char c;
    return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

static void cancel_locked(srv_state *s, srv_job *j)
{
    if (s->current == j) {
        s->interrupt = 1;
        return;
    }
    for (int i = 0; i < s->q_n; i++) {
        int k = (s->q_head + i) % s->q_cap;
        if (s->q[k] != j) continue;
        for (int m = i; m + 1 < s->q_n; m++) s->q[(s->q_head + m) % s->q_cap] = s->q[(s->q_head + m + 1) % s->q_cap];
        s->q_n--;
        j->status = 499;
        snprintf(j->msg, sizeof j->msg, "the client went away");
        j->done = 1;
        return;
    }
}

void srv_wait(srv_state *s, srv_job *j, int client_fd)
{
    pthread_mutex_lock(&s->mu);
    int cancelled = 0;
    while (!j->done) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        t.tv_nsec += 200000000L;
        if (t.tv_nsec >= 1000000000L) { t.tv_sec++; t.tv_nsec -= 1000000000L; }
        pthread_cond_timedwait(&s->done, &s->mu, &t);
        if (!j->done && !cancelled && client_fd >= 0 && hung_up(client_fd)) {
            cancelled = 1;
            cancel_locked(s, j);
        }
    }
    pthread_mutex_unlock(&s->mu);
}

void srv_job_free(srv_job *j)
{
    if (!j) return;
    srv_gen_free(&j->g);
    cJSON_Delete(j->graph);
    for (int i = 0; i < j->n_images; i++) {
        free(j->images[i]);
        free(j->infotexts[i]);
    }
    free(j);
}

/* ---- files ---- */

static int has_ext(const char *name, const char *const *exts)
{
    size_t n = strlen(name);
    for (int i = 0; exts[i]; i++) {
        size_t k = strlen(exts[i]);
        if (n > k && !strcasecmp(name + n - k, exts[i])) return 1;
    }
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void list_into(const char *root, const char *sub, const char *const *exts, int depth, char ***v, int *n,
                      int *cap)
{
    char dir[PATH_MAX * 2];
    snprintf(dir, sizeof dir, "%s%s%s", root, *sub ? "/" : "", sub);
    DIR *d = depth > 4 ? NULL : opendir(dir);
    struct dirent *e;
    while (d && (e = readdir(d)) && *n < 4096) {
        if (e->d_name[0] == '.') continue;
        char rel[PATH_MAX], full[PATH_MAX * 3], real[PATH_MAX];
        if (snprintf(rel, sizeof rel, "%s%s%s", sub, *sub ? "/" : "", e->d_name) >= (int)sizeof rel) continue;
        snprintf(full, sizeof full, "%s/%s", root, rel);
        struct stat sb;
        if (stat(full, &sb)) continue;
        if (S_ISDIR(sb.st_mode) && depth >= 0) {
            list_into(root, rel, exts, depth + 1, v, n, cap);
        } else if (S_ISREG(sb.st_mode) && has_ext(e->d_name, exts) && !srv_resolve(root, rel, real, sizeof real)) {
            if (*n == *cap) {
                char **nv = realloc(*v, sizeof **v * (size_t)(*cap = *cap ? *cap * 2 : 16));
                if (!nv) break;
                *v = nv;
            }
            (*v)[(*n)++] = strdup(rel);
        }
    }
    if (d) closedir(d);
}

char **srv_list_files(const char *dir, const char *const *exts, int recurse, int *n)
{
    char **v = NULL;
    int cap = 0;
    *n = 0;
    if (dir) list_into(dir, "", exts, recurse ? 0 : -1, &v, n, &cap);
    if (*n) qsort(v, (size_t)*n, sizeof *v, cmp_str);
    return v;
}

void srv_free_list(char **v, int n)
{
    for (int i = 0; i < n; i++) free(v[i]);
    free(v);
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* A checkpoint name: a file under --models-dir (A1111's titles "name
 * [hash]" and bare stems are accepted too), or -m's own file name. */
int srv_model_path(const srv_state *s, const char *name, char *path, size_t n)
{
    char clean[256];
    snprintf(clean, sizeof clean, "%s", name);
    char *br = strstr(clean, " [");
    if (br) *br = 0;
    if (s->c->model) {
        const char *b = base_name(s->c->model);
        size_t stem = strcspn(b, ".");
        if (strcmp(clean, b) && !(strlen(clean) == stem && !strncmp(clean, b, stem))) return -1;
        snprintf(path, n, "%s", s->c->model);
        return 0;
    }
    if (!srv_resolve(s->c->models_dir, clean, path, n)) return 0;
    static const char *const exts[] = {".safetensors", ".gguf", ".ckpt", NULL};
    char with[300];
    for (int i = 0; exts[i]; i++) {
        snprintf(with, sizeof with, "%s%s", clean, exts[i]);
        if (!srv_resolve(s->c->models_dir, with, path, n)) return 0;
    }
    return -1;
}

static int file_hash10(const char *path, char out[11])
{
    FILE *f = fopen(path, "rb");
    if (!f) return -1;
    core_sha256 h;
    core_sha256_init(&h);
    static const size_t chunk = 1 << 20;
    uint8_t *buf = malloc(chunk), dig[32];
    size_t r;
    while (buf && (r = fread(buf, 1, chunk, f)) > 0) core_sha256_update(&h, buf, r);
    int rc = !buf || ferror(f) ? -1 : 0;
    fclose(f);
    free(buf);
    core_sha256_final(&h, dig);
    for (int i = 0; i < 5; i++) snprintf(out + 2 * i, 3, "%02x", dig[i]);
    return rc;
}

static void stem_of(const char *path, char *buf, size_t n)
{
    snprintf(buf, n, "%.255s", base_name(path));
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf) *dot = 0;
}

/* Loads the job's checkpoint unless it is the one loaded. */
static int ensure_model(srv_state *s, const char *name, srv_job *j)
{
    char path[PATH_MAX];
    if (srv_model_path(s, name, path, sizeof path)) {
        j->status = 404;
        snprintf(j->msg, sizeof j->msg, "model \"%s\": not found", name);
        return -1;
    }
    if (s->model && !strcmp(path, s->model_path)) return 0;
    fm_error err = {0};
    pthread_mutex_lock(&s->mu); /* the routes read the loaded model's name and hash */
    fm_model_free(s->model);
    s->model = NULL;
    s->model_path[0] = 0;
    pthread_mutex_unlock(&s->mu);
    fm_model *m = fm_model_load(path, &err);
    char hash[11];
    if (!m || file_hash10(path, hash)) {
        fm_model_free(m);
        j->status = 500;
        snprintf(j->msg, sizeof j->msg, "model \"%s\": %s", name, m ? "cannot read" : err.msg);
        return -1;
    }
    pthread_mutex_lock(&s->mu);
    s->model = m;
    snprintf(s->model_path, sizeof s->model_path, "%s", path);
    stem_of(path, s->model_name, sizeof s->model_name);
    memcpy(s->model_hash, hash, sizeof hash);
    pthread_mutex_unlock(&s->mu);
    return 0;
}

/* ---- one generation ---- */

static int on_step(void *user, int step, int steps)
{
    srv_state *s = user;
    pthread_mutex_lock(&s->mu);
    s->step = step;
    s->steps = steps;
    int stop = s->interrupt || s->skip || s->stopping;
    pthread_mutex_unlock(&s->mu);
    return stop;
}

/* --taesd: the running job's last preview, kept for /progress. */
static void on_preview(void *user, const uint8_t *rgb, int w, int h, int step, int steps)
{
    (void)step;
    (void)steps;
    srv_state *s = user;
    size_t n = (size_t)w * h * 3;
    pthread_mutex_lock(&s->mu);
    uint8_t *b = n > s->preview_cap ? realloc(s->preview, n) : s->preview;
    if (b) {
        if (n > s->preview_cap) s->preview_cap = n;
        s->preview = b;
        memcpy(b, rgb, n);
        s->preview_w = w;
        s->preview_h = h;
    }
    pthread_mutex_unlock(&s->mu);
}

/* The prompt's <lora:NAME> tags must name files inside --lora-dir. */
static int loras_inside(const char *dir, const char *prompt, char *bad, size_t n)
{
    df_lora_list l = {0};
    fm_error err = {0};
    if (df_lora_parse(prompt, &l, &err)) { snprintf(bad, n, "%s", err.msg); return -1; }
    int rc = 0;
    static const char *const exts[] = {".safetensors", NULL};
    int nf = 0;
    char **files = l.n ? srv_list_files(dir, exts, 1, &nf) : NULL;
    for (int i = 0; i < l.n && !rc; i++) {
        int found = 0;
        for (int k = 0; k < nf && !found; k++) {
            char stem[300];
            stem_of(files[k], stem, sizeof stem);
            found = !strcmp(stem, l.v[i].name) && !strchr(l.v[i].name, '/');
        }
        if (!found) { snprintf(bad, n, "lora \"%s\": not found", l.v[i].name); rc = -1; }
    }
    srv_free_list(files, nf);
    df_lora_list_free(&l);
    return rc;
}

static void job_fail(srv_job *j, int status, const char *msg)
{
    j->status = status;
    snprintf(j->msg, sizeof j->msg, "%s", msg);
}

/* The job's fm_params; the decoded init image and mask it points to are
 * the caller's to free (*init, *mask). */
static int fill_params(srv_state *s, srv_job *j, fm_params *p, uint8_t **init, uint8_t **mask, fm_error *err)
{
    const srv_gen *g = &j->g;
    fm_params_default(s->model, p);
    p->prompt = g->prompt;
    p->negative = g->negative;
    if (g->width) p->width = g->width;
    if (g->height) p->height = g->height;
    if (g->steps) p->steps = g->steps;
    if (!isnan(g->cfg)) p->cfg = g->cfg;
    p->clip_skip = g->clip_skip ? g->clip_skip : 1;
    p->strength = g->img2img ? g->strength : 0.75f;
    p->lora_dir = s->c->lora_dir;
    p->embeddings_dir = s->c->embeddings_dir;
    p->embeddings_confined = 1; /* no symlink out of --embeddings-dir */
    if (s->c->taesd) { /* A1111's live preview, every show_progress_every_n_steps (10) */
        p->preview_taesd = s->c->taesd;
        p->preview_every = s->c->preview_every ? s->c->preview_every : 10;
        p->preview = on_preview;
        p->preview_user = s;
    }
    if (g->rng_cpu) p->rng = FM_RNG_CPU;
    if (g->hires_scale > 0 || g->hires_width || g->hires_height) {
        p->hires_scale = g->hires_scale;
        p->hires_width = g->hires_width;
        p->hires_height = g->hires_height;
        p->hires_steps = g->hires_steps;
        p->hires_denoise = g->hires_denoise;
        p->hires_upscaler = g->hires_upscaler[0] ? g->hires_upscaler : NULL;
        p->hires_prompt = g->hires_prompt;
        p->hires_negative = g->hires_negative;
        memcpy(p->hires_sampler, g->hires_sampler, sizeof p->hires_sampler);
    }
    if (fm_params_set_sampler(p, g->sampler[0] ? g->sampler : NULL, g->scheduler[0] ? g->scheduler : NULL, err)) return err->code;
    if (g->img2img) {
        if (!(*init = srv_image_decode("init_images", g->init_png, g->init_len, 0, &p->init_width, &p->init_height, err)))
            return err->code;
        p->init_rgb = *init;
    }
    if (g->mask_png) {
        if (!(*mask = srv_image_decode("mask", g->mask_png, g->mask_len, 1, &p->mask_width, &p->mask_height, err)))
            return err->code;
        p->mask = *mask;
        p->mask_blur = g->mask_blur;
        p->mask_invert = g->mask_invert;
        p->inpaint_fill = g->inpaint_fill;
        p->inpaint_only_masked = g->inpaint_only_masked;
        p->inpaint_padding = g->inpaint_padding;
    }
    return fm_params_check(s->model, p, err);
}

/* --save-dir's manifest.jsonl: one line per saved image, appended after
 * its rename in one write (O_APPEND), so every line names a complete PNG;
 * a kill between the two leaves a PNG without a line, never the reverse. */
static void manifest_append(const srv_state *s, const char *file, const uint8_t *png, size_t n, int64_t seed,
                            const char *parameters)
{
    char path[PATH_MAX], sha[65];
    snprintf(path, sizeof path, "%s/manifest.jsonl", s->c->save_dir);
    core_sha256_hex(png, n, sha);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "file", file);
    cJSON_AddNumberToObject(j, "seed", (double)seed);
    cJSON_AddStringToObject(j, "model", s->model_name);
    cJSON_AddStringToObject(j, "model_hash", s->model_hash);
    cJSON_AddStringToObject(j, "sha256", sha);
    cJSON_AddNumberToObject(j, "bytes", (double)n);
    cJSON_AddStringToObject(j, "parameters", parameters);
    char *line = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    size_t len = line ? strlen(line) : 0;
    int fd = line ? open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOFOLLOW, 0644) : -1;
    if (fd >= 0) {
        line[len] = '\n'; /* the NUL becomes the newline: one write */
        if (write(fd, line, len + 1) != (ssize_t)(len + 1)) {} /* a full disk loses the line, not the image */
        close(fd);
    }
    free(line);
}

static void save_copy(srv_state *s, const uint8_t *png, size_t n, int64_t seed, int index, const char *parameters)
{
    char tmp[PATH_MAX], final[PATH_MAX], name[96];
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    snprintf(name, sizeof name, "%lld-%03d-%lld.png", (long long)t.tv_sec, index, (long long)seed);
    snprintf(final, sizeof final, "%s/%s", s->c->save_dir, name);
    snprintf(tmp, sizeof tmp, "%s/.tmp-serve-%d.png", s->c->save_dir, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0) return;
    int ok = write(fd, png, n) == (ssize_t)n && fsync(fd) == 0;
    close(fd);
    /* complete files only: the rename is the commit */
    if (!ok || rename(tmp, final)) unlink(tmp);
    else manifest_append(s, name, png, n, seed, parameters);
}

/* A server killed mid-write leaves its .tmp-serve-PID.png: removed at the
 * next start when that process is gone. */
static void save_dir_clean(const char *dir)
{
    DIR *d = dir ? opendir(dir) : NULL;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        int pid;
        char rest[8];
        if (sscanf(e->d_name, ".tmp-serve-%d.pn%1s", &pid, rest) != 2 || pid <= 0) continue;
        if (kill(pid, 0) == 0 || errno != ESRCH) continue;
        char path[PATH_MAX];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    if (d) closedir(d);
}

static int one_image(srv_state *s, srv_job *j, int i, uint64_t seed)
{
    fm_params p;
    fm_error err = {0};
    uint8_t *init = NULL, *mask = NULL, *rgb = NULL, *png = NULL;
    char *info = NULL;
    int rc = fill_params(s, j, &p, &init, &mask, &err), w = 0, h = 0;
    p.seed = seed;
    if (!rc) rc = fm_output_size(s->model, &p, &w, &h, &err); /* the hires fix's size */
    if (rc) { job_fail(j, 422, err.msg); goto out; }
    if (!(info = fm_infotext(s->model, &p, s->model_name, s->model_hash, &err))) { job_fail(j, 422, err.msg); rc = 1; goto out; }
    if (!(rgb = malloc((size_t)w * h * 3))) { job_fail(j, 500, "out of memory"); rc = 1; goto out; }
    p.progress = on_step;
    p.progress_user = s;
    if ((rc = fm_generate(s->model, &p, rgb, &err))) {
        job_fail(j, rc == FM_EINTERRUPT ? 499 : rc == FM_EUSAGE ? 422 : 500, err.msg);
        goto out;
    }
    size_t n = 0;
    if (!(png = srv_png_encode(rgb, w, h, info, &n, &err))) {
        job_fail(j, 500, err.msg);
        rc = 1;
        goto out;
    }
    if (!(j->images[i] = srv_base64_encode(png, n))) { job_fail(j, 500, "out of memory"); rc = 1; goto out; }
    j->infotexts[i] = info;
    info = NULL;
    j->seeds[i] = (int64_t)seed;
    j->n_images = i + 1;
    if (s->c->save_dir) save_copy(s, png, n, (int64_t)seed, i, j->infotexts[i]);
    if (i == 0) {
        j->width = w;
        j->height = h;
        j->steps = p.steps;
        j->cfg = p.cfg;
        j->clip_skip = p.clip_skip;
        smp_id id;
        smp_scheduler_id sch;
        if (!smp_pair(p.sampler, p.scheduler, &id, &sch, NULL)) {
            snprintf(j->sampler_label, sizeof j->sampler_label, "%s", smp_label(id));
            snprintf(j->scheduler_label, sizeof j->scheduler_label, "%s", smp_scheduler_label(sch));
        }
    }
out:
    free(png);
    free(rgb);
    free(init);
    free(mask);
    free(info);
    return rc;
}

static uint64_t random_seed(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return ((uint64_t)t.tv_nsec * 2654435761u ^ (uint64_t)t.tv_sec) & 0xffffffffu;
}

static void run_job(srv_state *s, srv_job *j)
{
    char name[256];
    pthread_mutex_lock(&s->mu);
    snprintf(name, sizeof name, "%s", j->model[0] ? j->model : s->checkpoint);
    pthread_mutex_unlock(&s->mu);
    j->status = 200;
    if (ensure_model(s, name, j)) return;
    snprintf(j->model_name, sizeof j->model_name, "%s", s->model_name);
    memcpy(j->model_hash, s->model_hash, sizeof j->model_hash);
    if (j->kind == SRV_JOB_LOAD) {
        pthread_mutex_lock(&s->mu);
        snprintf(s->checkpoint, sizeof s->checkpoint, "%s", name);
        pthread_mutex_unlock(&s->mu);
        return;
    }
    char bad[600];
    if ((strstr(j->g.prompt, "<lora:") || strstr(j->g.prompt, "<lyco:")) && loras_inside(s->c->lora_dir, j->g.prompt, bad, sizeof bad)) {
        job_fail(j, 404, bad);
        return;
    }
    uint64_t base = j->g.seed < 0 ? random_seed() : (uint64_t)j->g.seed;
    int count = j->g.batch_size * j->g.n_iter;
    pthread_mutex_lock(&s->mu);
    s->image_count = count;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < count; i++) {
        pthread_mutex_lock(&s->mu);
        s->image_no = i;
        s->step = 0;
        s->skip = 0;
        int stop = s->interrupt || s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (stop) break;
        /* A1111: image k of a batch has seed + k */
        if (one_image(s, j, i, (base + (uint64_t)i) & 0xffffffffu)) {
            if (j->status == 499) { /* interrupted or skipped: keep what is done */
                pthread_mutex_lock(&s->mu);
                int skipped = s->skip && !s->interrupt;
                pthread_mutex_unlock(&s->mu);
                j->status = 200;
                if (skipped) continue;
                break;
            }
            return;
        }
    }
    if (!j->n_images && j->status == 200) {
        j->status = s->stopping ? 503 : 200; /* interrupted before the first: no images, as A1111 */
    }
}

void *srv_worker(void *arg)
{
    srv_state *s = arg;
    save_dir_clean(s->c->save_dir);
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->q_n && !s->stopping) pthread_cond_wait(&s->work, &s->mu);
        if (!s->q_n) break;
        srv_job *j = s->q[s->q_head];
        s->q_head = (s->q_head + 1) % s->q_cap;
        s->q_n--;
        if (s->stopping) {
            j->status = 503;
            snprintf(j->msg, sizeof j->msg, "the server is shutting down");
        } else {
            s->current = j;
            s->interrupt = s->skip = 0;
            s->step = s->steps = 0;
            s->preview_w = s->preview_h = 0;
            s->t_start = srv_now();
            pthread_mutex_unlock(&s->mu);
            run_job(s, j);
            pthread_mutex_lock(&s->mu);
            s->current = NULL;
        }
        j->done = 1;
        if (j->async) srv_history_add(s, j); /* ComfyUI: nobody waits; the history keeps it */
        pthread_cond_broadcast(&s->done);
    }
    free(s->preview);
    s->preview = NULL;
    s->preview_cap = 0;
    s->preview_w = s->preview_h = 0;
    pthread_mutex_unlock(&s->mu);
    fm_model_free(s->model);
    s->model = NULL;
    return NULL;
}
