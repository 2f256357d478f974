/* `--precision auto`: decided per model at its first use from a timing of
 * the real kernels in fp32 and bf16 (kernels/precision_probe.c), cached in
 * one line per machine of $XDG_CACHE_HOME/fmimage/precision.tsv. The cache
 * is only a cache: a missing, unreadable, corrupt or hostile file is timed
 * anew and rewritten, and a file that cannot be written costs one timing
 * per process, never an error. */
#include "diffusion/precision.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "diffusion/pipeline_internal.h"
#include "kernels/kernels.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#define PROBE_REPS 3      /* the least of 3 runs: about 0.45 s of one core in all */
#define LINE_MAX_BYTES 512
#define NUM_MAX_BYTES 32
#define KEEP_OTHER_LINES 31

/* ---- the decision ---- */

static int valid_time(double s) { return isfinite(s) && s > 0; }

double df_prec_speed_unet(const kn_probe_times *t)
{
    static const double share[FM_PROBE_SHAPES] = {FM_PREC_SHARE_CONV, FM_PREC_SHARE_LINEAR,
                                                  FM_PREC_SHARE_ATTENTION};
    /* bf16's U-Net time as a fraction of fp32's: each kind of work takes its
     * share of the fp32 time, scaled by its own bf16 : fp32 time ratio */
    double bf16_time = 0;
    for (int s = 0; s < FM_PROBE_SHAPES; s++) {
        if (!valid_time(t->fp32[s]) || !valid_time(t->bf16[s])) return 0;
        bf16_time += share[s] * (t->bf16[s] / t->fp32[s]);
    }
    return 1.0 / bf16_time;
}

double df_prec_speed_vae(const kn_probe_times *t)
{
    double f = t->fp32[FM_PROBE_CONV], b = t->bf16[FM_PROBE_CONV];
    return valid_time(f) && valid_time(b) ? f / b : 0;
}

fm_precision df_prec_decide(const kn_probe_times *t)
{
    return df_prec_speed_unet(t) >= FM_PREC_MARGIN && df_prec_speed_vae(t) >= FM_PREC_MARGIN ? FM_PREC_BF16
                                                                                             : FM_PREC_FP32;
}

/* ---- the key ---- */

/* s with every byte outside printable ASCII (tabs, newlines, UTF-8) made a
 * space, runs of spaces made one, and no space at either end. */
static void tidy(char *s)
{
    char *w = s;
    for (const char *r = s; *r; r++) {
        char c = (unsigned char)*r > 0x20 && (unsigned char)*r < 0x7f ? *r : ' ';
        if (c != ' ' || (w > s && w[-1] != ' ')) *w++ = c;
    }
    while (w > s && w[-1] == ' ') w--;
    *w = 0;
}

/* The CPU's model: its brand string and, since virtual machines often
 * report a generic brand ("Intel(R) Xeon(R) Processor"), its family, model
 * and stepping numbers. */
static void cpu_model(char *buf, size_t n)
{
    buf[0] = 0;
#if defined(__x86_64__)
    unsigned r[12], a, b, c, d;
    char brand[49] = {0};
    if (__get_cpuid(0x80000000u, &a, &b, &c, &d) && a >= 0x80000004u) {
        for (unsigned i = 0; i < 3; i++) __get_cpuid(0x80000002u + i, &r[4 * i], &r[4 * i + 1], &r[4 * i + 2], &r[4 * i + 3]);
        memcpy(brand, r, 48);
    }
    tidy(brand);
    if (__get_cpuid(1, &a, &b, &c, &d)) {
        unsigned family = (a >> 8) & 0xf, model = (a >> 4) & 0xf;
        if (family == 0xf) family += (a >> 20) & 0xff;
        if (family == 6 || family >= 0xf) model += ((a >> 16) & 0xf) << 4;
        snprintf(buf, n, "%s (family %u model %u stepping %u)", brand[0] ? brand : "x86-64", family, model, a & 0xf);
    }
#else
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) || !strncmp(line, "Processor", 9) || !strncmp(line, "cpu model", 9)) {
            const char *colon = strchr(line, ':');
            if (colon) snprintf(buf, n, "%s", colon + 1);
            break;
        }
    if (f) fclose(f);
