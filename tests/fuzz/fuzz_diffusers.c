/* libFuzzer: the diffusers folder reader (weights/diffusers.c) on folders
 * in memory, through wt_diffusers_open_files (what wt_open of a folder
 * runs, with the disk's files replaced by a table). The tiny folders of
 * tests/data/diffusers (sd1: a sharded U-Net with its index json; sd2: a
 * .bin text encoder; sdxl: two text encoders) are read once: their JSON
 * texts kept, their weight files opened once and lent to each input. The
 * U-Nets and VAEs are lent thinned (and sd1's index rewritten to match):
 * a tensor is kept when its name with the numbers blanked or its block
 * (the first four words) is new, so every word and every block of the
 * folder's layout still goes through the renaming, at a fifth of the
 * U-Net's tensors (3x the inputs/s). FUZZ_DIFFUSERS_SEEDS=DIR writes
 * the seeds (each JSON file as the harness holds it) to DIR.
 * Byte 0 picks the folder (% 3) and which of its JSON files (/ 3, in name
 * order: model_index.json, scheduler/, text_encoder/, [text_encoder_2/],
 * unet/config.json, [unet's index], vae/) the rest of the input replaces;
 * an empty rest removes the file. Then every tensor and the fmimage.config
 * metadata are read. Run from the repository root. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weights/diffusers.h"

#define MAX_FILES 16

typedef struct file {
    char rel[200];
    char *text; /* a JSON file's bytes, or NULL: weights */
    size_t n;
    wt_source *weights;
    int *kept, n_kept; /* the indices of the tensors lent (ascending) */
} file;

typedef struct folder {
    const char *name;
    file f[MAX_FILES];
    int n;
    int json[MAX_FILES], n_json; /* indices of the JSON files, name order */
} folder;

static folder folders[3] = {{.name = "sd1"}, {.name = "sd2"}, {.name = "sdxl"}};

static int by_rel(const void *a, const void *b) { return strcmp(((const file *)a)->rel, ((const file *)b)->rel); }

static void load(folder *d, const char *root, const char *sub)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", root, sub);
    DIR *dir = opendir(path);
    if (!dir) abort();
    for (struct dirent *e; (e = readdir(dir));) {
        if (e->d_name[0] == '.') continue;
        char rel[200];
        snprintf(rel, sizeof rel, "%s%s%s", sub, sub[0] ? "/" : "", e->d_name);
        if (e->d_type == DT_DIR) {
            load(d, root, rel);
            continue;
        }
        if (d->n == MAX_FILES) abort();
        file *f = &d->f[d->n++];
        snprintf(f->rel, sizeof f->rel, "%s", rel);
        snprintf(path, sizeof path, "%s/%s", root, rel);
        size_t len = strlen(rel);
        if (len > 5 && !strcmp(rel + len - 5, ".json")) {
            FILE *fp = fopen(path, "rb");
            if (!fp) abort();
            fseek(fp, 0, SEEK_END);
            f->n = (size_t)ftell(fp);
            rewind(fp);
            if (!(f->text = malloc(f->n + 1)) || fread(f->text, 1, f->n, fp) != f->n) abort();
            fclose(fp);
        } else {
            fm_error err = {0};
            if (!(f->weights = wt_open(path, &err))) abort();
        }
    }
    closedir(dir);
}

/* name with every run of digits as '#' */
static void blanked(const char *name, char *out, size_t size)
{
    size_t o = 0;
    for (const char *c = name; *c && o + 1 < size; c++)
        if (!isdigit((unsigned char)*c)) out[o++] = *c;
        else if (c == name || !isdigit((unsigned char)c[-1])) out[o++] = '#';
    out[o] = 0;
}

static int seen(char (*set)[200], int *n, const char *key)
{
    for (int i = 0; i < *n; i++)
        if (!strcmp(set[i], key)) return 1;
    if (*n < 4096) snprintf(set[(*n)++], 200, "%s", key);
    return 0;
}

