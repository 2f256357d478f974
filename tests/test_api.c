/* The library contract as a program outside the project sees it: only the
 * public header. A1111 labels through fm_params_check and fm_generate, error
 * values that never outlive their call, the caller's fixed-size strings
 * read within their bounds, --taesd refused for a model TAESD cannot decode,
 * two models in two threads, and a library that holds no call that could
 * abort or exit the process. */
#include <fmimage.h>

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define TINY_SD1 "tests/data/tiny-sd1.safetensors"
#define DEMO "assets/demo/fmimage-demo.safetensors"
#define TAESD "tests/data/taesd-weights.safetensors"

static fm_model *load(const char *path)
{
    fm_error err = {0};
    fm_model *m = fm_model_load(path, &err);
    if (!m) fail_msg("%s: %s", path, err.msg);
    return m;
}

/* A small, quick image of the model. */
static void small_params(const fm_model *m, fm_params *p)
{
    fm_params_default(m, p);
    p->prompt = "a red fox in snow";
    p->width = p->height = 32;
    p->steps = 2;
    p->seed = 42;
    p->precision = FM_PREC_FP32;
}

static uint8_t *generate(fm_model *m, const fm_params *p)
{
    uint8_t *rgb = malloc((size_t)p->width * p->height * 3);
    assert_non_null(rgb);
    fm_error err = {0};
    if (fm_generate(m, p, rgb, &err)) fail_msg("fm_generate: %s", err.msg);
    return rgb;
}

/* ---- item 20: A1111 labels through the public API ---- */

/* fm_params_check resolves the label itself and still runs every later
 * check (it used to return the resolver's 0 and skip them). */
static void test_label_does_not_skip_later_checks(void **state)
{
    (void)state;
    fm_model *m = load(TINY_SD1);
    fm_params p;
    small_params(m, &p);
    snprintf(p.sampler, sizeof p.sampler, "Euler a");
    fm_error err = {0};
    assert_int_equal(fm_params_check(m, &p, &err), 0);

    p.prompt = NULL;
    assert_int_equal(fm_params_check(m, &p, &err), FM_EUSAGE);
    assert_string_equal(err.msg, "prompt: missing");
    p.prompt = "x";

    static const uint8_t px[3] = {1, 2, 3};
    p.init_rgb = px;
    p.init_width = p.init_height = 1;
    p.strength = 2;
    assert_int_equal(fm_params_check(m, &p, &err), FM_EUSAGE);
    assert_string_equal(err.msg, "--strength: must be in (0,1]");
    p.init_rgb = NULL;

    snprintf(p.scheduler, sizeof p.scheduler, "beta");
    assert_int_equal(fm_params_check(m, &p, &err), FM_EUSAGE);
    assert_non_null(strstr(err.msg, "scheduler \"beta\": unknown"));
    fm_model_free(m);
}

/* "Euler a" draws what euler_ancestral draws, with the scheduler the caller
 * gives; "" (A1111's Automatic) is the sampler's own schedule: Uniform
 * (normal) for Euler a; a label's suffix wins over the scheduler field. */
static void test_generate_with_labels(void **state)
{
    (void)state;
    fm_model *m = load(DEMO); /* draws real images: schedules differ in them */
    fm_params p;
    small_params(m, &p);
    p.prompt = "a red circle on a blue background";
    p.steps = 4;
    size_t bytes = (size_t)p.width * p.height * 3;

    snprintf(p.sampler, sizeof p.sampler, "euler_ancestral");
    snprintf(p.scheduler, sizeof p.scheduler, "karras");
    uint8_t *comfy_karras = generate(m, &p);
    snprintf(p.scheduler, sizeof p.scheduler, "normal");
    uint8_t *comfy_normal = generate(m, &p);
    assert_memory_not_equal(comfy_karras, comfy_normal, bytes);

    snprintf(p.sampler, sizeof p.sampler, "Euler a");
    snprintf(p.scheduler, sizeof p.scheduler, "karras");
    uint8_t *label_karras = generate(m, &p);
    assert_memory_equal(label_karras, comfy_karras, bytes);
    p.scheduler[0] = 0;
    uint8_t *label_auto = generate(m, &p);
    assert_memory_equal(label_auto, comfy_normal, bytes);
    snprintf(p.scheduler, sizeof p.scheduler, "Automatic");
    uint8_t *label_automatic = generate(m, &p);
    assert_memory_equal(label_automatic, comfy_normal, bytes);

    fm_error err = {0};
    char *info = fm_infotext(m, &p, "tiny", NULL, &err);
    assert_non_null(info);
    assert_non_null(strstr(info, "Sampler: Euler a, Schedule type: Uniform,"));
    free(info);

    snprintf(p.sampler, sizeof p.sampler, "DPM++ 2M Karras");
    snprintf(p.scheduler, sizeof p.scheduler, "exponential");
    info = fm_infotext(m, &p, "tiny", NULL, &err);
    assert_non_null(info);
    assert_non_null(strstr(info, "Sampler: DPM++ 2M, Schedule type: Karras,"));
    free(info);

    free(comfy_karras);
    free(comfy_normal);
    free(label_karras);
    free(label_auto);
    free(label_automatic);
    fm_model_free(m);
}