#endif
    tidy(buf);
    if (!buf[0]) snprintf(buf, n, "unknown CPU");
}

/* A build whose kernels are not optimised, or are instrumented, times
 * nothing like a release build (under ASan bf16 measured 2x faster than
 * fp32 on a CPU where it is 0.75x): its own key keeps it out of theirs. */
#if defined(__SANITIZE_ADDRESS__)
#define BUILD_TAG "+asan"
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BUILD_TAG "+asan"
#endif
#endif
#if !defined(BUILD_TAG) && !defined(__OPTIMIZE__)
#define BUILD_TAG "+O0"
#endif
#ifndef BUILD_TAG
#define BUILD_TAG ""
#endif

void df_prec_cache_key(char key[FM_PREC_KEY_MAX])
{
    char cpu[160];
    cpu_model(cpu, sizeof cpu);
    snprintf(key, FM_PREC_KEY_MAX, "%s\t%s%s%s+k%d%s\t%s", cpu, kn_isa_name(kn_isa_chosen()),
             kn_has_bf16() ? "+avx512_bf16" : "", kn_has_amx() ? "+amx_bf16" : "", KN_KERNELS_REVISION, BUILD_TAG,
             FM_VERSION);
}

/* ---- parsing ---- */

/* A time field: digits, '.', exponent; the whole field a number in the
 * range a kernel run can take. */
static int parse_time(const char *s, size_t len, double *out)
{
    char num[NUM_MAX_BYTES];
    if (len == 0 || len >= sizeof num) return 0;
    for (size_t i = 0; i < len; i++)
        if (!strchr("0123456789.eE+-", s[i]) || !s[i]) return 0;
    memcpy(num, s, len);
    num[len] = 0;
    char *end;
    errno = 0;
    double v = strtod(num, &end);
    if (errno || end != num + len || !isfinite(v) || !(v > 1e-9 && v < 100)) return 0;
    *out = v;
    return 1;
}

int df_prec_cache_parse_line(const char *line, size_t len, char key[FM_PREC_KEY_MAX], kn_probe_times *t)
{
    if (len == 0 || len >= LINE_MAX_BYTES) return 0;
    const char *field[9];
    size_t flen[9];
    int nf = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && line[i] != '\t') {
            if ((unsigned char)line[i] < 0x20 || (unsigned char)line[i] >= 0x7f) return 0;
            continue;
        }
        if (nf == 9 || i == start) return 0; /* too many fields, or an empty one */
        field[nf] = line + start;
        flen[nf++] = i - start;
        start = i + 1;
    }
    if (nf != 9) return 0;
    size_t key_len = (size_t)(field[3] - line) - 1;
    if (key_len >= FM_PREC_KEY_MAX) return 0;
    kn_probe_times v;
    for (int s = 0; s < FM_PROBE_SHAPES; s++)
        if (!parse_time(field[3 + 2 * s], flen[3 + 2 * s], &v.fp32[s]) ||
            !parse_time(field[4 + 2 * s], flen[4 + 2 * s], &v.bf16[s]))
            return 0;
    memcpy(key, line, key_len);
    key[key_len] = 0;
    *t = v;
    return 1;
}

/* Calls fn on each line of text (without its '\n') until fn returns
 * non-zero; returns that value or 0. */
static int each_line(const char *text, size_t len, int (*fn)(void *, const char *, size_t), void *user)
{
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t end = nl ? (size_t)(nl - text) : len;
        int rc = fn(user, text + i, end - i);
        if (rc) return rc;
        i = end + 1;
    }
    return 0;
}

typedef struct find_ctx {
    const char *key;
    kn_probe_times *t;
} find_ctx;

