/* Helpers for tests that run the fmimage binary ($FM_BIN, set by make test)
 * as a user would: argv in, exit code, stderr and files out. */
#ifndef FM_CLIUTIL_H
#define FM_CLIUTIL_H

#include "testutil.h"

#include <dirent.h>
#include <fcntl.h>
#include <png.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fmimage.h"
#include "tools/lib/st_write.h"

extern char **environ;

static inline const char *cu_bin(void)
{
    const char *b = getenv("FM_BIN");
    return b ? b : "build/fmimage";
}

/* A fresh directory under build/ for one test. */
static inline void cu_tempdir(char *buf, size_t n, const char *name)
{
    mkdir("build", 0777);
    mkdir("build/test-tmp", 0777);
    snprintf(buf, n, "build/test-tmp/%s-XXXXXX", name);
    assert_non_null(mkdtemp(buf));
}

/* Starts fmimage with args (NULL-terminated, without argv[0]); stderr goes to
 * err_path (or /dev/null), stdout to out_path (or /dev/null). */
static inline pid_t cu_spawn(const char *const *args, const char *out_path, const char *err_path)
{
    const char *argv[64];
    int n = 0;
    argv[n++] = cu_bin();
    for (; args[n - 1] && n < 63; n++) argv[n] = args[n - 1];
    argv[n] = NULL;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, out_path ? out_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, err_path ? err_path : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    pid_t pid;
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc) fail_msg("cannot start %s", argv[0]);
    return pid;
}

static inline int cu_wait(pid_t pid)
{
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Runs fmimage to completion; returns its exit code, stderr in err (if non-NULL). */
static inline int cu_run(const char *const *args, char *err, size_t err_len)
{
    char path[64];
    snprintf(path, sizeof path, "build/test-tmp/stderr-%d", (int)getpid());
    mkdir("build/test-tmp", 0777);
    int code = cu_wait(cu_spawn(args, NULL, path));
    if (err) {
        err[0] = 0;
        FILE *f = fopen(path, "r");
        if (f) {
            size_t r = fread(err, 1, err_len - 1, f);
            err[r] = 0;
            fclose(f);
        }
    }
    unlink(path);
    return code;
}

/* The start of a text file into buf (n bytes, NUL terminated); "" if it
 * cannot be read. */
static inline void cu_slurp_into(const char *path, char *buf, size_t n)
{
    buf[0] = 0;
    FILE *f = fopen(path, "r");
    if (!f) return;
    size_t r = fread(buf, 1, n - 1, f);
    buf[r] = 0;
    fclose(f);
}

static inline int cu_exists(const char *path) { return access(path, F_OK) == 0; }

/* Whole file into memory (malloc'd); *len gets its size. NULL if unreadable. */
static inline uint8_t *cu_slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    else b[n] = 0;
    fclose(f);
    if (len) *len = (size_t)n;
    return b;
}

/* A batch directory's manifests, concatenated (malloc'd, NULL if none):
 * DIR/manifest.jsonl, then every DIR/manifest.d/ *.jsonl a sharded run
 * writes (DESIGN.md "Output files"). */
static inline char *cu_manifests(const char *dir, size_t *len)
{
    char path[1024];
    size_t n = 0, cap = 1;
    char *all = malloc(1);
    int found = 0;
    struct dirent **names = NULL;
    snprintf(path, sizeof path, "%s/manifest.d", dir);
    int k = scandir(path, &names, NULL, alphasort);
    for (int i = -1; i < (k > 0 ? k : 0); i++) {
        if (i < 0) snprintf(path, sizeof path, "%s/manifest.jsonl", dir);
        else if (names[i]->d_name[0] == '.') continue;
        else snprintf(path, sizeof path, "%s/manifest.d/%s", dir, names[i]->d_name);
        size_t l = 0;
        uint8_t *d = cu_slurp(path, &l);
        if (!d) continue;
        found = 1;
        all = realloc(all, cap += l);
        memcpy(all + n, d, l);
        n += l;
        free(d);
    }
    for (int i = 0; i < k; i++) free(names[i]);
    free(names);
    all[n] = 0;
    if (len) *len = n;
    if (!found) { free(all); return NULL; }
    return all;
}

/* Runs the CLI with args (NULL-terminated, at most 48) plus "-q -o
 * DIR/NAME.png" and returns that image's RGB (malloc'd); fails the test if
 * the run fails or the image is not 64x64 (every caller draws the goldens'
 * 64x64 case). */
