/* Shared helpers for the cmocka tests: golden tensors and tolerance checks.
 * Header-only so each tests/test_*.c stays one self-contained program. */
#ifndef FM_TESTUTIL_H
#define FM_TESTUTIL_H

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "core/core.h"
#include "weights/safetensors.h"

/* Group fixture (cmocka_run_group_tests(tests, tu_make_dir, tu_remove_dir)):
 * a fresh directory tu_dir under $TMPDIR (or /tmp), named after the test
 * program, removed with everything in it afterwards. */
static char tu_dir[256] __attribute__((unused));

static inline int tu_make_dir(void **state)
{
    (void)state;
    const char *tmp = getenv("TMPDIR");
    snprintf(tu_dir, sizeof tu_dir, "%s/fm-%s-XXXXXX", tmp && *tmp ? tmp : "/tmp", program_invocation_short_name);
    return mkdtemp(tu_dir) ? 0 : -1;
}

static inline int tu_remove_dir(void **state)
{
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tu_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Opens a golden file under tests/data or fails the test. */
/* Runs a shell command, its stdout and stderr into out (cap bytes, NUL
 * terminated); returns its exit status (-1 if it did not exit). */
static inline int tu_run_capture(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

/* Writes text to tu_dir/rel, making rel's last directory. */
static inline void tu_put(const char *rel, const char *text)
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

static inline void tu_open(wt_safetensors *st, const char *path)
{
    fm_error err = {0};
    if (wt_st_open(st, path, &err))
        fail_msg("%s", err.msg);
}

/* Tensor `name` of st as newly allocated float32 (free with core_free);
 * *n gets the element count when n is non-NULL. */
static inline float *tu_f32(const wt_safetensors *st, const char *name, size_t *n)
{
    const wt_st_tensor *t = wt_st_find(st, name);
    if (!t)
        fail_msg("golden tensor %s missing from %s", name, st->path);
    if (n)
        *n = (size_t)wt_st_numel(t);
    fm_error err = {0};
    float *f = wt_st_to_f32(t, &err);
    assert_non_null(f);
    return f;
}

/* The goldens' tolerance: |got - ref| <= tol * max(1, |ref|) element-wise.
 * Prints the worst element so a failure says how far off it is. */
static inline void tu_assert_close(const float *got, const float *ref, size_t n, double tol,
                                   const char *what)
{
    double worst = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]) / fmax(1.0, fabs((double)ref[i]));
        if (!(d <= worst)) { /* also catches NaN */
            worst = isnan(d) ? INFINITY : d;
            at = i;
        }
    }
    if (!(worst <= tol))
        fail_msg("%s: element %zu is %.8g, reference %.8g (relative error %.3g > %.3g)", what, at,
                 (double)got[at], (double)ref[at], worst, tol);
}

/* Golden tensor `name` of st must equal got (n elements) within tol. */
static inline void tu_check(const wt_safetensors *st, const char *name, const float *got, size_t n,
                            double tol)
{
    size_t rn;
    float *ref = tu_f32(st, name, &rn);
    if (rn != n)
        fail_msg("%s: %zu elements computed, golden has %zu", name, n, rn);
    tu_assert_close(got, ref, n, tol, name);
    core_free(ref);
}

/* Deterministic pseudo-random floats in [-1, 1) for kernel tests. */
static inline void tu_fill_random(float *x, size_t n, uint64_t seed)
{
    uint64_t s = seed * 6364136223846793005ull + 1442695040888963407ull;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((double)(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    }
}

#endif
