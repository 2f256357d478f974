/* embedding: A1111's EmbeddingDatabase over a directory (see embedding.h).
 * Registration is by tokens, as register_embedding_by_name tokenizes the
 * name; the lookup is find_embedding_at_position: the candidates whose first
 * token is tokens[pos], longest first, the first whose whole sequence is
 * there wins. A1111 walks the directory in os.walk order; here paths are
 * sorted (strcmp) so that the result does not depend on the file system,
 * and of two files with one name (emb.pt, emb.safetensors) the later path
 * replaces the earlier, as a later registration does in A1111. */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "core/sha256.h"
#include "textenc/embedding.h"
#include "weights/source.h"

#define MAX_DEPTH 16 /* a symlink loop ends here */

typedef struct {
    char **paths;
    int n, cap;
} path_list;

static int is_embedding_file(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && dot != name && (!strcasecmp(dot, ".safetensors") || !strcasecmp(dot, ".pt") || !strcasecmp(dot, ".bin"));
}

static int add_path(path_list *l, const char *path)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 16;
        char **p = realloc(l->paths, sizeof *p * (size_t)cap);
        if (!p) return -1;
        l->paths = p;
        l->cap = cap;
    }
    return (l->paths[l->n] = strdup(path)) ? (l->n++, 0) : -1;
}

/* Does path's real path lie inside root (a real path)? */
static int inside(const char *root, const char *path)
{
    char *real = realpath(path, NULL);
    size_t k = strlen(root);
    int ok = real && !strncmp(real, root, k) && real[k] == '/';
    free(real);
    return ok;
}

/* os.walk(dir, followlinks=True): regular non-empty files, every depth;
 * with root (dir's real path), only what really lies inside it. */
static int walk(path_list *l, const char *dir, int depth, const char *root)
{
    if (depth > MAX_DEPTH) return 0;
    DIR *d = opendir(dir);
    if (!d) return depth ? 0 : -2; /* an unreadable subdirectory is skipped, as os.walk does */
    int rc = 0;
    struct dirent *de;
    while (!rc && (de = readdir(d))) {
        if (de->d_name[0] == '.' && (!de->d_name[1] || (de->d_name[1] == '.' && !de->d_name[2]))) continue;
        size_t need = strlen(dir) + strlen(de->d_name) + 2;
        char *p = malloc(need);
        if (!p) { rc = -1; break; }
        snprintf(p, need, "%s/%s", dir, de->d_name);
        struct stat sb;
        if (stat(p, &sb) == 0 && (!root || inside(root, p))) {
            if (S_ISDIR(sb.st_mode)) rc = walk(l, p, depth + 1, root);
            else if (S_ISREG(sb.st_mode) && sb.st_size > 0 && is_embedding_file(de->d_name)) rc = add_path(l, p);
        }
        free(p);
    }
    closedir(d);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void embedding_clear(te_embedding *e)
{
    free(e->name);
    free(e->path);
    free(e->ids);
    free(e->vec[0]);
    free(e->vec[1]);
    *e = (te_embedding){0};
}

/* name = basename without the extension (os.path.splitext) */
static char *name_of(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    const char *dot = strrchr(base, '.');
    size_t n = dot && dot != base ? (size_t)(dot - base) : strlen(base);
    char *s = malloc(n + 1);
    if (s) memcpy(s, base, n), s[n] = 0;
    return s;
}

static int tokenize_name(te_embedding *e, const te_tokenizer *tok, fm_error *err)
{
    int n = te_tokenizer_encode(tok, e->name, NULL, 0, err);
    if (n < 0) return -1;
    if (n == 0) return 0; /* a name of no tokens (spaces only) can never match */
    if (!(e->ids = malloc(sizeof *e->ids * (size_t)n))) return -1;
    e->n_ids = te_tokenizer_encode(tok, e->name, e->ids, n, err);
    return e->n_ids == n ? 0 : -1;
}

/* sorted(..., key=len(ids), reverse=True) is stable: registration order next */
static int cmp_len(const void *a, const void *b)
{
    const te_embedding *x = a, *y = b;
    if (x->n_ids != y->n_ids) return x->n_ids > y->n_ids ? -1 : 1;
    return strcmp(x->path, y->path);
}

int te_embeddings_open(te_embeddings *db, const char *dir, const te_tokenizer *tok, int n_towers,
                       const int width[2], fm_error *err)
{
    return te_embeddings_open_in(db, dir, 0, tok, n_towers, width, err);
}

int te_embeddings_open_in(te_embeddings *db, const char *dir, int confined, const te_tokenizer *tok, int n_towers,
                          const int width[2], fm_error *err)
{
    *db = (te_embeddings){.n_towers = n_towers, .width = {width[0], n_towers > 1 ? width[1] : 0}};
    if (!dir) return 0;
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) return 0; /* A1111: not a directory, nothing loaded */
    char *root = confined ? realpath(dir, NULL) : NULL;
    if (confined && !root) return core_fail(err, FM_EINPUT, "embeddings directory %s: cannot be read", dir);
    path_list l = {0};
    int rc = walk(&l, dir, 0, root);
    free(root);
    if (rc == -2) rc = core_fail(err, FM_EINPUT, "embeddings directory %s: cannot be read", dir);
    else if (rc) rc = core_fail(err, FM_EINPUT, "embeddings: out of memory");
    if (!rc && l.n) qsort(l.paths, (size_t)l.n, sizeof *l.paths, cmp_str);
    if (!rc && l.n && !(db->e = calloc((size_t)l.n, sizeof *db->e))) rc = core_fail(err, FM_EINPUT, "embeddings: out of memory");
    for (int i = 0; !rc && i < l.n; i++) {
        te_embedding e = {.path = l.paths[i], .name = name_of(l.paths[i])};
        l.paths[i] = NULL;
        if (!e.name || tokenize_name(&e, tok, err)) {
            embedding_clear(&e);
            rc = core_fail(err, FM_EINPUT, "embeddings: out of memory");
            break;
        }
        if (!e.n_ids) {
            embedding_clear(&e);
            continue;
        }
        int k = 0; /* a name registered again replaces the earlier file */
        while (k < db->n && strcmp(db->e[k].name, e.name)) k++;
        if (k < db->n) embedding_clear(&db->e[k]), db->e[k] = e;
        else db->e[db->n++] = e;
    }
    for (int i = 0; i < l.n; i++) free(l.paths[i]);
    free(l.paths);
    if (rc) te_embeddings_free(db);
    else if (db->n) qsort(db->e, (size_t)db->n, sizeof *db->e, cmp_len);
    return rc;
}

