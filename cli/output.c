#include "output.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "core/core.h"
#include "core/sha256.h"

#define TEMP_PREFIX ".fmimage-"
#define TEMP_TEMPLATE TEMP_PREFIX "XXXXXX"
/* The longest iTXt "parameters" text read back for a resume check; a longer
 * one is not ours (prompts are bounded far below this). */
#define MAX_PARAMETERS (16u << 20)

static void split_dir(const char *path, char *dir, size_t n)
{
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, n, ".");
    else snprintf(dir, n, "%.*s", (int)(slash - path) ? (int)(slash - path) : 1, path);
}

static void fsync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

static const char *kind_name(mode_t m)
{
    if (S_ISDIR(m)) return "directory";
    if (S_ISCHR(m)) return "character device";
    if (S_ISBLK(m)) return "block device";
    if (S_ISFIFO(m)) return "FIFO";
    if (S_ISSOCK(m)) return "socket";
    return "special file";
}

static const char *link_kind_name(mode_t m)
{
    if (S_ISDIR(m)) return "symbolic link to a directory";
    if (S_ISCHR(m)) return "symbolic link to a character device";
    if (S_ISBLK(m)) return "symbolic link to a block device";
    if (S_ISFIFO(m)) return "symbolic link to a FIFO";
    if (S_ISSOCK(m)) return "symbolic link to a socket";
    return "symbolic link to a special file";
}

out_kind out_path_kind(const char *path, const char **what)
{
    struct stat sb, target;
    *what = NULL;
    if (lstat(path, &sb) != 0) return OUT_ABSENT; /* the write reports EACCES and the like */
    if (S_ISREG(sb.st_mode)) return OUT_REGULAR;
    if (S_ISLNK(sb.st_mode)) {
        /* The link is replaced, never written through; but a link to a
         * device or FIFO (/dev/stdout) is as much not ours as the device. */
        if (stat(path, &target) == 0 && !S_ISREG(target.st_mode)) {
            *what = link_kind_name(target.st_mode);
            return OUT_OTHER;
        }
        *what = "symbolic link";
        return OUT_SYMLINK;
    }
    *what = kind_name(sb.st_mode);
    return OUT_OTHER;
}

static int fd_sha256(int fd, char hex[65])
{
    core_sha256 s;
    core_sha256_init(&s);
    uint8_t buf[1 << 16];
    ssize_t r;
    off_t off = 0;
    while ((r = pread(fd, buf, sizeof buf, off)) > 0) {
        core_sha256_update(&s, buf, (size_t)r);
        off += r;
    }
    if (r < 0) return -1;
    uint8_t d[32];
    core_sha256_final(&s, d);
    core_hex(d, 32, hex);
    return 0;
}

int out_file_sha256(const char *path, char hex[65], fm_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return core_fail(err, FM_EINPUT, "%s: %s", path, strerror(errno));
    int rc = fd_sha256(fd, hex);
    int e = errno;
    close(fd);
    if (rc) return core_fail(err, FM_EINPUT, "%s: %s", path, strerror(e));
    return 0;
}

static void block_signals(sigset_t *old)
{
    sigset_t block;
    sigemptyset(&block);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGHUP);
    sigprocmask(SIG_BLOCK, &block, old);
}

/* flock where the file system has it; where it has not (some network and
 * FUSE file systems) the run goes on unlocked: temporaries are then never
 * taken for stale, and racing runs may list an image twice. */
static int lock_fd(int fd, int how)
{
    while (flock(fd, how) != 0) {
        if (errno == EINTR) continue;
        return errno == ENOLCK || errno == EOPNOTSUPP || errno == ENOSYS ? 0 : -1;
    }
    return 0;
}

/* A new locked temporary file in dir. mkstemp and flock are two steps: a
 * stale-temp cleaner in another process may take the lock in between and
 * remove the file, so the name is checked to still be ours once locked. */
