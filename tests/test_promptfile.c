/* Prompt-file lines: A1111's "prompts from file" syntax (shlex splitting,
 * --key value pairs) plus comments and error lines. */
#include "testutil.h"

#include "../cli/promptfile.c"

static int split(const char *s, char ***argv)
{
    char why[100];
    return pf_shlex_split(s, strlen(s), argv, why, sizeof why);
}

static void test_shlex_like_python(void **state)
{
    (void)state;
    char **v;
    /* Expected values are Python 3 shlex.split() of the same strings. */
    assert_int_equal(split("a 'b c' \"d \\\" e\" f\\ g", &v), 4);
    assert_string_equal(v[0], "a");
    assert_string_equal(v[1], "b c");
    assert_string_equal(v[2], "d \" e");
    assert_string_equal(v[3], "f g");
    pf_free_words(v, 4);
    assert_int_equal(split("'it''s' \"\" x", &v), 3); /* shlex: ['its', '', 'x'] */
    assert_string_equal(v[0], "its");
    assert_string_equal(v[1], "");
    pf_free_words(v, 3);
    assert_int_equal(split("\"a\\nb\" 'c\\d'", &v), 2); /* ['a\\nb', 'c\\d'] */
    assert_string_equal(v[0], "a\\nb");
    assert_string_equal(v[1], "c\\d");
    pf_free_words(v, 2);
    assert_int_equal(split("'unclosed", &v), -1);
    assert_int_equal(split("trailing\\", &v), -1);
}

static void test_lines(void **state)
{
    (void)state;
    pf_line l;
    char why[160];
    const char *plain = "  a red fox in snow  \n";
    assert_int_equal(pf_parse_line(plain, strlen(plain), 1, &l, why, sizeof why), 1);
    assert_string_equal(l.prompt, "a red fox in snow");
    assert_false(l.has_seed);
    pf_line_free(&l);
    assert_int_equal(pf_parse_line("   # comment", 12, 2, &l, why, sizeof why), 0);
    assert_int_equal(pf_parse_line("  \t", 3, 3, &l, why, sizeof why), 0);
    const char *opts = "--prompt a cat in a hat --negative_prompt \"blurry, dark\" --seed 7 --steps 12 "
                       "--cfg_scale 4.5 --width 64 --height 32 --sampler_name \"DPM++ 2M Karras\" --n_iter 3";
    assert_int_equal(pf_parse_line(opts, strlen(opts), 4, &l, why, sizeof why), 1);
    assert_string_equal(l.prompt, "a cat in a hat");
    assert_string_equal(l.negative, "blurry, dark");
    assert_true(l.has_seed);
    assert_int_equal(l.seed, 7);
    assert_int_equal(l.steps, 12);
    assert_true(l.cfg == 4.5f);
    assert_int_equal(l.width, 64);
    assert_int_equal(l.height, 32);
    assert_string_equal(l.sampler, "DPM++ 2M Karras");
    assert_int_equal(l.n_iter, 3);
    pf_line_free(&l);
}

static void expect_bad(const char *text, const char *why_part)
{
    pf_line l;
    char why[160] = "";
    assert_int_equal(pf_parse_line(text, strlen(text), 9, &l, why, sizeof why), -1);
    if (!strstr(why, why_part)) fail_msg("'%s': message '%s' lacks '%s'", text, why, why_part);
}

static void test_bad_lines(void **state)
{
    (void)state;
    expect_bad("--prompt x --colour red", "unknown option --colour");
    expect_bad("--prompt x --steps ten", "bad value for --steps");
    expect_bad("--prompt x --steps 0", "bad value for --steps");
    expect_bad("--prompt x --cfg_scale nan", "bad value for --cfg_scale");
    expect_bad("--prompt 'x", "no closing quotation");
    expect_bad("--steps 5", "no --prompt");
    expect_bad("--prompt x --seed", "missing value for --seed");
    expect_bad("a \xff\xfe prompt", "invalid UTF-8");
    expect_bad("a \xc0\xaf overlong", "invalid UTF-8");
    expect_bad("--prompt x --denoising_strength 1.5", "bad value");
    pf_line l;
    char why[160];
    const char *utf = "un renard roux dans la neige \xe2\x9d\x84";
    assert_int_equal(pf_parse_line(utf, strlen(utf), 1, &l, why, sizeof why), 1);
    assert_string_equal(l.prompt, utf);
    pf_line_free(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shlex_like_python),
        cmocka_unit_test(test_lines),
        cmocka_unit_test(test_bad_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