static inline uint8_t *cu_draw64(const char *dir, const char *name, const char *const *args)
{
    char out[1024], err[4096];
    snprintf(out, sizeof out, "%s/%s.png", dir, name);
    const char *argv[56];
    int n = 0;
    while (args[n] && n < 48) argv[n] = args[n], n++;
    argv[n++] = "-q", argv[n++] = "-o", argv[n++] = out, argv[n] = NULL;
    int code = cu_run(argv, err, sizeof err);
    if (code) fail_msg("%s: exit %d: %s", name, code, err);
    int w, h;
    fm_error e = {0};
    uint8_t *rgb = fm_image_read(out, &w, &h, &e);
    if (!rgb) fail_msg("%s", e.msg);
    assert_int_equal(w, 64);
    assert_int_equal(h, 64);
    return rgb;
}

/* PSNR in dB of two 8-bit buffers of n values (INFINITY when equal). */
static inline double cu_psnr8(const uint8_t *a, const uint8_t *b, size_t n)
{
    double se = 0;
    for (size_t i = 0; i < n; i++) se += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return se == 0 ? INFINITY : 10 * log10(255.0 * 255.0 / (se / (double)n));
}

/* Share of 8-bit values of two same-size PNGs that differ by at most 1. */
static inline double cu_png_within_1(const char *a, const char *b)
{
    fm_error err = {0};
    int wa, ha, wb, hb;
    uint8_t *pa = fm_image_read(a, &wa, &ha, &err), *pb = fm_image_read(b, &wb, &hb, &err);
    if (!pa || !pb) fail_msg("cannot read %s or %s: %s", a, b, err.msg);
    assert_int_equal(wa, wb);
    assert_int_equal(ha, hb);
    size_t n = (size_t)wa * ha * 3, ok = 0;
    for (size_t i = 0; i < n; i++) ok += abs((int)pa[i] - (int)pb[i]) <= 1;
    free(pa);
    free(pb);
    return (double)ok / n;
}

/* The PNG's iTXt/tEXt "parameters" value (malloc'd) or NULL. */
static inline char *cu_png_parameters(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    char *out = NULL;
    if (setjmp(png_jmpbuf(png)) == 0) {
        png_init_io(png, f);
        png_read_info(png, info);
        png_textp text;
        int n = 0;
        png_get_text(png, info, &text, &n);
        for (int i = 0; i < n; i++)
            if (!strcmp(text[i].key, "parameters")) out = strdup(text[i].text);
    }
    png_destroy_read_struct(&png, &info, NULL);
    fclose(f);
    return out;
}

/* Writer entries for every tensor of an open file, pointing at its mapped
 * data: tl_st_write(path, e, st->n_tensors, ...) copies the file, and a test
 * changes the entries it wants first. Free with free(). */
static inline tl_st_entry *cu_st_entries(const wt_safetensors *st)
{
    tl_st_entry *e = calloc((size_t)st->n_tensors, sizeof *e);
    assert_non_null(e);
    for (int i = 0; i < st->n_tensors; i++) {
        const wt_st_tensor *t = &st->tensors[i];
        e[i].name = t->name;
        e[i].dtype = t->dtype;
        e[i].ndim = t->ndim;
        memcpy(e[i].shape, t->shape, sizeof t->shape);
        e[i].data = t->data;
    }
    return e;
}

/* tests/data/README.md#tiny-sd2: the tiny SD 2.x file carries no metadata, and its
 * 16-wide heads cannot be read off the shapes (real SD 2.x heads are 64
 * wide, the family's value). The tests give the file its documented config
 * WITHOUT "prediction", so eps-or-v is still decided by the A1111 probe. */
static inline void cu_write_tiny_sd2(const char *out)
{
    static const char *const cu_sd2_config =
        "{\"family\": \"sd2\", \"unet\": {\"num_heads\": -1, \"num_head_channels\": 16}, "
        "\"text\": {\"kind\": \"openclip\", \"width\": 32, \"layers\": 3, \"heads\": 2}}";
    wt_safetensors st;
    tu_open(&st, "tests/data/tiny-sd2.safetensors");
    tl_st_entry *e = cu_st_entries(&st);
    wt_st_meta meta = {"fmimage.config", cu_sd2_config};
    fm_error err = {0};
    if (tl_st_write(out, e, st.n_tensors, &meta, 1, &err)) fail_msg("%s", err.msg);
    free(e);
    wt_st_close(&st);
}

#endif