void te_embeddings_free(te_embeddings *db)
{
    if (!db) return;
    for (int i = 0; i < db->n; i++) embedding_clear(&db->e[i]);
    free(db->e);
    *db = (te_embeddings){0};
}

/* ---- reading one file ---- */

static int file_sha256(const char *path, char hex[65])
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return -1;
    int rc = core_sha256_stream(fp, hex);
    fclose(fp);
    return rc;
}

/* A1111's load_from_file: string_to_param (one term), SDXL's clip_g +
 * clip_l, else a file holding exactly one tensor (a diffusers concept). */
static int pick_tensors(const wt_source *s, const wt_tensor *t[2], int *sdxl, const char *name, fm_error *err)
{
    t[0] = wt_find(s, "clip_l");
    t[1] = wt_find(s, "clip_g");
    *sdxl = t[0] && t[1];
    if (*sdxl) return 0;
    int n = wt_count(s), terms = 0, floats = 0;
    const wt_tensor *term = NULL, *any = NULL;
    for (int i = 0; i < n; i++) {
        const wt_tensor *x = wt_at(s, i);
        if (!strncmp(x->name, "string_to_param.", 16)) terms++, term = x;
        if (wt_is_float(x->dtype)) floats++, any = x;
    }
    if (terms > 1 || (!terms && floats > 1))
        return core_fail(err, FM_EINPUT, "embedding \"%s\": the file has multiple terms in it", name);
    t[0] = terms ? term : any;
    t[1] = NULL;
    if (!t[0])
        return core_fail(err, FM_EINPUT, "embedding \"%s\": neither a textual inversion embedding nor a diffusers concept", name);
    return 0;
}

