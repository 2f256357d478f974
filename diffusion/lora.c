/* LoRA in the pipeline (diffusion/lora.h): tags, lookup, hashes, and the
 * merge the model keeps between generations. */
#include "diffusion/lora.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "core/sha256.h"
#include "diffusion/pipeline_internal.h"

/* ---- lookup ---- */

static int is_ext(const char *name, const char *ext, size_t *stem)
{
    size_t n = strlen(name), k = strlen(ext);
    if (n <= k || strcasecmp(name + n - k, ext)) return 0;
    *stem = n - k;
    return 1;
}

typedef struct finder {
    const char *name;
    int by_alias;       /* second pass: ss_output_name */
    char *found;        /* first match */
    int matches;
} finder;

/* A1111 walks the directory with followlinks; the depth bound keeps a
 * link loop finite. */
static void walk(finder *f, const char *dir, int depth)
{
    struct dirent **ents = NULL;
    int n = depth > 16 ? -1 : scandir(dir, &ents, NULL, alphasort);
    for (int i = 0; i < n; i++) {
        const char *e = ents[i]->d_name;
        char path[4096];
        if (e[0] == '.' || snprintf(path, sizeof path, "%s/%s", dir, e) >= (int)sizeof path) continue;
        struct stat sb;
        if (stat(path, &sb)) continue;
        size_t stem;
        if (S_ISDIR(sb.st_mode)) {
            walk(f, path, depth + 1);
        } else if (S_ISREG(sb.st_mode) &&
                   (is_ext(e, ".safetensors", &stem) || is_ext(e, ".pt", &stem) || is_ext(e, ".ckpt", &stem))) {
            int hit;
            if (!f->by_alias) {
                hit = strlen(f->name) == stem && !strncmp(e, f->name, stem);
            } else {
                fm_error quiet = {0};
                wt_source *s = is_ext(e, ".safetensors", &stem) ? wt_open(path, &quiet) : NULL;
                const char *alias = s ? wt_meta(s, "ss_output_name") : NULL;
                hit = alias && !strcmp(alias, f->name);
                wt_close(s);
            }
            if (hit && !f->matches++) f->found = strdup(path);
        }
    }
    for (int i = 0; i < n; i++) free(ents[i]);
    free(ents);
}

/* The file for a tag's NAME under dir (recursively): NAME.safetensors,
 * else the one file whose ss_output_name metadata is NAME. *path malloc'd. */
static int df_lora_find(const char *dir, const char *name, char **path, fm_error *err)
{
    *path = NULL;
    if (!dir) return core_fail(err, FM_EINPUT, "lora \"%s\": not found (no LoRA directory: --lora-dir)", name);
    finder f = {.name = name};
    walk(&f, dir, 0);
    if (!f.matches) { /* an alias shared by two files is no alias (A1111's forbidden_network_aliases) */
        f.by_alias = 1;
        walk(&f, dir, 0);
        if (f.matches > 1) {
            free(f.found);
            f.found = NULL;
        }
    }
    size_t stem;
    if (!f.found) return core_fail(err, FM_EINPUT, "lora \"%s\": not found in %s", name, dir);
    if (!is_ext(f.found, ".safetensors", &stem)) {
        core_fail(err, FM_EINPUT, "lora \"%s\": %s is a pickle (.pt/.ckpt), not loaded: convert it to .safetensors", name, f.found);
        free(f.found);
        return FM_EINPUT;
    }
    *path = f.found;
    return 0;
}

/* ---- hashes ---- */

/* A1111's short hash (12 hex digits): sshs_model_hash, else the sha256 of
 * the data after the safetensors header (the "addnet" hash). */
