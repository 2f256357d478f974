/* Hostile and absurd input through the fmimage command (issue 9): each is
 * refused with one clear "fmimage: WHAT: why" line, the exit code DESIGN.md
 * gives (2 usage, 1 input/runtime) and no output file; a few absurd but
 * valid ones (a 1x1 init image) work. The tiny SD 1.x model throughout. */
#include "cliutil.h"

#include <errno.h>
#include <math.h>
#include <sys/resource.h>
#include <zlib.h>

#include "weights/safetensors.h"
#include "tools/lib/st_write.h"

#define MODEL "tests/data/tiny-sd1.safetensors"

static char root[256], cache_env[320];

typedef struct outcome {
    int code;
    long max_rss_kb;
    char err[8192];
} outcome;

/* Runs fmimage (args without argv[0]) with optional extra environment
 * (NAME=VALUE), an optional file-size limit in bytes, and optionally as the
 * unprivileged user when the tests run as root (root writes anywhere). */
static void run_ex(const char *const *args, const char *env, rlim_t fsize, int unprivileged, outcome *o)
{
    const char *argv[64];
    int n = 0;
    argv[n++] = cu_bin();
    for (; args[n - 1] && n < 63; n++) argv[n] = args[n - 1];
    argv[n] = NULL;
    char err_path[320];
    snprintf(err_path, sizeof err_path, "%s/stderr", root);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
        int nul = open("/dev/null", O_RDWR);
        if (fd < 0 || nul < 0) _exit(127);
        dup2(nul, 0);
        dup2(nul, 1);
        dup2(fd, 2);
        putenv(cache_env);
        if (env) putenv((char *)env);
        if (fsize) {
            struct rlimit rl = {fsize, fsize};
            if (setrlimit(RLIMIT_FSIZE, &rl)) _exit(127);
        }
        if (unprivileged && geteuid() == 0 && (setgid(65534) || setuid(65534))) _exit(127);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int st;
    struct rusage ru;
    assert_int_equal(wait4(pid, &st, 0, &ru), pid);
    o->code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    o->max_rss_kb = ru.ru_maxrss;
    o->err[0] = 0;
    FILE *f = fopen(err_path, "r");
    if (f) {
        size_t r = fread(o->err, 1, sizeof o->err - 1, f);
        o->err[r] = 0;
        fclose(f);
    }
}

static void run_simple(const char *const *args, outcome *o) { run_ex(args, NULL, 0, 0, o); }

/* Exactly one line "fmimage: ...", containing needle, and the exit code. */
static void assert_refused(const outcome *o, int code, const char *needle)
{
    const char *nl = strchr(o->err, '\n');
    if (o->code != code) fail_msg("exit %d, expected %d; stderr: %s", o->code, code, o->err);
    if (strncmp(o->err, "fmimage: ", 9) || !nl || nl[1]) fail_msg("not one 'fmimage: ' line: %s", o->err);
    if (!strstr(o->err, needle)) fail_msg("stderr lacks '%s': %s", needle, o->err);
}

/* No file at all in dir other than the allowed one (or none). */
static void assert_dir_has_no_png(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strstr(e->d_name, ".png") || strstr(e->d_name, ".tmp") || !strncmp(e->d_name, ".fmimage-", 9)) fail_msg("%s/%s was written", dir, e->d_name);
    closedir(d);
}

static void fresh_dir(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", root, name);
    assert_int_equal(mkdir(buf, 0777), 0);
}

/* ---- sizes, steps, cfg ---- */

typedef struct bad_case {
    const char *opt, *value, *needle;
} bad_case;

