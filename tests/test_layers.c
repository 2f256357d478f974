/* The layers of docs/ARCHITECTURE.md: tools/check_includes.sh passes on the
 * tree, and fails on trees made here with an upward include, a sideways
 * include between model parts, an include cycle, an unresolved include. */
#include "testutil.h"

#include <sys/stat.h>
#include <sys/wait.h>

/* Runs the check on root; returns its exit status, out gets its output. */
static int check(const char *root, char *out, size_t cap)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "sh tools/check_includes.sh '%s' 2>&1", root);
    return tu_run_capture(cmd, out, cap);
}

static void test_tree_follows_the_layers(void **state)
{
    (void)state;
    char out[8192];
    int rc = check(".", out, sizeof out);
    if (rc != 0) fail_msg("check_includes.sh failed:\n%s", out);
    print_message("  %s", out);
}

static void expect_fails(const char *what, const char *why)
{
    char out[8192];
    int rc = check(tu_dir, out, sizeof out);
    if (rc != 1) fail_msg("%s: exit %d, expected 1:\n%s", what, rc, out);
    if (!strstr(out, why)) fail_msg("%s: output does not say \"%s\":\n%s", what, why, out);
}

static void test_violations_fail(void **state)
{
    (void)state;
    char out[8192];
    tu_put("include/fmimage.h", "/* public */\n");
    tu_put("core/core.h", "#include \"fmimage.h\"\n");
    tu_put("weights/source.h", "#include \"core/core.h\"\n");
    tu_put("unet/unet.h", "#include \"weights/source.h\"\n");
    tu_put("vae/vae.h", "#include \"core/core.h\"\n");
    tu_put("diffusion/pipeline.c", "#include \"unet/unet.h\"\n#include \"vae/vae.h\"\n");
    tu_put("cli/main.c", "#include \"fmimage.h\"\n#include \"local.h\"\n");
    tu_put("cli/local.h", "/* same directory */\n");
    assert_int_equal(check(tu_dir, out, sizeof out), 0);

    tu_put("weights/source.h", "#include \"core/core.h\"\n#include \"diffusion/detect.h\"\n");
    tu_put("diffusion/detect.h", "/* detection */\n");
    expect_fails("upward", "weights/source.h: includes diffusion/detect.h: diffusion is a higher layer than weights");
    tu_put("weights/source.h", "#include \"core/core.h\"\n");

    tu_put("vae/vae.h", "#include \"unet/unet.h\"\n");
    expect_fails("sideways", "vae/vae.h: includes unet/unet.h: vae and unet are peers");
    tu_put("vae/vae.h", "#include \"core/core.h\"\n");

    tu_put("core/a.h", "#include \"core/b.h\"\n");
    tu_put("core/b.h", "#include \"a.h\"\n");
    expect_fails("cycle", "include cycle");
    tu_put("core/b.h", "/* no cycle */\n");

    tu_put("unet/unet.h", "#include \"weights/nowhere.h\"\n");
    expect_fails("unresolved", "unet/unet.h: #include \"weights/nowhere.h\": no such file");
    tu_put("unet/unet.h", "#include \"weights/source.h\"\n");
    assert_int_equal(check(tu_dir, out, sizeof out), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tree_follows_the_layers),
        cmocka_unit_test(test_violations_fail),
    };
    return cmocka_run_group_tests(tests, tu_make_dir, tu_remove_dir);
}
