/* `make install` gives a working library: a separate C program builds
 * against the installed header and pkg-config file with the README's
 * command (shared libfmimage.so.0), runs, and draws an image; a static
 * link against libfmimage.a draws the same bytes. */
#include "cliutil.h"

static int sh(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static void test_example_builds_against_installed_pc(void **state)
{
    (void)state;
    char dir[256], cmd[8192];
    cu_tempdir(dir, sizeof dir, "install");
    char prefix[512];
    if (!realpath(dir, prefix)) fail_msg("realpath %s", dir);
    /* A plain build: under `make sanitize` the parent's BUILD/SAN settings
     * would reach this make through MAKEFLAGS. */
    snprintf(cmd, sizeof cmd, "env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s install BUILD=build SAN=0 PREFIX=%s >/dev/null",
             prefix);
    assert_int_equal(sh(cmd), 0);
    snprintf(cmd, sizeof cmd,
             "cd %s && test -x bin/fmimage && test -f include/fmimage.h && test -f lib/libfmimage.a && "
             "test -f lib/libfmimage.so.%s && test \"$(readlink lib/libfmimage.so.0)\" = libfmimage.so.%s && "
             "test \"$(readlink lib/libfmimage.so)\" = libfmimage.so.0 && "
             "readelf -d lib/libfmimage.so.%s | grep -q 'Library soname: \\[libfmimage.so.0\\]'",
             prefix, FM_VERSION, FM_VERSION, FM_VERSION);
    assert_int_equal(sh(cmd), 0);
    /* README "The library": exactly its build and run commands, with the
     * prefix's pkgconfig and lib directories named as it says. */
    snprintf(cmd, sizeof cmd,
             "export PKG_CONFIG_PATH=%s/lib/pkgconfig && "
             "cc tests/example/fmimage_example.c -o %s/example $(pkg-config --cflags --libs fmimage)",
             prefix, prefix);
    assert_int_equal(sh(cmd), 0);
    snprintf(cmd, sizeof cmd, "readelf -d %s/example | grep -q 'Shared library: \\[libfmimage.so.0\\]'", prefix);
    assert_int_equal(sh(cmd), 0);
    snprintf(cmd, sizeof cmd,
             "LD_LIBRARY_PATH=%s/lib OMP_NUM_THREADS=1 %s/example tests/data/tiny-sd1.safetensors 'a red fox' %s/out.png",
             prefix, prefix, prefix);
    assert_int_equal(sh(cmd), 0);
    /* and a static link: pkg-config --static adds the private dependencies */
    snprintf(cmd, sizeof cmd,
             "export PKG_CONFIG_PATH=%s/lib/pkgconfig && cc -std=c11 tests/example/fmimage_example.c -o %s/example-static "
             "%s/lib/libfmimage.a $(pkg-config --cflags --libs --static fmimage | sed 's/-lfmimage//') && "
             "! readelf -d %s/example-static | grep -q libfmimage && "
             "OMP_NUM_THREADS=1 %s/example-static tests/data/tiny-sd1.safetensors 'a red fox' %s/out-static.png && "
             "cmp %s/out-static.png %s/out.png",
             prefix, prefix, prefix, prefix, prefix, prefix, prefix, prefix);
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