static int df_lora_hash(const char *path, char out[13], fm_error *err)
{
    wt_source *s = wt_open(path, err);
    if (!s) return FM_EINPUT;
    const char *meta = wt_meta(s, "sshs_model_hash");
    int rc = 0;
    if (meta && strlen(meta) >= 12) {
        snprintf(out, 13, "%.12s", meta);
    } else {
        FILE *fp = fopen(path, "rb");
        unsigned char head[8];
        uint64_t n = 0;
        char hex[65];
        if (!fp || fread(head, 1, 8, fp) != 8) rc = core_fail(err, FM_EINPUT, "%s: %s", path, fp ? "truncated" : strerror(errno));
        for (int i = 7; !rc && i >= 0; i--) n = n << 8 | head[i];
        if (!rc && fseeko(fp, (off_t)(8 + n), SEEK_SET)) rc = core_fail(err, FM_EINPUT, "%s: %s", path, strerror(errno));
        if (!rc && core_sha256_stream(fp, hex)) rc = core_fail(err, FM_EINPUT, "%s: read error", path);
        if (fp) fclose(fp);
        if (!rc) snprintf(out, 13, "%.12s", hex);
    }
    wt_close(s);
    return rc;
}

static char *file_stem(const char *path)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    const char *dot = strrchr(b, '.');
    return strndup(b, dot && dot > b ? (size_t)(dot - b) : strlen(b));
}

/* p's adapters: fm_params.loras then the prompt's tags, paths resolved. */
static int df_lora_collect(const fm_params *p, df_lora_list *out, fm_error *err)
{
    df_lora_list tags;
    if (df_lora_parse(p->prompt ? p->prompt : "", &tags, err)) return FM_EINPUT;
    *out = (df_lora_list){.prompt = tags.prompt};
    tags.prompt = NULL;
    int rc = 0;
    for (int i = 0; !rc && i < p->n_loras; i++) {
        const fm_lora *l = &p->loras[i];
        char *stem = l->path ? file_stem(l->path) : NULL;
        if (!l->path) rc = core_fail(err, FM_EUSAGE, "loras[%d]: no path", i);
        else if (!isfinite(l->te_mult) || !isfinite(l->unet_mult)) rc = core_fail(err, FM_EUSAGE, "%s: a multiplier is not finite", l->path);
        else if (!stem || df_lora_add(out, stem, strlen(stem), l->te_mult, l->unet_mult) ||
                 !(out->v[out->n - 1].path = strdup(l->path)))
            rc = core_fail(err, FM_EINPUT, "out of memory");
        free(stem);
    }
    for (int i = 0; !rc && i < tags.n; i++) {
        df_lora_ref *t = &tags.v[i];
        if (df_lora_add(out, t->name, strlen(t->name), t->te, t->unet)) rc = core_fail(err, FM_EINPUT, "out of memory");
        else rc = df_lora_find(p->lora_dir, t->name, &out->v[out->n - 1].path, err);
    }
    df_lora_list_free(&tags);
    if (rc) df_lora_list_free(out);
    return rc;
}

char *fm_lora_hashes(const fm_params *p, fm_error *err)
{
    core_error_clear(err);
    if (!p) return core_fail(err, FM_EUSAGE, "fm_lora_hashes: no parameters"), NULL;
    df_lora_list l;
    if (df_lora_collect(p, &l, err)) return NULL;
    size_t cap = 1, len = 0;
    for (int i = 0; i < l.n; i++) cap += strlen(l.v[i].name) + 20;
    char *s = malloc(cap);
    /* p.lora_hashes is a dict by mentioned name: a name given twice is listed once */
    for (int i = 0; s && i < l.n; i++) {
        int dup = 0;
        for (int j = 0; j < i; j++) dup |= !strcmp(l.v[i].name, l.v[j].name);
        if (dup) continue;
        char h[13];
        if (df_lora_hash(l.v[i].path, h, err)) {
            free(s);
            s = NULL;
            break;
        }
        char *name = l.v[i].name, *w = name;
        for (char *c = name; *c; c++) /* remove_symbols = str.maketrans('', '', ":,") */
            if (*c != ':' && *c != ',') *w++ = *c;
        *w = 0;
        len += (size_t)snprintf(s + len, cap - len, "%s%s: %s", len ? ", " : "", name, h);
    }
    if (s) s[len] = 0;
    else if (err && !err->code) core_fail(err, FM_EINPUT, "out of memory");
    df_lora_list_free(&l);
    return s;
}

