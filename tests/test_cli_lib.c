/* The CLI on the library contract: --taesd refused for a model TAESD cannot
 * decode (item 1), and A1111 sampler labels without a scheduler getting
 * A1111's "Automatic" schedule, on the command line and in prompt files
 * (item 16). */
#include "cliutil.h"

#define TINY "tests/data/tiny-sd1.safetensors"
#define TAESD "tests/data/taesd-weights.safetensors"

static char root[256];

/* Runs fmimage, killed after 120 s (the unfixed --taesd hung in a kernel). */
static int run_timed(const char *const *args, char *err, size_t err_len)
{
    char path[320];
    snprintf(path, sizeof path, "%s/stderr", root);
    pid_t pid = cu_spawn(args, NULL, path);
    int st = 0;
    for (int i = 0; i < 1200 && waitpid(pid, &st, WNOHANG) == 0; i++) {
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
        if (i == 1199) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
        }
    }
    size_t len = 0;
    uint8_t *text = cu_slurp(path, &len);
    snprintf(err, err_len, "%s", text ? (char *)text : "");
    free(text);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void test_taesd_refused_for_factor_not_8(void **state)
{
    (void)state;
    char dir[300], out[400], err[2048];
    snprintf(dir, sizeof dir, "%s/taesd", root);
    mkdir(dir, 0777);
    snprintf(out, sizeof out, "%s/t.png", dir);
    /* the demo model (factor 4), as in the issue (named: a build/san
     * binary does not find it next to itself) */
    const char *demo[] = {"-m", "assets/demo/fmimage-demo.safetensors", "a red circle on a blue background", "--taesd",
                          TAESD, "--seed", "1", "-o", out, "--force", NULL};
    assert_int_equal(run_timed(demo, err, sizeof err), 2);
    assert_string_equal(err, "fmimage: --taesd: TAESD decodes by 8, this model's latent factor is 4\n");
    assert_false(cu_exists(out));
    /* tiny-sd1 (factor 2), in a prompt file: refused before any job */
    const char *tiny[] = {"-m", TINY, "a fox", "-W", "64", "-H", "64", "--steps", "1", "--taesd", TAESD, "-o", out,
                          NULL};
    assert_int_equal(run_timed(tiny, err, sizeof err), 2);
    assert_string_equal(err, "fmimage: --taesd: TAESD decodes by 8, this model's latent factor is 2\n");
    assert_false(cu_exists(out));
}

/* The "Sampler: ..., Schedule type: ..." part of the image's infotext for
 * the sampler arguments extra (NULL-terminated). */
static void expect_schedule(const char *const *extra, const char *want)
{
    char out[400], err[2048];
    snprintf(out, sizeof out, "%s/s.png", root);
    const char *args[32] = {"-m", TINY, "a fox", "-W", "32", "-H", "32", "--steps", "2", "--seed", "7", "-q",
                            "--force", "-o", out};
    int n = 0;
    while (args[n]) n++;
    for (int i = 0; extra[i]; i++) args[n++] = extra[i];
    args[n] = NULL;
    int code = run_timed(args, err, sizeof err);
    if (code) fail_msg("%s %s: exit %d: %s", extra[0], extra[1], code, err);
    char *params = cu_png_parameters(out);
    assert_non_null(params);
    if (!strstr(params, want)) fail_msg("%s %s: want \"%s\" in:\n%s", extra[0], extra[1], want, params);
    free(params);
}

/* A1111 1.9+ (sd_samplers_kdiffusion.py's 'scheduler' options, used when
 * the schedule type is "Automatic"); a ComfyUI name keeps the family's
 * scheduler (tiny-sd1 is sd1: karras). */