static int make_locked_temp(out_temp *t, const char *dir, fm_error *err)
{
    for (int attempt = 0; attempt < 100; attempt++) {
        if (snprintf(t->path, sizeof t->path, "%s/" TEMP_TEMPLATE, dir) >= (int)sizeof t->path)
            return core_fail(err, FM_EINPUT, "%s: path too long", dir);
        t->fd = mkostemp(t->path, O_CLOEXEC);
        if (t->fd < 0) return core_fail(err, FM_EINPUT, "%s: %s", dir, strerror(errno));
        struct stat a, b;
        if (lock_fd(t->fd, LOCK_EX) == 0 && fstat(t->fd, &a) == 0 && lstat(t->path, &b) == 0 &&
            a.st_ino == b.st_ino && a.st_dev == b.st_dev)
            return 0;
        close(t->fd);
        t->fd = -1;
    }
    return core_fail(err, FM_EINPUT, "%s: cannot create a temporary file", dir);
}

int out_temp_write(out_temp *t, const char *final_path, const uint8_t *rgb, int width, int height,
                   const char *parameters, char sha256_hex[65], fm_error *err)
{
    char dir[PATH_MAX];
    split_dir(final_path, dir, sizeof dir);
    t->fd = -1;
    block_signals(&t->old_mask);
    int rc = make_locked_temp(t, dir, err);
    if (rc) {
        /* Name what the user asked for: "out/a.png: Permission denied". */
        if (err) {
            const char *why = strrchr(err->msg, ':');
            char msg[sizeof err->msg];
            snprintf(msg, sizeof msg, "%s%s", final_path, why ? why : ": cannot write");
            snprintf(err->msg, sizeof err->msg, "%s", msg);
        }
        sigprocmask(SIG_SETMASK, &t->old_mask, NULL);
        return rc;
    }
    /* mkstemp makes 0600; the image gets what a plain create would. */
    mode_t mask = umask(0);
    umask(mask);
    fchmod(t->fd, 0666 & ~mask);
    /* The library writes by name; /proc/self/fd names our open file itself,
     * so a name swapped in the directory meanwhile is never written. */
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", t->fd);
    const char *target = access(self, W_OK) == 0 ? self : t->path;
    fm_error e = {0};
    rc = fm_png_write(target, rgb, width, height, parameters, &e);
    if (!rc && sha256_hex && fd_sha256(t->fd, sha256_hex)) rc = core_fail(&e, FM_EINPUT, "x: %s", strerror(errno));
    if (rc) {
        const char *why = strncmp(e.msg, target, strlen(target)) == 0 ? e.msg + strlen(target) : strchr(e.msg, ':');
        core_fail(err, rc, "%s%s", final_path, why ? why : ": write failed");
        out_temp_discard(t);
    }
    return rc;
}

void out_temp_discard(out_temp *t)
{
    if (t->fd >= 0) {
        unlink(t->path);
        close(t->fd);
        t->fd = -1;
        sigprocmask(SIG_SETMASK, &t->old_mask, NULL);
    }
}

/* rename without replacing: renameat2 where the file system has it, else
 * link + unlink (both fail on an existing name). */
static int rename_noreplace(const char *from, const char *to)
{
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS) return -1;
    if (link(from, to) != 0) return -1;
    unlink(from);
    return 0;
}

int out_temp_commit(out_temp *t, const char *path, int replace, fm_error *err)
{
    const char *what;
    out_kind kind = out_path_kind(path, &what);
    int rc = 0;
    if (kind == OUT_OTHER) rc = core_fail(err, FM_EINPUT, "%s: not a regular file (%s)", path, what);
    else if (!replace && kind != OUT_ABSENT)
        rc = core_fail(err, FM_EINPUT, "%s: exists (use --force to overwrite)", path);
    else if (replace ? rename(t->path, path) : rename_noreplace(t->path, path))
        rc = errno == EEXIST ? core_fail(err, FM_EINPUT, "%s: exists (use --force to overwrite)", path)
                             : core_fail(err, FM_EINPUT, "%s: %s", path, strerror(errno));
    if (rc) {
        out_temp_discard(t);
        return rc;
    }
    char dir[PATH_MAX];
    split_dir(path, dir, sizeof dir);
    fsync_dir(dir);
    close(t->fd); /* releases the lock: the name is no longer a temporary */
    t->fd = -1;
    sigprocmask(SIG_SETMASK, &t->old_mask, NULL);
    return 0;
}

