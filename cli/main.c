/* fmimage: the command line, a thin client of libfmimage (DESIGN.md). */
#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "fmimage.h"
#include "options.h"
#include "output.h"
#include "progress.h"
#include "shard.h"
#include "upscale.h"
#include "promptfile.h"
#include "styles.h"
#include "wcplan.h"
#include "grid.h"
#include "xyz.h"
#include "convert.h"
#include "serve.h"

#define MAX_LINE_ERRORS_SHOWN 20

/* The number of the first SIGINT, SIGTERM or SIGHUP handled; 0 = none.
 * Any thread (OpenMP's too) may run the handler, two at once for two
 * signals: the compare-and-swap keeps the first (lock-free, so
 * async-signal-safe). */
static atomic_int interrupted;

static void on_interrupt(int sig)
{
    int none = 0;
    atomic_compare_exchange_strong(&interrupted, &none, sig);
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
/* One image to make: a line of the prompt file (or the command line) and
 * which of its images. */
typedef struct job {
    int index;            /* global job index j */
    const pf_line *line;  /* NULL: the command line's prompt */
    uint64_t seed;
    char *prompt;         /* wildcards: the template's expansion (malloc'd), NULL: as written */
    int xyz_cell;         /* X/Y/Z plot: 1 + the cell, 0: not a cell */
} job;

typedef struct run {
    const cli_options *o;
    fm_model *model;
    const char *model_path;
    char model_name[256], model_hash[11];
    const char *dir;      /* NULL: single output file */
    char dir_buf[PATH_MAX];
    const char *prefix;   /* batch file names: PREFIX NNNNN-SEED.png */
    char prefix_buf[PATH_MAX];
    const char *single_dir; /* single image into this directory (-o DIR) */
    out_manifest manifest;
    int failed, skipped;
    cli_progress progress;
    fm_upscaler *upscaler; /* --upscale-model: applied to every image */
    char upscaler_name[256];
    fm_upscaler *hires_model; /* --hires-upscaler FILE: the hires fix's upscaler */
    char hires_name[256];
    /* --style: the styles resolved, and this job's styled prompt and negative */
    const sty_style *styles[16];
    int n_styles;
    char *styled_prompt, *styled_negative;
    /* X/Y/Z plot: the axes, and this job's Prompt S/R texts */
    xyz_plan xyz;
    int has_xyz;
    char *xyz_prompt, *xyz_negative;
    /* LoRA: --lora-dir, else loras/ next to the model when it is a directory */
    const char *lora_dir;
    char lora_dir_buf[PATH_MAX];
    /* textual inversion: --embeddings-dir, else embeddings/ next to the model */
    const char *embeddings_dir;
    char embeddings_dir_buf[PATH_MAX];
    /* --mask: read once, for every job */
    uint8_t *mask;
    int mask_w, mask_h;
} run;

/* LoRA: the directory the prompt's <lora:NAME> tags are looked up in. */
static void lora_dir_setup(run *r)
{
    struct stat sb;
    if (r->o->lora_dir) {
        r->lora_dir = r->o->lora_dir;
        return;
    }
    const char *slash = strrchr(r->model_path, '/');
    int n = slash ? snprintf(r->lora_dir_buf, sizeof r->lora_dir_buf, "%.*s/loras", (int)(slash - r->model_path), r->model_path)
                  : snprintf(r->lora_dir_buf, sizeof r->lora_dir_buf, "loras");
    if (n > 0 && n < (int)sizeof r->lora_dir_buf && stat(r->lora_dir_buf, &sb) == 0 && S_ISDIR(sb.st_mode))
        r->lora_dir = r->lora_dir_buf;
}

/* Textual inversion: --embeddings-dir, else embeddings/ beside the model
 * when that is a directory. */
static void embeddings_dir_setup(run *r)
{
    struct stat sb;
    if (r->o->embeddings_dir) {
        r->embeddings_dir = r->o->embeddings_dir;
        return;
    }
    const char *slash = strrchr(r->model_path, '/');
    char *buf = r->embeddings_dir_buf;
    int n = slash ? snprintf(buf, sizeof r->embeddings_dir_buf, "%.*s/embeddings", (int)(slash - r->model_path), r->model_path)
                  : snprintf(buf, sizeof r->embeddings_dir_buf, "embeddings");
    if (n > 0 && n < (int)sizeof r->embeddings_dir_buf && stat(buf, &sb) == 0 && S_ISDIR(sb.st_mode))
        r->embeddings_dir = buf;
}

/* The model at path loaded in place of the run's (freed first: two
 * full-size models would double the peak memory), with the name and hash
 * its infotexts carry. On failure the run has no model (r->model and
 * r->model_path NULL) until a later job loads one. */
static int load_model(run *r, const char *path, fm_error *err)
{
    fm_load_options lo = cli_load_options(r->o);
    fm_model_free(r->model);
    r->model = NULL;
    r->model_path = NULL;
    double t_load = cli_now();
    fm_model *m = fm_model_load_with(path, &lo, err);
    if (!m) return err->code;
    /* issue 22 item 4: the time before the first U-Net call, by phase */
    if (r->o->verbose) fprintf(stderr, "fmimage: load (mapping, detection, binding) %.3f s\n", cli_now() - t_load);
    double t_hash = cli_now();
    if (out_model_hash(path, r->model_hash, err)) {
        fm_model_free(m);
        return err->code;
    }
    /* the file's SHA-256 for the infotext: once per file, then from the cache */
    if (r->o->verbose) fprintf(stderr, "fmimage: model hash %.3f s\n", cli_now() - t_hash);
    r->model = m;
    r->model_path = path;
    out_file_stem(path, r->model_name, sizeof r->model_name);
    return 0;
}

/* The run's first model: with a Checkpoint name axis the first value that
 * loads (one that does not fails its own cells when they come), else -m's. */
static int load_first_model(run *r, fm_error *err)
{
    const char *first = r->has_xyz ? xyz_checkpoint_value(&r->xyz, 0) : NULL;
    int rc = load_model(r, first ? first : r->model_path, err);
    for (int k = 1; rc && first && xyz_checkpoint_value(&r->xyz, k); k++)
        rc = load_model(r, xyz_checkpoint_value(&r->xyz, k), err);
    return rc;
}

/* X/Y/Z plot: the model of job jb's Checkpoint name value, loaded when it
 * is not the one loaded (the jobs come grouped by checkpoint, so each
 * loads once). */
static int use_job_model(run *r, const job *jb, fm_error *err)
{
    const char *path = jb->xyz_cell ? xyz_checkpoint(&r->xyz, jb->xyz_cell - 1) : NULL;
    if (!path || (r->model_path && !strcmp(path, r->model_path))) return 0;
    if (r->o->verbose) fprintf(stderr, "fmimage: loading %s\n", path);
    int rc = load_model(r, path, err);
    if (rc && strncmp(err->msg, path, strlen(path))) { /* which checkpoint failed */
        char why[PATH_MAX + sizeof err->msg];
        snprintf(why, sizeof why, "%s: %s", path, err->msg);
        snprintf(err->msg, sizeof err->msg, "%.*s", (int)sizeof err->msg - 1, why);
    }
    return rc;
}

/* Does p's mask (after --mask-invert) repaint nothing? */
static int mask_is_black(const fm_params *p)
{
    for (size_t i = 0; i < (size_t)p->mask_width * p->mask_height; i++)
        if ((p->mask_invert ? 255 - p->mask[i] : p->mask[i]) != 0) return 0;
    return 1;
}

/* fm_params for a job: the model's defaults, then the command line, then
 * what the line sets. */
static int job_params(run *r, const job *jb, fm_params *p, uint8_t **init_rgb, fm_error *err)
{
    const cli_options *o = r->o;
    const pf_line *l = jb->line;
    fm_params_default(r->model, p);
    p->prompt = jb->prompt ? jb->prompt : l ? l->prompt : (o->prompt ? o->prompt : "");
    p->negative = l && l->negative ? l->negative : (o->negative ? o->negative : "");
    const char *xyz_sampler = NULL, *xyz_scheduler = NULL;
    if (jb->xyz_cell) { /* X/Y/Z plot: the cell's values (Prompt S/R before the styles, as in A1111) */
        free(r->xyz_prompt);
        free(r->xyz_negative);
        if (xyz_apply(&r->xyz, jb->xyz_cell - 1, 0, p, &xyz_sampler, &xyz_scheduler, &r->xyz_prompt, &r->xyz_negative, err))
            return err->code;
    }
    if (r->n_styles) {
        /* A1111 applies the styles to the text before anything else: the
         * infotext and manifest get the styled prompt */
        free(r->styled_prompt);
        free(r->styled_negative);
        r->styled_prompt = sty_apply(r->styles, r->n_styles, p->prompt, 0);
        r->styled_negative = sty_apply(r->styles, r->n_styles, p->negative, 1);
        if (!r->styled_prompt || !r->styled_negative) return core_fail(err, FM_EINPUT, "--style: out of memory");
        p->prompt = r->styled_prompt;
        p->negative = r->styled_negative;
    }
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
    p->lora_dir = r->lora_dir; /* LoRA */
    p->embeddings_dir = r->embeddings_dir; /* textual inversion */
    p->hires_scale = o->hires_scale; /* hires fix */
    p->hires_width = o->hires_width;
    p->hires_height = o->hires_height;
    p->hires_steps = o->hires_steps;
    p->hires_denoise = o->hires_denoise;
    p->hires_upscaler = r->hires_model ? r->hires_name : o->hires_upscaler;
    p->hires_model = r->hires_model;
    p->hires_prompt = o->hires_prompt;
    p->hires_negative = o->hires_negative;
    memcpy(p->hires_sampler, o->hires_sampler, sizeof p->hires_sampler);
    const char *sampler = l && l->sampler ? l->sampler : (o->sampler[0] ? o->sampler : NULL);
    const char *scheduler = l && l->scheduler ? l->scheduler : (o->scheduler[0] ? o->scheduler : NULL);
    if (jb->xyz_cell) { /* X/Y/Z plot: the cell's other values */
        char *np = NULL, *nn = NULL;
        if (xyz_apply(&r->xyz, jb->xyz_cell - 1, 1, p, &xyz_sampler, &xyz_scheduler, &np, &nn, err)) return err->code;
        if (xyz_sampler) sampler = xyz_sampler;
        if (xyz_scheduler) scheduler = xyz_scheduler;
    }
    if (fm_params_set_sampler(p, sampler, scheduler, err)) return err->code;
    const char *init = l && l->init_image ? l->init_image : o->init_image;
    if (init) {
        *init_rgb = fm_image_read(init, &p->init_width, &p->init_height, err);
        if (!*init_rgb) return err->code;
        p->init_rgb = *init_rgb;
    }
    /* inpainting and outpainting (issue 18) */
    if (o->mask && !r->mask && !(r->mask = fm_mask_read(o->mask, &r->mask_w, &r->mask_h, err))) return err->code;
    if (o->mask && p->init_rgb) {
        p->mask = r->mask;
        p->mask_width = r->mask_w;
        p->mask_height = r->mask_h;
    }
    p->mask_invert = o->mask_invert;
    p->mask_blur = o->mask_blur;
    p->inpaint_fill = o->inpaint_fill >= 0 ? o->inpaint_fill : o->has_outpaint ? FM_FILL_FILL : FM_FILL_ORIGINAL;
    p->inpaint_only_masked = o->inpaint_only_masked;
    p->inpaint_padding = o->inpaint_padding;
    if (p->init_rgb) memcpy(p->outpaint, o->outpaint, sizeof p->outpaint);
    return fm_params_check(r->model, p, err);
}

static char *manifest_line(const run *r, const job *jb, const fm_params *p, const char *file,
                           const char *path, const char *sha, const char *parameters, double seconds)
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
    struct stat sb;
    if (sha && lstat(path, &sb) == 0) cJSON_AddNumberToObject(j, "bytes", (double)sb.st_size);
    cJSON_AddStringToObject(j, "parameters", parameters);
    fm_error lerr = {0}; /* LoRA: A1111's "Lora hashes" of the job's adapters */
    char *lora_hashes = fm_lora_hashes(p, &lerr);
    if (lora_hashes && lora_hashes[0]) cJSON_AddStringToObject(j, "lora_hashes", lora_hashes);
    free(lora_hashes);
    const char *vae_hash, *vae = fm_model_vae(r->model, &vae_hash); /* --vae: A1111's "VAE", "VAE hash" */
    if (vae) cJSON_AddStringToObject(j, "vae", vae), cJSON_AddStringToObject(j, "vae_hash", vae_hash);
    char *ti_hashes = fm_ti_hashes(r->model, p, &lerr); /* textual inversion: "TI hashes" */
    if (ti_hashes && ti_hashes[0]) cJSON_AddStringToObject(j, "ti_hashes", ti_hashes);
    free(ti_hashes);
    cJSON_AddNumberToObject(j, "seconds", round(seconds * 10) / 10);
    /* The merge order of the shards' manifests (DESIGN.md "Output files"). */
    cJSON_AddNumberToObject(j, "seq", (double)out_manifest_next_seq(&r->manifest));
    char *s = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    return s;
}