/* [n][width] float32 of a 1-D [width] or 2-D [n][width] tensor */
static float *vectors(const wt_tensor *t, int *n, int *width, const char *name, fm_error *err)
{
    if (!wt_is_float(t->dtype) || core_dtype_is_quant(t->dtype) || t->ndim < 1 || t->ndim > 2) {
        core_fail(err, FM_EINPUT, "embedding \"%s\": tensor %s is not a [vectors, width] float tensor", name, t->name);
        return NULL;
    }
    int64_t rows = t->ndim == 2 ? t->shape[0] : 1, cols = t->shape[t->ndim - 1];
    if (rows < 1 || cols < 1) {
        core_fail(err, FM_EINPUT, "embedding \"%s\": no vectors (tensor %s is empty)", name, t->name);
        return NULL;
    }
    if (rows > TE_EMB_MAX_VECTORS) {
        core_fail(err, FM_EINPUT, "embedding \"%s\": %lld vectors, more than the %d of a prompt chunk", name,
                  (long long)rows, TE_EMB_MAX_VECTORS);
        return NULL;
    }
    if (cols > 65536) {
        core_fail(err, FM_EINPUT, "embedding \"%s\": width %lld is not a text encoder's", name, (long long)cols);
        return NULL;
    }
    float *v = malloc(sizeof *v * (size_t)(rows * cols));
    if (!v) {
        core_fail(err, FM_EINPUT, "embedding \"%s\": out of memory", name);
        return NULL;
    }
    wt_convert_f32(v, t);
    for (int64_t i = 0; i < rows * cols; i++)
        if (!isfinite(v[i])) {
            free(v);
            core_fail(err, FM_EINPUT, "embedding \"%s\": tensor %s holds NaN or infinite values", name, t->name);
            return NULL;
        }
    *n = (int)rows;
    *width = (int)cols;
    return v;
}

int te_embedding_read(te_embedding *e, int n_towers, const int width[2], fm_error *err)
{
    wt_source *s = wt_open(e->path, err);
    if (!s) {
        /* the reader's "PATH: why" stays; prefix the embedding's name */
        if (err) {
            char msg[sizeof err->msg];
            snprintf(msg, sizeof msg, "embedding \"%.64s\": %.400s", e->name, err->msg);
            core_error_clear(err); /* the first cause is sticky: restate it with the name */
            core_fail(err, FM_EINPUT, "%s", msg);
        }
        return FM_EINPUT;
    }
    const wt_tensor *t[2];
    int sdxl, rc = pick_tensors(s, t, &sdxl, e->name, err), n[2] = {0}, w[2] = {0};
    for (int k = 0; !rc && k < 1 + sdxl; k++)
        if (!(e->vec[k] = vectors(t[k], &n[k], &w[k], e->name, err))) rc = FM_EINPUT;
    wt_close(s);
    if (!rc && sdxl && n[0] != n[1])
        rc = core_fail(err, FM_EINPUT, "embedding \"%s\": clip_l has %d vectors, clip_g %d", e->name, n[0], n[1]);
    if (!rc && sdxl != (n_towers == 2)) {
        if (sdxl) rc = core_fail(err, FM_EINPUT, "embedding \"%s\": an SDXL embedding (clip_l + clip_g), the model has one text encoder", e->name);
        else rc = core_fail(err, FM_EINPUT, "embedding \"%s\": width %d, the model's text encoders take clip_l + clip_g (%d + %d)",
                            e->name, w[0], width[0], width[1]);
    }
    for (int k = 0; !rc && k < n_towers; k++)
        if (w[k] != width[k])
            rc = core_fail(err, FM_EINPUT, "embedding \"%s\": %s width %d, the model's text encoder takes %d", e->name,
                           sdxl ? (k ? "clip_g" : "clip_l") : "vector", w[k], width[k]);
    if (!rc && file_sha256(e->path, e->sha256))
        rc = core_fail(err, FM_EINPUT, "embedding \"%s\": %s: cannot be read", e->name, e->path);
    if (rc) {
        free(e->vec[0]);
        free(e->vec[1]);
        e->vec[0] = e->vec[1] = NULL;
        return rc;
    }
    e->n_vectors = n[0];
    e->loaded = 1;
    return 0;
}

te_embedding *te_embeddings_match(te_embeddings *db, const int32_t *tokens, int n, int pos, int *len,
                                  fm_error *err)
{
    *len = 0;
    if (!db) return NULL;
    for (int i = 0; i < db->n; i++) {
        te_embedding *e = &db->e[i];
        if (e->ids[0] != tokens[pos] || e->n_ids > n - pos || memcmp(e->ids, tokens + pos, sizeof *tokens * (size_t)e->n_ids))
            continue;
        if (!e->loaded && te_embedding_read(e, db->n_towers, db->width, err)) {
            *len = -1;
            return NULL;
        }
        e->used = 1;
        *len = e->n_ids;
        return e;
    }
    return NULL;
}
