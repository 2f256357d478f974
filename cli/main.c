/* fmimage: the command line, a thin client of libfmimage (DESIGN.md). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "fmimage.h"
#include "options.h"
#include "output.h"
#include "progress.h"
#include "promptfile.h"

#define MAX_LINE_ERRORS_SHOWN 20

/* The number of the first SIGINT, SIGTERM or SIGHUP; 0 = none. */
static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig)
{
    if (!interrupted) interrupted = sig;
}

static void report(const fm_error *err) { fprintf(stderr, "fmimage: %s\n", err->msg); }

/* A job's error names its prompt-file line: "FILE:LINE: why". */
static void prefix_line(fm_error *err, const char *file, int line)
{
    char msg[sizeof err->msg];
    snprintf(msg, sizeof msg, "%s", err->msg);
    snprintf(err->msg, sizeof err->msg, "%.200s:%d: %.280s", file, line, msg);
}

/* The demo model: next to the binary in the build tree, or installed under
 * PREFIX/share/fmimage. */
static const char *find_demo_model(char *buf, size_t n)
{
    static const char *rel[] = {"/../assets/demo/fmimage-demo.safetensors",
                                "/assets/demo/fmimage-demo.safetensors",
                                "/../share/fmimage/demo/fmimage-demo.safetensors"};
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (len <= 0) return NULL;
    exe[len] = 0;
    char *slash = strrchr(exe, '/');
    if (!slash) return NULL;
    *slash = 0;
    for (size_t i = 0; i < sizeof rel / sizeof rel[0]; i++) {
        snprintf(buf, n, "%s%s", exe, rel[i]);
        if (access(buf, R_OK) == 0) return buf;
    }
    return NULL;
}

#define MAX_SEED 4294967295u

/* A random base seed such that base + n_jobs - 1 is still a seed. */
static uint64_t random_seed(uint64_t n_jobs)
{
    uint32_t s = 0;
    if (getrandom(&s, sizeof s, 0) != sizeof s) s = (uint32_t)(cli_now() * 1e6);
    uint64_t span = (uint64_t)MAX_SEED + 1 - (n_jobs > 1 ? n_jobs - 1 : 0);
    return span ? s % span : 0;
}

/* The model name A1111 records: file name without directory and extension. */
static void model_name(const char *path, char *buf, size_t n)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    snprintf(buf, n, "%s", base);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf) *dot = 0;
}

/* One image to make: a line of the prompt file (or the command line) and
 * which of its images. */
typedef struct job {
    int index;            /* global job index j */
    const pf_line *line;  /* NULL: the command line's prompt */
    uint64_t seed;
} job;

typedef struct run {
    const cli_options *o;
    fm_model *model;
    const char *model_path;
    char model_name[256], model_hash[11];
    const char *dir;      /* NULL: single output file */
    out_manifest manifest;
    int failed;
    cli_progress progress;
} run;

/* fm_params for a job: the model's defaults, then the command line, then
 * what the line sets. Sampler labels may imply a scheduler ("DPM++ 2M Karras"). */
static int job_params(run *r, const job *jb, fm_params *p, uint8_t **init_rgb, fm_error *err)
{
    const cli_options *o = r->o;
    const pf_line *l = jb->line;
    fm_params_default(r->model, p);
    p->prompt = l ? l->prompt : (o->prompt ? o->prompt : "");
    p->negative = l && l->negative ? l->negative : (o->negative ? o->negative : "");
    p->width = l && l->width ? l->width : (o->width ? o->width : p->width);
    p->height = l && l->height ? l->height : (o->height ? o->height : p->height);
    p->steps = l && l->steps ? l->steps : (o->steps ? o->steps : p->steps);
    p->cfg = l && !isnan(l->cfg) ? l->cfg : (!isnan(o->cfg) ? o->cfg : p->cfg);
    p->seed = jb->seed;
    p->rng = o->rng;
    p->clip_skip = l && l->clip_skip ? l->clip_skip : o->clip_skip;
    p->prediction = o->prediction;
    p->strength = l && !isnan(l->strength) ? l->strength : o->strength;
    p->taesd_path = o->taesd;
    p->vae_tiling = o->vae_tiling;
    p->precision = o->precision;
    p->memory_limit = o->memory_limit;
    const char *sampler = l && l->sampler ? l->sampler : (o->sampler[0] ? o->sampler : NULL);
    const char *scheduler = l && l->scheduler ? l->scheduler : (o->scheduler[0] ? o->scheduler : NULL);
    if (sampler) {
        char implied[32];
        if (fm_sampler_resolve(sampler, p->sampler, implied, err)) return err->code;
        if (implied[0] && !scheduler) snprintf(p->scheduler, sizeof p->scheduler, "%s", implied);
    }
    if (scheduler && fm_scheduler_resolve(scheduler, p->scheduler, err)) return err->code;
    const char *init = l && l->init_image ? l->init_image : o->init_image;
    if (init) {
        *init_rgb = fm_image_read(init, &p->init_width, &p->init_height, err);
        if (!*init_rgb) return err->code;
        p->init_rgb = *init_rgb;
    }
    return fm_params_check(r->model, p, err);
}

