/* diffusers folders on disk (diffusers.h): the files of DIR, each checked
 * to be a regular file whose real path is inside DIR, for the reader in
 * diffusers.c. */
#include "weights/diffusers.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int wt_is_diffusers_dir(const char *path)
{
    struct stat sb;
    char p[PATH_MAX];
    if (stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) return 0;
    return snprintf(p, sizeof p, "%s/model_index.json", path) < (int)sizeof p && stat(p, &sb) == 0;
}

typedef struct disk {
    char root[PATH_MAX]; /* realpath of the folder */
} disk;

/* path (the folder/rel inside() made) a regular file whose real path is
 * inside the folder. */
static int disk_exists(void *ctx, const char *rel, const char *path, fm_error *err)
{
    (void)rel;
    const disk *d = ctx;
    struct stat sb;
    if (lstat(path, &sb) != 0)
        return errno == ENOENT ? 0 : (core_fail(err, FM_EINPUT, "%s: %s", path, strerror(errno)), -1);
    char real[PATH_MAX];
    if (!realpath(path, real)) return core_fail(err, FM_EINPUT, "%s: %s", path, strerror(errno)), -1;
    size_t n = strlen(d->root);
    if (strncmp(real, d->root, n) || real[n] != '/')
        return core_fail(err, FM_EINPUT, "%s: leads outside the model folder (%s)", path, real), -1;
    if (stat(real, &sb) != 0 || !S_ISREG(sb.st_mode)) return core_fail(err, FM_EINPUT, "%s: not a regular file", path), -1;
    return 1;
}

static int disk_read(void *ctx, const char *rel, const char *path, size_t max, char **out, size_t *out_n, fm_error *err)
{
    (void)ctx;
    (void)rel;
    FILE *fp = fopen(path, "rb");
    if (!fp) return core_fail(err, FM_EINPUT, "%s: %s", path, strerror(errno));
    /* a buffer of the file's size, not max (the read asks one byte more,
     * to see a file over the limit or grown since) */
    struct stat sb;
    int sized = !fstat(fileno(fp), &sb) && sb.st_size >= 0 && (uintmax_t)sb.st_size <= max;
    size_t cap = sized ? (size_t)sb.st_size : max;
    char *buf = malloc(cap + 1);
    size_t n = buf ? fread(buf, 1, cap + 1, fp) : 0;
    int bad = ferror(fp);
    fclose(fp);
    int rc = 0;
    if (!buf) rc = core_fail(err, FM_EINPUT, "%s: out of memory", path);
    else if (bad) rc = core_fail(err, FM_EINPUT, "%s: read failed", path);
    else if (n > max) rc = core_fail(err, FM_EINPUT, "%s: over %zu MB of JSON", path, max >> 20);
    else if (n > cap) rc = core_fail(err, FM_EINPUT, "%s: changed while read", path);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    *out_n = n;
    return 0;
}

static wt_source *disk_open(void *ctx, const char *rel, const char *path, fm_error *err)
{
    (void)ctx;
    (void)rel;
    return wt_open(path, err);
}

wt_source *wt_diffusers_open(const char *dir, fm_error *err)
{
    disk d;
    if (!realpath(dir, d.root)) {
        core_fail(err, FM_EINPUT, "%s: %s", dir, strerror(errno));
        return NULL;
    }
    const wt_df_files fs = {.dir = dir, .ctx = &d, .exists = disk_exists, .read = disk_read, .open = disk_open};
    return wt_diffusers_open_files(&fs, err);
}