static void thin(file *f)
{
    int n = wt_count(f->weights);
    if (!(f->kept = malloc(sizeof(int) * (size_t)(n + 1)))) abort();
    int whole = !strncmp(f->rel, "text_encoder", 12); /* the towers' q/k/v go together */
    static char pats[4096][200], blocks[4096][200];
    int np = 0, nb = 0;
    for (int i = 0; i < n; i++) {
        const char *name = wt_at(f->weights, i)->name;
        char p[200], b[200];
        blanked(name, p, sizeof p);
        snprintf(b, sizeof b, "%s", name);
        char *c = b;
        for (int dots = 0; *c && dots < 4; c++) dots += *c == '.';
        if (*c) c[-1] = 0;
        int new_p = !seen(pats, &np, p), new_b = !seen(blocks, &nb, b);
        if (whole || new_p || new_b) f->kept[f->n_kept++] = i;
    }
}

static const file *find_rel(const folder *d, const char *rel)
{
    for (int k = 0; k < d->n; k++)
        if (!strcmp(d->f[k].rel, rel)) return &d->f[k];
    return NULL;
}

static int lent(const file *w, const char *name)
{
    for (int i = 0; i < w->n_kept; i++)
        if (!strcmp(wt_at(w->weights, w->kept[i])->name, name)) return 1;
    return 0;
}

/* An index json keeps the names its shards lend. */
static void thin_index(folder *d, file *f)
{
    cJSON *j = cJSON_ParseWithLength(f->text, f->n);
    cJSON *map = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
    if (!map) abort();
    char part[200];
    snprintf(part, sizeof part, "%s", f->rel);
    *strrchr(part, '/') = 0;
    for (cJSON *e = map->child, *next; e; e = next) {
        next = e->next;
        char rel[400];
        snprintf(rel, sizeof rel, "%s/%s", part, e->valuestring);
        const file *w = find_rel(d, rel);
        if (!w || !w->weights) abort();
        if (!lent(w, e->string)) cJSON_Delete(cJSON_DetachItemViaPointer(map, e));
    }
    free(f->text);
    if (!(f->text = cJSON_Print(j))) abort();
    f->n = strlen(f->text);
    cJSON_Delete(j);
}

static void write_seeds(const char *dir)
{
    for (int i = 0; i < 3; i++)
        for (int k = 0; k < folders[i].n_json; k++) {
            const file *f = &folders[i].f[folders[i].json[k]];
            char path[600];
            snprintf(path, sizeof path, "%s/%s-%s", dir, folders[i].name, f->rel);
            for (char *c = path + strlen(dir) + 1; *c; c++)
                if (*c == '/') *c = '-';
            FILE *fp = fopen(path, "wb");
            if (!fp) abort();
            fputc(i + 3 * k, fp);
            fwrite(f->text, 1, f->n, fp);
            fclose(fp);
        }
}

static wt_source *open_input(const folder *d, int replaced, const uint8_t *text, size_t n, fm_error *err);

static void init(void)
{
    for (int i = 0; i < 3; i++) {
        folder *d = &folders[i];
        char root[100];
        snprintf(root, sizeof root, "tests/data/diffusers/%s", d->name);
        load(d, root, "");
        qsort(d->f, (size_t)d->n, sizeof d->f[0], by_rel);
        for (int k = 0; k < d->n; k++)
            if (d->f[k].text) d->json[d->n_json++] = k;
            else thin(&d->f[k]);
        for (int k = 0; k < d->n; k++)
            if (strstr(d->f[k].rel, ".index.json")) thin_index(d, &d->f[k]);
    }
    const char *seeds = getenv("FUZZ_DIFFUSERS_SEEDS");
    if (seeds) write_seeds(seeds);
    /* the harness itself: each folder as lent opens */
    for (int i = 0; i < 3; i++) {
        const file *f = &folders[i].f[folders[i].json[0]];
        fm_error err = {0};
        wt_source *s = open_input(&folders[i], folders[i].json[0], (const uint8_t *)f->text, f->n, &err);
        if (!s) fprintf(stderr, "fuzz_diffusers: %s: %s\n", folders[i].name, err.msg), abort();
        wt_close(s);
    }
}

/* ---- one input's folder: the base with one JSON file replaced ---- */

typedef struct input {
    const folder *d;
    int replaced; /* index into d->f */
    const uint8_t *text;
    size_t n;
} input;

static const file *lookup(const input *in, const char *rel)
{
    for (int k = 0; k < in->d->n; k++)
        if (!strcmp(in->d->f[k].rel, rel)) return k == in->replaced && !in->n ? NULL : &in->d->f[k];
    return NULL;
}

static int mem_exists(void *ctx, const char *rel, const char *path, fm_error *err)
{
    (void)path;
    (void)err;
    return lookup(ctx, rel) != NULL;
}

