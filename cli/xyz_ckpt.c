/* xyz_ckpt: the X/Y/Z plot's Checkpoint name values resolved to files
 * (cli/xyz.h), as A1111's sd_models.get_closet_checkpoint_match finds a
 * checkpoint among the files modelloader.load_models lists (walk_files:
 * folders in natural order, then their files in natural order; hidden
 * folders skipped; *.vae.* left out): an alias (the path relative to the
 * models directory, with or without its extension, with '/' as '_', the
 * base name without extension; the last file registering it wins, as
 * A1111's alias dict keeps the last), else the shortest title holding the
 * text (the first of equal length), else the same with a trailing
 * " [hash]" removed. Titles here are the relative paths: fmimage does not
 * hash every file of the directory to list it. A value that names no
 * listed checkpoint but a file that exists is that file, as -m takes it.
 * Names are only ever compared with the listing, so "../x" finds nothing
 * outside the directory that is not a path. */
#include "xyz.h"

#include <ctype.h>
#include <dirent.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"

#define XC_MAX_DEPTH 16

typedef struct xc_list {
    char **v;
    int n, cap;
} xc_list;

static int has_ext(const char *s, const char *ext)
{
    size_t n = strlen(s), e = strlen(ext);
    return n > e && !strcasecmp(s + n - e, ext);
}

static int is_model_name(const char *s) { return has_ext(s, ".safetensors") || has_ext(s, ".gguf"); }

static int is_pickle(const char *s) { return has_ext(s, ".ckpt") || has_ext(s, ".pt") || has_ext(s, ".pth"); }

/* What A1111 lists (.safetensors, .ckpt; fmimage adds .gguf) without its
 * ext_blacklist (VAEs). */
static int is_listed(const char *s)
{
    return (is_model_name(s) || has_ext(s, ".ckpt")) && !has_ext(s, ".vae.safetensors") && !has_ext(s, ".vae.ckpt");
}

static int push(xc_list *l, const char *s)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 32;
        char **v = realloc(l->v, sizeof *v * (size_t)cap);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    return (l->v[l->n] = strdup(s)) ? (l->n++, 0) : -1;
}

/* Every .safetensors / .gguf under dir/rel (links followed, dot entries
 * skipped), as paths relative to dir. */
static int walk(const char *dir, const char *rel, int depth, xc_list *out)
{
    char path[4096];
    snprintf(path, sizeof path, "%s%s%s", dir, rel[0] ? "/" : "", rel);
    DIR *d = opendir(path);
    if (!d) return 0;
    int rc = 0;
    struct dirent *e;
    while (!rc && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char sub[4096], full[8192];
        struct stat sb;
        if (snprintf(sub, sizeof sub, "%s%s%s", rel, rel[0] ? "/" : "", e->d_name) >= (int)sizeof sub) continue;
        snprintf(full, sizeof full, "%s/%s", dir, sub);
        if (stat(full, &sb)) continue;
        if (S_ISDIR(sb.st_mode) && e->d_name[0] != '.' && depth < XC_MAX_DEPTH) rc = walk(dir, sub, depth + 1, out);
        else if (S_ISREG(sb.st_mode) && is_listed(e->d_name)) rc = push(out, sub);
    }
    closedir(d);
    return rc;
}

/* A1111's natural_sort_key order on a[0..na) and b[0..nb): runs of digits
 * as numbers, the text between them lower-cased, compared run by run. */
static int nat_cmp(const char *a, size_t na, const char *b, size_t nb)
{
    size_t i = 0, j = 0;
    for (;;) {
        size_t i0 = i, j0 = j; /* a text run (maybe empty), then a digit run */
        while (i < na && !isdigit((unsigned char)a[i])) i++;
        while (j < nb && !isdigit((unsigned char)b[j])) j++;
        for (size_t k = 0; i0 + k < i || j0 + k < j; k++) {
            if (i0 + k == i) return -1;
            if (j0 + k == j) return 1;
            int ca = tolower((unsigned char)a[i0 + k]), cb = tolower((unsigned char)b[j0 + k]);
            if (ca != cb) return ca < cb ? -1 : 1;
        }
        if (i == na || j == nb) return i == na && j == nb ? 0 : i == na ? -1 : 1;
        while (i < na && a[i] == '0' && i + 1 < na && isdigit((unsigned char)a[i + 1])) i++;
        while (j < nb && b[j] == '0' && j + 1 < nb && isdigit((unsigned char)b[j + 1])) j++;
        i0 = i, j0 = j;
        while (i < na && isdigit((unsigned char)a[i])) i++;
        while (j < nb && isdigit((unsigned char)b[j])) j++;
        if (i - i0 != j - j0) return i - i0 < j - j0 ? -1 : 1;
        int c = memcmp(a + i0, b + j0, i - i0);
        if (c) return c < 0 ? -1 : 1;
    }
}

/* walk_files' order: by folder, then by file name, both natural. */
static int by_walk_order(const void *pa, const void *pb)
{
    const char *a = *(char *const *)pa, *b = *(char *const *)pb, *sa = strrchr(a, '/'), *sb = strrchr(b, '/');
    size_t da = sa ? (size_t)(sa - a) : 0, db = sb ? (size_t)(sb - b) : 0;
    int c = nat_cmp(a, da, b, db);
    if (c) return c;
    const char *fa = sa ? sa + 1 : a, *fb = sb ? sb + 1 : b;
    return nat_cmp(fa, strlen(fa), fb, strlen(fb));
}

static void list_free(xc_list *l)
{
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
}

/* The aliases A1111 registers for a file (CheckpointInfo.ids without the
 * hashes): name, model_name (extension off, '/' as '_'), name_for_extra. */