static void test_absurd_numbers(void **state)
{
    (void)state;
    static const bad_case cases[] = {
        {"-W", "0", "--width: must be a positive number of pixels"},
        {"-H", "0", "--height: must be a positive number of pixels"},
        {"-W", "33", "--width: 33 is not a multiple of 2 (the model's latent factor)"},
        {"-H", "31", "--height: 31 is not a multiple of 2"},
        {"-W", "100000", "--width: 100000 is over the 16384-pixel limit"},
        {"-H", "100000", "--height: 100000 is over the 16384-pixel limit"},
        {"--steps", "0", "--steps: must be 1..1000"},
        {"--steps", "10000", "--steps: must be 1..1000"},
        {"--cfg", "nan", "--cfg: must be a finite number"},
        {"--cfg", "inf", "--cfg: must be a finite number"},
        {"--cfg", "-inf", "--cfg: must be a finite number"},
    };
    char dir[300], out[400];
    fresh_dir(dir, sizeof dir, "numbers");
    snprintf(out, sizeof out, "%s/a.png", dir);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *args[] = {"-m", MODEL, "a fox", "-W", "32", "-H", "32", "--steps", "2", "-q",
                              cases[i].opt, cases[i].value, "-o", out, NULL};
        outcome o;
        run_simple(args, &o);
        assert_refused(&o, 2, cases[i].needle);
    }
    assert_dir_has_no_png(dir);
}

/* ---- prompts ---- */

static char *long_prompt(size_t bytes)
{
    static const char *words[] = {"fox", "snow", "(red:1.2)", "blue", "sky", "[cloud]", "tree", "forest,"};
    char *s = malloc(bytes + 16);
    size_t n = 0;
    for (unsigned i = 0; n < bytes; i++) {
        const char *w = words[(i * 2654435761u >> 7) % 8];
        n += (size_t)sprintf(s + n, "%s ", w);
    }
    s[bytes] = 0;
    return s;
}

static void test_long_prompts(void **state)
{
    (void)state;
    char dir[300], out[400], pf[400];
    fresh_dir(dir, sizeof dir, "prompts");
    snprintf(out, sizeof out, "%s/a.png", dir);
    /* 100 KB is about what one argv string may hold (128 KiB). */
    char *p = long_prompt(100000);
    const char *args[] = {"-m", MODEL, p, "-W", "32", "-H", "32", "--steps", "2", "-q", "-o", out, NULL};
    outcome o;
    run_simple(args, &o);
    assert_refused(&o, 1, "prompt: ");
    assert_non_null(strstr(o.err, "chunks of 75 tokens, more than the 64 allowed"));
    free(p);
    /* A long prompt that fits (40 chunks) is A1111's normal behaviour. */
    p = long_prompt(9000);
    const char *ok[] = {"-m", MODEL, p, "-W", "32", "-H", "32", "--steps", "1", "-q", "-o", out, NULL};
    run_simple(ok, &o);
    if (o.code) fail_msg("a 9000-byte prompt failed: %s", o.err);
    assert_true(cu_exists(out));
    unlink(out);
    free(p);
    /* 1 MB on one prompt-file line: refused without building 3000 chunks of
     * conditioning, in bounded memory. */
    p = long_prompt(1 << 20);
    snprintf(pf, sizeof pf, "%s/long.txt", dir);
    FILE *f = fopen(pf, "w");
    fprintf(f, "%s\n", p);
    fclose(f);
    free(p);
    char batch[400];
    snprintf(batch, sizeof batch, "%s/batch", dir);
    const char *args2[] = {"-m", MODEL, "--prompt-file", pf, "-W", "32", "-H", "32", "--steps", "2", "-q", "-o", batch, NULL};
    run_simple(args2, &o);
    char want[500];
    snprintf(want, sizeof want, "%s:1: prompt: ", pf);
    assert_refused(&o, 1, want);
    /* 400 MB (measured: 26 MB). Under AddressSanitizer freed blocks stay
     * in its quarantine (256 MB by default) instead of being reused, so the
     * sanitizer build allows that much more. */
    long limit_mb = 400;
#ifdef __SANITIZE_ADDRESS__
    limit_mb += 256;
#endif
    if (o.max_rss_kb > limit_mb * 1024) fail_msg("a 1 MB prompt took %ld MB", o.max_rss_kb >> 10);
    assert_dir_has_no_png(batch);
    assert_dir_has_no_png(dir);
}

