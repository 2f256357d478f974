#include "output.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core.h"
#include "core/sha256.h"

static void split_dir(const char *path, char *dir, size_t n, const char **base)
{
    const char *slash = strrchr(path, '/');
    if (!slash) {
        snprintf(dir, n, ".");
        *base = path;
    } else {
        snprintf(dir, n, "%.*s", (int)(slash - path) ? (int)(slash - path) : 1, path);
        *base = slash + 1;
    }
}

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

int out_file_sha256(const char *path, char hex[65], fm_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return fm_fail(err, FM_EINPUT, "%s: %s", path, strerror(errno));
    fm_sha256 s;
    fm_sha256_init(&s);
    static const size_t chunk = 1 << 20;
    uint8_t *buf = malloc(chunk);
    if (!buf) { close(fd); return fm_fail(err, FM_EINPUT, "%s: out of memory", path); }
    ssize_t r;
    while ((r = read(fd, buf, chunk)) > 0) fm_sha256_update(&s, buf, (size_t)r);
    int e = errno;
    free(buf);
    close(fd);
    if (r < 0) return fm_fail(err, FM_EINPUT, "%s: %s", path, strerror(e));
    uint8_t d[32];
    fm_sha256_final(&s, d);
    fm_hex(d, 32, hex);
    return 0;
}

int out_write_png(const char *path, const uint8_t *rgb, int width, int height,
                  const char *parameters, int no_clobber, char sha256_hex[65], fm_error *err)
{
    char dir[PATH_MAX], tmp[PATH_MAX];
    const char *base;
    split_dir(path, dir, sizeof dir, &base);
    if (no_clobber && access(path, F_OK) == 0)
        return fm_fail(err, FM_EINPUT, "%s: exists (use --force to overwrite)", path);
    if (snprintf(tmp, sizeof tmp, "%s/.%s.tmp-%ld", dir, base, (long)getpid()) >= (int)sizeof tmp)
        return fm_fail(err, FM_EINPUT, "%s: path too long", path);
    /* SIGINT waits until the image is either in place or gone. */
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    sigprocmask(SIG_BLOCK, &block, &old);
    int rc = fm_png_write(tmp, rgb, width, height, parameters, err);
    if (!rc && sha256_hex) rc = out_file_sha256(tmp, sha256_hex, err);
    if (!rc && rename(tmp, path) != 0)
        rc = fm_fail(err, FM_EINPUT, "%s: %s", path, strerror(errno));
    if (rc) unlink(tmp);
    else fsync_dir(dir);
    sigprocmask(SIG_SETMASK, &old, NULL);
    if (rc && err && strncmp(err->msg, tmp, strlen(tmp)) == 0) {
        /* Name the file the user asked for, not our temporary. */
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err->msg + strlen(tmp));
        snprintf(err->msg, sizeof err->msg, "%s%s", path, why);
    }
    return rc;
}

int out_make_dir(const char *dir, fm_error *err)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return fm_fail(err, FM_EINPUT, "%s: path too long", dir);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return fm_fail(err, FM_EINPUT, "%s: %s", buf, strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return fm_fail(err, FM_EINPUT, "%s: not a directory", dir);
    if (access(dir, W_OK) != 0)
        return fm_fail(err, FM_EINPUT, "%s: %s", dir, strerror(errno));
    return 0;
}

void out_remove_stale_temps(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *t = e->d_name[0] == '.' ? strstr(e->d_name, ".png.tmp-") : NULL;
        if (!t) continue;
        long pid = strtol(t + 9, NULL, 10);
        if (pid > 0 && (kill((pid_t)pid, 0) == 0 || errno != ESRCH)) continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) < (int)sizeof path) unlink(path);
    }
    closedir(d);
}

