/* `--precision auto` is the fastest mode measured on the machine it runs on
 * (issue 22 item 1): never a mode measured slower than fp32. The decision
 * from given times (a pure function), the cache file's strict parse and its
 * atomic rewrite, the model following injected measurements, and one real
 * timing of the kernels that a second model reads back from the cache. */
#include "cliutil.h"

#include <sys/stat.h>

#include "diffusion/pipeline_internal.h"
#include "kernels/kernels.h"

#define TINY "tests/data/tiny-sd1.safetensors"

/* Times whose bf16 : fp32 speed (fp32 time / bf16 time) is conv, linear,
 * attention; fp32 times of the order the probe measures. */
static kn_probe_times speeds(double conv, double linear, double attention)
{
    kn_probe_times t = {{0.024, 0.010, 0.009}, {0}};
    t.bf16[FM_PROBE_CONV] = t.fp32[FM_PROBE_CONV] / conv;
    t.bf16[FM_PROBE_LINEAR] = t.fp32[FM_PROBE_LINEAR] / linear;
    t.bf16[FM_PROBE_ATTENTION] = t.fp32[FM_PROBE_ATTENTION] / attention;
    return t;
}

static void test_decide_from_times(void **state)
{
    (void)state;
    /* this machine's ratio (issue 22: vdpbf16ps at about 2/3 of the FMA rate) */
    kn_probe_times t = speeds(0.68, 0.68, 0.68);
    assert_true(fabs(df_prec_speed_unet(&t) - 0.68) < 1e-9);
    assert_int_equal(df_prec_decide(&t), FM_PREC_FP32);
    /* Zen 5: bf16 1.6x faster */
    t = speeds(1.6, 1.6, 1.6);
    assert_true(fabs(df_prec_speed_unet(&t) - 1.6) < 1e-9);
    assert_int_equal(df_prec_decide(&t), FM_PREC_BF16);
    /* faster, but not clearly: fp32 */
    t = speeds(1.05, 1.05, 1.05);
    assert_int_equal(df_prec_decide(&t), FM_PREC_FP32);
    /* the U-Net's mix, by hand: 0.55/1.5 + 0.31/1.5 + 0.14/0.5 = 0.85333
     * of the fp32 time, 1.1719x the speed; the VAE 1.5x */
    t = speeds(1.5, 1.5, 0.5);
    assert_true(fabs(df_prec_speed_unet(&t) - 1.0 / (0.55 / 1.5 + 0.31 / 1.5 + 0.14 / 0.5)) < 1e-9);
    assert_true(fabs(df_prec_speed_unet(&t) - 1.1719) < 1e-4);
    assert_int_equal(df_prec_decide(&t), FM_PREC_BF16);
    /* U-Net 1/(0.55/1.05 + 0.45/2) = 1.335x, but the VAE (its convolutions)
     * only 1.05x: fp32 */
    t = speeds(1.05, 2.0, 2.0);
    assert_true(fabs(df_prec_speed_unet(&t) - 1.3355) < 1e-4);
    assert_true(fabs(df_prec_speed_vae(&t) - 1.05) < 1e-9);
    assert_int_equal(df_prec_decide(&t), FM_PREC_FP32);
    /* slow linears sink the U-Net: 0.55/1.2 + 0.31/0.5 + 0.14/1.2 = 1.195 */
    t = speeds(1.2, 0.5, 1.2);
    assert_true(df_prec_speed_unet(&t) < 0.84);
    assert_int_equal(df_prec_decide(&t), FM_PREC_FP32);
    /* times that are not times decide nothing: fp32 */
    const double bad[] = {0, -0.01, NAN, INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        for (int s = 0; s < 2 * FM_PROBE_SHAPES; s++) {
            t = speeds(2, 2, 2);
            if (s < FM_PROBE_SHAPES) t.fp32[s] = bad[i];
            else t.bf16[s - FM_PROBE_SHAPES] = bad[i];
            assert_int_equal(df_prec_decide(&t), FM_PREC_FP32);
        }
}

/* Whatever the times, bf16 is chosen only when it is measured faster for
 * both: the U-Net's time in bf16 (each kind of work's share of the fp32
 * time, scaled by its measured ratio) and the VAE's convolutions. */
static void test_auto_never_slower(void **state)
{
    (void)state;
    const double grid[] = {0.3, 0.5, 0.68, 0.9, 0.99, 1.0, 1.05, 1.09, 1.1, 1.2, 1.6, 2.0, 4.0};
    const int n = sizeof grid / sizeof grid[0];
    int chose_bf16 = 0;
    for (int a = 0; a < n; a++)
        for (int b = 0; b < n; b++)
            for (int c = 0; c < n; c++) {
                kn_probe_times t = speeds(grid[a], grid[b], grid[c]);
                double unet_bf16 = 0.55 * t.bf16[0] / t.fp32[0] + 0.31 * t.bf16[1] / t.fp32[1] +
                                   0.14 * t.bf16[2] / t.fp32[2];
                if (df_prec_decide(&t) != FM_PREC_BF16) continue;
                chose_bf16++;
                if (!(unet_bf16 * 1.1 <= 1.0 + 1e-12) || !(t.bf16[0] * 1.1 <= t.fp32[0] * (1 + 1e-12)))
                    fail_msg("bf16 chosen for speeds %g %g %g: U-Net bf16 time %.3f of fp32", grid[a], grid[b],
                             grid[c], unet_bf16);
            }
    assert_true(chose_bf16 > 0);
}

/* A valid line for key with the six given numbers. */
static void line_for(char *buf, size_t n, const char *key, const char *nums)
{
    snprintf(buf, n, "%s\t%s", key, nums);
}

static void test_cache_parse(void **state)
{
    (void)state;
    char key[FM_PREC_KEY_MAX], got_key[FM_PREC_KEY_MAX], line[2048];
    df_prec_cache_key(key);
    assert_non_null(strstr(key, "\t" FM_VERSION));
    assert_null(strchr(key, '\n'));
#if defined(__SANITIZE_ADDRESS__)
    assert_non_null(strstr(key, "+asan\t")); /* its timings stay apart from a release build's */
#else
    assert_null(strstr(key, "+asan"));
#endif
    kn_probe_times t;
    line_for(line, sizeof line, key, "0.025\t0.0375\t0.01\t0.0125\t0.009\t0.018");
    assert_int_equal(df_prec_cache_parse_line(line, strlen(line), got_key, &t), 1);
    assert_string_equal(got_key, key);
    assert_true(t.fp32[0] == 0.025 && t.bf16[0] == 0.0375 && t.fp32[1] == 0.01 && t.bf16[1] == 0.0125 &&
                t.fp32[2] == 0.009 && t.bf16[2] == 0.018);

    /* every hostile line is refused, each for one reason */
    const char *hostile_nums[] = {
        "0.025\t0.0375\t0.01\t0.0125\t0.009",               /* 5 times */
        "0.025\t0.0375\t0.01\t0.0125\t0.009\t0.018\t0.1",   /* 7 times */
        "0.025\t\t0.01\t0.0125\t0.009\t0.018",              /* an empty field */
        "0.025\tnan\t0.01\t0.0125\t0.009\t0.018",
        "0.025\tinf\t0.01\t0.0125\t0.009\t0.018",
        "0.025\t1e999\t0.01\t0.0125\t0.009\t0.018",         /* overflows */
        "0.025\t-0.0375\t0.01\t0.0125\t0.009\t0.018",       /* negative */
        "0.025\t0\t0.01\t0.0125\t0.009\t0.018",             /* zero */
        "0.025\t1e-300\t0.01\t0.0125\t0.009\t0.018",        /* no kernel runs that fast */
        "0.025\t250\t0.01\t0.0125\t0.009\t0.018",           /* nor that slow */
        "0.025\t0x1p-3\t0.01\t0.0125\t0.009\t0.018",        /* hex float */
        "0.025\t 0.0375\t0.01\t0.0125\t0.009\t0.018",       /* a space */
        "0.025\t0.0375abc\t0.01\t0.0125\t0.009\t0.018",
        "0.025\t0.0375\t0.01\t0.0125\t0.009\t0.018\r",      /* CRLF */
        "0.025\t0.000000000000000000000000000000375\t0.01\t0.0125\t0.009\t0.018", /* 35 bytes */
        "0.025\t0.03\xc3\xa9\t0.01\t0.0125\t0.009\t0.018",  /* UTF-8 */
    };
    for (size_t i = 0; i < sizeof hostile_nums / sizeof hostile_nums[0]; i++) {
        line_for(line, sizeof line, key, hostile_nums[i]);
        if (df_prec_cache_parse_line(line, strlen(line), got_key, &t)) fail_msg("accepted hostile line %zu", i);
    }
    /* a NUL inside, counted in the length */
    line_for(line, sizeof line, key, "0.025\t0.0375\t0.01\t0.0125\t0.009\t0.018");
    size_t len = strlen(line);
    line[len - 3] = 0;
    assert_int_equal(df_prec_cache_parse_line(line, len, got_key, &t), 0);
    /* a key field empty; a line over 511 bytes */
    assert_int_equal(df_prec_cache_parse_line("\tavx512\t0.1.0\t1\t1\t1\t1\t1\t1", 25, got_key, &t), 0);
    memset(line, 'a', 600);
    memcpy(line + 600, "\tb\tc\t1\t1\t1\t1\t1\t1", 17);
    assert_int_equal(df_prec_cache_parse_line(line, strlen(line), got_key, &t), 0);
    assert_int_equal(df_prec_cache_parse_line("", 0, got_key, &t), 0);
}

static void test_cache_find(void **state)
{
    (void)state;
    char key[FM_PREC_KEY_MAX], text[8192], line[1024];
    df_prec_cache_key(key);
    /* other keys: another version, another CPU, other kernels */
    char other_version[FM_PREC_KEY_MAX], other_cpu[FM_PREC_KEY_MAX], other_isa[FM_PREC_KEY_MAX];
    snprintf(other_version, sizeof other_version, "%s", key);
    strcpy(strrchr(other_version, '\t') + 1, "0.0.9");
    snprintf(other_cpu, sizeof other_cpu, "AMD Ryzen 9 9950X%s", strchr(key, '\t'));
    snprintf(other_isa, sizeof other_isa, "%.*s\tavx2\t%s", (int)(strchr(key, '\t') - key), key, FM_VERSION);
    int n = snprintf(text, sizeof text, "# comment\n\n");
    const char *others[] = {other_version, other_cpu, other_isa};
    for (int i = 0; i < 3; i++)
        n += snprintf(text + n, sizeof text - n, "%s\t0.02\t0.01\t0.02\t0.01\t0.02\t0.01\n", others[i]);
    n += snprintf(text + n, sizeof text - n, "%s\t0.02\tNaN\t0.02\t0.01\t0.02\t0.01\n", key); /* ours, corrupt */
    n += snprintf(text + n, sizeof text - n, "\x01\xff garbage \x7f\n%s\t0.02\t0.01\n", key);
    kn_probe_times t;
    assert_int_equal(df_prec_cache_find(text, (size_t)n, key, &t), 0); /* wrong keys ignored, bad lines skipped */
    line_for(line, sizeof line, key, "0.025\t0.0375\t0.01\t0.0125\t0.009\t0.018");
    n += snprintf(text + n, sizeof text - n, "%s", line); /* last line, no newline */
    assert_int_equal(df_prec_cache_find(text, (size_t)n, key, &t), 1);
    assert_true(t.fp32[0] == 0.025 && t.bf16[2] == 0.018);
    assert_int_equal(df_prec_cache_find(NULL, 0, key, &t), 0);
}

static int count_lines_parsing(const char *text, const char *key, int *ours)
{
    int valid = 0;
    *ours = 0;
    for (const char *p = text; *p;) {
        const char *nl = strchr(p, '\n');
        if (!nl) fail_msg("the cache file does not end in a newline");
        char k[FM_PREC_KEY_MAX];
        kn_probe_times t;
        if (*p != '#') {
            if (!df_prec_cache_parse_line(p, (size_t)(nl - p), k, &t)) fail_msg("a line the library wrote does not parse: %.*s", (int)(nl - p), p);
            valid++;
            *ours += !strcmp(k, key);
        }
        p = nl + 1;
    }
    return valid;
}

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
}