static void test_label_without_scheduler(void **state)
{
    (void)state;
    static const struct { const char *sampler, *want; } cases[] = {
        {"Euler a", "Sampler: Euler a, Schedule type: Uniform,"},
        {"Euler", "Sampler: Euler, Schedule type: Uniform,"},
        {"Heun", "Sampler: Heun, Schedule type: Uniform,"},
        {"LMS", "Sampler: LMS, Schedule type: Uniform,"},
        {"k_euler_a", "Sampler: Euler a, Schedule type: Uniform,"},
        {"DPM++ 2M SDE", "Sampler: DPM++ 2M SDE, Schedule type: Exponential,"},
        {"DPM++ 2M", "Sampler: DPM++ 2M, Schedule type: Karras,"},
        {"DPM2 a", "Sampler: DPM2 a, Schedule type: Karras,"},
        {"DPM++ 2M SDE Karras", "Sampler: DPM++ 2M SDE, Schedule type: Karras,"},
        {"euler_ancestral", "Sampler: Euler a, Schedule type: Karras,"},
        {"dpmpp_2m_sde", "Sampler: DPM++ 2M SDE, Schedule type: Karras,"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *extra[] = {"--sampler", cases[i].sampler, NULL};
        expect_schedule(extra, cases[i].want);
    }
    const char *explicit_sched[] = {"--sampler", "Euler a", "--scheduler", "karras", NULL};
    expect_schedule(explicit_sched, "Sampler: Euler a, Schedule type: Karras,");
    const char *automatic[] = {"--sampler", "euler", "--scheduler", "Automatic", NULL};
    expect_schedule(automatic, "Sampler: Euler, Schedule type: Uniform,");
    /* the label's suffix wins, as in A1111's get_sampler_and_scheduler */
    const char *suffix[] = {"--sampler", "DPM++ 2M Karras", "--scheduler", "exponential", NULL};
    expect_schedule(suffix, "Sampler: DPM++ 2M, Schedule type: Karras,");
}

/* "Euler a" alone draws exactly what euler_ancestral + normal draws. */
static void test_label_image_is_a1111s(void **state)
{
    (void)state;
    char a[400], b[400], err[2048];
    snprintf(a, sizeof a, "%s/label.png", root);
    snprintf(b, sizeof b, "%s/comfy.png", root);
    const char *label[] = {"-m", TINY, "a fox", "-W", "32", "-H", "32", "--steps", "3", "--seed", "9", "-q",
                           "--sampler", "Euler a", "-o", a, NULL};
    const char *comfy[] = {"-m", TINY, "a fox", "-W", "32", "-H", "32", "--steps", "3", "--seed", "9", "-q",
                           "--sampler", "euler_ancestral", "--scheduler", "normal", "-o", b, NULL};
    assert_int_equal(run_timed(label, err, sizeof err), 0);
    assert_int_equal(run_timed(comfy, err, sizeof err), 0);
    size_t la, lb;
    uint8_t *pa = cu_slurp(a, &la), *pb = cu_slurp(b, &lb);
    assert_non_null(pa);
    assert_non_null(pb);
    assert_int_equal(la, lb);
    assert_memory_equal(pa, pb, la);
    free(pa);
    free(pb);
}

/* A prompt-file line's --sampler_name without --scheduler: the same rule;
 * the manifest records the ComfyUI names actually used. */
static void test_prompt_file_label(void **state)
{
    (void)state;
    char pf[400], dir[400], png[500], man[500], err[2048];
    snprintf(pf, sizeof pf, "%s/prompts.txt", root);
    snprintf(dir, sizeof dir, "%s/batch", root);
    FILE *f = fopen(pf, "w");
    assert_non_null(f);
    fputs("--prompt \"a fox\" --sampler_name \"Euler a\" --seed 5\n"
          "--prompt \"a fox\" --sampler_name \"Euler a\" --scheduler Karras --seed 5\n"
          "--prompt \"a fox\" --sampler_name \"DPM++ 2M SDE\" --seed 5\n",
          f);
    fclose(f);
    const char *args[] = {"-m", TINY, "--prompt-file", pf, "-W", "32", "-H", "32", "--steps", "2", "-q", "-o", dir,
                          NULL};
    assert_int_equal(run_timed(args, err, sizeof err), 0);
    static const char *const want[][2] = {
        {"00000-5.png", "Sampler: Euler a, Schedule type: Uniform,"},
        {"00001-5.png", "Sampler: Euler a, Schedule type: Karras,"},
        {"00002-5.png", "Sampler: DPM++ 2M SDE, Schedule type: Exponential,"},
    };
    for (int i = 0; i < 3; i++) {
        snprintf(png, sizeof png, "%s/%s", dir, want[i][0]);
        char *params = cu_png_parameters(png);
        assert_non_null(params);
        if (!strstr(params, want[i][1])) fail_msg("%s: want \"%s\" in:\n%s", want[i][0], want[i][1], params);
        free(params);
    }
    snprintf(man, sizeof man, "%s/manifest.jsonl", dir);
    uint8_t *m = cu_slurp(man, NULL);
    assert_non_null(m);
    assert_non_null(strstr((char *)m, "\"file\":\"00000-5.png\""));
    assert_non_null(strstr((char *)m, "\"sampler\":\"euler_ancestral\",\"scheduler\":\"normal\""));
    assert_non_null(strstr((char *)m, "\"sampler\":\"dpmpp_2m_sde\",\"scheduler\":\"exponential\""));
    free(m);
}

int main(void)
{
    cu_tempdir(root, sizeof root, "cli-lib");
    char cache[320];
    snprintf(cache, sizeof cache, "%s/cache", root);
    setenv("XDG_CACHE_HOME", cache, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_taesd_refused_for_factor_not_8),
        cmocka_unit_test(test_label_without_scheduler),
        cmocka_unit_test(test_label_image_is_a1111s),
        cmocka_unit_test(test_prompt_file_label),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