static void test_prompt_file_100000_lines(void **state)
{
    (void)state;
    char dir[300], pf[400], out[400];
    fresh_dir(dir, sizeof dir, "lines");
    snprintf(pf, sizeof pf, "%s/many.txt", dir);
    FILE *f = fopen(pf, "w");
    for (int i = 0; i < 100000; i++) fprintf(f, "--prompt a fox number %d --steps 1\n", i);
    fclose(f);
    /* Every line is parsed and numbered; the shard runs jobs 0 and 50000. */
    snprintf(out, sizeof out, "%s/out", dir);
    const char *args[] = {"-m", MODEL, "--prompt-file", pf, "--shard", "0/50000", "--seed", "7",
                          "-W", "32", "-H", "32", "-q", "-o", out, NULL};
    outcome o;
    run_simple(args, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    char a[500], b[500];
    snprintf(a, sizeof a, "%s/00000-7.png", out);
    snprintf(b, sizeof b, "%s/50000-50007.png", out);
    assert_true(cu_exists(a));
    assert_true(cu_exists(b));
    if (o.max_rss_kb > 400 * 1024) fail_msg("100000 lines took %ld MB", o.max_rss_kb >> 10);
    /* 100000 bad lines: 20 reported, the rest counted, nothing made. */
    f = fopen(pf, "w");
    for (int i = 0; i < 100000; i++) fprintf(f, "--prompt a fox --colour %d\n", i);
    fclose(f);
    snprintf(out, sizeof out, "%s/bad", dir);
    run_simple(args, &o);
    assert_int_equal(o.code, 1);
    char want[500];
    snprintf(want, sizeof want, "fmimage: %s:1: unknown option --colour\n", pf);
    if (strncmp(o.err, want, strlen(want))) fail_msg("first line: %s", o.err);
    snprintf(want, sizeof want, "fmimage: %s: 99980 more bad lines not shown\n", pf);
    if (!strstr(o.err, want)) fail_msg("no summary line: %s", o.err);
    assert_dir_has_no_png(out);
}

static void test_prompt_file_binary_garbage(void **state)
{
    (void)state;
    char dir[300], pf[400], out[400];
    fresh_dir(dir, sizeof dir, "garbage");
    snprintf(pf, sizeof pf, "%s/garbage.bin", dir);
    /* Pseudo-random bytes; every line holds an 0xFF, which no UTF-8 has. */
    FILE *f = fopen(pf, "wb");
    uint32_t x = 12345;
    for (int i = 0; i < 200000; i++) {
        x = x * 1103515245u + 12345u;
        int c = (int)(x >> 16) & 0xff;
        fputc(c, f);
        if (c == '\n') fputc(0xff, f);
    }
    fclose(f);
    snprintf(out, sizeof out, "%s/out", dir);
    const char *args[] = {"-m", MODEL, "--prompt-file", pf, "-W", "32", "-H", "32", "--steps", "1", "-q", "-o", out, NULL};
    outcome o;
    run_simple(args, &o);
    assert_int_equal(o.code, 1);
    char want[500];
    snprintf(want, sizeof want, "fmimage: %s:1: invalid UTF-8\n", pf);
    if (strncmp(o.err, want, strlen(want))) fail_msg("first line: %s", o.err);
    assert_dir_has_no_png(out);
}

/* ---- model and output paths ---- */

static void test_bad_model_paths(void **state)
{
    (void)state;
    char dir[300], out[400], missing[400];
    fresh_dir(dir, sizeof dir, "models");
    snprintf(out, sizeof out, "%s/a.png", dir);
    snprintf(missing, sizeof missing, "%s/no-such-model.safetensors", dir);
    const char *a1[] = {"-m", missing, "a fox", "-W", "32", "-H", "32", "-q", "-o", out, NULL};
    outcome o;
    run_simple(a1, &o);
    assert_refused(&o, 1, "no-such-model.safetensors: No such file or directory");
    const char *a2[] = {"-m", dir, "a fox", "-W", "32", "-H", "32", "-q", "-o", out, NULL};
    run_simple(a2, &o);
    assert_refused(&o, 1, ": is a directory");
    assert_dir_has_no_png(dir);
}

static void test_unwritable_output(void **state)
{
    (void)state;
    char dir[300], out[400];
    fresh_dir(dir, sizeof dir, "readonly");
    assert_int_equal(chmod(dir, 0555), 0);
    chmod(root, 0777); /* the unprivileged run writes its stderr here */
    snprintf(out, sizeof out, "%s/a.png", dir);
    const char *a1[] = {"-m", MODEL, "a fox", "-W", "32", "-H", "32", "--steps", "1", "-q", "-o", out, NULL};
    outcome o;
    run_ex(a1, NULL, 0, 1, &o);
    assert_refused(&o, 1, "a.png: Permission denied");
    snprintf(out, sizeof out, "%s/batch", dir);
    const char *a2[] = {"-m", MODEL, "a fox", "-W", "32", "-H", "32", "--steps", "1", "--batch-count", "2",
                        "-q", "-o", out, NULL};
    run_ex(a2, NULL, 0, 1, &o);
    assert_refused(&o, 1, "batch: Permission denied");
    assert_false(cu_exists(out));
    assert_dir_has_no_png(dir);
    chmod(dir, 0755);
}

static void test_filesystem_full(void **state)
{
    (void)state;
    char dir[300], out[400];
    fresh_dir(dir, sizeof dir, "full");
    snprintf(out, sizeof out, "%s/a.png", dir);
    /* ulimit -f: the PNG (several KB) cannot be written past 512 bytes. */
    const char *a1[] = {"-m", MODEL, "a fox", "-W", "64", "-H", "64", "--steps", "1", "-q", "-o", out, NULL};
    outcome o;
    run_ex(a1, NULL, 512, 0, &o);
    assert_refused(&o, 1, "a.png: File too large");
    assert_dir_has_no_png(dir);
    /* A batch: the image fails, the run goes on to report it, no manifest
     * line names a missing file. */
    snprintf(out, sizeof out, "%s/batch", dir);
    const char *a2[] = {"-m", MODEL, "a fox", "-W", "64", "-H", "64", "--steps", "1", "--batch-count", "2",
                        "--seed", "3", "-q", "-o", out, NULL};
    run_ex(a2, NULL, 512, 0, &o);
    assert_int_equal(o.code, 1);
    if (!strstr(o.err, "00000-3.png: File too large")) fail_msg("stderr: %s", o.err);
    assert_dir_has_no_png(out);
    char manifest[500];
    snprintf(manifest, sizeof manifest, "%s/manifest.jsonl", out);
    size_t len = 0;
    free(cu_slurp(manifest, &len));
    assert_int_equal(len, 0);
}

/* ---- init images ---- */

static void write_png(const char *path, int w, int h)
{
    uint8_t *rgb = malloc((size_t)w * h * 3);
    for (size_t i = 0; i < (size_t)w * h * 3; i++) rgb[i] = (uint8_t)(i * 7 + 3);
    fm_error err = {0};
    assert_int_equal(fm_png_write(path, rgb, w, h, NULL, &err), 0);
    free(rgb);
}

static void test_init_images(void **state)
{
    (void)state;
    char dir[300], out[400], img[400];
    fresh_dir(dir, sizeof dir, "init");
    snprintf(out, sizeof out, "%s/a.png", dir);
    const char *args[] = {"-m", MODEL, "a fox", "-W", "32", "-H", "32", "--steps", "2", "-q",
                          "--init-image", img, "-o", out, NULL};
    outcome o;

    /* 1x1: absurd but valid; resized to 32x32. */
    snprintf(img, sizeof img, "%s/one.png", dir);
    write_png(img, 1, 1);
    run_simple(args, &o);
    if (o.code) fail_msg("1x1 init image: exit %d: %s", o.code, o.err);
    int w, h;
    fm_error err = {0};
    uint8_t *rgb = fm_image_read(out, &w, &h, &err);
    assert_non_null(rgb);
    assert_int_equal(w, 32);
    assert_int_equal(h, 32);
    free(rgb);
    unlink(out);

    /* Truncated: half of a 64x64 PNG. */
    snprintf(img, sizeof img, "%s/half.png", dir);
    write_png(img, 64, 64);
    struct stat sb;
    stat(img, &sb);
    assert_int_equal(truncate(img, sb.st_size / 2), 0);
    size_t len = 0;
    uint8_t *png;
    FILE *f;
    run_simple(args, &o);
    assert_refused(&o, 1, "half.png: truncated PNG (a chunk runs past the end of the file)");

    /* A JPEG cut inside its tables, and one cut inside its entropy-coded
     * data (stb would fill the rest with grey; PIL refuses both). */
    png = cu_slurp("tests/fuzz/corpus/image/rgb-8x6.jpg", &len);
    assert_non_null(png);
    snprintf(img, sizeof img, "%s/half.jpg", dir);
    const size_t cuts[2] = {400, len - 2};
    for (int k = 0; k < 2; k++) {
        f = fopen(img, "wb");
        fwrite(png, 1, cuts[k], f);
        fclose(f);
        run_simple(args, &o);
        assert_refused(&o, 1, "half.jpg: truncated JPEG");
    }
    free(png);

    /* 20000x20000 in the header: refused from the header alone. */
    snprintf(img, sizeof img, "%s/huge.png", dir);
    write_png(img, 1, 1);
    png = cu_slurp(img, &len);
    const uint8_t side[4] = {0, 0, 0x4e, 0x20}; /* 20000 big-endian */
    memcpy(png + 16, side, 4);                 /* IHDR width, height */
    memcpy(png + 20, side, 4);
    uint32_t crc = (uint32_t)crc32(0, png + 12, 17); /* "IHDR" + 13 bytes */
    for (int i = 0; i < 4; i++) png[29 + i] = (uint8_t)(crc >> (24 - 8 * i));
    f = fopen(img, "wb");
    fwrite(png, 1, len, f);
    fclose(f);
    free(png);
    run_simple(args, &o);
    assert_refused(&o, 1, "huge.png: 20000x20000 pixels (at most 16384 a side)");
    if (o.max_rss_kb > 400 * 1024) fail_msg("the huge header took %ld MB", o.max_rss_kb >> 10);

    /* The same as a JPEG (the SOF0 of a 1x1 seed patched). */
    png = cu_slurp("tests/fuzz/corpus/image/one-pixel.jpg", &len);
    assert_non_null(png);
    size_t sof = 2;
    while (sof + 9 < len && !(png[sof] == 0xFF && png[sof + 1] == 0xC0)) sof++;
    assert_true(sof + 9 < len);
    memcpy(png + sof + 5, side + 2, 2); /* height */
    memcpy(png + sof + 7, side + 2, 2); /* width */
    snprintf(img, sizeof img, "%s/huge.jpg", dir);
    f = fopen(img, "wb");
    fwrite(png, 1, len, f);
    fclose(f);
    free(png);
    run_simple(args, &o);
    assert_refused(&o, 1, "huge.jpg: 20000x20000 pixels (at most 16384 a side)");

    /* Not an image at all, and a missing file. */
    snprintf(img, sizeof img, "%s/text.png", dir);
    f = fopen(img, "w");
    fputs("not a picture\n", f);
    fclose(f);
    run_simple(args, &o);
    assert_refused(&o, 1, "text.png: not a PNG or JPEG image");
    snprintf(img, sizeof img, "%s/missing.png", dir);
    run_simple(args, &o);
    assert_refused(&o, 1, "missing.png: No such file or directory");
    assert_false(cu_exists(out));
}

/* ---- a checkpoint with NaN weights ---- */

static void test_nan_weights(void **state)
{
    (void)state;
    char dir[300], model[400], out[400];
    fresh_dir(dir, sizeof dir, "nan");
    snprintf(model, sizeof model, "%s/nan-sd1.safetensors", dir);
    wt_safetensors st;
    fm_error err = {0};
    assert_int_equal(wt_st_open(&st, MODEL, &err), 0);
    tl_st_entry *e = cu_st_entries(&st);
    void *poisoned = NULL;
    const char *victim = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight";
    for (int i = 0; i < st.n_tensors; i++) {
        const wt_st_tensor *t = &st.tensors[i];
        if (!strcmp(t->name, victim)) {
            assert_int_equal(t->dtype, FM_DT_F32);
            poisoned = malloc(t->nbytes);
            memcpy(poisoned, t->data, t->nbytes);
            ((float *)poisoned)[t->nbytes / 8] = NAN;
            e[i].data = poisoned;
        }
    }
    assert_non_null(poisoned);
    if (tl_st_write(model, e, st.n_tensors, st.meta, st.n_meta, &err)) fail_msg("%s", err.msg);
    free(poisoned);
    free(e);
    wt_st_close(&st);
    snprintf(out, sizeof out, "%s/a.png", dir);
    const char *args[] = {"-m", model, "a fox", "-W", "32", "-H", "32", "--steps", "2", "-q", "-o", out, NULL};
    outcome o;
    run_simple(args, &o);
    assert_refused(&o, 1, "NaN");
    assert_dir_has_no_png(dir);
}

/* ---- memory ---- */

static void test_memory_refusals(void **state)
{
    (void)state;
    char dir[300], out[400];
    fresh_dir(dir, sizeof dir, "memory");
    snprintf(out, sizeof out, "%s/a.png", dir);
    const char *plain[] = {"-m", MODEL, "a fox", "-W", "256", "-H", "256", "--steps", "1", "-q", "-o", out, NULL};
    /* without CFG the U-Net needs half (~35 MB), well below the VAE's need */
    const char *plain1[] = {"-m", MODEL, "a fox", "-W", "256", "-H", "256", "--steps", "1", "--cfg", "1", "-q",
                            "-o", out, NULL};
    const char *tiled[] = {"-m", MODEL, "a fox", "-W", "256", "-H", "256", "--steps", "1", "--cfg", "1", "-q",
                           "--vae-tiling", "-o", out, NULL};
    outcome o;
    /* The tiny U-Net needs ~55 MB at 256x256 with CFG. */
    run_ex(plain, "FMIMAGE_MEMORY_LIMIT=20M", 0, 0, &o);
    assert_refused(&o, 1, "256x256 needs");
    assert_non_null(strstr(o.err, "use a smaller size"));
    /* Its full-size VAE decode needs ~77 MB (three activation slots, the row
     * bands and the kernels' scratch): the message names --vae-tiling. */
    run_ex(plain1, "FMIMAGE_MEMORY_LIMIT=60M", 0, 0, &o);
    assert_refused(&o, 1, "decoding 256x256 needs");
    assert_non_null(strstr(o.err, "use --vae-tiling"));
    assert_false(cu_exists(out));
    /* ... and with it the same budget is enough. */
    run_ex(tiled, "FMIMAGE_MEMORY_LIMIT=60M", 0, 0, &o);
    if (o.code) fail_msg("--vae-tiling in 60 MB: exit %d: %s", o.code, o.err);
    assert_true(cu_exists(out));
    unlink(out);
    /* The machine's own memory refuses 16384x16384 before sampling. */
    const char *huge[] = {"-m", MODEL, "a fox", "-W", "16384", "-H", "16384", "--steps", "1", "-q", "-o", out, NULL};
    run_simple(huge, &o);
    assert_refused(&o, 1, "16384x16384 needs");
    if (o.max_rss_kb > 400 * 1024) fail_msg("the refusal took %ld MB", o.max_rss_kb >> 10);
    run_ex(plain, "FMIMAGE_MEMORY_LIMIT=lots", 0, 0, &o);
    assert_refused(&o, 2, "FMIMAGE_MEMORY_LIMIT: must be a positive number of bytes");
    assert_dir_has_no_png(dir);
}

int main(void)
{
    cu_tempdir(root, sizeof root, "hostile");
    snprintf(cache_env, sizeof cache_env, "XDG_CACHE_HOME=%s/cache", root);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_absurd_numbers),
        cmocka_unit_test(test_long_prompts),
        cmocka_unit_test(test_prompt_file_100000_lines),
        cmocka_unit_test(test_prompt_file_binary_garbage),
        cmocka_unit_test(test_bad_model_paths),
        cmocka_unit_test(test_unwritable_output),
        cmocka_unit_test(test_filesystem_full),
        cmocka_unit_test(test_init_images),
        cmocka_unit_test(test_nan_weights),
        cmocka_unit_test(test_memory_refusals),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