static int dir_entries(const char *dir)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d));) n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

/* A corrupt file is rewritten: other machines' valid lines kept, ours
 * replaced, every invalid line gone, no temporary file left. */
static void test_cache_store(void **state)
{
    (void)state;
    char dir[256], path[300], key[FM_PREC_KEY_MAX], other[FM_PREC_KEY_MAX], text[4096], note[128];
    cu_tempdir(dir, sizeof dir, "precision-store");
    snprintf(path, sizeof path, "%s/precision.tsv", dir);
    df_prec_cache_key(key);
    snprintf(other, sizeof other, "AMD Ryzen 9 9950X%s", strchr(key, '\t'));
    int n = snprintf(text, sizeof text, "\x89PNG\r\n\x1a\n%s\t0.02\t0.01\t0.02\t0.01\t0.02\t0.01\n%s\t1\t2\n", other, key);
    n += snprintf(text + n, sizeof text - n, "%s\t0.5\t0.5\t0.5\t0.5\t0.5\t0.5\n", key); /* ours, old */
    write_file(path, text, (size_t)n);
    kn_probe_times t = {{0.025, 0.01, 0.009}, {0.0375, 0.0125, 0.018}}, got;
    assert_int_equal(df_prec_cache_store(path, key, &t, note, sizeof note), 0);
    size_t len;
    char *back = df_prec_cache_read(path, &len);
    assert_non_null(back);
    int ours;
    assert_int_equal(count_lines_parsing(back, key, &ours), 2);
    assert_int_equal(ours, 1);
    assert_int_equal(df_prec_cache_find(back, len, key, &got), 1);
    assert_memory_equal(&got, &t, sizeof t); /* %.9g gives these decimals back exactly */
    assert_int_equal(df_prec_cache_find(back, len, other, &got), 1);
    assert_null(strstr(back, "PNG"));
    free(back);
    assert_int_equal(dir_entries(dir), 1);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_mode & 0777, 0644);

    /* a file over 64 KiB is no cache file: read as absent, then replaced */
    char *big = malloc(FM_PREC_CACHE_MAX + 100);
    int m = snprintf(big, 1024, "%s\t0.5\t0.5\t0.5\t0.5\t0.5\t0.5\n", key);
    memset(big + m, '#', FM_PREC_CACHE_MAX + 100 - m);
    write_file(path, big, FM_PREC_CACHE_MAX + 100);
    free(big);
    assert_null(df_prec_cache_read(path, &len));
    assert_int_equal(df_prec_cache_store(path, key, &t, note, sizeof note), 0);
    back = df_prec_cache_read(path, &len);
    assert_non_null(back);
    assert_true(len < 1024);
    free(back);

    /* a FIFO at the path neither hangs the read nor is written into */
    char fifo[300];
    snprintf(fifo, sizeof fifo, "%s/fifo.tsv", dir);
    assert_int_equal(mkfifo(fifo, 0644), 0);
    assert_null(df_prec_cache_read(fifo, &len));
    unlink(fifo);
    /* a directory at the path: the store fails (a note, no error), leaves nothing */
    char sub[300];
    snprintf(sub, sizeof sub, "%s/sub", dir);
    assert_int_equal(mkdir(sub, 0755), 0);
    assert_int_equal(df_prec_cache_store(sub, key, &t, note, sizeof note), -1);
    assert_true(note[0] != 0);
    assert_int_equal(dir_entries(dir), 2); /* precision.tsv and sub */
    rmdir(sub);
    unlink(path);
    rmdir(dir);
}

