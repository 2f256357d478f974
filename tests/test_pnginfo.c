/* PNG Info paste check (issue 16 item 6): the infotext fmimage writes for an
 * image with two <lora:...> tags, an embedding in the negative and --vae
 * equals byte for byte the one tools/ref/pnginfo_ref.py gave to A1111's own
 * parse_generation_parameters (modules/infotext_utils.py), which gave back
 * the prompt, negative, steps, sampler, CFG, seed, size, model/Lora/TI/VAE
 * hashes that run asked for (the script asserts each; the fields are in
 * tests/data/pnginfo-ref.json "parsed"). So pasting fmimage's infotext into
 * A1111's PNG Info fills its fields with these settings.
 *
 * The VAE file is tiny-sd1's VAE under standalone ldm names, written here;
 * `test_pnginfo --write-vae OUT` writes it for the reference script. */
#include "cliutil.h"

#include <cjson/cJSON.h>

#define REF "tests/data/pnginfo-ref.json"

static int write_vae(const char *out)
{
    static const char prefix[] = "first_stage_model.";
    wt_safetensors st;
    fm_error err = {0};
    if (wt_st_open(&st, "tests/data/tiny-sd1.safetensors", &err)) return fprintf(stderr, "%s\n", err.msg), 1;
    tl_st_entry *e = calloc((size_t)st.n_tensors, sizeof *e);
    int n = 0;
    for (int i = 0; e && i < st.n_tensors; i++) {
        const wt_st_tensor *t = &st.tensors[i];
        if (strncmp(t->name, prefix, sizeof prefix - 1)) continue;
        e[n] = (tl_st_entry){t->name + sizeof prefix - 1, t->dtype, t->ndim, {0}, t->data};
        memcpy(e[n].shape, t->shape, sizeof t->shape);
        n++;
    }
    int rc = !e || !n || tl_st_write(out, e, n, NULL, 0, &err);
    if (rc) fprintf(stderr, "write_vae: %s\n", err.msg);
    free(e);
    wt_st_close(&st);
    return rc;
}

static cJSON *read_ref(void)
{
    FILE *f = fopen(REF, "rb");
    assert_non_null(f);
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    assert_non_null(j);
    return j;
}

static void test_infotext_as_parsed_by_a1111(void **state)
{
    (void)state;
    char dir[256], vae[300], out[300];
    cu_tempdir(dir, sizeof dir, "pnginfo");
    snprintf(vae, sizeof vae, "%s/pnginfo_vae.safetensors", dir);
    snprintf(out, sizeof out, "%s/out.png", dir);
    assert_int_equal(write_vae(vae), 0);
    cJSON *ref = read_ref();
    const cJSON *args = cJSON_GetObjectItem(ref, "args"), *a;
    const char *argv[40];
    int n = 0;
    cJSON_ArrayForEach(a, args)
    {
        assert_true(cJSON_IsString(a) && n < 39);
        const char *s = a->valuestring;
        argv[n++] = !strcmp(s, "@VAE@") ? vae : !strcmp(s, "@OUT@") ? out : s;
    }
    argv[n] = NULL;
    assert_int_equal(cu_wait(cu_spawn(argv, NULL, NULL)), 0);
    char *got = cu_png_parameters(out);
    assert_non_null(got);
    const char *want = cJSON_GetObjectItem(ref, "infotext")->valuestring;
    if (strcmp(got, want)) fail_msg("infotext changed:\n%s\nA1111 parsed:\n%s", got, want);
    /* what A1111 put back, as recorded: the fields a user pastes */
    const cJSON *parsed = cJSON_GetObjectItem(ref, "parsed");
    static const char *const fields[] = {"Prompt", "Negative prompt", "Steps", "Sampler", "CFG scale", "Seed",
                                         "Size-1", "Size-2", "Model hash", "Lora hashes", "TI hashes", "VAE",
                                         "VAE hash"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        if (!cJSON_IsString(cJSON_GetObjectItem(parsed, fields[i]))) fail_msg("A1111 parsed no \"%s\"", fields[i]);
    printf("infotext equal to the one A1111 parsed (%zu bytes, %d fields)\n", strlen(got), cJSON_GetArraySize(parsed));
    free(got);
    cJSON_Delete(ref);
    unlink(out);
    unlink(vae);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    if (argc == 3 && !strcmp(argv[1], "--write-vae")) return write_vae(argv[2]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_infotext_as_parsed_by_a1111),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