int out_make_dir(const char *dir, fm_error *err)
{
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", dir) >= (int)sizeof buf)
        return core_fail(err, FM_EINPUT, "%s: path too long", dir);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return core_fail(err, FM_EINPUT, "%s: %s", buf, strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return core_fail(err, FM_EINPUT, "%s: not a directory", dir);
    if (access(dir, W_OK) != 0)
        return core_fail(err, FM_EINPUT, "%s: %s", dir, strerror(errno));
    return 0;
}

/* Our temporary names: ".fmimage-" and mkstemp's six characters; and the
 * ".NAME.png.tmp-PID" of fmimage 0.1, removed when PID is gone. */
static int is_temp_name(const char *name, long *old_pid)
{
    *old_pid = 0;
    if (!strncmp(name, TEMP_PREFIX, strlen(TEMP_PREFIX)) && strlen(name) == strlen(TEMP_TEMPLATE)) return 1;
    /* A claim (--only-missing) nobody holds: its process is gone. */
    if (!strncmp(name, ".fmimage-claim-", 15) && strlen(name) == 15 + 16) return 1;
    const char *t = name[0] == '.' ? strstr(name, ".png.tmp-") : NULL;
    if (!t) return 0;
    char *end;
    *old_pid = strtol(t + 9, &end, 10);
    return *old_pid > 0 && !*end;
}

void out_remove_stale_temps(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        long pid;
        if (!is_temp_name(e->d_name, &pid)) continue;
        char path[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path) continue;
        if (pid) {
            if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) unlink(path);
            continue;
        }
        int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0) continue;
        struct stat a, b;
        /* Unlocked: its writer is dead (a live one holds the lock until the
         * file is renamed away or removed). Same inode: still a temporary. */
        if (fstat(fd, &a) == 0 && S_ISREG(a.st_mode) && flock(fd, LOCK_EX | LOCK_NB) == 0 &&
            lstat(path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev)
            unlink(path);
        close(fd);
    }
    closedir(d);
}

/* ---- reading a PNG back ---- */

typedef struct png_reader {
    int fd;
    uint8_t buf[1 << 16];
    size_t pos, len;
    core_sha256 sha;
} png_reader;

/* n bytes into dst (NULL: skipped), through crc if non-NULL. 0 or -1 (end). */
static int rd_get(png_reader *r, uint8_t *dst, size_t n, uLong *crc)
{
    while (n) {
        if (r->pos == r->len) {
            ssize_t got = read(r->fd, r->buf, sizeof r->buf);
            if (got <= 0) return -1;
            core_sha256_update(&r->sha, r->buf, (size_t)got);
            r->pos = 0;
            r->len = (size_t)got;
        }
        size_t k = r->len - r->pos < n ? r->len - r->pos : n;
        if (crc) *crc = crc32(*crc, r->buf + r->pos, (uInt)k);
        if (dst) {
            memcpy(dst, r->buf + r->pos, k);
            dst += k;
        }
        r->pos += k;
        n -= k;
    }
    return 0;
}

static uint32_t be32(const uint8_t *b) { return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]; }

/* An uncompressed iTXt "parameters": keyword NUL flag method lang NUL
 * translated NUL text. Anything else yields NULL. */
static char *itxt_parameters(const uint8_t *d, size_t n)
{
    static const char key[] = "parameters";
    if (n < sizeof key + 2 || memcmp(d, key, sizeof key) || d[sizeof key] != 0) return NULL;
    size_t i = sizeof key + 2;
    for (int field = 0; field < 2; field++) {
        const uint8_t *z = memchr(d + i, 0, n - i);
        if (!z) return NULL;
        i = (size_t)(z - d) + 1;
    }
    return strndup((const char *)d + i, n - i);
}

