/* The naming rule of docs/ARCHITECTURE.md: tools/check_names.sh passes on
 * the library just built (every global fm_ symbol is declared in
 * include/fmimage.h, every other global carries a module prefix and is used
 * outside its own file), and fails on small archives made here that break
 * each part of the rule. */
#include "testutil.h"

#include <limits.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char repo[PATH_MAX];

/* Runs the check from root on its build/ (or on build when root is NULL:
 * the repository's own, the directory of $FM_BIN). Returns the exit status;
 * out gets the output. */
static int check(const char *root, const char *build, char *out, size_t cap)
{
    char cmd[PATH_MAX * 4];
    snprintf(cmd, sizeof cmd, "cd '%s' && sh '%s/tools/check_names.sh' '%s' 2>&1", root ? root : repo, repo,
             build);
    return tu_run_capture(cmd, out, cap);
}

/* Compiles src/a.c and src/b.c of the scratch tree into build/ and archives
 * them as build/libfmimage.a. */
static void build_lib(void)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "cd '%s' && mkdir -p build && rm -f build/*.o build/libfmimage.a && "
             "cc -c src/a.c -o build/a.o && cc -c src/b.c -o build/b.o && "
             "ar rcs build/libfmimage.a build/a.o build/b.o",
             tu_dir);
    assert_int_equal(system(cmd), 0);
}

static void test_library_follows_the_rule(void **state)
{
    (void)state;
    const char *bin = getenv("FM_BIN");
    char build[PATH_MAX];
    snprintf(build, sizeof build, "%s", bin && *bin ? bin : "build/fmimage");
    char *slash = strrchr(build, '/');
    if (slash) *slash = 0;
    else snprintf(build, sizeof build, ".");
    char out[16384];
    int rc = check(NULL, build, out, sizeof out);
    if (rc != 0) fail_msg("check_names.sh %s failed:\n%s", build, out);
    print_message("  %s", out);
}

static void expect_fails(const char *what, const char *why)
{
    char out[8192];
    build_lib();
    int rc = check(tu_dir, "build", out, sizeof out);
    if (rc != 1) fail_msg("%s: exit %d, expected 1:\n%s", what, rc, out);
    if (!strstr(out, why)) fail_msg("%s: output does not say \"%s\":\n%s", what, why, out);
}

static const char *const GOOD_A = "int fm_public(void);\nint core_helper(void);\n"
                                  "int fm_public(void) { return core_helper(); }\n";
static const char *const GOOD_B = "int core_helper(void) { return 1; }\n";

static void test_violations_fail(void **state)
{
    (void)state;
    char out[8192];
    tu_put("include/fmimage.h", "/* fm_only_in_a_comment */\nint fm_public(void);\n");
    tu_put("src/a.c", GOOD_A);
    tu_put("src/b.c", GOOD_B);
    build_lib();
    if (check(tu_dir, "build", out, sizeof out) != 0) fail_msg("a good archive fails:\n%s", out);

    tu_put("src/b.c", "int fm_hidden(void) { return 2; }\nint core_helper(void) { return fm_hidden(); }\n");
    tu_put("src/a.c", "int fm_hidden(void);\nint core_helper(void);\n"
                   "int fm_public(void) { return core_helper() + fm_hidden(); }\n");
    expect_fails("internal fm_", "b.o: fm_hidden: fm_ is the public API, and include/fmimage.h does not declare it");

    tu_put("src/a.c", "int fm_only_in_a_comment(void) { return 3; }\nint core_helper(void);\n"
                   "int fm_public(void) { return core_helper(); }\n");
    tu_put("src/b.c", GOOD_B);
    expect_fails("fm_ in a comment only", "a.o: fm_only_in_a_comment: fm_ is the public API");

    tu_put("src/a.c", "int helper(void);\nint fm_public(void) { return helper(); }\n");
    tu_put("src/b.c", "int helper(void) { return 1; }\n");
    expect_fails("no prefix", "b.o: helper: no module prefix");

    tu_put("src/a.c", GOOD_A);
    tu_put("src/b.c", "int core_helper(void) { return 1; }\nint core_lonely(void) { return 4; }\n");
    expect_fails("single user", "b.o: core_lonely: used only in its own file: make it static");

    tu_put("src/b.c", GOOD_B);
    build_lib();
    assert_int_equal(check(tu_dir, "build", out, sizeof out), 0);
}

int main(void)
{
    if (!getcwd(repo, sizeof repo)) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_library_follows_the_rule),
        cmocka_unit_test(test_violations_fail),
    };
    return cmocka_run_group_tests(tests, tu_make_dir, tu_remove_dir);
}