int out_manifest_load(out_manifest *m, const char *dir)
{
    memset(m, 0, sizeof *m);
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/manifest.jsonl", dir);
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *file = cJSON_GetObjectItemCaseSensitive(j, "file");
        if (cJSON_IsString(file) && !out_manifest_has(m, file->valuestring)) {
            if (m->n == m->cap) {
                int nc = m->cap ? m->cap * 2 : 64;
                char **p = realloc(m->files, sizeof *p * (size_t)nc);
                if (!p) { cJSON_Delete(j); break; }
                m->files = p;
                m->cap = nc;
            }
            m->files[m->n] = strdup(file->valuestring);
            if (m->files[m->n]) m->n++;
        }
        cJSON_Delete(j);
    }
    free(line);
    fclose(f);
    return 0;
}

int out_manifest_has(const out_manifest *m, const char *file)
{
    for (int i = 0; i < m->n; i++)
        if (!strcmp(m->files[i], file)) return 1;
    return 0;
}

void out_manifest_free(out_manifest *m)
{
    for (int i = 0; i < m->n; i++) free(m->files[i]);
    free(m->files);
    memset(m, 0, sizeof *m);
}

int out_manifest_append(const char *dir, const char *json, fm_error *err)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/manifest.jsonl", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    if (fd < 0) return fm_fail(err, FM_EINPUT, "%s: %s", path, strerror(errno));
    size_t n = strlen(json);
    char *line = malloc(n + 1);
    if (!line) { close(fd); return fm_fail(err, FM_EINPUT, "%s: out of memory", path); }
    memcpy(line, json, n);
    line[n] = '\n';
    ssize_t w = write(fd, line, n + 1);
    int e = errno;
    free(line);
    if (w == (ssize_t)(n + 1) && fsync(fd) != 0 && errno != EINVAL) { w = -1; e = errno; }
    close(fd);
    if (w != (ssize_t)(n + 1))
        return fm_fail(err, FM_EINPUT, "%s: %s", path, w < 0 ? strerror(e) : "short write");
    return 0;
}

static void cache_path(char *buf, size_t n)
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    if (xdg && *xdg) snprintf(buf, n, "%s/fmimage", xdg);
    else snprintf(buf, n, "%s/.cache/fmimage", home && *home ? home : "/tmp");
}

int out_model_hash(const char *path, char hash10[11], fm_error *err)
{
    char abs[PATH_MAX], dir[PATH_MAX], file[PATH_MAX + 16];
    struct stat sb;
    if (!realpath(path, abs) || stat(abs, &sb) != 0)
        return fm_fail(err, FM_EINPUT, "%s: %s", path, strerror(errno));
    cache_path(dir, sizeof dir);
    snprintf(file, sizeof file, "%s/hashes.tsv", dir);
    /* Lines: path<TAB>size<TAB>mtime_ns<TAB>sha256 */
    long long mtime = (long long)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec;
    FILE *f = fopen(file, "r");
    if (f) {
        char *line = NULL;
        size_t cap = 0;
        ssize_t len;
        while ((len = getline(&line, &cap, f)) > 0) {
            char *tab = strchr(line, '\t');
            if (!tab || (size_t)(tab - line) != strlen(abs) || strncmp(line, abs, (size_t)(tab - line))) continue;
            long long size, mt;
            char hex[65];
            if (sscanf(tab + 1, "%lld\t%lld\t%64s", &size, &mt, hex) == 3 && size == (long long)sb.st_size &&
                mt == mtime && strlen(hex) == 64) {
                memcpy(hash10, hex, 10);
                hash10[10] = 0;
                free(line);
                fclose(f);
                return 0;
            }
        }
        free(line);
        fclose(f);
    }
    char hex[65];
    if (out_file_sha256(abs, hex, err)) return err ? err->code : FM_EINPUT;
    memcpy(hash10, hex, 10);
    hash10[10] = 0;
    /* The cache is best effort: a read-only home must not stop a run. */
    if (strchr(abs, '\n') || strchr(abs, '\t') || out_make_dir(dir, NULL)) return 0;
    char line[PATH_MAX + 128];
    int n = snprintf(line, sizeof line, "%s\t%lld\t%lld\t%s\n", abs, (long long)sb.st_size, mtime, hex);
    int fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    if (fd >= 0) {
        if (write(fd, line, (size_t)n) != n) { /* best effort */ }
        close(fd);
    }
    return 0;
}