/* ---- item 21: error values ---- */

/* A reused fm_error carries the latest call's code and message only. */
static void test_error_is_cleared_on_entry(void **state)
{
    (void)state;
    fm_model *m = load(TINY_SD1);
    fm_params p;
    small_params(m, &p);
    fm_error err = {0};
    p.width = 0;
    assert_int_equal(fm_params_check(m, &p, &err), FM_EUSAGE);
    assert_string_equal(err.msg, "--width: must be positive");
    p.width = 32;
    snprintf(p.sampler, sizeof p.sampler, "no such sampler");
    assert_int_equal(fm_params_check(m, &p, &err), FM_EUSAGE);
    assert_int_equal(err.code, FM_EUSAGE);
    assert_non_null(strstr(err.msg, "sampler \"no such sampler\": unknown"));
    snprintf(p.sampler, sizeof p.sampler, "euler");
    assert_int_equal(fm_params_check(m, &p, &err), 0);
    assert_int_equal(err.code, FM_OK);
    assert_string_equal(err.msg, "");

    /* a failed load, then a bad sampler: code and message of the second */
    assert_null(fm_model_load("tests/data/no-such-model.safetensors", &err));
    assert_int_equal(err.code, FM_EINPUT);
    char s[32];
    assert_int_equal(fm_sampler_resolve("bogus", s, NULL, &err), FM_EUSAGE);
    assert_int_equal(err.code, FM_EUSAGE);
    assert_non_null(strstr(err.msg, "sampler \"bogus\": unknown"));
    assert_int_equal(fm_scheduler_resolve("karras", s, &err), 0);
    assert_int_equal(err.code, FM_OK);
    assert_string_equal(err.msg, "");
    fm_model_free(m);
}

static void test_null_path(void **state)
{
    (void)state;
    fm_error err = {0};
    assert_null(fm_model_load(NULL, &err));
    assert_int_not_equal(err.code, FM_OK);
    assert_null(strstr(err.msg, "(null)"));
    int w, h;
    assert_null(fm_image_read(NULL, &w, &h, &err));
    assert_int_not_equal(err.code, FM_OK);
    assert_null(strstr(err.msg, "(null)"));
}

/* sampler[32] and scheduler[32] filled to the last byte with no NUL: refused
 * by name, nothing read past them (a read past them stays inside the struct,
 * where ASan cannot see it, so the test asserts the refusal itself). */
static void test_unterminated_names(void **state)
{
    (void)state;
    fm_model *m = load(TINY_SD1);
    fm_params p;
    small_params(m, &p);
    fm_error err = {0};
    memset(p.sampler, 'x', sizeof p.sampler);
    assert_int_equal(fm_params_check(m, &p, &err), FM_EUSAGE);
    assert_non_null(strstr(err.msg, "--sampler: not a string of at most 31 bytes"));
    snprintf(p.sampler, sizeof p.sampler, "euler");
    memset(p.scheduler, 'y', sizeof p.scheduler);
    assert_int_equal(fm_params_check(m, &p, &err), FM_EUSAGE);
    assert_non_null(strstr(err.msg, "--scheduler: not a string of at most 31 bytes"));
    uint8_t rgb[32 * 32 * 3];
    assert_int_equal(fm_generate(m, &p, rgb, &err), FM_EUSAGE);
    assert_null(fm_infotext(m, &p, "tiny", NULL, &err));
    assert_int_equal(err.code, FM_EUSAGE);
    fm_model_free(m);
}