static const char *png_walk(png_reader *r, char **parameters)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    uint8_t h[8];
    if (rd_get(r, h, 8, NULL) || memcmp(h, sig, 8)) return "no PNG signature";
    int n_chunks = 0, idat = 0;
    for (;;) {
        if (rd_get(r, h, 8, NULL)) return "truncated";
        uint32_t len = be32(h);
        const uint8_t *type = h + 4;
        if (len > 0x7fffffffu) return "bad chunk length";
        if (n_chunks++ == 0 && (memcmp(type, "IHDR", 4) || len != 13)) return "no IHDR first";
        uLong crc = crc32(0, type, 4);
        if (!memcmp(type, "iTXt", 4) && len <= MAX_PARAMETERS && !*parameters) {
            uint8_t *d = malloc(len ? len : 1);
            if (!d) return "out of memory";
            if (rd_get(r, d, len, &crc)) { free(d); return "truncated"; }
            *parameters = itxt_parameters(d, len);
            free(d);
        } else if (rd_get(r, NULL, len, &crc)) {
            return "truncated";
        }
        uint8_t c[4];
        if (rd_get(r, c, 4, NULL)) return "truncated";
        if (be32(c) != (uint32_t)crc) return "bad chunk CRC";
        idat |= !memcmp(type, "IDAT", 4);
        if (!memcmp(type, "IEND", 4)) break;
    }
    if (!idat) return "no image data";
    if (rd_get(r, h, 1, NULL) == 0) return "data after IEND";
    return NULL;
}

int out_png_complete(const char *path, char **parameters, char sha256_hex[65], const char **why)
{
    *parameters = NULL;
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        *why = errno == ELOOP ? "a symbolic link" : "unreadable";
        return 0;
    }
    struct stat sb;
    png_reader *r = malloc(sizeof *r);
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode) || !r) {
        *why = r ? "not a regular file" : "out of memory";
        free(r);
        close(fd);
        return 0;
    }
    r->fd = fd;
    r->pos = r->len = 0;
    core_sha256_init(&r->sha);
    *why = png_walk(r, parameters);
    if (!*why) {
        uint8_t d[32];
        core_sha256_final(&r->sha, d);
        core_hex(d, 32, sha256_hex);
    } else {
        free(*parameters);
        *parameters = NULL;
    }
    free(r);
    close(fd);
    return *why == NULL;
}

/* ---- the manifest ---- */

static size_t name_hash(const char *s)
{
    size_t h = 1469598103934665603u;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211u;
    return h;
}

static out_manifest_entry *slot_for(const out_manifest *m, const char *file)
{
    size_t mask = m->cap - 1;
    for (size_t i = name_hash(file) & mask;; i = (i + 1) & mask)
        if (!m->slots[i].file || !strcmp(m->slots[i].file, file)) return &m->slots[i];
}

static int table_grow(out_manifest *m)
{
    size_t cap = m->cap ? m->cap * 2 : 256;
    out_manifest_entry *old = m->slots;
    size_t old_cap = m->cap;
    if (!(m->slots = calloc(cap, sizeof *m->slots))) { m->slots = old; return -1; }
    m->cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].file) *slot_for(m, old[i].file) = old[i];
    free(old);
    return 0;
}

static char *dup_string(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    return cJSON_IsString(v) ? strdup(v->valuestring) : NULL;
}

/* Whether a line at (seq, src, pos) comes after entry e: larger seq, then
 * the later manifest name, then the later position in one file. */
static int comes_after(long long seq, const char *src, off_t pos, const out_manifest_entry *e)
{
    if (seq != e->seq) return seq > e->seq;
    int c = strcmp(src, e->src);
    return c ? c > 0 : pos >= e->pos;
}

/* One line of manifest src at byte pos. Lines that are not a JSON object
 * with a "file" are ignored. */