static char *manifest_line(const run *r, const job *jb, const fm_params *p, const char *file,
                           const char *sha, double seconds)
{
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "file", file);
    cJSON_AddNumberToObject(j, "job", jb->index);
    cJSON_AddNumberToObject(j, "line", jb->line ? jb->line->line_no : 0);
    cJSON_AddStringToObject(j, "prompt", p->prompt);
    cJSON_AddStringToObject(j, "negative", p->negative ? p->negative : "");
    cJSON_AddNumberToObject(j, "seed", (double)p->seed);
    cJSON_AddNumberToObject(j, "steps", p->steps);
    cJSON_AddNumberToObject(j, "cfg", p->cfg);
    cJSON_AddStringToObject(j, "sampler", p->sampler);
    cJSON_AddStringToObject(j, "scheduler", p->scheduler);
    cJSON_AddNumberToObject(j, "width", p->width);
    cJSON_AddNumberToObject(j, "height", p->height);
    cJSON_AddStringToObject(j, "model", r->model_name);
    cJSON_AddStringToObject(j, "model_hash", r->model_hash);
    if (sha) cJSON_AddStringToObject(j, "sha256", sha);
    cJSON_AddNumberToObject(j, "seconds", round(seconds * 10) / 10);
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

/* Images a prompt-file line (NULL: the command line) makes. A bad line
 * holds the place of one. */
static int line_images(const cli_options *o, const pf_line *l)
{
    return l ? (l->line_no < 0 ? 1 : (l->n_iter ? l->n_iter : o->batch_count)) : o->batch_count;
}

/* Seeds do not wrap: A1111 makes image k of seed S with seed S + k, also
 * past 4294967295, where fmimage's seeds end, so a wrapped seed would
 * silently repeat another image. A line whose own --seed runs past the end
 * fails alone (exit 1 at the end); a base seed (--seed) that does is a usage
 * error; a random base is drawn low enough. Returns 0 with *base set, or the
 * exit code. */
static int plan_seeds(const cli_options *o, pf_line *lines, int n_lines, int *bad, uint64_t *base)
{
    uint64_t j = 0, n_base = 0;
    for (int li = 0; li < (o->prompt_file ? n_lines : 1); li++) {
        pf_line *l = o->prompt_file ? &lines[li] : NULL;
        uint64_t images = (uint64_t)line_images(o, l);
        if (l && l->line_no > 0 && l->has_seed && l->seed + images - 1 > MAX_SEED) {
            fprintf(stderr, "fmimage: %s:%d: --seed: images %llu..%llu pass the largest seed %u (seeds do not wrap)\n",
                    o->prompt_file, l->line_no, (unsigned long long)l->seed,
                    (unsigned long long)(l->seed + images - 1), MAX_SEED);
            int line_no = l->line_no;
            pf_line_free(l);
            l->line_no = -line_no;
            images = 1;
            ++*bad;
        } else if (!(l && l->has_seed)) {
            n_base = j + images;
        }
        j += images;
    }
    if (!o->has_seed) {
        *base = random_seed(n_base);
        return 0;
    }
    if (n_base && o->seed + n_base - 1 > MAX_SEED) {
        fprintf(stderr, "fmimage: --seed: images %llu..%llu pass the largest seed %u (seeds do not wrap)\n",
                (unsigned long long)o->seed, (unsigned long long)(o->seed + n_base - 1), MAX_SEED);
        return 2;
    }
    *base = o->seed;
    return 0;
}