static int mem_read(void *ctx, const char *rel, const char *path, size_t max, char **buf, size_t *n, fm_error *err)
{
    const input *in = ctx;
    const file *f = lookup(in, rel);
    if (!f || !f->text) return core_fail(err, FM_EINPUT, "%s: not a JSON file of the folder", path);
    const void *src = f == &in->d->f[in->replaced] ? (const void *)in->text : f->text;
    size_t len = f == &in->d->f[in->replaced] ? in->n : f->n;
    if (len > max) return core_fail(err, FM_EINPUT, "%s: over the limit", path);
    /* exactly len bytes: ASan sees a read past the JSON */
    if (!(*buf = malloc(len ? len : 1))) abort();
    memcpy(*buf, src, len);
    *n = len;
    return 0;
}

/* A weight file opened once at init, lent: close frees only the loan. */
typedef struct loan {
    wt_source src;
    const file *f;
} loan;

static const wt_source *base_of(const wt_source *s) { return ((const loan *)s)->f->weights; }
static int l_count(const wt_source *s) { return ((const loan *)s)->f->n_kept; }
static const wt_tensor *l_at(const wt_source *s, int i) { return wt_at(base_of(s), ((const loan *)s)->f->kept[i]); }
static int by_name(const void *key, const void *k, void *s)
{
    return strcmp(key, wt_at(base_of(s), *(const int *)k)->name);
}
static const wt_tensor *l_find(const wt_source *s, const char *name)
{
    const file *f = ((const loan *)s)->f;
    const int *k = NULL;
    int lo = 0, hi = f->n_kept;
    while (lo < hi && !k) {
        int mid = (lo + hi) / 2, c = by_name(name, &f->kept[mid], (void *)s);
        if (!c) k = &f->kept[mid];
        else if (c < 0) hi = mid;
        else lo = mid + 1;
    }
    return k ? wt_at(f->weights, *k) : NULL;
}
static const char *l_meta(const wt_source *s, const char *key) { return wt_meta(base_of(s), key); }
static int l_meta_at(const wt_source *s, int i, const char **k, const char **v) { return wt_meta_at(base_of(s), i, k, v); }
static void l_close(wt_source *s) { free(s); }
static const wt_source_ops loan_ops = {
    .count = l_count, .at = l_at, .find = l_find, .meta = l_meta, .close = l_close, .meta_at = l_meta_at,
};

static wt_source *mem_open(void *ctx, const char *rel, const char *path, fm_error *err)
{
    const file *f = lookup(ctx, rel);
    if (!f || !f->weights) {
        core_fail(err, FM_EINPUT, "%s: not a weight file of the folder", path);
        return NULL;
    }
    loan *l = malloc(sizeof *l);
    if (!l) abort();
    *l = (loan){.src = {.ops = &loan_ops, .path = f->weights->path}, .f = f};
    return &l->src;
}

static wt_source *open_input(const folder *d, int replaced, const uint8_t *text, size_t n, fm_error *err)
{
    input in = {.d = d, .replaced = replaced, .text = text, .n = n};
    char dir[64];
    snprintf(dir, sizeof dir, "/fuzz/%s", d->name);
    const wt_df_files fs = {.dir = dir, .ctx = &in, .exists = mem_exists, .read = mem_read, .open = mem_open};
    return wt_diffusers_open_files(&fs, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) init(), ready = 1;
    if (size < 1) return 0;
    const folder *d = &folders[data[0] % 3];
    fm_error err = {0};
    wt_source *s = open_input(d, d->json[(data[0] / 3) % d->n_json], data + 1, size - 1, &err);
    if (!s) {
        if (!err.code || !err.msg[0] || strchr(err.msg, '\n')) abort();
        return 0;
    }
    for (int i = 0; i < wt_count(s); i++) {
        const wt_tensor *t = wt_at(s, i);
        if (wt_find(s, t->name) != t) abort();
        if (i && strcmp(wt_at(s, i - 1)->name, t->name) >= 0) abort();
        volatile uint8_t x = 0;
        for (size_t b = 0; b < t->nbytes && b < 64; b++) x ^= ((const uint8_t *)t->data)[b];
        (void)x;
    }
    if (!wt_meta(s, "fmimage.config")) abort();
    wt_close(s);
    return 0;
}
