/* The shipped demo model runs through the same code as a real SD 1.x file:
 * the C pipeline's final latent matches the PyTorch forward of the same
 * weights (tools/train_demo/reference.py, float64) within 1e-3. */
#include "testutil.h"

#include <cjson/cJSON.h>

#include "diffusion/pipeline_internal.h"

#define DEMO "assets/demo/fmimage-demo.safetensors"

static void check_run(fm_model *m, const wt_safetensors *ref, const cJSON *run)
{
    const char *name = cJSON_GetObjectItem(run, "name")->valuestring;
    fm_params p;
    fm_params_default(m, &p);
    p.prompt = cJSON_GetObjectItem(run, "prompt")->valuestring;
    p.negative = cJSON_GetObjectItem(run, "negative")->valuestring;
    p.seed = (uint64_t)cJSON_GetObjectItem(run, "seed")->valuedouble;
    p.steps = cJSON_GetObjectItem(run, "steps")->valueint;
    p.cfg = (float)cJSON_GetObjectItem(run, "cfg")->valuedouble;
    snprintf(p.sampler, sizeof p.sampler, "%s", cJSON_GetObjectItem(run, "sampler")->valuestring);
    snprintf(p.scheduler, sizeof p.scheduler, "%s", cJSON_GetObjectItem(run, "scheduler")->valuestring);
    p.width = p.height = 64;
    p.precision = FM_PREC_FP32; /* the reference path */
    size_t n = 4 * 16 * 16;
    float *x = core_alloc(sizeof(float) * n);
    fm_error err = {0};
    if (df_sample_latent(m, &p, x, &err)) fail_msg("%s: %s", name, err.msg);
    char key[64];
    snprintf(key, sizeof key, "%s.x_final", name);
    size_t rn;
    float *want = tu_f32(ref, key, &rn);
    assert_int_equal(rn, n);
    double worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(x[i] - want[i]) / fmax(1.0, fabs(want[i])));
    printf("  %s (%s, %d steps): final latent max relative error %.2e\n", name, p.sampler, p.steps, worst);
    tu_assert_close(x, want, n, 1e-3, key);
    core_free(want);
    core_free(x);
}

static void test_demo_matches_pytorch(void **state)
{
    (void)state;
    wt_safetensors ref;
    tu_open(&ref, "tests/data/demo-ref.safetensors");
    cJSON *runs = cJSON_Parse(wt_st_meta_get(&ref, "runs"));
    assert_true(cJSON_IsArray(runs));
    fm_error err = {0};
    fm_model *m = fm_model_load(DEMO, &err);
    if (!m) fail_msg("%s", err.msg);
    assert_int_equal(fm_model_latent_factor(m), 4);
    const cJSON *run;
    cJSON_ArrayForEach(run, runs) check_run(m, &ref, run);
    fm_model_free(m);
    cJSON_Delete(runs);
    wt_st_close(&ref);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_demo_matches_pytorch)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