/* Makes one image. Returns 0, FM_EINPUT (counted, the batch goes on) or
 * FM_EINTERRUPT. */
static int run_job(run *r, const job *jb)
{
    const cli_options *o = r->o;
    char path[PATH_MAX], file[PATH_MAX];
    fm_error err = {0};
    fm_params p;
    uint8_t *init = NULL, *rgb = NULL;
    int n;
    if (r->dir) {
        snprintf(file, sizeof file, "%05d-%llu.png", jb->index, (unsigned long long)jb->seed);
        n = snprintf(path, sizeof path, "%s/%s", r->dir, file);
    } else if (o->output) {
        n = snprintf(path, sizeof path, "%s", o->output);
    } else {
        n = snprintf(path, sizeof path, "fmimage-%llu.png", (unsigned long long)jb->seed);
    }
    if (n >= (int)sizeof path) {
        fprintf(stderr, "fmimage: %s: path too long\n", r->dir ? r->dir : o->output);
        return FM_EINPUT;
    }
    if (!r->dir) snprintf(file, sizeof file, "%s", path);
    int rc = job_params(r, jb, &p, &init, &err);
    if (!rc && r->dir && access(path, F_OK) == 0) {
        /* Resume: the image is complete (it was renamed into place). */
        if (!out_manifest_has(&r->manifest, file)) {
            char sha[65];
            if (!out_file_sha256(path, sha, &err)) {
                char *line = manifest_line(r, jb, &p, file, sha, 0);
                if (line) out_manifest_append(r->dir, line, &err);
                free(line);
            }
        }
        free(init);
        return err.code ? (report(&err), FM_EINPUT) : 0;
    }
    if (!rc && !r->dir && !o->force && access(path, F_OK) == 0)
        rc = fm_fail(&err, FM_EINPUT, "%s: exists (use --force to overwrite)", path);
    if (!rc && !(rgb = malloc((size_t)p.width * p.height * 3)))
        rc = fm_fail(&err, FM_EINPUT, "%s: out of memory", path);
    double t0 = cli_now();
    if (!rc) {
        cli_progress_start(&r->progress, file);
        p.progress = cli_progress_step;
        p.progress_user = &r->progress;
        p.stage = cli_progress_stage;
        p.stage_user = &r->progress;
        rc = fm_generate(r->model, &p, rgb, &err);
    }
    double seconds = cli_now() - t0;
    char *params = NULL, sha[65];
    if (!rc && o->metadata && !(params = fm_infotext(r->model, &p, r->model_name, r->model_hash, &err)))
        rc = err.code ? err.code : FM_EINPUT;
    double t_write = cli_now();
    if (!rc) rc = out_write_png(path, rgb, p.width, p.height, params, !r->dir && !o->force, sha, &err);
    if (!rc) cli_progress_stage(&r->progress, "write", cli_now() - t_write);
    if (!rc && r->dir) {
        char *line = manifest_line(r, jb, &p, file, sha, seconds);
        rc = line ? out_manifest_append(r->dir, line, &err) : fm_fail(&err, FM_EINPUT, "out of memory");
        free(line);
    }
    if (!rc) cli_progress_done(&r->progress, p.steps, seconds);
    free(params);
    free(rgb);
    free(init);
    if (rc == FM_EINTERRUPT) {
        if (r->progress.tty && r->progress.enabled) fprintf(stderr, "\n");
        return rc;
    }
    if (rc) {
        if (r->progress.tty && r->progress.enabled) fprintf(stderr, "\r\033[K");
        if (jb->line) prefix_line(&err, o->prompt_file, jb->line->line_no);
        report(&err);
        return FM_EINPUT;
    }
    return 0;
}