/* ---- the model's merge ---- */

void df_lora_state_free(df_lora_state *s)
{
    wt_close(s->merged);
    for (int i = 0; i < s->n_files; i++) {
        wt_lora_close(s->files[i].lora);
        free(s->files[i].path);
    }
    free(s->files);
    free(s->key);
    *s = (df_lora_state){0};
}

/* A key names the set and the dtype its U-Net weights were merged into. */
static char *set_key(const df_lora_list *l, core_dtype unet_dtype)
{
    size_t cap = 16;
    for (int i = 0; i < l->n; i++) cap += strlen(l->v[i].path) + 64;
    char *k = malloc(cap);
    size_t o = k ? (size_t)snprintf(k, cap, "%d;", (int)unet_dtype) : 0;
    for (int i = 0; k && i < l->n; i++)
        o += (size_t)snprintf(k + o, cap - o, "%s|%a|%a;", l->v[i].path, l->v[i].te, l->v[i].unet);
    if (k) k[o] = 0;
    return k;
}

/* The text encoders and the U-Net bound anew to src (views; the merged
 * tensors are src's). The old parts go only once both new ones exist. */
static int rebind(fm_model *m, const wt_source *src, fm_error *err)
{
    te_encoder enc = {0};
    if (te_encoder_load(&enc, src, &m->cfg, err)) return FM_EINPUT;
    un_model *u = un_load(src, &m->cfg.unet, un_precision(m->unet), err);
    if (!u) {
        te_encoder_free(&enc);
        return FM_EINPUT;
    }
    te_encoder_free(&m->text);
    m->text = enc;
    un_free(m->unet);
    m->unet = u;
    return 0;
}

static wt_lora *open_file(df_lora_state *s, df_lora_file *keep, int *n_keep, const char *path, fm_model *m,
                          fm_error *err)
{
    for (int i = 0; i < *n_keep; i++)
        if (!strcmp(keep[i].path, path)) return keep[i].lora;
    for (int i = 0; i < s->n_files; i++)
        if (s->files[i].lora && !strcmp(s->files[i].path, path)) {
            keep[(*n_keep)++] = s->files[i];
            s->files[i] = (df_lora_file){0};
            return keep[*n_keep - 1].lora;
        }
    char *p = strdup(path);
    wt_lora *l = p ? wt_lora_open(path, m->src, &m->cfg, err) : NULL;
    if (!p) core_fail(err, FM_EINPUT, "out of memory");
    if (!l) {
        free(p);
        return NULL;
    }
    keep[(*n_keep)++] = (df_lora_file){p, l};
    return l;
}

/* Where merged weights are kept as file pages (wt_merged_open_as'
 * spill_dir): FMIMAGE_LORA_SPILL=DIR, or =off for memory; unset or empty:
 * $XDG_CACHE_HOME/fmimage (an absolute XDG_CACHE_HOME), else
 * $HOME/.cache/fmimage, made when missing, as the precision cache is.
 * NULL: in memory. */
