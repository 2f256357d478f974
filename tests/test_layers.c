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
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void put(const char *rel, const char *text)
{
    char path[512], dir[512];
    snprintf(path, sizeof path, "%s/%s", tu_dir, rel);
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = 0;
    mkdir(dir, 0777);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
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
    put("include/fmimage.h", "/* public */\n");
    put("core/core.h", "#include \"fmimage.h\"\n");
    put("weights/source.h", "#include \"core/core.h\"\n");
    put("unet/unet.h", "#include \"weights/source.h\"\n");
    put("vae/vae.h", "#include \"core/core.h\"\n");
    put("diffusion/pipeline.c", "#include \"unet/unet.h\"\n#include \"vae/vae.h\"\n");
    put("cli/main.c", "#include \"fmimage.h\"\n#include \"local.h\"\n");
    put("cli/local.h", "/* same directory */\n");
    assert_int_equal(check(tu_dir, out, sizeof out), 0);

    put("weights/source.h", "#include \"core/core.h\"\n#include \"diffusion/detect.h\"\n");
    put("diffusion/detect.h", "/* detection */\n");
    expect_fails("upward", "weights/source.h: includes diffusion/detect.h: diffusion is a higher layer than weights");
    put("weights/source.h", "#include \"core/core.h\"\n");

    put("vae/vae.h", "#include \"unet/unet.h\"\n");
    expect_fails("sideways", "vae/vae.h: includes unet/unet.h: vae and unet are peers");
    put("vae/vae.h", "#include \"core/core.h\"\n");

    put("core/a.h", "#include \"core/b.h\"\n");
    put("core/b.h", "#include \"a.h\"\n");
    expect_fails("cycle", "include cycle");
    put("core/b.h", "/* no cycle */\n");

    put("unet/unet.h", "#include \"weights/nowhere.h\"\n");
    expect_fails("unresolved", "unet/unet.h: #include \"weights/nowhere.h\": no such file");
    put("unet/unet.h", "#include \"weights/source.h\"\n");
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