/* Reads the prompt file into lines; bad lines are reported and counted. */
static pf_line *read_prompt_file(const char *path, int *n_lines, int *bad)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "fmimage: %s: %s\n", path, strerror(errno));
        *bad = -1;
        return NULL;
    }
    pf_line *lines = NULL;
    int n = 0, cap = 0, line_no = 0;
    char *text = NULL;
    size_t text_cap = 0;
    ssize_t len;
    while ((len = getline(&text, &text_cap, f)) >= 0) {
        line_no++;
        pf_line l;
        char why[160];
        int rc = pf_parse_line(text, (size_t)len, line_no, &l, why, sizeof why);
        if (rc < 0) {
            if (++*bad <= MAX_LINE_ERRORS_SHOWN) fprintf(stderr, "fmimage: %s:%d: %s\n", path, line_no, why);
            /* A bad line still holds its place in the job numbering (one
             * image, as a plain prompt would), so fixing it later does not
             * renumber the jobs after it. */
            memset(&l, 0, sizeof l);
            l.line_no = -line_no;
        } else if (rc == 0) {
            continue;
        }
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            pf_line *p = realloc(lines, sizeof *p * (size_t)cap);
            if (!p) { fprintf(stderr, "fmimage: %s: out of memory\n", path); *bad = -1; break; }
            lines = p;
        }
        lines[n++] = l;
    }
    if (*bad > MAX_LINE_ERRORS_SHOWN)
        fprintf(stderr, "fmimage: %s: %d more bad lines not shown\n", path, *bad - MAX_LINE_ERRORS_SHOWN);
    free(text);
    fclose(f);
    *n_lines = n;
    return lines;
}

static int generate(const cli_options *o)
{
    run r = {.o = o};
    char demo[PATH_MAX];
    fm_error err = {0};
    r.model_path = o->model ? o->model : find_demo_model(demo, sizeof demo);
    if (!r.model_path) {
        fprintf(stderr, "fmimage: --model: no model given and the demo model is not installed\n");
        return 1;
    }
    int n_lines = 0, bad = 0;
    pf_line *lines = NULL;
    if (o->prompt_file) {
        lines = read_prompt_file(o->prompt_file, &n_lines, &bad);
        if (bad < 0) return 1;
    }
    uint64_t base;
    int rc = plan_seeds(o, lines, n_lines, &bad, &base);
    if (rc) {
        for (int i = 0; i < n_lines; i++) pf_line_free(&lines[i]);
        free(lines);
        return rc;
    }
    if (!(r.model = fm_model_load(r.model_path, &err))) {
        report(&err);
        return 1;
    }
    model_name(r.model_path, r.model_name, sizeof r.model_name);
    if (out_model_hash(r.model_path, r.model_hash, &err)) {
        report(&err);
        fm_model_free(r.model);
        return 1;
    }
    /* The command line's own values are checked once, as usage errors. */
    job probe = {0};
    fm_params p;
    uint8_t *init = NULL;
    rc = job_params(&r, &probe, &p, &init, &err);
    free(init);
    if (rc) {
        report(&err);
        fm_model_free(r.model);
        return rc == FM_EUSAGE ? 2 : 1;
    }
    if (!o->has_seed && !o->quiet) fprintf(stderr, "fmimage: seed %llu\n", (unsigned long long)base);
    int single = !o->prompt_file && o->batch_count == 1;
    if (!single) {
        r.dir = o->output ? o->output : "fmimage-out";
        if (out_make_dir(r.dir, &err)) {
            report(&err);
            fm_model_free(r.model);
            return 1;
        }
        out_remove_stale_temps(r.dir);
        out_manifest_load(&r.manifest, r.dir);
    }
    r.progress.enabled = !o->quiet;
    r.progress.verbose = o->verbose;
    r.progress.tty = isatty(2);
    r.progress.interrupted = &interrupted;
    r.failed = bad > 0;
    int j = 0, status = 0;
    for (int li = 0; li < (o->prompt_file ? n_lines : 1) && !status; li++) {
        const pf_line *l = o->prompt_file ? &lines[li] : NULL;
        int images = line_images(o, l);
        for (int i = 0; i < images && !status; i++, j++) {
            if (j % o->shard_n != o->shard_k || (l && l->line_no < 0)) continue;
            if (interrupted) { status = 128 + interrupted; break; }
            job jb = {.index = j, .line = l, .seed = l && l->has_seed ? l->seed + i : base + (uint64_t)j};
            rc = run_job(&r, &jb);
            if (rc == FM_EINTERRUPT || interrupted) status = 128 + (interrupted ? interrupted : SIGINT);
            else if (rc) r.failed = 1;
        }
    }
    for (int i = 0; i < n_lines; i++) pf_line_free(&lines[i]);
    free(lines);
    out_manifest_free(&r.manifest);
    fm_model_free(r.model);
    return status ? status : r.failed ? 1 : 0;
}