static const char *spill_dir(char dir[PATH_MAX])
{
    const char *env = getenv("FMIMAGE_LORA_SPILL");
    char base[PATH_MAX];
    if (env && !strcmp(env, "off")) return NULL;
    if (env && *env) return snprintf(dir, PATH_MAX, "%s", env) < PATH_MAX ? dir : NULL;
    if (df_cache_base(base) || snprintf(dir, PATH_MAX, "%s/fmimage", base) >= PATH_MAX) return NULL;
    mkdir(base, 0700);
    mkdir(dir, 0755);
    return dir;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int df_lora_apply(fm_model *m, const fm_params *p, char **prompt, fm_error *err)
{
    df_lora_state *s = &m->lora;
    *prompt = NULL;
    if (s->broken) return core_fail(err, FM_EINPUT, "model: unusable after a failed LoRA merge (out of memory)");
    df_lora_list l;
    if (df_lora_collect(p, &l, err)) return FM_EINPUT;
    /* U-Net kernels in bf16 round every weight to bf16 as they pack it: the
     * merge can be stored so, in half the memory of float32 */
    core_dtype unet_dtype = df_precision_resolve(m, p->precision) == FM_PREC_BF16 ? FM_DT_BF16 : FM_DT_F32;
    char *key = l.n ? set_key(&l, unet_dtype) : NULL;
    int rc = l.n && !key ? core_fail(err, FM_EINPUT, "out of memory") : 0;
    int same = !rc && ((!key && !s->key) || (key && s->key && !strcmp(key, s->key)));
    if (!rc && !same) {
        double t0 = now();
        df_lora_file *keep = calloc((size_t)(l.n ? l.n : 1), sizeof *keep);
        wt_lora_use *uses = calloc((size_t)(l.n ? l.n : 1), sizeof *uses);
        int n_keep = 0;
        if (!keep || !uses) rc = core_fail(err, FM_EINPUT, "out of memory");
        for (int i = 0; !rc && i < l.n; i++) {
            wt_lora *lo = open_file(s, keep, &n_keep, l.v[i].path, m, err);
            if (!lo) rc = FM_EINPUT;
            else uses[i] = (wt_lora_use){lo, l.v[i].te, l.v[i].unet};
        }
        wt_source *merged = NULL;
        char dir_buf[PATH_MAX];
        const char *dir = spill_dir(dir_buf);
        /* fp32: LoRA pairs applied at run time (float32 copies of the U-Net's
         * merged weights would be twice an F16 file's bytes) */
        if (!rc && l.n &&
            !(merged = unet_dtype == FM_DT_F32 ? wt_merged_open_lowrank(m->src, uses, l.n, s->merged, dir, err)
                                               : wt_merged_open_as(m->src, uses, l.n, s->merged, unet_dtype, dir, err)))
            rc = FM_EINPUT;
        if (!rc || s->merged) { /* prev's reused tensors now belong to merged: rebind either way */
            const wt_source *src = rc ? m->src : merged ? merged : m->src;
            int brc = rebind(m, src, rc ? NULL : err);
            if (brc && !rc) {
                rc = brc;
                wt_close(merged);
                merged = NULL;
                if (rebind(m, m->src, NULL)) s->broken = 1;
            } else if (brc) {
                s->broken = 1;
            }
            wt_close(s->merged);
            s->merged = merged;
        }
        /* files of the old set that the new one does not use are closed */
        for (int i = 0; i < s->n_files; i++) {
            wt_lora_close(s->files[i].lora);
            free(s->files[i].path);
        }
        free(s->files);
        s->files = keep;
        s->n_files = n_keep;
        free(s->key);
        s->key = rc ? NULL : key;
        if (rc) {
            free(key);
            if (s->merged) { /* could not bind the new set: the file's weights */
                wt_close(s->merged);
                s->merged = NULL;
            }
        }
        key = NULL;
        s->info = (fm_lora_info){0};
        if (!rc) {
            s->info.files = n_keep;
            for (int i = 0; i < n_keep; i++) {
                s->info.modules += wt_lora_n_modules(keep[i].lora);
                s->info.unmapped += wt_lora_n_unmapped(keep[i].lora);
            }
            if (s->merged) {
                s->info.tensors = wt_merged_count(s->merged, &s->info.reused) + wt_merged_count_lowrank(s->merged);
                s->info.in_file = wt_merged_count_spilled(s->merged);
            }
            s->info.seconds = now() - t0;
        }
        free(uses);
    }
    free(key);
    if (!rc) {
        *prompt = l.prompt;
        l.prompt = NULL;
    }
    df_lora_list_free(&l);
    return rc;
}

void fm_model_lora_info(const fm_model *m, fm_lora_info *out)
{
    *out = m ? m->lora.info : (fm_lora_info){0};
}