/* ---- the model follows its measurements ---- */

typedef struct hook_times {
    kn_probe_times t;
    int calls, fail;
} hook_times;

static int give_times(void *user, kn_probe_times *t)
{
    hook_times *h = user;
    h->calls++;
    *t = h->t;
    return h->fail ? -1 : 0;
}

static fm_model *load(const char *path)
{
    fm_error err = {0};
    fm_model *m = fm_model_load(path, &err);
    if (!m) fail_msg("%s", err.msg);
    return m;
}

/* A 2-step 64x64 image in precision prec. */
static uint8_t *generate(fm_model *m, fm_precision prec)
{
    fm_params p;
    fm_params_default(m, &p);
    p.prompt = "a red circle";
    p.width = p.height = 64;
    p.steps = 2;
    p.seed = 3;
    p.precision = prec;
    uint8_t *rgb = malloc(64 * 64 * 3);
    fm_error err = {0};
    if (fm_generate(m, &p, rgb, &err)) fail_msg("%s", err.msg);
    return rgb;
}

static void test_model_follows_measurements(void **state)
{
    (void)state;
    char dir[256], cache[300], why[PATH_MAX + 256];
    cu_tempdir(dir, sizeof dir, "precision-hook");
    snprintf(cache, sizeof cache, "%s/precision.tsv", dir);
    setenv("FMIMAGE_PRECISION_CACHE", cache, 1);
    int native = kn_has_bf16();

    /* bf16 measured slower (this machine): auto is fp32, and fm_generate
     * computes in fp32 */
    fm_model *m = load(TINY);
    hook_times slow = {speeds(0.68, 0.7, 0.6), 0, 0};
    m->prec_auto.measure = give_times;
    m->prec_auto.measure_user = &slow;
    assert_int_equal(fm_model_precision(m, FM_PREC_AUTO, why, sizeof why), FM_PREC_FP32);
    printf("  %s\n", why);
    free(generate(m, FM_PREC_AUTO));
    assert_int_equal(un_precision(m->unet), FM_PREC_FP32);
    assert_int_equal(vae_precision(m->vae), FM_PREC_FP32);
    assert_int_equal(slow.calls, native); /* decided once; nothing timed without native bf16 */
    if (native) {
        assert_non_null(strstr(why, "auto = fp32 (bf16 measured 0.67x the fp32 speed for the U-Net, 0.68x for the VAE"));
        /* asking for bf16 still gets it */
        free(generate(m, FM_PREC_BF16));
        assert_int_equal(un_precision(m->unet), FM_PREC_BF16);
    } else {
        assert_non_null(strstr(why, "auto = fp32 ("));
        printf("  (no native bf16 here: the bf16-faster case below is fp32 too)\n");
    }
    fm_model_free(m);

    /* bf16 measured 1.6x faster (Zen 5): auto is bf16 where it is native */
    m = load(TINY);
    hook_times fast = {speeds(1.6, 1.6, 1.6), 0, 0};
    m->prec_auto.measure = give_times;
    m->prec_auto.measure_user = &fast;
    fm_precision want = native ? FM_PREC_BF16 : FM_PREC_FP32;
    assert_int_equal(fm_model_precision(m, FM_PREC_AUTO, why, sizeof why), want);
    printf("  %s\n", why);
    free(generate(m, FM_PREC_AUTO));
    assert_int_equal(un_precision(m->unet), want);
    assert_int_equal(vae_precision(m->vae), want);
    fm_model_free(m);

    /* a timing that fails: fp32 */
    m = load(TINY);
    hook_times broken = {speeds(2, 2, 2), 0, 1};
    m->prec_auto.measure = give_times;
    m->prec_auto.measure_user = &broken;
    assert_int_equal(fm_model_precision(m, FM_PREC_AUTO, why, sizeof why), FM_PREC_FP32);
    fm_model_free(m);

    assert_false(cu_exists(cache)); /* injected times never reach the cache */
    rmdir(dir);
}