static void take_line(out_manifest *m, const char *line, const char *src, off_t pos)
{
    cJSON *j = cJSON_Parse(line);
    char *file = dup_string(j, "file");
    if (file && (m->n + 1) * 2 > m->cap && table_grow(m)) { free(file); file = NULL; }
    if (file) {
        const cJSON *sq = cJSON_GetObjectItemCaseSensitive(j, "seq");
        long long seq = cJSON_IsNumber(sq) && sq->valuedouble >= 0 && sq->valuedouble < 9e15 ? (long long)sq->valuedouble : 0;
        if (seq > m->max_seq) m->max_seq = seq;
        out_manifest_entry *e = slot_for(m, file);
        if (!e->file || comes_after(seq, src, pos, e)) {
            if (e->file) {
                free(file);
                free(e->sha256);
                free(e->parameters);
            } else {
                e->file = file;
                m->n++;
            }
            e->sha256 = dup_string(j, "sha256");
            e->parameters = dup_string(j, "parameters");
            const cJSON *b = cJSON_GetObjectItemCaseSensitive(j, "bytes");
            e->bytes = cJSON_IsNumber(b) && b->valuedouble >= 0 ? (long long)b->valuedouble : -1;
            e->seq = seq;
            e->src = src;
            e->pos = pos;
        } else {
            free(file);
        }
    }
    cJSON_Delete(j);
}

static void table_clear(out_manifest *m)
{
    for (size_t i = 0; i < m->cap; i++) {
        free(m->slots[i].file);
        free(m->slots[i].sha256);
        free(m->slots[i].parameters);
    }
    free(m->slots);
    m->slots = NULL;
    m->n = m->cap = 0;
}

/* The complete lines of fd from *from to its end, as manifest src; *from
 * moves past the last complete line. A tail without its newline is not read. */
static int read_lines(out_manifest *m, int fd, const char *src, off_t *from, const char *what, fm_error *err)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0) return core_fail(err, FM_EINPUT, "%s: %s", what, strerror(errno));
    char *line = NULL;
    size_t len = 0, cap = 0;
    off_t off = *from;
    uint8_t buf[1 << 16];
    while (off < sb.st_size) {
        ssize_t r = pread(fd, buf, sizeof buf, off);
        if (r <= 0) break;
        for (ssize_t i = 0; i < r; i++) {
            if (len + 1 >= cap) {
                size_t nc = cap ? cap * 2 : 4096;
                char *p = realloc(line, nc);
                if (!p) { free(line); return core_fail(err, FM_EINPUT, "%s: out of memory", what); }
                line = p;
                cap = nc;
            }
            if (buf[i] != '\n') { line[len++] = (char)buf[i]; continue; }
            line[len] = 0;
            take_line(m, line, src, off + i + 1 - (off_t)len - 1);
            len = 0;
            *from = off + i + 1;
        }
        off += r;
    }
    free(line);
    return 0;
}

/* The index of manifest name in srcs (added if new), or -1. */
static long add_src(out_manifest *m, const char *name)
{
    for (size_t i = 0; i < m->n_srcs; i++)
        if (!strcmp(m->srcs[i], name)) return (long)i;
    char **p = realloc(m->srcs, (m->n_srcs + 1) * sizeof *p);
    if (!p) return -1;
    m->srcs = p;
    off_t *o = realloc(m->srcs_read_to, (m->n_srcs + 1) * sizeof *o);
    if (!o) return -1;
    m->srcs_read_to = o;
    if (!(p[m->n_srcs] = strdup(name))) return -1;
    o[m->n_srcs] = 0;
    return (long)m->n_srcs++;
}

/* Another process's manifest DIR/name (dfd: the directory holding it): its
 * complete lines not read yet; never locked or written. A link or anything
 * but a regular file is refused, as for one's own. */
static int read_other(out_manifest *m, int dfd, const char *base, const char *name, fm_error *err)
{
    char what[8192];
    snprintf(what, sizeof what, "%s/%s", m->dir, name);
    if (m->own && !strcmp(name, m->own)) return 0;
    int fd = openat(dfd, base, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) return 0;
        return core_fail(err, FM_EINPUT, "%s: %s", what, errno == ELOOP ? "a symbolic link (refused)" : strerror(errno));
    }
    struct stat sb;
    int rc = 0;
    long i = add_src(m, name);
    if (i < 0) rc = core_fail(err, FM_EINPUT, "%s: out of memory", what);
    else if (fstat(fd, &sb) != 0) rc = core_fail(err, FM_EINPUT, "%s: %s", what, strerror(errno));
    else if (!S_ISREG(sb.st_mode)) rc = core_fail(err, FM_EINPUT, "%s: not a regular file (%s)", what, kind_name(sb.st_mode));
    else {
        if (sb.st_size < m->srcs_read_to[i]) m->srcs_read_to[i] = 0; /* cut back by its owner */
        rc = read_lines(m, fd, m->srcs[i], &m->srcs_read_to[i], what, err);
    }
    close(fd);
    return rc;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* PREFIXmanifest.d opened without following a link; create: made if missing.
 * -1 with errno (ENOENT when absent and not to be made). */