/* What a batch job needs to know about its image and its manifest line. */
typedef struct job_out {
    const job *jb;
    const fm_params *p;
    const char *file, *path;
    const char *parameters; /* the infotext this job writes now */
} job_out;

/* Whether the PNG at jo->path is this job's finished image (manifest
 * locked). With --metadata none the PNG carries no text, so its manifest
 * line (same bytes, same infotext) vouches for it. sha gets the digest. */
static int job_done(const run *r, const job_out *jo, char sha[65], const char **reason)
{
    char *have = NULL;
    const char *why;
    if (!out_png_complete(jo->path, &have, sha, &why)) {
        *reason = !strcmp(why, "a symbolic link") ? "was a symbolic link" : "not a complete PNG";
        return 0;
    }
    const out_manifest_entry *e = out_manifest_find(&r->manifest, jo->file);
    int ok;
    if (r->o->metadata) {
        ok = have && !strcmp(have, jo->parameters);
    } else {
        ok = !have && e && e->sha256 && e->parameters && !strcmp(e->sha256, sha) &&
             !strcmp(e->parameters, jo->parameters);
        if (!ok && !have && !e) {
            free(have);
            *reason = "no manifest line to check it against";
            return 0;
        }
    }
    free(have);
    *reason = "parameters changed";
    return ok;
}