/* ---- item 1: TAESD decodes by 8 ---- */

static void test_taesd_needs_factor_8(void **state)
{
    (void)state;
    static const struct { const char *path; int factor; } models[] = {{DEMO, 4}, {TINY_SD1, 2}};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        fm_model *m = load(models[i].path);
        assert_int_equal(fm_model_latent_factor(m), models[i].factor);
        fm_params p;
        small_params(m, &p);
        p.width = p.height = 64;
        p.taesd_path = TAESD;
        fm_error err = {0};
        char want[96];
        snprintf(want, sizeof want, "--taesd: TAESD decodes by 8, this model's latent factor is %d", models[i].factor);
        assert_int_equal(fm_params_check(m, &p, &err), FM_EUSAGE);
        assert_string_equal(err.msg, want);
        uint8_t *rgb = malloc(64 * 64 * 3);
        assert_int_equal(fm_generate(m, &p, rgb, &err), FM_EUSAGE);
        assert_string_equal(err.msg, want);
        free(rgb);
        fm_model_free(m);
    }
}

/* ---- item 23: two models, two threads ---- */

typedef struct job {
    fm_model *m;
    fm_params p;
    uint8_t *rgb;
    fm_error err;
    int rc;
} job;

static void *run_job(void *arg)
{
    job *j = arg;
    j->rc = fm_generate(j->m, &j->p, j->rgb, &j->err);
    return NULL;
}

/* Each thread's image equals the one the same model draws alone. */
static void test_two_models_two_threads(void **state)
{
    (void)state;
    const char *paths[2] = {TINY_SD1, DEMO};
    job jobs[2];
    uint8_t *alone[2];
    for (int i = 0; i < 2; i++) {
        jobs[i].m = load(paths[i]);
        small_params(jobs[i].m, &jobs[i].p);
        snprintf(jobs[i].p.sampler, sizeof jobs[i].p.sampler, i ? "Euler a" : "DPM++ 2M Karras");
        jobs[i].p.steps = 3;
        alone[i] = generate(jobs[i].m, &jobs[i].p);
        jobs[i].rgb = calloc((size_t)32 * 32 * 3, 1);
        assert_non_null(jobs[i].rgb);
        memset(&jobs[i].err, 0, sizeof jobs[i].err);
    }
    for (int round = 0; round < 2; round++) {
        pthread_t t[2];
        for (int i = 0; i < 2; i++) assert_int_equal(pthread_create(&t[i], NULL, run_job, &jobs[i]), 0);
        for (int i = 0; i < 2; i++) assert_int_equal(pthread_join(t[i], NULL), 0);
        for (int i = 0; i < 2; i++) {
            if (jobs[i].rc) fail_msg("thread %d: %s", i, jobs[i].err.msg);
            assert_memory_equal(jobs[i].rgb, alone[i], (size_t)32 * 32 * 3);
        }
    }
    for (int i = 0; i < 2; i++) {
        free(alone[i]);
        free(jobs[i].rgb);
        fm_model_free(jobs[i].m);
    }
}

/* ---- item 3: nothing in the library can abort or exit ---- */

/* The archive next to $FM_BIN (build/ or build/san/): no object in it
 * references __assert_fail, abort or exit (stb_image's asserts were the
 * last ones). */
static void test_library_cannot_abort(void **state)
{
    (void)state;
    const char *bin = getenv("FM_BIN") ? getenv("FM_BIN") : "build/fmimage";
    char lib[512], cmd[1200];
    snprintf(lib, sizeof lib, "%.*s/libfmimage.a", (int)(strrchr(bin, '/') ? strrchr(bin, '/') - bin : 1),
             strrchr(bin, '/') ? bin : ".");
    snprintf(cmd, sizeof cmd,
             "test -f %s && ! nm -A %s | grep -E ' U (__assert_fail|abort|exit|_exit|quick_exit)$'", lib, lib);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_label_does_not_skip_later_checks),
        cmocka_unit_test(test_generate_with_labels),
        cmocka_unit_test(test_error_is_cleared_on_entry),
        cmocka_unit_test(test_null_path),
        cmocka_unit_test(test_unterminated_names),
        cmocka_unit_test(test_taesd_needs_factor_8),
        cmocka_unit_test(test_two_models_two_threads),
        cmocka_unit_test(test_library_cannot_abort),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