static int open_subdir(const out_manifest *m, const char *sub, int create)
{
    char path[8192];
    snprintf(path, sizeof path, "%s/%s", m->dir, sub);
    if (create && mkdir(path, 0777) != 0 && errno != EEXIST) return -1;
    return open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

/* Every manifest but our own: PREFIXmanifest.jsonl, then the *.jsonl of
 * PREFIXmanifest.d in name order. */
static int read_others(out_manifest *m, fm_error *err)
{
    char name[600], sub[300];
    snprintf(name, sizeof name, "%smanifest.jsonl", m->prefix);
    snprintf(sub, sizeof sub, "%smanifest.d", m->prefix);
    int dfd = open(m->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0) return errno == ENOENT ? 0 : core_fail(err, FM_EINPUT, "%s: %s", m->dir, strerror(errno));
    int rc = read_other(m, dfd, name, name, err);
    close(dfd);
    if (rc) return rc;
    int sfd = open_subdir(m, sub, 0);
    if (sfd < 0) {
        if (errno == ENOENT) return 0;
        return core_fail(err, FM_EINPUT, "%s/%s: %s", m->dir, sub, errno == ELOOP || errno == ENOTDIR ? "not a directory (refused)" : strerror(errno));
    }
    DIR *d = fdopendir(dup(sfd));
    char **names = NULL;
    size_t n = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        size_t len = strlen(e->d_name);
        if (e->d_name[0] == '.' || len < 7 || strcmp(e->d_name + len - 6, ".jsonl")) continue;
        char **p = realloc(names, (n + 1) * sizeof *p);
        if (!p) break;
        names = p;
        if ((names[n] = strdup(e->d_name))) n++;
        int k, shards;
        char tail[16];
        if (sscanf(e->d_name, "%d-of-%d%15s", &k, &shards, tail) == 3 && !strcmp(tail, ".jsonl") && shards > m->shards_seen)
            m->shards_seen = shards;
    }
    if (d) closedir(d);
    qsort(names, n, sizeof *names, by_name);
    for (size_t i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%s/%s", sub, names[i]);
        if (!rc) rc = read_other(m, sfd, names[i], name, err);
        free(names[i]);
    }
    free(names);
    close(sfd);
    return rc;
}

/* Our own file's complete lines past read_to (called with the lock held). */
static int read_new_lines(out_manifest *m, fm_error *err)
{
    struct stat sb;
    if (fstat(m->fd, &sb) != 0) return core_fail(err, FM_EINPUT, "%s: %s", m->path, strerror(errno));
    if (sb.st_size < m->read_to) { /* cut back by another process: read it all again */
        table_clear(m);
        m->read_to = 0;
        for (size_t i = 0; i < m->n_srcs; i++) m->srcs_read_to[i] = 0;
        int rc = read_others(m, err);
        if (rc) return rc;
    }
    return read_lines(m, m->fd, m->own, &m->read_to, m->path, err);
}

/* A line without its newline was torn by a writer that died or hit a full
 * disk: appending after it would glue two objects together. */