static int find_line(void *user, const char *line, size_t len)
{
    find_ctx *f = user;
    char key[FM_PREC_KEY_MAX];
    kn_probe_times t;
    if (!df_prec_cache_parse_line(line, len, key, &t) || strcmp(key, f->key)) return 0;
    *f->t = t;
    return 1;
}

int df_prec_cache_find(const char *text, size_t len, const char *key, kn_probe_times *t)
{
    find_ctx f = {key, t};
    return text ? each_line(text, len, find_line, &f) : 0;
}

/* ---- the file ---- */

char *df_prec_cache_read(const char *path, size_t *len)
{
    /* O_NONBLOCK: a FIFO planted at the path must not hang the run */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) return NULL;
    struct stat sb;
    char *text = NULL;
    if (fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && sb.st_size <= FM_PREC_CACHE_MAX &&
        (text = malloc(FM_PREC_CACHE_MAX + 2))) {
        size_t got = 0;
        ssize_t r;
        while (got <= FM_PREC_CACHE_MAX && (r = read(fd, text + got, FM_PREC_CACHE_MAX + 1 - got)) > 0)
            got += (size_t)r;
        if (got > FM_PREC_CACHE_MAX) { /* grew while read: not a cache file we wrote */
            free(text);
            text = NULL;
        } else {
            text[got] = 0;
            *len = got;
        }
    }
    close(fd);
    return text;
}

typedef struct keep_ctx {
    const char *key;
    char *out;
    size_t len, cap;
    int kept;
} keep_ctx;

static void append(keep_ctx *k, const char *s, size_t n)
{
    if (k->len + n <= k->cap) {
        memcpy(k->out + k->len, s, n);
        k->len += n;
    }
}

/* Keeps another machine's valid line (a home directory shared between
 * machines holds one line each); drops this machine's and every invalid one. */
static int keep_line(void *user, const char *line, size_t len)
{
    keep_ctx *k = user;
    char key[FM_PREC_KEY_MAX];
    kn_probe_times t;
    if (k->kept < KEEP_OTHER_LINES && df_prec_cache_parse_line(line, len, key, &t) && strcmp(key, k->key)) {
        append(k, line, len);
        append(k, "\n", 1);
        k->kept++;
    }
    return 0;
}

static int write_all(int fd, const char *s, size_t n)
{
    while (n) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return -1;
        s += w;
        n -= (size_t)w;
    }
    return 0;
}

static int store_fail(char *why, size_t n, const char *what, int e)
{
    if (why) snprintf(why, n, "%s: %s", what, strerror(e));
    return -1;
}

int df_prec_cache_store(const char *path, const char *key, const kn_probe_times *t, char *why, size_t why_size)
{
    static const char header[] =
        "# fmimage --precision auto: CPU seconds of one run of each kernel shape in fp32 and bf16\n"
        "# cpu\tkernels\tversion\tconv_fp32\tconv_bf16\tlinear_fp32\tlinear_bf16\tattention_fp32\tattention_bf16\n";
    size_t old_len = 0;
    char *old = df_prec_cache_read(path, &old_len);
    keep_ctx k = {key, malloc(sizeof header + (size_t)KEEP_OTHER_LINES * LINE_MAX_BYTES + LINE_MAX_BYTES), 0,
                  sizeof header + (size_t)KEEP_OTHER_LINES * LINE_MAX_BYTES + LINE_MAX_BYTES, 0};
    if (!k.out) {
        free(old);
        return store_fail(why, why_size, "write", ENOMEM);
    }
    append(&k, header, sizeof header - 1);
    if (old) each_line(old, old_len, keep_line, &k);
    free(old);
    char line[LINE_MAX_BYTES];
    int n = snprintf(line, sizeof line, "%s\t%.9g\t%.9g\t%.9g\t%.9g\t%.9g\t%.9g\n", key, t->fp32[0], t->bf16[0],
                     t->fp32[1], t->bf16[1], t->fp32[2], t->bf16[2]);
    append(&k, line, n > 0 && (size_t)n < sizeof line ? (size_t)n : 0);

    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.XXXXXX", path) >= (int)sizeof tmp) {
        free(k.out);
        return store_fail(why, why_size, "write", ENAMETOOLONG);
    }
    int fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        free(k.out);
        return store_fail(why, why_size, "create", errno);
    }
    int rc = fchmod(fd, 0644) || write_all(fd, k.out, k.len) || fsync(fd) ? -1 : 0;
    int e = errno;
    if (close(fd) && !rc) rc = -1, e = errno;
    if (!rc && rename(tmp, path)) rc = -1, e = errno;
    if (rc) unlink(tmp);
    free(k.out);
    return rc ? store_fail(why, why_size, "write", e) : 0;
}