/* FMIMAGE_PRECISION_CACHE=off times nothing and auto computes exactly as
 * fp32 does. (On the original code auto was bf16 wherever AVX512_BF16
 * exists, whatever its speed: this image differed from fp32's there.) */
static void test_off_is_fp32(void **state)
{
    (void)state;
    setenv("FMIMAGE_PRECISION_CACHE", "off", 1);
    fm_model *m = load(TINY);
    uint8_t *a = generate(m, FM_PREC_AUTO), *b = generate(m, FM_PREC_FP32);
    assert_memory_equal(a, b, 64 * 64 * 3);
    free(a);
    free(b);
    fm_model_free(m);
}

/* The default location: an absolute XDG_CACHE_HOME, else ~/.cache (a
 * relative XDG_CACHE_HOME is ignored, as the XDG spec says). Read from a
 * file written beforehand, so nothing is timed. */
static void test_default_location(void **state)
{
    (void)state;
    char dir[256], abs[PATH_MAX], xdg[PATH_MAX + 8], file[PATH_MAX + 40], key[FM_PREC_KEY_MAX], note[128];
    char why[PATH_MAX + 256], home_cache[PATH_MAX + 8];
    cu_tempdir(dir, sizeof dir, "precision-xdg");
    assert_non_null(realpath(dir, abs));
    snprintf(xdg, sizeof xdg, "%s/xdg", abs);
    snprintf(file, sizeof file, "%s/fmimage", xdg);
    mkdir(xdg, 0700);
    mkdir(file, 0755);
    snprintf(file, sizeof file, "%s/fmimage/precision.tsv", xdg);
    df_prec_cache_key(key);
    kn_probe_times t = speeds(0.5, 0.5, 0.5);
    assert_int_equal(df_prec_cache_store(file, key, &t, note, sizeof note), 0);
    char *home = getenv("HOME") ? strdup(getenv("HOME")) : NULL, *old_xdg = getenv("XDG_CACHE_HOME") ? strdup(getenv("XDG_CACHE_HOME")) : NULL;
    unsetenv("FMIMAGE_PRECISION_CACHE");
    const char *cases[][2] = {{xdg, "/nonexistent-home"}, {"relative/xdg", abs}};
    snprintf(home_cache, sizeof home_cache, "%s/.cache", abs);
    assert_int_equal(symlink(xdg, home_cache), 0); /* HOME=abs: ~/.cache is the same directory */
    for (int i = 0; i < 2; i++) {
        setenv("XDG_CACHE_HOME", cases[i][0], 1);
        setenv("HOME", cases[i][1], 1);
        fm_model *m = load(TINY);
        fm_precision got = fm_model_precision(m, FM_PREC_AUTO, why, sizeof why);
        if (kn_has_bf16()) {
            assert_int_equal(m->prec_auto.from, FM_PREC_FROM_CACHE);
            assert_int_equal(m->prec_auto.probes, 0);
            assert_int_equal(got, FM_PREC_FP32);
            assert_non_null(strstr(why, "0.50x the fp32 speed"));
            assert_non_null(strstr(why, i ? "/.cache/fmimage/precision.tsv" : "/xdg/fmimage/precision.tsv"));
        }
        fm_model_free(m);
    }
    if (home) setenv("HOME", home, 1);
    else unsetenv("HOME");
    if (old_xdg) setenv("XDG_CACHE_HOME", old_xdg, 1);
    else unsetenv("XDG_CACHE_HOME");
    free(home);
    free(old_xdg);
    unlink(home_cache);
    unlink(file);
    snprintf(file, sizeof file, "%s/fmimage", xdg);
    rmdir(file);
    rmdir(xdg);
    rmdir(dir);
}