static void cut_torn_line(out_manifest *m)
{
    struct stat sb;
    if (fstat(m->fd, &sb) != 0 || sb.st_size == 0) return;
    off_t end = sb.st_size, keep = 0;
    char buf[4096];
    for (off_t pos = end; pos > 0 && !keep;) {
        size_t n = pos < (off_t)sizeof buf ? (size_t)pos : sizeof buf;
        pos -= (off_t)n;
        if (pread(m->fd, buf, n, pos) != (ssize_t)n) return;
        if (pos + (off_t)n == end && buf[n - 1] == '\n') return; /* whole */
        for (size_t i = n; i-- > 0;)
            if (buf[i] == '\n') { keep = pos + (off_t)i + 1; break; }
    }
    if (ftruncate(m->fd, keep) == 0)
        fprintf(stderr, "fmimage: %s: removed a torn last line (%lld bytes)\n", m->path, (long long)(end - keep));
}

/* Opens DIR/own for appending: O_NOFOLLOW on the file, and on the
 * subdirectory when own is "SUB/NAME". */
static int open_own(out_manifest *m, const char *own, fm_error *err)
{
    const char *slash = strchr(own, '/');
    int dfd;
    if (slash) {
        char sub[300];
        snprintf(sub, sizeof sub, "%.*s", (int)(slash - own), own);
        dfd = open_subdir(m, sub, 1);
        if (dfd < 0)
            return core_fail(err, FM_EINPUT, "%s/%s: %s", m->dir, sub,
                           errno == ELOOP || errno == ENOTDIR ? "not a directory (refused)" : strerror(errno));
    } else {
        dfd = open(m->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0) return core_fail(err, FM_EINPUT, "%s: %s", m->dir, strerror(errno));
    }
    /* O_NONBLOCK: a FIFO planted under the name must not hang the open. */
    m->fd = openat(dfd, slash ? slash + 1 : own, O_RDWR | O_CREAT | O_APPEND | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0666);
    int e = errno;
    close(dfd);
    if (m->fd < 0)
        return core_fail(err, FM_EINPUT, "%s: %s", m->path, e == ELOOP ? "a symbolic link (refused)" : strerror(e));
    struct stat sb;
    if (fstat(m->fd, &sb) != 0) return core_fail(err, FM_EINPUT, "%s: %s", m->path, strerror(errno));
    if (!S_ISREG(sb.st_mode)) return core_fail(err, FM_EINPUT, "%s: not a regular file (%s)", m->path, kind_name(sb.st_mode));
    if (sb.st_nlink > 1) return core_fail(err, FM_EINPUT, "%s: has other hard links (refused)", m->path);
    return 0;
}

int out_manifest_open(out_manifest *m, const char *dir, const char *prefix, const char *own, fm_error *err)
{
    memset(m, 0, sizeof *m);
    m->fd = -1;
    m->shards_seen = 1;
    if (snprintf(m->dir, sizeof m->dir, "%s", dir) >= (int)sizeof m->dir ||
        snprintf(m->prefix, sizeof m->prefix, "%s", prefix) >= (int)sizeof m->prefix ||
        snprintf(m->path, sizeof m->path, "%s/%s", dir, own ? own : "") >= (int)sizeof m->path)
        return core_fail(err, FM_EINPUT, "%s: path too long", dir);
    int rc = 0;
    long i = own ? add_src(m, own) : 0;
    if (i < 0) rc = core_fail(err, FM_EINPUT, "%s: out of memory", m->path);
    else if (own) m->own = m->srcs[i];
    if (!rc && own) rc = open_own(m, own, err);
    if (!rc && own && lock_fd(m->fd, LOCK_EX) != 0) rc = core_fail(err, FM_EINPUT, "%s: lock: %s", m->path, strerror(errno));
    if (!rc && own) {
        cut_torn_line(m);
        rc = read_new_lines(m, err);
        out_manifest_unlock(m);
    }
    if (!rc) rc = read_others(m, err);
    if (rc) out_manifest_close(m);
    return rc;
}

int out_manifest_lock(out_manifest *m, fm_error *err)
{
    if (m->fd < 0) return 0; /* read-only */
    if (lock_fd(m->fd, LOCK_EX) != 0) return core_fail(err, FM_EINPUT, "%s: lock: %s", m->path, strerror(errno));
    int rc = read_new_lines(m, err);
    if (rc) out_manifest_unlock(m);
    return rc;
}

int out_manifest_refresh(out_manifest *m, fm_error *err) { return read_others(m, err); }

