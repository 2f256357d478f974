/* The PNG "parameters" text parses back with A1111's own regex
 * (modules/infotext_utils.py, re_param_code) to the values written. */
#include "testutil.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <cjson/cJSON.h>
#include <pcre2.h>

#include "diffusion/infotext.h"

static const char *re_param = "\\s*(\\w[\\w \\-/]+):\\s*(\"(?:\\\\.|[^\\\\\"])+\"|[^,]*)(?:,|$)";

typedef struct kv {
    char key[64];
    char value[512];
} kv;

/* A1111 parse_generation_parameters: prompt lines, "Negative prompt:"
 * lines, and the last line's Key: value pairs (JSON-unquoted). */
static int parse_infotext(const char *text, char *prompt, char *negative, kv *out, int max)
{
    const char *last_nl = strrchr(text, '\n');
    assert_non_null(last_nl);
    size_t head_len = (size_t)(last_nl - text);
    char *head = strndup(text, head_len);
    prompt[0] = negative[0] = 0;
    int in_negative = 0;
    for (char *line = strtok(head, "\n"); line; line = strtok(NULL, "\n")) {
        if (!strncmp(line, "Negative prompt:", 16)) {
            in_negative = 1;
            line += 16;
            while (*line == ' ') line++;
        }
        char *dst = in_negative ? negative : prompt;
        if (*dst) strcat(dst, "\n");
        strcat(dst, line);
    }
    free(head);
    int errcode;
    PCRE2_SIZE erroff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)re_param, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &errcode, &erroff, NULL);
    assert_non_null(re);
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(re, NULL);
    const char *line = last_nl + 1;
    size_t len = strlen(line), off = 0;
    int n = 0;
    while (off <= len && n < max && pcre2_match(re, (PCRE2_SPTR)line, len, off, 0, md, NULL) > 0) {
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        snprintf(out[n].key, sizeof out[n].key, "%.*s", (int)(ov[3] - ov[2]), line + ov[2]);
        char v[512];
        snprintf(v, sizeof v, "%.*s", (int)(ov[5] - ov[4]), line + ov[4]);
        if (v[0] == '"' && v[strlen(v) - 1] == '"') {
            cJSON *j = cJSON_Parse(v);
            assert_true(cJSON_IsString(j));
            snprintf(v, sizeof v, "%s", j->valuestring);
            cJSON_Delete(j);
        }
        snprintf(out[n].value, sizeof out[n].value, "%s", v);
        n++;
        if (ov[1] == off) break;
        off = ov[1];
    }
    pcre2_match_data_free(md);
    pcre2_code_free(re);
    return n;
}

static const char *lookup(const kv *p, int n, const char *key)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(p[i].key, key)) return p[i].value;
    return NULL;
}

static void test_design_example(void **state)
{
    (void)state;
    df_infotext_fields f = {.prompt = "a red fox in snow", .negative = "blurry", .steps = 20,
                            .sampler_label = "DPM++ 2M", .schedule_label = "Karras", .cfg = 7,
                            .seed = 42, .width = 512, .height = 512, .model_hash = "6ce0161689",
                            .model_name = "v1-5-pruned-emaonly", .denoising_strength = -1,
                            .clip_skip = 1, .rng_label = "NV"};
    char *t = df_infotext_format(&f);
    assert_string_equal(t, "a red fox in snow\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M, "
                           "Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x512, Model hash: "
                           "6ce0161689, Model: v1-5-pruned-emaonly, RNG: NV, Version: fmimage " FM_VERSION);
    free(t);
}

static void test_round_trip(void **state)
{
    (void)state;
    df_infotext_fields f = {.prompt = "a (red:1.2) fox, in snow\nsecond line", .negative = "",
                            .steps = 6, .sampler_label = "Euler a", .schedule_label = "SGM Uniform",
                            .cfg = 7.5f, .seed = 4294967295u, .width = 64, .height = 96,
                            .model_hash = "0123456789", .model_name = "odd: name, \"quoted\"",
                            .denoising_strength = 0.75f, .clip_skip = 2, .rng_label = "CPU"};
    char *t = df_infotext_format(&f);
    char prompt[512], negative[512];
    kv p[32];
    int n = parse_infotext(t, prompt, negative, p, 32);
    assert_string_equal(prompt, f.prompt);
    assert_string_equal(negative, "");
    const char *want[][2] = {{"Steps", "6"}, {"Sampler", "Euler a"}, {"Schedule type", "SGM Uniform"},
                             {"CFG scale", "7.5"}, {"Seed", "4294967295"}, {"Size", "64x96"},
                             {"Model hash", "0123456789"}, {"Model", "odd: name, \"quoted\""},
                             {"Denoising strength", "0.75"}, {"Clip skip", "2"}, {"RNG", "CPU"},
                             {"Version", "fmimage " FM_VERSION}};
    assert_int_equal(n, (int)(sizeof want / sizeof want[0]));
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const char *v = lookup(p, n, want[i][0]);
        if (!v || strcmp(v, want[i][1])) fail_msg("%s: got '%s', want '%s'", want[i][0], v ? v : "(none)", want[i][1]);
    }
    free(t);
}

static void test_float_format(void **state)
{
    (void)state;
    char b[32];
    df_format_float(b, sizeof b, 7.0f); assert_string_equal(b, "7");
    df_format_float(b, sizeof b, 7.5f); assert_string_equal(b, "7.5");
    df_format_float(b, sizeof b, 0.1f); assert_string_equal(b, "0.1");
    df_format_float(b, sizeof b, 1.0f / 3); assert_string_equal(b, "0.33333334");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_design_example),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_float_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