static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One real timing: it finishes, decides by its own numbers, rewrites a
 * corrupt cache, and a second model reads the same decision back from the
 * cache without timing again. */
static void test_real_calibration_cached(void **state)
{
    (void)state;
    char dir[256], cache[300], why[PATH_MAX + 256], key[FM_PREC_KEY_MAX];
    cu_tempdir(dir, sizeof dir, "precision-real");
    snprintf(cache, sizeof cache, "%s/precision.tsv", dir);
    write_file(cache, "garbage\x00\xff\n", 10);
    setenv("FMIMAGE_PRECISION_CACHE", cache, 1);
    fm_model *a = load(TINY);
    double t0 = thread_cpu();
    fm_precision mode = fm_model_precision(a, FM_PREC_AUTO, why, sizeof why);
    double cpu = thread_cpu() - t0;
    printf("  %s\n", why);
    if (!kn_has_bf16()) {
        printf("  SKIPPED the timing: no native bf16 here, auto is fp32 untimed\n");
        assert_int_equal(a->prec_auto.from, FM_PREC_FROM_NO_BF16);
        assert_int_equal(a->prec_auto.probes, 0);
        assert_int_equal(mode, FM_PREC_FP32);
        fm_model_free(a);
        unlink(cache);
        rmdir(dir);
        return;
    }
    const df_prec_auto *pa = &a->prec_auto;
    assert_int_equal(pa->from, FM_PREC_FROM_PROBE);
    assert_int_equal(pa->probes, 1);
    assert_int_equal(mode, df_prec_decide(&pa->times));
    for (int s = 0; s < FM_PROBE_SHAPES; s++)
        printf("  %-10s fp32 %.4f s  bf16 %.4f s  (bf16 at %.2fx the fp32 speed; CPU time of one thread)\n",
               kn_probe_shape_name((kn_probe_shape)s), pa->times.fp32[s], pa->times.bf16[s],
               pa->times.fp32[s] / pa->times.bf16[s]);
    printf("  the timing took %.2f s of CPU\n", cpu);
    assert_true(cpu < 10.0); /* about 0.35 s optimised; sanitizers slow it down */
    assert_non_null(strstr(why, "measured now; cache "));
    assert_int_equal(fm_model_precision(a, FM_PREC_AUTO, NULL, 0), mode); /* decided once */
    assert_int_equal(pa->probes, 1);

    size_t len;
    char *text = df_prec_cache_read(cache, &len);
    assert_non_null(text);
    assert_null(strstr(text, "garbage"));
    df_prec_cache_key(key);
    kn_probe_times stored;
    assert_int_equal(df_prec_cache_find(text, len, key, &stored), 1);
    free(text);

    fm_model *b = load(TINY);
    assert_int_equal(fm_model_precision(b, FM_PREC_AUTO, why, sizeof why), mode);
    assert_int_equal(b->prec_auto.from, FM_PREC_FROM_CACHE);
    assert_int_equal(b->prec_auto.probes, 0);
    assert_non_null(strstr(why, "measured earlier; cache "));
    for (int s = 0; s < FM_PROBE_SHAPES; s++) {
        assert_true(fabs(b->prec_auto.times.fp32[s] / pa->times.fp32[s] - 1) < 1e-8);
        assert_true(fabs(b->prec_auto.times.bf16[s] / pa->times.bf16[s] - 1) < 1e-8);
    }
    fm_model_free(a);
    fm_model_free(b);
    unlink(cache);
    rmdir(dir);
}