void out_manifest_unlock(out_manifest *m)
{
    if (m->fd >= 0) flock(m->fd, LOCK_UN);
}

const out_manifest_entry *out_manifest_find(const out_manifest *m, const char *file)
{
    if (!m->cap) return NULL;
    const out_manifest_entry *e = slot_for(m, file);
    return e->file ? e : NULL;
}

long long out_manifest_next_seq(const out_manifest *m) { return m->max_seq + 1; }

int out_manifest_append(out_manifest *m, const char *json, fm_error *err)
{
    if (m->fd < 0) return core_fail(err, FM_EINPUT, "%s: read-only", m->dir);
    struct stat sb;
    if (fstat(m->fd, &sb) != 0) return core_fail(err, FM_EINPUT, "%s: %s", m->path, strerror(errno));
    size_t n = strlen(json);
    char *line = malloc(n + 1);
    if (!line) return core_fail(err, FM_EINPUT, "%s: out of memory", m->path);
    memcpy(line, json, n);
    line[n] = '\n';
    ssize_t w = write(m->fd, line, n + 1);
    int e = errno;
    free(line);
    if (w == (ssize_t)(n + 1) && fsync(m->fd) != 0 && errno != EINVAL) { w = -1; e = errno; }
    if (w != (ssize_t)(n + 1)) {
        /* Leave the file as it was: a half line would break every reader. */
        if (ftruncate(m->fd, sb.st_size)) { /* the next open cuts it */ }
        return core_fail(err, FM_EINPUT, "%s: %s", m->path, w < 0 ? strerror(e) : "short write");
    }
    if (m->read_to == sb.st_size) {
        take_line(m, json, m->own, sb.st_size);
        m->read_to = sb.st_size + (off_t)n + 1;
    }
    return 0;
}

void out_manifest_close(out_manifest *m)
{
    if (m->fd >= 0) close(m->fd);
    m->fd = -1;
    table_clear(m);
    for (size_t i = 0; i < m->n_srcs; i++) free(m->srcs[i]);
    free(m->srcs);
    free(m->srcs_read_to);
    m->srcs = NULL;
    m->srcs_read_to = NULL;
    m->n_srcs = 0;
    m->own = NULL;
}

/* ---- claims (--only-missing) ---- */

#define CLAIM_PREFIX ".fmimage-claim-"

int out_claim(const char *dir, const char *file, int *fd, char path[4096])
{
    snprintf(path, 4096, "%s/" CLAIM_PREFIX "%016llx", dir, (unsigned long long)name_hash(file));
    for (int attempt = 0; attempt < 10; attempt++) {
        *fd = open(path, O_RDWR | O_CREAT | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0666);
        if (*fd < 0) return 1; /* cannot claim: make it anyway (duplicates are harmless) */
        if (flock(*fd, LOCK_EX | LOCK_NB) != 0) {
            int e = errno;
            close(*fd);
            *fd = -1;
            if (e == EWOULDBLOCK) return 0;
            return 1; /* no flock here */
        }
        /* Still the name's file: a releaser may have removed it meanwhile. */
        struct stat a, b;
        if (fstat(*fd, &a) == 0 && lstat(path, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) return 1;
        close(*fd);
    }
    *fd = -1;
    return 1;
}

void out_claim_release(int fd, const char *path)
{
    if (fd < 0) return;
    unlink(path);
    close(fd);
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
        return core_fail(err, FM_EINPUT, "%s: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode)) { /* a diffusers folder has no one file to hash: no Model hash */
        hash10[0] = 0;
        return 0;
    }
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

void out_file_stem(const char *path, char *buf, size_t n)
{
    /* a diffusers folder (DIR/): its name, whole */
    struct stat sb;
    int is_dir = stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
    size_t len = strlen(path);
    while (len > 1 && path[len - 1] == '/') len--;
    const char *base = path + len;
    while (base > path && base[-1] != '/') base--;
    snprintf(buf, n, "%.*s", (int)(path + len - base), base);
    char *dot = strrchr(buf, '.');
    if (dot && dot != buf && !is_dir) *dot = 0;
}
