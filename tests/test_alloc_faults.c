/* A failed allocation of the generation's memory is an error value that
 * reaches fm_generate's caller, found before the first step, never a
 * finite and wrong image (the old gemm_run left the C tiles of a thread
 * without scratch stale).
 *
 * Everything fm_generate allocates for sampling and decoding goes through
 * the model's allocation hook (fm_model.alloc: a field, not a global). A
 * counting hook gives the number N of those allocations; then for every k
 * < N a fresh model refuses its k-th allocation: fm_generate must fail with
 * FM_EINPUT and an "out of memory" message, call no progress callback (no
 * step ran) and leave the caller's buffer alone; with nothing refused the
 * image is the reference image, byte for byte. test_noalloc shows that
 * nothing else is allocated while sampling. */
#include "testutil.h"

#include "diffusion/pipeline_internal.h"

typedef struct faults {
    int calls;     /* hooked allocations so far */
    int refuse_at; /* -1: none */
} faults;

static int refuse(void *user, size_t bytes)
{
    (void)bytes;
    faults *f = user;
    return f->calls++ == f->refuse_at;
}

static int steps_run;

static int on_progress(void *user, int step, int steps)
{
    (void)user;
    (void)steps;
    steps_run = step;
    return 0;
}

typedef struct fault_case {
    const char *model, *sampler;
    float cfg;
    fm_precision prec;
    int vae_tiling, side;
} fault_case;

/* fm_generate on a fresh model with the hook refusing allocation
 * refuse_at; returns its code, *calls the hooked allocations made. */
static int generate(const fault_case *fc, int refuse_at, uint8_t *rgb, int *calls, fm_error *err)
{
    fm_error lerr = {0};
    fm_model *m = fm_model_load(fc->model, &lerr);
    if (!m) fail_msg("%s", lerr.msg);
    faults f = {0, refuse_at};
    m->alloc = (core_alloc_hook){refuse, &f};
    fm_params p;
    fm_params_default(m, &p);
    p.prompt = "a red circle on a blue background";
    p.width = p.height = fc->side;
    p.steps = 2;
    p.cfg = fc->cfg;
    p.seed = 3;
    p.precision = fc->prec;
    p.vae_tiling = fc->vae_tiling;
    snprintf(p.sampler, sizeof p.sampler, "%s", fc->sampler);
    p.progress = on_progress;
    steps_run = 0;
    int rc = fm_generate(m, &p, rgb, err);
    *calls = f.calls;
    fm_model_free(m);
    return rc;
}

static void fault_sweep(const fault_case *fc)
{
    size_t n = (size_t)fc->side * fc->side * 3;
    uint8_t *want = malloc(n), *got = malloc(n);
    assert_non_null(want);
    assert_non_null(got);
    fm_error err = {0};
    int total = 0;
    if (generate(fc, -1, want, &total, &err)) fail_msg("%s: %s", fc->model, err.msg);
    assert_true(total >= 5); /* latent, sampler buffers, U-Net workspace, image, arena... */
    for (int k = 0; k < total; k++) {
        memset(got, 0xab, n);
        fm_error e = {0};
        int calls = 0, rc = generate(fc, k, got, &calls, &e);
        if (rc != FM_EINPUT || e.code != FM_EINPUT || !strstr(e.msg, "out of memory"))
            fail_msg("%s: allocation %d of %d refused: rc %d, \"%s\"", fc->model, k, total, rc, e.msg);
        if (steps_run) fail_msg("%s: allocation %d refused after %d steps had run", fc->model, k, steps_run);
        for (size_t i = 0; i < n; i++)
            if (got[i] != 0xab) fail_msg("%s: allocation %d refused, yet the image was written", fc->model, k);
    }
    int calls = 0;
    if (generate(fc, total, got, &calls, &err)) fail_msg("%s: %s", fc->model, err.msg);
    assert_int_equal(calls, total);
    assert_memory_equal(got, want, n);
    printf("  %s %s cfg %.0f%s: %d planned allocations, each refusal an error\n", fc->model, fc->sampler, fc->cfg,
           fc->vae_tiling ? " tiled" : "", total);
    free(want);
    free(got);
}

static void test_refusals_are_errors(void **state)
{
    (void)state;
    const fault_case cases[] = {
        {"tests/data/tiny-sd1.safetensors", "dpmpp_2m", 5.0f, FM_PREC_BF16, 0, 64},
        {"tests/data/tiny-sd1.safetensors", "euler_ancestral", 1.0f, FM_PREC_FP32, 1, 160},
        {"tests/data/tiny-sdxl.safetensors", "dpmpp_2m", 5.0f, FM_PREC_FP32, 0, 64},
        {"assets/demo/fmimage-demo.safetensors", "euler_ancestral", 4.0f, FM_PREC_AUTO, 0, 64},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) fault_sweep(&cases[i]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_refusals_are_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