static int is_alias(const char *rel, const char *v)
{
    if (!strcmp(rel, v)) return 1;
    const char *dot = strrchr(rel, '.'), *base = strrchr(rel, '/');
    base = base ? base + 1 : rel;
    size_t stem = (size_t)(dot - rel), vl = strlen(v);
    if (vl == stem && !strncmp(rel, v, stem)) return 1;
    int flat = vl == stem;
    for (size_t i = 0; flat && i < stem; i++) flat = v[i] == (rel[i] == '/' ? '_' : rel[i]);
    if (flat) return 1;
    return vl == (size_t)(dot - base) && !strncmp(base, v, vl);
}

/* The shortest name holding v (the first of equal length), or -1. */
static int shortest_holding(const xc_list *l, const char *v)
{
    int best = -1;
    for (int i = 0; i < l->n; i++)
        if (strstr(l->v[i], v) && (best < 0 || strlen(l->v[i]) < strlen(l->v[best]))) best = i;
    return best;
}

/* re_strip_checksum: r"\s*\[[^]]+]\s*$" removed. */
static char *strip_checksum(const char *v)
{
    regex_t re;
    regmatch_t m;
    char *s = strdup(v);
    if (!s || regcomp(&re, "[[:space:]]*\\[[^]]+][[:space:]]*$", REG_EXTENDED)) return s;
    if (regexec(&re, s, 1, &m, 0) == 0) s[m.rm_so] = 0;
    regfree(&re);
    return s;
}

/* A path given as it is: a model file, or a diffusers folder. */
static int check_path(const char *v, const struct stat *sb, char *why, size_t why_len)
{
    if (S_ISDIR(sb->st_mode)) {
        char mi[4096];
        snprintf(mi, sizeof mi, "%s/model_index.json", v);
        if (access(mi, R_OK) == 0) return 0;
        snprintf(why, why_len, "\"%s\": a folder without model_index.json", v);
        return -1;
    }
    if (!S_ISREG(sb->st_mode)) {
        snprintf(why, why_len, "\"%s\": not a regular file", v);
        return -1;
    }
    if (is_pickle(v)) {
        snprintf(why, why_len, "\"%s\": a pickle is not loaded (convert it to .safetensors)", v);
        return -1;
    }
    if (!is_model_name(v)) {
        snprintf(why, why_len, "\"%s\": not a checkpoint (.safetensors or .gguf)", v);
        return -1;
    }
    return 0;
}

/* The file for value v, malloc'd, or NULL with why. */
static char *resolve(const char *v, const char *dir, const xc_list *l, char *why, size_t why_len)
{
    struct stat sb;
    if (!v[0]) {
        snprintf(why, why_len, "\"\": an empty name");
        return NULL;
    }
    int found = -1;
    for (int i = 0; i < l->n; i++)
        if (is_alias(l->v[i], v)) found = i;
    if (found < 0) found = shortest_holding(l, v);
    if (found < 0) {
        char *bare = strip_checksum(v);
        if (bare && bare[0]) found = shortest_holding(l, bare);
        free(bare);
    }
    if (found < 0 && stat(v, &sb) == 0) return check_path(v, &sb, why, why_len) ? NULL : strdup(v);
    if (found < 0) {
        snprintf(why, why_len, "\"%s\": not found in %s", v, dir);
        return NULL;
    }
    if (is_pickle(l->v[found])) {
        snprintf(why, why_len, "\"%s\": %s/%s is a pickle, not loaded (convert it to .safetensors)", v, dir, l->v[found]);
        return NULL;
    }
    char *path = malloc(strlen(dir) + strlen(l->v[found]) + 2);
    if (path) sprintf(path, "%s/%s", dir, l->v[found]);
    else snprintf(why, why_len, "out of memory");
    return path;
}

int xyz_resolve_checkpoints(xyz_plan *p, const char *dir, char *why, size_t why_len)
{
    for (int a = 0; a < 3; a++) {
        xyz_axis *ax = &p->ax[a];
        if (!ax->used || ax->kind != XT_CHECKPOINT) continue;
        xc_list l = {0};
        int rc = walk(dir, "", 0, &l);
        if (!rc && l.n) qsort(l.v, (size_t)l.n, sizeof *l.v, by_walk_order);
        if (!rc && !(ax->path = calloc((size_t)ax->v.n, sizeof *ax->path))) rc = -1;
        if (rc) snprintf(why, why_len, "%c:%s: out of memory", "XYZ"[a], ax->label);
        for (int i = 0; !rc && i < ax->v.n; i++) {
            char vwhy[600];
            if (!(ax->path[i] = resolve(ax->v.str[i], dir, &l, vwhy, sizeof vwhy))) {
                for (char *q = vwhy; *q; q++)
                    if ((unsigned char)*q < 0x20) *q = '?';
                snprintf(why, why_len, "%c:%s: %s", "XYZ"[a], ax->label, vwhy);
                rc = -1;
            }
        }
        list_free(&l);
        if (rc) return -1;
    }
    return 0;
}

int xyz_checkpoint_index(const xyz_plan *p, int c)
{
    int i[3];
    xyz_coords(p, c, i);
    for (int a = 0; a < 3; a++)
        if (p->ax[a].used && p->ax[a].kind == XT_CHECKPOINT) return i[a];
    return 0;
}

const char *xyz_checkpoint_value(const xyz_plan *p, int k)
{
    for (int a = 0; a < 3; a++)
        if (p->ax[a].used && p->ax[a].kind == XT_CHECKPOINT && p->ax[a].path)
            return k >= 0 && k < p->ax[a].v.n ? p->ax[a].path[k] : NULL;
    return NULL;
}

const char *xyz_checkpoint(const xyz_plan *p, int c) { return xyz_checkpoint_value(p, xyz_checkpoint_index(p, c)); }