/* --info and -v say what auto means here and why. */
static void test_cli_says_why(void **state)
{
    (void)state;
    char dir[256], out[300], err[8192], png[300];
    cu_tempdir(dir, sizeof dir, "precision-cli");
    snprintf(out, sizeof out, "%s/info.txt", dir);
    snprintf(png, sizeof png, "%s/a.png", dir);
    setenv("FMIMAGE_PRECISION_CACHE", "off", 1);
    const char *expect = kn_has_bf16() ? "precision: auto = fp32 (not measured: FMIMAGE_PRECISION_CACHE=off)\n"
                                              : "precision: auto = fp32 (";
    const char *info[] = {"--info", "-m", TINY, NULL};
    assert_int_equal(cu_wait(cu_spawn(info, out, NULL)), 0);
    char *text = (char *)cu_slurp(out, NULL);
    assert_non_null(text);
    assert_non_null(strstr(text, expect));
    free(text);
    const char *gen[] = {"-m", TINY, "a red circle", "-W", "64", "-H", "64", "--steps", "1", "--seed", "1", "-v",
                         "-o", png, NULL};
    assert_int_equal(cu_run(gen, err, sizeof err), 0);
    char line[256];
    snprintf(line, sizeof line, "fmimage: %s", expect);
    if (!strstr(err, line)) fail_msg("-v said:\n%s", err);
    const char *gen_bf16[] = {"-m", TINY, "a red circle", "-W", "64", "-H", "64", "--steps", "1", "--seed", "1",
                              "-v", "--precision", "bf16", "--force", "-o", png, NULL};
    assert_int_equal(cu_run(gen_bf16, err, sizeof err), 0);
    assert_non_null(strstr(err, kn_has_bf16() ? "fmimage: precision: bf16 (as asked)\n"
                                                     : "fmimage: precision: bf16 = fp32 ("));
    unlink(out);
    unlink(png);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decide_from_times),
        cmocka_unit_test(test_auto_never_slower),
        cmocka_unit_test(test_cache_parse),
        cmocka_unit_test(test_cache_find),
        cmocka_unit_test(test_cache_store),
        cmocka_unit_test(test_model_follows_measurements),
        cmocka_unit_test(test_off_is_fp32),
        cmocka_unit_test(test_default_location),
        cmocka_unit_test(test_real_calibration_cached),
        cmocka_unit_test(test_cli_says_why),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