/* The manifest's line for the image (manifest locked): appended unless the
 * last line for its name already says these bytes and these parameters, so
 * reruns and racing processes leave one line per image. */
static int ensure_line(run *r, const job_out *jo, const char *sha, double seconds, fm_error *err)
{
    const out_manifest_entry *e = out_manifest_find(&r->manifest, jo->file);
    if (e && e->sha256 && e->parameters && !strcmp(e->sha256, sha) && !strcmp(e->parameters, jo->parameters))
        return 0;
    char *line = manifest_line(r, jo->jb, jo->p, jo->file, jo->path, sha, jo->parameters, seconds);
    int rc = line ? out_manifest_append(&r->manifest, line, err) : core_fail(err, FM_EINPUT, "out of memory");
    free(line);
    return rc;
}

/* Resume: *done = 1 if the job's image is finished (skip it), else 0 to
 * make it (reason set when an existing file is to be replaced). Returns 0 or
 * an error code. */
static int batch_check(run *r, const job_out *jo, int *done, const char **reason, fm_error *err)
{
    const char *what;
    *reason = NULL;
    *done = 0;
    out_kind kind = out_path_kind(jo->path, &what);
    if (kind == OUT_OTHER) return core_fail(err, FM_EINPUT, "%s: not a regular file (%s)", jo->path, what);
    if (kind == OUT_ABSENT) return 0;
    if (kind == OUT_SYMLINK) {
        *reason = "was a symbolic link";
        return 0;
    }
    if (r->o->force) return 0;
    if (out_manifest_lock(&r->manifest, err)) return err->code;
    char sha[65];
    /* The image is there: another process (shard) may have listed it. */
    int rc = out_manifest_refresh(&r->manifest, err);
    if (!rc && (*done = job_done(r, jo, sha, reason))) rc = ensure_line(r, jo, sha, 0, err);
    out_manifest_unlock(&r->manifest);
    return rc;
}

/* Puts the written image in place and lists it (manifest locked). Another
 * process may have finished the same job meanwhile (two runs on one
 * directory): then its file stays and ours is dropped. */
static int batch_commit(run *r, const job_out *jo, out_temp *t, const char *sha, double seconds,
                        int *raced, fm_error *err)
{
    *raced = 0;
    if (out_manifest_lock(&r->manifest, err)) {
        out_temp_discard(t);
        return err->code;
    }
    const char *what, *reason;
    char their_sha[65];
    int rc;
    int theirs = out_path_kind(jo->path, &what) == OUT_REGULAR;
    /* Made meanwhile by another process, which may have listed it in its
     * own manifest: read the others before deciding. */
    if (theirs && out_manifest_refresh(&r->manifest, err)) {
        out_manifest_unlock(&r->manifest);
        out_temp_discard(t);
        return err->code;
    }
    if (!r->o->force && theirs && job_done(r, jo, their_sha, &reason)) {
        out_temp_discard(t);
        *raced = 1;
        rc = ensure_line(r, jo, their_sha, seconds, err);
    } else {
        rc = out_temp_commit(t, jo->path, 1, err);
        if (!rc) rc = ensure_line(r, jo, sha, seconds, err);
    }
    out_manifest_unlock(&r->manifest);
    return rc;
}

/* Images a prompt-file line (NULL: the command line) makes: with
 * --combinatorial, each of its k expansions (0: not a template) as many
 * times. A bad line holds the place of one. */
static int line_images(const cli_options *o, const pf_line *l, int k)
{
    if (l && l->line_no < 0) return 1;
    return (l && l->n_iter ? l->n_iter : o->batch_count) * (k > 0 ? k : 1);
}

/* Seeds do not wrap: A1111 makes image k of seed S with seed S + k, also
 * past 4294967295, where fmimage's seeds end, so a wrapped seed would
 * silently repeat another image. A line whose own --seed runs past the end
 * fails alone (exit 1 at the end); a base seed (--seed) that does is a usage
 * error; a random base is drawn low enough. Returns 0 with *base set, or the
 * exit code. */