/* ---- where the cache lives ---- */

typedef enum { CACHE_OFF, CACHE_NONE, CACHE_GIVEN, CACHE_DEFAULT } cache_kind;

/* FMIMAGE_PRECISION_CACHE=off: no timing; =FILE: that file; unset or
 * empty: $XDG_CACHE_HOME/fmimage/precision.tsv (an absolute XDG_CACHE_HOME,
 * as the XDG spec asks), else $HOME/.cache/fmimage/precision.tsv. base
 * gets the directory the default path may have to create. */
int df_cache_base(char base[PATH_MAX])
{
    const char *xdg = getenv("XDG_CACHE_HOME"), *home = getenv("HOME");
    int n = -1;
    base[0] = 0;
    if (xdg && xdg[0] == '/') n = snprintf(base, PATH_MAX, "%s", xdg);
    else if (home && home[0] == '/') n = snprintf(base, PATH_MAX, "%s/.cache", home);
    if (n < 0 || n >= PATH_MAX) return base[0] = 0, -1;
    return 0;
}

static cache_kind cache_location(char path[PATH_MAX], char base[PATH_MAX])
{
    const char *env = getenv("FMIMAGE_PRECISION_CACHE");
    path[0] = base[0] = 0;
    if (env && !strcmp(env, "off")) return CACHE_OFF;
    if (env && *env) return snprintf(path, PATH_MAX, "%s", env) < PATH_MAX ? CACHE_GIVEN : CACHE_NONE;
    if (df_cache_base(base)) return CACHE_NONE;
    if (snprintf(path, PATH_MAX, "%s/fmimage/precision.tsv", base) >= PATH_MAX) return CACHE_NONE;
    return CACHE_DEFAULT;
}

/* The default file's two directories (the XDG spec's 0700 for the base). */
static void make_dirs(const char *base)
{
    char dir[PATH_MAX];
    mkdir(base, 0700);
    if (snprintf(dir, sizeof dir, "%s/fmimage", base) < (int)sizeof dir) mkdir(dir, 0755);
}

/* ---- resolving ---- */

static fm_precision decided(df_prec_auto *a, df_prec_source from, fm_precision mode)
{
    a->from = from;
    a->mode = mode;
    return mode;
}

fm_precision df_prec_auto_resolve(df_prec_auto *a)
{
    if (a->from != FM_PREC_FROM_NONE) return a->mode;
    a->cache[0] = a->cache_note[0] = 0;
    if (!kn_has_bf16()) return decided(a, FM_PREC_FROM_NO_BF16, FM_PREC_FP32);
    if (a->measure) {
        if (a->measure(a->measure_user, &a->times)) return decided(a, FM_PREC_FROM_FAILED, FM_PREC_FP32);
        return decided(a, FM_PREC_FROM_HOOK, df_prec_decide(&a->times));
    }
    char base[PATH_MAX], key[FM_PREC_KEY_MAX];
    cache_kind kind = cache_location(a->cache, base);
    if (kind == CACHE_OFF) return decided(a, FM_PREC_FROM_OFF, FM_PREC_FP32);
    df_prec_cache_key(key);
    size_t len = 0;
    char *text = a->cache[0] ? df_prec_cache_read(a->cache, &len) : NULL;
    int hit = df_prec_cache_find(text, len, key, &a->times);
    free(text);
    if (hit) return decided(a, FM_PREC_FROM_CACHE, df_prec_decide(&a->times));
    a->probes++;
    if (kn_precision_probe(&a->times, PROBE_REPS)) return decided(a, FM_PREC_FROM_FAILED, FM_PREC_FP32);
    if (kind == CACHE_DEFAULT) make_dirs(base);
    if (a->cache[0]) df_prec_cache_store(a->cache, key, &a->times, a->cache_note, sizeof a->cache_note);
    return decided(a, FM_PREC_FROM_PROBE, df_prec_decide(&a->times));
}

