/* `make install` gives a working library: a separate C program builds
 * against the installed header and pkg-config file and draws an image. */
#include "cliutil.h"

static int sh(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void test_example_builds_against_installed_pc(void **state)
{
    (void)state;
    char dir[256], cmd[2048];
    cu_tempdir(dir, sizeof dir, "install");
    char prefix[512];
    if (!realpath(dir, prefix)) fail_msg("realpath %s", dir);
    /* A plain build: under `make sanitize` the parent's BUILD/SAN settings
     * would reach this make through MAKEFLAGS. */
    snprintf(cmd, sizeof cmd, "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s install BUILD=build SAN=0 PREFIX=%s >/dev/null",
             prefix);
    assert_int_equal(sh(cmd), 0);
    snprintf(cmd, sizeof cmd, "test -x %s/bin/fmimage && test -f %s/include/fmimage.h && test -f %s/lib/libfmimage.a",
             prefix, prefix, prefix);
    assert_int_equal(sh(cmd), 0);
    snprintf(cmd, sizeof cmd,
             "PKG_CONFIG_PATH=%s/lib/pkgconfig cc -std=c11 tests/example/fmimage_example.c -o %s/example "
             "$(PKG_CONFIG_PATH=%s/lib/pkgconfig pkg-config --cflags --libs --static fmimage)",
             prefix, prefix, prefix);
    assert_int_equal(sh(cmd), 0);
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 %s/example tests/data/tiny-sd1.safetensors 'a red fox' %s/out.png",
             prefix, prefix);
    assert_int_equal(sh(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s/out.png", prefix);
    char *params = cu_png_parameters(cmd);
    assert_non_null(params);
    assert_non_null(strstr(params, "a red fox\nSteps: 4, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 64x64, Model: example"));
    free(params);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_example_builds_against_installed_pc)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