static int plan_seeds(const cli_options *o, pf_line *lines, int n_lines, const wc_list *vars, int *bad, uint64_t *base)
{
    uint64_t j = 0, n_base = 0;
    for (int li = 0; li < (o->prompt_file ? n_lines : 1); li++) {
        pf_line *l = o->prompt_file ? &lines[li] : NULL;
        uint64_t images = (uint64_t)line_images(o, l, vars[li].n);
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
    if (!o->has_seed && n_base && (o->status || o->only_missing)) {
        /* A random base seed would name other files than the run's. */
        fprintf(stderr, "fmimage: %s: needs the run's --seed (jobs without their own seed are named by it)\n",
                o->status ? "--status" : "--only-missing");
        return 2;
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
/* The job's output file: path, and file (its name in the batch directory,
 * or the path for a single image). Returns 0, or -1 when too long. */
static int job_path(const run *r, const job *jb, char *file, char *path, size_t n_path)
{
    const cli_options *o = r->o;
    int n;
    if (r->dir) {
        snprintf(file, n_path, "%s%05d-%llu.png", r->prefix, jb->index, (unsigned long long)jb->seed);
        n = snprintf(path, n_path, "%s/%s", r->dir, file);
    } else if (r->single_dir) {
        n = snprintf(path, n_path, "%s/fmimage-%llu.png", r->single_dir, (unsigned long long)jb->seed);
    } else if (o->output) {
        n = snprintf(path, n_path, "%s", o->output);
    } else {
        n = snprintf(path, n_path, "fmimage-%llu.png", (unsigned long long)jb->seed);
    }
    if (n >= (int)n_path) {
        fprintf(stderr, "fmimage: %s: path too long\n", r->dir ? r->dir : o->output);
        return -1;
    }
    if (!r->dir) snprintf(file, n_path, "%s", path);
    return 0;
}

static int run_job(run *r, const job *jb)
{
    const cli_options *o = r->o;
    char path[PATH_MAX], file[PATH_MAX];
    fm_error err = {0};
    fm_params p;
    uint8_t *init = NULL, *rgb = NULL;
    if (job_path(r, jb, file, path, sizeof path)) return FM_EINPUT;
    char *params = NULL, sha[65];
    const char *reason = NULL, *what;
    int rc = use_job_model(r, jb, &err);
    if (!rc) rc = job_params(r, jb, &p, &init, &err);
    /* The infotext is the job's identity for resume, written or not. */
    if (!rc && !(params = fm_infotext(r->model, &p, r->model_name, r->model_hash, &err)))
        rc = err.code ? err.code : FM_EINPUT;
    if (!rc && r->upscaler) { /* the upscale is part of the image's identity */
        char *up = cli_upscale_params(params, r->upscaler_name, fm_upscaler_scale(r->upscaler));
        free(params);
        params = up;
        if (!up) rc = core_fail(&err, FM_EINPUT, "out of memory");
    }
    job_out jo = {jb, &p, file, path, params};
    if (!rc && r->dir) {
        int done;
        rc = batch_check(r, &jo, &done, &reason, &err);
        if (!rc && done) {
            r->skipped++;
            free(params);
            free(init);
            return 0;
        }
    } else if (!rc) {
        /* Checked before the work, and again at the rename. */
        out_kind kind = out_path_kind(path, &what);
        if (kind == OUT_OTHER) rc = core_fail(&err, FM_EINPUT, "%s: not a regular file (%s)", path, what);
        else if (kind != OUT_ABSENT && !o->force)
            rc = core_fail(&err, FM_EINPUT, "%s: exists (use --force to overwrite)", path);
    }
    int out_w = p.width, out_h = p.height; /* inpainting: the init image's or the canvas' size; the hires fix's */
    if (!rc) rc = fm_output_size(r->model, &p, &out_w, &out_h, &err);
    if (!rc && p.mask && mask_is_black(&p))
        fprintf(stderr, "fmimage: %s: the mask is all black: nothing to repaint, the image is unchanged\n", o->mask);
    if (!rc && !(rgb = malloc((size_t)out_w * out_h * 3)))
        rc = core_fail(&err, FM_EINPUT, "%s: out of memory", path);
    double t0 = cli_now();
    if (!rc) {
        cli_progress_start(&r->progress, file);
        p.progress = cli_progress_step;
        p.progress_user = &r->progress;
        p.stage = cli_progress_stage;
        p.stage_user = &r->progress;
        rc = fm_generate(r->model, &p, rgb, &err);
        fm_lora_info li; /* LoRA: what the merge did, for -v */
        fm_model_lora_info(r->model, &li);
        if (!rc && o->verbose && li.files)
            fprintf(stderr, "fmimage: lora: %d file%s, %d modules merged into %d tensors (%d kept from the last set, %d held in a file) in %.2f s; %d keys unmapped\n",
                    li.files, li.files == 1 ? "" : "s", li.modules, li.tensors, li.reused, li.in_file, li.seconds, li.unmapped);
    }
    if (!rc && r->upscaler) {
        uint8_t *big;
        double t_up = cli_now();
        rc = cli_upscale_rgb(r->upscaler, o, rgb, out_w, out_h, &big, &err);
        if (!rc) {
            free(rgb);
            rgb = big;
            out_w *= fm_upscaler_scale(r->upscaler);
            out_h *= fm_upscaler_scale(r->upscaler);
            cli_progress_stage(&r->progress, "upscale", cli_now() - t_up);
        }
    }
    double seconds = cli_now() - t0;
    out_temp t;
    int raced = 0;
    double t_write = cli_now();
    if (!rc) rc = out_temp_write(&t, path, rgb, out_w, out_h, o->metadata ? params : NULL, sha, &err);
    if (!rc) rc = r->dir ? batch_commit(r, &jo, &t, sha, seconds, &raced, &err) : out_temp_commit(&t, path, o->force, &err);
    if (!rc) cli_progress_stage(&r->progress, "write", cli_now() - t_write);
    if (!rc) cli_progress_done(&r->progress, p.steps, seconds);
    if (!rc && reason && !raced) fprintf(stderr, "fmimage: %s: replaced (%s)\n", path, reason);
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
    /* getline's -1 is also a read error ("Is a directory", EIO): not an
     * empty or shorter file. */
    if (ferror(f) && *bad >= 0) {
        fprintf(stderr, "fmimage: %s: %s\n", path, strerror(errno ? errno : EIO));
        *bad = -1;
    }
    if (*bad > MAX_LINE_ERRORS_SHOWN)
        fprintf(stderr, "fmimage: %s: %d more bad lines not shown\n", path, *bad - MAX_LINE_ERRORS_SHOWN);
    free(text);
    fclose(f);
    if (*bad < 0) {
        for (int i = 0; i < n; i++) pf_line_free(&lines[i]);
        free(lines);
        *n_lines = 0;
        return NULL;
    }
    *n_lines = n;
    return lines;
}

static int ends_with_png(const char *s)
{
    size_t n = strlen(s);
    return n > 4 && !strcasecmp(s + n - 4, ".png");
}

/* Where the images go (DESIGN.md "Output files"). One image: -o FILE, or
 * into -o DIR when DIR exists or ends in '/'. Several: -o DIR (created), or
 * for -o NAME.png next to it as NAME-NNNNN-SEED.png with NAME-manifest.jsonl. */
static int setup_output(run *r, fm_error *err)
{
    const cli_options *o = r->o;
    const char *out = o->output;
    struct stat sb;
    int is_dir = out && stat(out, &sb) == 0 && S_ISDIR(sb.st_mode);
    size_t len = out ? strlen(out) : 0;
    int single = !o->prompt_file && o->batch_count == 1 && !o->combinatorial && !o->n_xyz;
    if (len >= sizeof r->dir_buf) return core_fail(err, FM_EINPUT, "%s: path too long", out);
    char temp_dir[PATH_MAX];
    if (single) {
        if (out && (is_dir || (len && out[len - 1] == '/'))) {
            snprintf(r->dir_buf, sizeof r->dir_buf, "%s", out);
            while (len > 1 && r->dir_buf[len - 1] == '/') r->dir_buf[--len] = 0;
            if (!is_dir && out_make_dir(r->dir_buf, err)) return err->code;
            r->single_dir = r->dir_buf;
        }
        const char *slash = out ? strrchr(out, '/') : NULL;
        if (r->single_dir) snprintf(temp_dir, sizeof temp_dir, "%s", r->single_dir);
        else if (slash) snprintf(temp_dir, sizeof temp_dir, "%.*s", slash == out ? 1 : (int)(slash - out), out);
        else snprintf(temp_dir, sizeof temp_dir, ".");
        out_remove_stale_temps(temp_dir);
        return 0;
    }
    r->prefix = "";
    if (out && !is_dir && ends_with_png(out)) {
        const char *slash = strrchr(out, '/'), *base = slash ? slash + 1 : out;
        if (slash) snprintf(r->dir_buf, sizeof r->dir_buf, "%.*s", slash == out ? 1 : (int)(slash - out), out);
        else snprintf(r->dir_buf, sizeof r->dir_buf, ".");
        if (snprintf(r->prefix_buf, sizeof r->prefix_buf, "%.*s-", (int)strlen(base) - 4, base) >=
            (int)sizeof r->manifest.prefix)
            return core_fail(err, FM_EINPUT, "%s: path too long", out);
        r->prefix = r->prefix_buf;
    } else {
        snprintf(r->dir_buf, sizeof r->dir_buf, "%s", out ? out : "fmimage-out");
    }
    r->dir = r->dir_buf;
    /* Each shard appends only to its own manifest, so no two machines ever
     * append to one file (NFS appends are not atomic across clients). */
    if (o->shard_n > 1)
        snprintf(temp_dir, sizeof temp_dir, "%smanifest.d/%d-of-%d.jsonl", r->prefix, o->shard_k, o->shard_n);
    else
        snprintf(temp_dir, sizeof temp_dir, "%smanifest.jsonl", r->prefix);
    if (o->status) /* reads only: nothing is created or cleaned */
        return out_manifest_open(&r->manifest, r->dir, r->prefix, NULL, err) ? err->code : 0;
    if (out_make_dir(r->dir, err) || out_manifest_open(&r->manifest, r->dir, r->prefix, temp_dir, err)) return err->code;
    out_remove_stale_temps(r->dir);
    return 0;
}

static void free_lines(pf_line *lines, int n_lines)
{
    for (int i = 0; i < n_lines; i++) pf_line_free(&lines[i]);
    free(lines);
}

typedef enum { JOB_DONE, JOB_MISSING, JOB_BROKEN } job_state;

/* What is under a batch job's name now, without making anything: done (a
 * finished image, as resume decides), missing (nothing there) or broken
 * (anything else; why says what). With quick, a regular file whose
 * manifest line carries the job's infotext counts as done unread
 * (--only-missing: every process looks at every job). */
static job_state check_job(run *r, const job *jb, int quick, char *file, size_t n_file, const char **why)
{
    char path[PATH_MAX];
    *why = NULL;
    if (jb->line && jb->line->line_no < 0) {
        snprintf(file, n_file, "line %d", -jb->line->line_no);
        *why = "the line does not parse";
        return JOB_BROKEN;
    }
    if (job_path(r, jb, file, path, sizeof path)) {
        *why = "path too long";
        return JOB_BROKEN;
    }
    fm_params p;
    uint8_t *init = NULL;
    fm_error err = {0};
    char *params = NULL;
    if (!use_job_model(r, jb, &err) && !job_params(r, jb, &p, &init, &err))
        params = fm_infotext(r->model, &p, r->model_name, r->model_hash, &err);
    free(init);
    if (!params) {
        *why = "its settings are refused";
        return JOB_BROKEN;
    }
    const char *what;
    job_state st = JOB_BROKEN;
    out_kind kind = out_path_kind(path, &what);
    if (kind == OUT_ABSENT) {
        st = JOB_MISSING;
    } else if (kind == OUT_OTHER) {
        *why = what;
    } else if (quick) {
        /* Listed with this infotext and still of the listed size: a file
         * cut short or replaced since is made again. */
        const out_manifest_entry *e = out_manifest_find(&r->manifest, file);
        struct stat sb;
        st = kind == OUT_REGULAR && e && e->sha256 && e->parameters && !strcmp(e->parameters, params) &&
                     e->bytes >= 0 && lstat(path, &sb) == 0 && sb.st_size == e->bytes
                 ? JOB_DONE
                 : JOB_MISSING;
    } else {
        job_out jo = {jb, &p, file, path, params};
        char sha[65];
        if (job_done(r, &jo, sha, why)) st = JOB_DONE;
        else if (!strcmp(*why, "was a symbolic link")) *why = "a symbolic link";
    }
    free(params);
    return st;
}

#define MAX_STATUS_NAMES 20

/* --status: one line per shard of N on stdout (N: --shard's, else the
 * largest K-of-N among the manifests, else 1), a total, and the names of at
 * most 20 missing and 20 broken jobs. 0 when every job is done, else 1. */
static int status_report(run *r, const job *jobs, int n_jobs)
{
    int n = r->o->has_shard ? r->o->shard_n : r->manifest.shards_seen;
    int (*count)[3] = calloc((size_t)n, sizeof *count);
    if (!count) { fprintf(stderr, "fmimage: out of memory\n"); return 1; }
    int shown[3] = {0}, total[3] = {0};
    for (int i = 0; i < n_jobs && !interrupted; i++) {
        char file[PATH_MAX];
        const char *why;
        job_state st = check_job(r, &jobs[i], 0, file, sizeof file, &why);
        count[jobs[i].index % n][st]++;
        total[st]++;
        if (st == JOB_DONE || shown[st]++ >= MAX_STATUS_NAMES) continue;
        printf("%s %s (shard %d/%d", st == JOB_MISSING ? "missing" : "broken", file, jobs[i].index % n, n);
        if (jobs[i].line && jobs[i].line->line_no > 0) printf(", line %d", jobs[i].line->line_no);
        printf(why ? "): %s\n" : ")\n", why);
    }
    for (int st = JOB_MISSING; st <= JOB_BROKEN; st++)
        if (shown[st] > MAX_STATUS_NAMES)
            printf("... and %d more %s\n", shown[st] - MAX_STATUS_NAMES, st == JOB_MISSING ? "missing" : "broken");
    for (int k = 0; k < n; k++)
        printf("shard %d/%d: %d done, %d missing, %d broken\n", k, n, count[k][JOB_DONE], count[k][JOB_MISSING],
               count[k][JOB_BROKEN]);
    printf("total: %d jobs, %d done, %d missing, %d broken\n", n_jobs, total[JOB_DONE], total[JOB_MISSING],
           total[JOB_BROKEN]);
    free(count);
    return total[JOB_DONE] == n_jobs ? 0 : 1;
}

/* Every job of the run in order, bad lines included (line_no < 0). */
static void free_jobs(job *v, int n)
{
    for (int i = 0; v && i < n; i++) free(v[i].prompt);
    free(v);
}

/* Every job of the run in order, bad lines included (line_no < 0). A
 * template's jobs carry their prompt: with --combinatorial expansion i / k
 * of the line's images (each expansion --batch-count times), else the one
 * drawn from the job's seed. */
static job *list_jobs(const cli_options *o, const pf_line *lines, int n_lines, const wc_list *vars, uint64_t base,
                      const xyz_plan *xyz, int *n_jobs)
{
    job *v = NULL;
    int n = 0, cap = 0, j = 0;
    if (xyz) { /* X/Y/Z plot: cell c is job c, listed grouped by checkpoint (A1111 loops over the costly axis outermost) */
        int cells = xyz_cells(xyz), groups = 1;
        for (int c = 0; c < cells; c++)
            if (xyz_checkpoint_index(xyz, c) >= groups) groups = xyz_checkpoint_index(xyz, c) + 1;
        if (!(v = calloc((size_t)cells, sizeof *v))) return NULL;
        for (int g = 0; g < groups; g++)
            for (int c = 0; c < cells; c++) {
                if (xyz_checkpoint_index(xyz, c) != g) continue;
                int oom = 0;
                v[n] = (job){.index = c, .seed = xyz_seed(xyz, c, base), .xyz_cell = c + 1};
                v[n].prompt = wcp_draw(o, NULL, v[n].seed, &oom);
                n++;
                if (oom) { free_jobs(v, n); return NULL; }
            }
        *n_jobs = cells;
        return v;
    }
    for (int li = 0; li < (o->prompt_file ? n_lines : 1); li++) {
        const pf_line *l = o->prompt_file ? &lines[li] : NULL;
        int images = line_images(o, l, vars[li].n), per = vars[li].n ? images / vars[li].n : images;
        for (int i = 0; i < images; i++, j++) {
            if (n == cap) {
                cap = cap ? cap * 2 : 256;
                job *p = realloc(v, sizeof *p * (size_t)cap);
                if (!p) { free_jobs(v, n); return NULL; }
                v = p;
            }
            v[n] = (job){.index = j, .line = l, .seed = l && l->has_seed ? l->seed + i : base + (uint64_t)j};
            int oom = 0;
            if (l && l->line_no < 0) { /* a bad line has no prompt */
            } else if (vars[li].n) {
                if (!(v[n].prompt = strdup(vars[li].v[i / per]))) oom = 1;
            } else {
                v[n].prompt = wcp_draw(o, l, v[n].seed, &oom);
            }
            n++;
            if (oom) { free_jobs(v, n); return NULL; }
        }
    }
    *n_jobs = n;
    return v;
}

/* --only-missing: every job not listed as done, claimed one at a time so
 * that any number of processes share them whatever they find done when they
 * start; shard K starts K/N of the way into the list, so N processes start
 * on different jobs. Returns the run's status, 0 if not interrupted. */
static int run_missing(run *r, const job *jobs, int n_jobs)
{
    const cli_options *o = r->o;
    int start = (int)((long long)o->shard_k * n_jobs / o->shard_n);
    for (int t = 0; t < n_jobs; t++) {
        const job *jb = &jobs[(start + t) % n_jobs];
        if (jb->line && jb->line->line_no < 0) continue;
        if (interrupted) return 128 + interrupted;
        char file[PATH_MAX], claim[4096];
        const char *why;
        if (check_job(r, jb, 1, file, sizeof file, &why) == JOB_DONE) {
            r->skipped++;
            continue;
        }
        int fd;
        if (!out_claim(r->dir, file, &fd, claim)) continue; /* another process makes it */
        int rc = run_job(r, jb);
        out_claim_release(fd, claim);
        if (rc == FM_EINTERRUPT || interrupted) return 128 + (interrupted ? interrupted : SIGINT);
        if (rc) r->failed = 1;
    }
    return 0;
}

/* rgb (cw x ch) cut or padded (black) to w x h, in place of *rgb. */
static int fit_image(uint8_t **rgb, int cw, int ch, int w, int h)
{
    if (cw == w && ch == h) return 0;
    uint8_t *fit = calloc((size_t)w * h, 3);
    for (int y = 0; fit && y < h && y < ch; y++)
        memcpy(fit + (size_t)y * w * 3, *rgb + (size_t)y * cw * 3, (size_t)(cw < w ? cw : w) * 3);
    free(*rgb);
    *rgb = fit;
    return fit ? 0 : -1;
}

/* Draws the grid of nx x ny images (w x h each) with its labels and writes
 * it to the output folder as name with infotext info (NULL: none). *grid
 * gets the drawn pixels (*gw x *gh) when grid is not NULL. 0, or -1 said. */
static int write_grid(run *r, const char *name, const uint8_t *const *imgs, int w, int h, int nx, int ny,
                      const char *const *xl, const char *const *yl, const char *info, uint8_t **grid, int *gw, int *gh)
{
    char path[PATH_MAX], why[300] = "", note[300];
    uint8_t *g = NULL;
    int W, H;
    fm_error err = {0};
    if (snprintf(path, sizeof path, "%s/%s", r->dir, name) >= (int)sizeof path) {
        fprintf(stderr, "fmimage: %s: path too long\n", name);
        return -1;
    }
    if (grid_draw(imgs, w, h, nx, ny, xl, yl, &g, &W, &H, note, sizeof note, why, sizeof why)) {
        fprintf(stderr, "fmimage: %s: %s\n", name, why);
        return -1;
    }
    if (note[0]) fprintf(stderr, "fmimage: %s: %s\n", name, note);
    out_temp t;
    char sha[65];
    int rc = 0;
    if (out_temp_write(&t, path, g, W, H, info, sha, &err) || out_temp_commit(&t, path, 1, &err)) {
        report(&err);
        rc = -1;
    }
    if (grid && !rc) {
        *grid = g;
        *gw = W;
        *gh = H;
    } else {
        free(g);
    }
    return rc;
}

/* The nx x ny cells of Z value iz read from their PNGs (cut or padded to
 * the first one's size), *params the first one's infotext. Returns how
 * many are not there yet, or -1 when out of memory. */
static int read_cells(run *r, const job *const *by_cell, int iz, uint8_t **cells, int *w, int *h, char **params)
{
    const xyz_plan *x = &r->xyz;
    int n = xyz_len(x, 0) * xyz_len(x, 1), missing = 0;
    *w = *h = 0;
    *params = NULL;
    for (int k = 0; k < n; k++) {
        const job *jb = by_cell[k + iz * n];
        char sha[65], *info = NULL, path[PATH_MAX], file[PATH_MAX];
        const char *bad;
        fm_error err = {0};
        int cw, ch;
        uint8_t *rgb = NULL;
        if (job_path(r, jb, file, path, sizeof path) || !out_png_complete(path, &info, sha, &bad) ||
            !(rgb = fm_image_read(path, &cw, &ch, &err))) {
            free(info);
            missing++;
            continue;
        }
        if (!*w) { *w = cw; *h = ch; }
        if (fit_image(&rgb, cw, ch, *w, *h)) { free(info); return -1; } /* a Size axis */
        cells[k] = rgb;
        if (k == 0) *params = info;
        else free(info);
    }
    return missing;
}

/* The labels of axis a, malloc'd (NULL when out of memory). */
static char **axis_labels(const xyz_plan *x, int a)
{
    int n = xyz_len(x, a);
    char **v = calloc((size_t)n, sizeof *v), lab[512];
    for (int i = 0; v && i < n; i++)
        if (!(v[i] = strdup(xyz_label(x, a, i, lab, sizeof lab)))) {
            for (int k = 0; k < i; k++) free(v[k]);
            free(v);
            return NULL;
        }
    return v;
}

static void free_strs(char **v, int n)
{
    for (int i = 0; v && i < n; i++) free(v[i]);
    free(v);
}

/* X/Y/Z plot: one grid per Z value, drawn from its cells' PNGs once all
 * are there (another shard may still be making some: then it waits for the
 * last one to finish), labelled as A1111 labels it, with its first cell's
 * infotext and the plot's X and Y fields. With several Z values, once all
 * their grids are there, A1111's combined grid: the per-Z grids side by
 * side (image_grid(rows=1)) under a band of Z labels drawn at the per-Z
 * grid's size (draw_grid_annotations(z_grid, sub_w, sub_h, z labels), no
 * margin), with cell 0's infotext and all three axes' fields, as
 * xyz_grid.png. Failures are reported and counted. */
static void xyz_grids(run *r, const job *jobs, int n_jobs)
{
    const xyz_plan *x = &r->xyz;
    int nx = xyz_len(x, 0), ny = xyz_len(x, 1), nz = xyz_len(x, 2), sw = 0, sh = 0, subs = 0;
    const job **by_cell = calloc((size_t)n_jobs, sizeof *by_cell);
    uint8_t **sub = calloc((size_t)nz, sizeof *sub), **cells = calloc((size_t)nx * ny, sizeof *cells);
    char **xl = axis_labels(x, 0), **yl = axis_labels(x, 1), **zl = axis_labels(x, 2), *main_params = NULL;
    if (!by_cell || !sub || !cells || !xl || !yl || !zl) {
        fprintf(stderr, "fmimage: xyz_grid: out of memory\n");
        r->failed = 1;
        nz = 0;
    }
    for (int i = 0; by_cell && i < n_jobs; i++) by_cell[jobs[i].index] = &jobs[i];
    for (int iz = 0; iz < nz; iz++) {
        char name[PATH_MAX], *params;
        int w, h, gw, gh;
        snprintf(name, sizeof name, "%sxyz_grid-%d.png", r->prefix ? r->prefix : "", iz);
        int missing = read_cells(r, by_cell, iz, cells, &w, &h, &params);
        if (missing < 0) {
            fprintf(stderr, "fmimage: %s: out of memory\n", name);
            r->failed = 1;
        } else if (missing) {
            if (!r->o->quiet)
                fprintf(stderr, "fmimage: %s: %d of its %d cells are not made yet; no grid\n", name, missing, nx * ny);
        } else {
            char *info = r->o->metadata ? xyz_grid_infotext(x, params ? params : "", 0) : NULL;
            if (write_grid(r, name, (const uint8_t *const *)cells, w, h, nx, ny, (const char *const *)xl,
                           (const char *const *)yl, info, nz > 1 ? &sub[iz] : NULL, &gw, &gh))
                r->failed = 1;
            else if (nz > 1 && !sw) sw = gw, sh = gh;
            if (sub[iz] && fit_image(&sub[iz], gw, gh, sw, sh)) r->failed = 1;
            subs += sub[iz] != NULL;
            free(info);
        }
        if (iz == 0) main_params = params;
        else free(params);
        for (int k = 0; k < nx * ny; k++) free(cells[k]), cells[k] = NULL;
    }
    if (nz > 1 && subs == nz) {
        char name[PATH_MAX], *info = r->o->metadata ? xyz_grid_infotext(x, main_params ? main_params : "", 1) : NULL;
        const char *no_rows[] = {""};
        snprintf(name, sizeof name, "%sxyz_grid.png", r->prefix ? r->prefix : "");
        if (write_grid(r, name, (const uint8_t *const *)sub, sw, sh, nz, 1, (const char *const *)zl, no_rows, info,
                       NULL, NULL, NULL))
            r->failed = 1;
        free(info);
    }
    for (int iz = 0; sub && iz < nz; iz++) free(sub[iz]);
    free(sub);
    free(cells);
    free(by_cell);
    free(main_params);
    free_strs(xl, xyz_len(x, 0));
    free_strs(yl, xyz_len(x, 1));
    free_strs(zl, xyz_len(x, 2));
}

static int generate_in(run *rp)
{
    const cli_options *o = rp->o;
    char demo[PATH_MAX];
    fm_error err = {0};
    rp->model_path = o->model ? o->model : find_demo_model(demo, sizeof demo);
    if (!rp->model_path) {
        fprintf(stderr, "fmimage: --model: no model given and the demo model is not installed\n");
        return 1;
    }
    lora_dir_setup(rp);
    embeddings_dir_setup(rp);
    if (rp->has_xyz) { /* X/Y/Z plot: Checkpoint name values found before anything loads */
        char dir[PATH_MAX], why[PATH_MAX + 600];
        const char *slash = strrchr(rp->model_path, '/');
        if (o->models_dir) snprintf(dir, sizeof dir, "%s", o->models_dir);
        else if (slash) snprintf(dir, sizeof dir, "%.*s", slash == rp->model_path ? 1 : (int)(slash - rp->model_path), rp->model_path);
        else snprintf(dir, sizeof dir, ".");
        if (xyz_resolve_checkpoints(&rp->xyz, dir, why, sizeof why)) {
            fprintf(stderr, "fmimage: --xyz: %s\n", why);
            return 2;
        }
    }
    int n_lines = 0, bad = 0;
    pf_line *lines = NULL;
    if (o->prompt_file) {
        lines = read_prompt_file(o->prompt_file, &n_lines, &bad);
        if (bad < 0) return 1;
    }
    uint64_t base;
    wc_list *vars = NULL; /* wildcards: checked (and expanded) before the model loads */
    int n_vars = o->prompt_file ? n_lines : 1;
    int rc = wcp_plan(o, lines, n_lines, &bad, &vars);
    if (!rc) rc = plan_seeds(o, lines, n_lines, vars, &bad, &base);
    if (rc) {
        wcp_free(vars, n_vars);
        free_lines(lines, n_lines);
        return rc;
    }
    if (load_first_model(rp, &err)) {
        report(&err);
        wcp_free(vars, n_vars);
        free_lines(lines, n_lines);
        return 1;
    }
    if (o->upscale_model && !(rp->upscaler = fm_upscaler_load(o->upscale_model, &err))) {
        report(&err);
        wcp_free(vars, n_vars);
        free_lines(lines, n_lines);
        fm_model_free(rp->model);
        fm_upscaler_free(rp->upscaler);
        fm_upscaler_free(rp->hires_model);
        return 1;
    }
    if (rp->upscaler) out_file_stem(o->upscale_model, rp->upscaler_name, sizeof rp->upscaler_name);
    /* hires fix: an --hires-upscaler that names a file is an upscaling
     * model, called by its file name as A1111 lists models */
    struct stat hs;
    if (o->hires_upscaler && stat(o->hires_upscaler, &hs) == 0) {
        if (!(rp->hires_model = fm_upscaler_load(o->hires_upscaler, &err))) {
            report(&err);
            wcp_free(vars, n_vars);
            free_lines(lines, n_lines);
            fm_model_free(rp->model);
            fm_upscaler_free(rp->upscaler);
            return 1;
        }
        out_file_stem(o->hires_upscaler, rp->hires_name, sizeof rp->hires_name);
    }
    /* The command line's own values are checked once, as usage errors. */
    job probe = {0};
    fm_params p;
    uint8_t *init = NULL;
    rc = job_params(rp, &probe, &p, &init, &err);
    free(init);
    if (rc) {
        report(&err);
        wcp_free(vars, n_vars);
        free_lines(lines, n_lines);
        fm_model_free(rp->model);
        fm_upscaler_free(rp->upscaler);
        fm_upscaler_free(rp->hires_model);
        return rc == FM_EUSAGE ? 2 : 1;
    }
    if (!o->has_seed && !o->quiet && !o->status) fprintf(stderr, "fmimage: seed %llu\n", (unsigned long long)base);
    if (o->verbose) {
        char why[PATH_MAX + 256];
        double t_prec = cli_now();
        fm_model_precision(rp->model, o->precision, why, sizeof why);
        fprintf(stderr, "fmimage: precision: %s\n", why);
        fprintf(stderr, "fmimage: precision decision %.3f s\n", cli_now() - t_prec);
        double t_conv = cli_now();
        fm_conv_choice(why, sizeof why);
        fprintf(stderr, "fmimage: convolutions: %s\n", why);
        fprintf(stderr, "fmimage: convolution decision %.3f s\n", cli_now() - t_conv);
    }
    if (setup_output(rp, &err)) {
        report(&err);
        wcp_free(vars, n_vars);
        free_lines(lines, n_lines);
        fm_model_free(rp->model);
        fm_upscaler_free(rp->upscaler);
        fm_upscaler_free(rp->hires_model);
        return 1;
    }
    rp->progress.enabled = !o->quiet;
    rp->progress.verbose = o->verbose;
    rp->progress.tty = isatty(2);
    rp->progress.interrupted = &interrupted;
    rp->failed = bad > 0;
    int status = 0, n_jobs = 0;
    job *jobs = list_jobs(o, lines, n_lines, vars, base, rp->has_xyz ? &rp->xyz : NULL, &n_jobs);
    wcp_free(vars, n_vars);
    vars = NULL;
    if (!jobs && n_jobs) {
        fprintf(stderr, "fmimage: out of memory\n");
        status = 1;
    } else if (o->status) {
        status = status_report(rp, jobs, n_jobs);
        rp->failed = 0;
    } else if (o->only_missing) {
        status = run_missing(rp, jobs, n_jobs);
    } else {
        for (int i = 0; i < n_jobs && !status; i++) {
            const job *jb = &jobs[i];
            if (jb->index % o->shard_n != o->shard_k || (jb->line && jb->line->line_no < 0)) continue;
            if (interrupted) { status = 128 + interrupted; break; }
            rc = run_job(rp, jb);
            if (rc == FM_EINTERRUPT || interrupted) status = 128 + (interrupted ? interrupted : SIGINT);
            else if (rc) rp->failed = 1;
        }
    }
    if (rp->has_xyz && jobs && !o->status && !status) xyz_grids(rp, jobs, n_jobs);
    free_jobs(jobs, n_jobs);
    free_lines(lines, n_lines);
    if (rp->dir) out_manifest_close(&rp->manifest);
    if (rp->skipped && !o->quiet)
        fprintf(stderr, "fmimage: skipped %d finished image%s\n", rp->skipped, rp->skipped == 1 ? "" : "s");
    fm_model_free(rp->model);
    fm_upscaler_free(rp->upscaler);
    fm_upscaler_free(rp->hires_model);
    return status ? status : rp->failed ? 1 : 0;
}

/* --styles-file / --style: the styles are read and resolved once, before
 * the model; a job's styled texts live in the run until the next job. */
static int generate(const cli_options *o)
{
    run r = {.o = o};
    sty_db db = {0};
    for (int i = 0; i < o->n_xyz; i++) { /* X/Y/Z plot: the axes, as usage errors */
        char why[512];
        if (xyz_add(&r.xyz, o->xyz[i], why, sizeof why)) {
            fprintf(stderr, "fmimage: --xyz: %s\n", why);
            xyz_free(&r.xyz);
            return 2;
        }
        r.has_xyz = 1;
    }
    if (r.has_xyz) {
        char why[512];
        if (xyz_check(&r.xyz, o->prompt ? o->prompt : "", o->negative ? o->negative : "", why, sizeof why)) {
            fprintf(stderr, "fmimage: --xyz: %s\n", why);
            xyz_free(&r.xyz);
            return 2;
        }
    }
    if (o->styles_file) {
        char why[300];
        if (sty_load(o->styles_file, &db, why, sizeof why)) {
            fprintf(stderr, "fmimage: --styles-file: %s: %s\n", o->styles_file, why);
            return 1;
        }
        for (int i = 0; i < o->n_styles; i++) {
            if (!(r.styles[i] = sty_find(&db, o->styles[i]))) {
                fprintf(stderr, "fmimage: --style: %s: no such style in %s\n", o->styles[i], o->styles_file);
                sty_free(&db);
                return 2;
            }
        }
        r.n_styles = o->n_styles;
    }
    int rc = generate_in(&r);
    free(r.styled_prompt);
    free(r.styled_negative);
    free(r.mask);
    free(r.xyz_prompt);
    free(r.xyz_negative);
    xyz_free(&r.xyz);
    sty_free(&db);
    return rc;
}

static int info(const cli_options *o)
{
    fm_error err = {0};
    fm_load_options lo = cli_load_options(o);
    fm_model *m = fm_model_load_with(o->model, &lo, &err);
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

static const char *env_get(const char *name) { return getenv(name); }

/* Threads default to the CPUs the scheduler granted, not the machine's: a
 * Slurm task or a container limited to 2 CPUs on a 64-core node runs 2
 * threads (more would only wait for each other). */
static int granted_cpus(void)
{
    cpu_set_t set;
    int affinity = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : omp_get_num_procs();
    const char *source;
    return shard_granted_cpus("", affinity, env_get, &source);
}

int main(int argc, char **argv)
{
    prefer_passive_waiting(argv);
    /* the convert subcommand has options of its own (cli/convert.c) */
    if (argc >= 2 && !strcmp(argv[1], "convert")) return cli_convert_main(argc - 1, argv + 1);
    if (argc >= 2 && !strcmp(argv[1], "serve")) { /* fmimage serve (cli/serve.c, server/) */
        char demo[PATH_MAX];
        return cli_serve_main(argc - 1, argv + 1, find_demo_model(demo, sizeof demo));
    }
    cli_options o;
    int rc = cli_parse(argc, argv, &o);
    if (rc) return rc;
    if (o.threads) omp_set_num_threads(o.threads);
    else if (!getenv("OMP_NUM_THREADS")) omp_set_num_threads(granted_cpus());
    /* A file-size limit (ulimit -f) must become a write error that removes
     * the temporary file, not a kill that leaves it behind. */
    signal(SIGXFSZ, SIG_IGN);
    switch (o.mode) {
    case MODE_HELP: cli_print_help(); return 0;
    case MODE_VERSION: printf("fmimage %s\n", FM_VERSION); return 0;
    case MODE_LIST_SAMPLERS: fputs(fm_sampler_list(), stdout); return 0;
    case MODE_INFO: return info(&o);
    case MODE_PRINT_TOKENS: return print_tokens(&o);
    case MODE_UPSCALE: rc = cli_upscale_main(&o); if (o.verbose) print_peak_rss(); return rc;
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