/* Why the kernels have no native bf16 products here. */
static const char *no_bf16_reason(void)
{
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512bf16"))
        return kn_isa_chosen() == FM_ISA_AVX512 ? "no bf16 kernels" : "FM_ISA lowers the kernels below avx512";
#endif
    return "this CPU has no AVX512_BF16";
}

/* The decision in one line, e.g. "auto = fp32 (bf16 measured 0.74x the
 * fp32 speed for the U-Net, 0.77x for the VAE on this CPU; ...)". */
static void prec_auto_why(const df_prec_auto *a, char *why, size_t size)
{
    const char *mode = a->mode == FM_PREC_BF16 ? "bf16" : "fp32";
    char tail[PATH_MAX + 192];
    switch (a->from) {
    case FM_PREC_FROM_NONE: snprintf(why, size, "auto (not decided yet)"); return;
    case FM_PREC_FROM_NO_BF16: snprintf(why, size, "auto = fp32 (%s; nothing measured)", no_bf16_reason()); return;
    case FM_PREC_FROM_OFF: snprintf(why, size, "auto = fp32 (not measured: FMIMAGE_PRECISION_CACHE=off)"); return;
    case FM_PREC_FROM_FAILED: snprintf(why, size, "auto = fp32 (the kernel timing could not run)"); return;
    case FM_PREC_FROM_HOOK: snprintf(tail, sizeof tail, "times given by the caller"); break;
    case FM_PREC_FROM_CACHE: snprintf(tail, sizeof tail, "measured earlier; cache %s", a->cache); break;
    case FM_PREC_FROM_PROBE:
        if (!a->cache[0]) snprintf(tail, sizeof tail, "measured now; no cache file (no HOME)");
        else if (a->cache_note[0]) snprintf(tail, sizeof tail, "measured now; cache %s not written: %s", a->cache, a->cache_note);
        else snprintf(tail, sizeof tail, "measured now; cache %s", a->cache);
        break;
    }
    snprintf(why, size, "auto = %s (bf16 measured %.2fx the fp32 speed for the U-Net, %.2fx for the VAE on this CPU%s; "
                        "bf16 needs %.2fx; %s)",
             mode, df_prec_speed_unet(&a->times), df_prec_speed_vae(&a->times),
             kn_has_amx() ? ", on AMX tiles" : "", FM_PREC_MARGIN, tail);
}

/* ---- the model's ---- */

fm_precision fm_model_precision(fm_model *m, fm_precision requested, char *why, size_t why_size)
{
    if (!m) {
        if (why && why_size) snprintf(why, why_size, "fp32 (no model)");
        return FM_PREC_FP32;
    }
    fm_precision mode = df_precision_resolve(m, requested);
    if (!why || !why_size) return mode;
    switch (requested) {
    case FM_PREC_AUTO: prec_auto_why(&m->prec_auto, why, why_size); break;
    case FM_PREC_BF16:
        if (mode == FM_PREC_BF16) snprintf(why, why_size, "bf16 (as asked)");
        else snprintf(why, why_size, "bf16 = fp32 (%s)", no_bf16_reason());
        break;
    case FM_PREC_F16: snprintf(why, why_size, "f16 = fp32 (F16 weights always multiply with fp32 sums)"); break;
    default: snprintf(why, why_size, "fp32 (as asked)"); break;
    }
    return mode;
}