static int info(const cli_options *o)
{
    fm_error err = {0};
    fm_model *m = fm_model_load(o->model, &err);
    if (!m) { report(&err); return 1; }
    char *text = fm_model_describe(m, &err);
    if (text) fputs(text, stdout);
    else report(&err);
    free(text);
    fm_model_free(m);
    return text ? 0 : 1;
}

static int print_tokens(const cli_options *o)
{
    fm_error err = {0};
    fm_model *m = NULL;
    if (o->model && !(m = fm_model_load(o->model, &err))) { report(&err); return 1; }
    int32_t ids[77];
    int rc = fm_tokenize(m, o->prompt, ids, &err) == 77 ? 0 : 1;
    if (rc) report(&err);
    else
        for (int i = 0; i < 77; i++) printf("%d%c", ids[i], i == 76 ? '\n' : ',');
    fm_model_free(m);
    return rc;
}

/* OpenMP threads that spin while waiting at a barrier cost little on an
 * idle machine, but when another process holds a core every barrier can
 * cost a whole time slice: a small model then runs 30x slower. libgomp reads
 * OMP_WAIT_POLICY before main(), so the default (passive: sleep while
 * waiting) is set by running ourselves again once; a user's own setting is
 * kept. */
static void prefer_passive_waiting(char **argv)
{
    if (getenv("OMP_WAIT_POLICY") || getenv("GOMP_SPINCOUNT")) return;
    setenv("OMP_WAIT_POLICY", "passive", 1);
    execv("/proc/self/exe", argv);
    /* exec failed: go on with spinning threads */
}

/* SIGINT, SIGTERM and SIGHUP ask the run to stop. The handler only records
 * the signal; the run looks at it at each sampler step and before each
 * image, so the image being made is dropped, a PNG write is never cut short
 * (no temporary file is left) and the finished images and their manifest
 * lines stay. Later signals do no more: a second one that killed at once
 * could land on an OpenMP worker thread while the main thread writes. */
static void catch_interrupts(void)
{
    struct sigaction sa = {.sa_handler = on_interrupt, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

static const char *signal_name(int sig)
{
    switch (sig) {
    case SIGINT: return "SIGINT";
    case SIGTERM: return "SIGTERM";
    case SIGHUP: return "SIGHUP";
    default: return "a signal";
    }
}

/* -v's last line: the most memory the process held at once. */
static void print_peak_rss(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        fprintf(stderr, "fmimage: peak RSS %.1f MB\n", ru.ru_maxrss / 1024.0);
}

int main(int argc, char **argv)
{
    prefer_passive_waiting(argv);
    cli_options o;
    int rc = cli_parse(argc, argv, &o);
    if (rc) return rc;
    if (o.threads) omp_set_num_threads(o.threads);
    /* A file-size limit (ulimit -f) must become a write error that removes
     * the temporary file, not a kill that leaves it behind. */
    signal(SIGXFSZ, SIG_IGN);
    switch (o.mode) {
    case MODE_HELP: cli_print_help(); return 0;
    case MODE_VERSION: printf("fmimage %s\n", FM_VERSION); return 0;
    case MODE_LIST_SAMPLERS: fputs(fm_sampler_list(), stdout); return 0;
    case MODE_INFO: return info(&o);
    case MODE_PRINT_TOKENS: return print_tokens(&o);
    case MODE_GENERATE:
        catch_interrupts();
        rc = generate(&o);
        /* Exit 128 + the signal, as a shell reports a process the signal
         * ended, for whichever stage it arrived in. */
        if (interrupted) {
            fprintf(stderr, "fmimage: interrupted by %s\n", signal_name(interrupted));
            rc = 128 + interrupted;
        }
        if (o.verbose) print_peak_rss();
        return rc;
    }
    return 0;
}
