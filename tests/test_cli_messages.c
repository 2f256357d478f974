/* What the fmimage command says and how it ends (issue 14, items 14, 17,
 * 19): -v prints one line per stage and the peak RSS; the progress bar fits
 * the terminal and redraws in place (run under a pseudo-terminal); usage
 * errors carry one "fmimage: " prefix; -h is --help; --opt=value works on
 * the command line and in prompt files; SIGTERM/SIGHUP/SIGINT end a batch
 * with 128 + the signal, "interrupted" and the finished images kept;
 * --strength without -i is refused; seeds do not wrap. The tiny SD 1.x model
 * throughout. */
#include "cliutil.h"

#include <errno.h>
#include <pty.h>
#include <termios.h>

#include "../cli/promptfile.c"

#define MODEL "tests/data/tiny-sd1.safetensors"

static char root[256];

typedef struct outcome {
    int code;
    char out[8192], err[16384];
} outcome;

/* Runs fmimage (args without argv[0]) with stdout and stderr to files. */
static void run(const char *const *args, outcome *o)
{
    char out[320], err[320];
    snprintf(out, sizeof out, "%s/stdout", root);
    snprintf(err, sizeof err, "%s/stderr", root);
    o->code = cu_wait(cu_spawn(args, out, err));
    cu_slurp_into(out, o->out, sizeof o->out);
    cu_slurp_into(err, o->err, sizeof o->err);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void fresh_dir(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", root, name);
    assert_int_equal(mkdir(buf, 0777), 0);
}

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static int count_lines(const char *path)
{
    size_t len;
    uint8_t *b = cu_slurp(path, &len);
    if (!b) return -1;
    int n = 0;
    for (size_t i = 0; i < len; i++) n += b[i] == '\n';
    free(b);
    return n;
}

/* The PNG's parameters contain needle. */
static void assert_params_contain(const char *png, const char *needle)
{
    char *p = cu_png_parameters(png);
    if (!p) fail_msg("%s: no parameters chunk (or no file)", png);
    if (!strstr(p, needle)) fail_msg("%s: parameters lack '%s': %s", png, needle, p);
    free(p);
}

/* ---- item 19: messages ---- */

static void test_one_prefix(void **state)
{
    (void)state;
    outcome o;
    const char *none[] = {NULL};
    run(none, &o);
    assert_int_equal(o.code, 2);
    assert_string_equal(o.err, "fmimage: no prompt (see --help)\n");
    const char *two[] = {"a fox", "a hen", NULL};
    run(two, &o);
    assert_int_equal(o.code, 2);
    assert_string_equal(o.err, "fmimage: one prompt at a time (quote it)\n");
    /* Every usage error, one prefix. */
    static const char *const cases[][4] = {
        {"-q", NULL}, {"--steps", NULL}, {"--bogus", "x", NULL}, {"--prompt-file", "p", "x", NULL},
        {"--info", NULL}, {"--print-tokens", "a", "b", NULL}, {"-m", NULL}, {"--force=1", "x", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        run(cases[i], &o);
        assert_int_equal(o.code, 2);
        const char *nl = strchr(o.err, '\n');
        if (strncmp(o.err, "fmimage: ", 9) || strstr(o.err, "fmimage: fmimage") || !nl || nl[1])
            fail_msg("case %zu: not one 'fmimage: ' line: %s", i, o.err);
    }
}

static void test_h_is_help(void **state)
{
    (void)state;
    outcome h, help;
    const char *a[] = {"-h", NULL}, *b[] = {"--help", NULL};
    run(a, &h);
    run(b, &help);
    assert_int_equal(h.code, 0);
    assert_string_equal(h.err, "");
    assert_true(!strncmp(h.out, "usage: fmimage", 14));
    assert_string_equal(h.out, help.out);
}

/* Options that take no value, and short options inside a group, are named
 * as what they are. */
static void test_bad_option_named(void **state)
{
    (void)state;
    outcome o;
    const char *a[] = {"--force=1", "a fox", NULL};
    run(a, &o);
    assert_int_equal(o.code, 2);
    assert_string_equal(o.err, "fmimage: --force: takes no value\n");
    const char *b[] = {"-zq", "a fox", NULL};
    run(b, &o);
    assert_int_equal(o.code, 2);
    assert_string_equal(o.err, "fmimage: -z: unknown option (see --help)\n");
}

static void test_opt_equals_value_in_lines(void **state)
{
    (void)state;
    pf_line l;
    char why[160];
    const char *t = "--prompt=a red fox --steps=2 --seed=7 --negative_prompt= blurry --cfg_scale 5";
    assert_int_equal(pf_parse_line(t, strlen(t), 1, &l, why, sizeof why), 1);
    assert_string_equal(l.prompt, "a red fox");
    assert_int_equal(l.steps, 2);
    assert_int_equal(l.seed, 7);
    assert_true(l.has_seed);
    assert_string_equal(l.negative, " blurry"); /* = --negative_prompt "" blurry (A1111 joins with a space) */
    assert_true(l.cfg == 5.0f);
    pf_line_free(&l);
    /* A bad value is still named. */
    t = "--prompt x --steps=zero";
    assert_int_equal(pf_parse_line(t, strlen(t), 1, &l, why, sizeof why), -1);
    assert_string_equal(why, "bad value for --steps: zero");
}

static void test_opt_equals_value_end_to_end(void **state)
{
    (void)state;
    char dir[300], pf[320], png[400];
    fresh_dir(dir, sizeof dir, "equals");
    snprintf(pf, sizeof pf, "%s/prompts.txt", dir);
    write_file(pf, "--prompt=\"a red fox\" --steps=2 --seed=7 --width=32 --height=32\n");
    char out[320];
    snprintf(out, sizeof out, "%s/out", dir);
    const char *a[] = {"-m", MODEL, "--prompt-file", pf, "-q", "-o", out, NULL};
    outcome o;
    run(a, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    snprintf(png, sizeof png, "%s/00000-7.png", out);
    assert_params_contain(png, "a red fox\nSteps: 2, ");
    assert_params_contain(png, "Size: 32x32");
    /* and on the command line */
    snprintf(png, sizeof png, "%s/cmd.png", dir);
    char opt[420];
    snprintf(opt, sizeof opt, "--output=%s", png);
    const char *b[] = {"-m", MODEL, "a hen", "--steps=1", "--seed=3", "--width=32", "-H", "32", "-q", opt, NULL};
    run(b, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    assert_params_contain(png, "Steps: 1, ");
    assert_params_contain(png, "Seed: 3,");
}

static void test_strength_needs_init_image(void **state)
{
    (void)state;
    char dir[300], png[400];
    fresh_dir(dir, sizeof dir, "strength");
    snprintf(png, sizeof png, "%s/a.png", dir);
    const char *a[] = {"-m", MODEL, "a fox", "-W", "32", "-H", "32", "--steps", "1", "-q",
                       "--strength", "0.5", "-o", png, NULL};
    outcome o;
    run(a, &o);
    assert_int_equal(o.code, 2);
    assert_string_equal(o.err, "fmimage: --strength: only for img2img (needs -i/--init-image)\n");
    assert_int_equal(count_entries(dir), 0);
    /* with an init image it is img2img's strength */
    char init[400];
    snprintf(init, sizeof init, "%s/init.png", dir);
    uint8_t rgb[32 * 32 * 3];
    for (size_t i = 0; i < sizeof rgb; i++) rgb[i] = (uint8_t)(i * 7);
    fm_error err = {0};
    assert_int_equal(fm_png_write(init, rgb, 32, 32, NULL, &err), 0);
    const char *b[] = {"-m", MODEL, "a fox", "-W", "32", "-H", "32", "--steps", "2", "-q",
                       "--strength", "0.5", "-i", init, "-o", png, NULL};
    run(b, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    assert_params_contain(png, "Denoising strength: 0.5");
}

/* ---- item 19: seeds do not wrap ---- */

static void test_seeds_do_not_wrap(void **state)
{
    (void)state;
    char dir[300], out[400];
    fresh_dir(dir, sizeof dir, "seeds");
    snprintf(out, sizeof out, "%s/batch", dir);
    outcome o;
    const char *a[] = {"-m", MODEL, "a fox", "-W", "32", "-H", "32", "--steps", "1", "-q",
                       "--seed", "4294967295", "--batch-count", "2", "-o", out, NULL};
    run(a, &o);
    assert_int_equal(o.code, 2);
    assert_string_equal(o.err, "fmimage: --seed: images 4294967295..4294967296 pass the largest seed "
                               "4294967295 (seeds do not wrap)\n");
    assert_false(cu_exists(out));
    /* up to the last seed is fine */
    a[11] = "4294967294";
    run(a, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    char png[500];
    snprintf(png, sizeof png, "%s/00001-4294967295.png", out);
    assert_params_contain(png, "Seed: 4294967295,");
    /* A prompt-file line whose own seeds run out fails alone. */
    char pf[400], out2[400];
    snprintf(pf, sizeof pf, "%s/prompts.txt", dir);
    snprintf(out2, sizeof out2, "%s/lines", dir);
    write_file(pf, "--prompt a --seed 4294967295 --n_iter 2\n--prompt b --seed 5\n");
    const char *b[] = {"-m", MODEL, "--prompt-file", pf, "-W", "32", "-H", "32", "--steps", "1", "-q",
                       "-o", out2, NULL};
    run(b, &o);
    assert_int_equal(o.code, 1);
    char expect[600];
    snprintf(expect, sizeof expect,
             "fmimage: %s:1: --seed: images 4294967295..4294967296 pass the largest seed 4294967295 "
             "(seeds do not wrap)\n", pf);
    assert_string_equal(o.err, expect);
    snprintf(png, sizeof png, "%s/00001-5.png", out2); /* the bad line holds job 0 */
    assert_true(cu_exists(png));
    snprintf(png, sizeof png, "%s/manifest.jsonl", out2);
    assert_int_equal(count_lines(png), 1);
    /* A base seed that runs out over the file's lines is a usage error. */
    write_file(pf, "a\nb\n");
    const char *c[] = {"-m", MODEL, "--prompt-file", pf, "--seed", "4294967295", "-q", "-o", out2, NULL};
    run(c, &o);
    assert_int_equal(o.code, 2);
    assert_string_equal(o.err, "fmimage: --seed: images 4294967295..4294967296 pass the largest seed "
                               "4294967295 (seeds do not wrap)\n");
}

/* ---- item 19: signals ---- */

static int wait_for_line(const char *path, pid_t pid, double seconds)
{
    for (double t = 0; t < seconds; t += 0.02) {
        if (cu_exists(path) && count_lines(path) >= 1) return 1;
        if (waitpid(pid, NULL, WNOHANG) == pid) return 0;
        usleep(20 * 1000);
    }
    return 0;
}

/* Sends sig (then `then`, if non-zero) to a batch in its second image. */
static void interrupt_batch(int sig, const char *name, int then)
{
    char dir[300], pf[400], out[400], png[500];
    snprintf(dir, sizeof dir, "%s/signal-%s-%d", root, name, then);
    assert_int_equal(mkdir(dir, 0777), 0);
    snprintf(pf, sizeof pf, "%s/prompts.txt", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    write_file(pf, "--prompt quick --steps 1\n--prompt slow --steps 1000\n");
    char err_path[500];
    snprintf(err_path, sizeof err_path, "%s/stderr", dir);
    const char *args[] = {"-m", MODEL, "--prompt-file", pf, "-W", "32", "-H", "32", "--seed", "3", "-q",
                          "-o", out, NULL};
    pid_t pid = cu_spawn(args, NULL, err_path);
    snprintf(png, sizeof png, "%s/00000-3.png", out);
    char manifest[500];
    snprintf(manifest, sizeof manifest, "%s/manifest.jsonl", out);
    /* The manifest line is the last step of the first image (signals are
     * held from its temporary file to that line: two signals held together
     * would arrive in signal-number order, not in sending order). */
    if (!wait_for_line(manifest, pid, 120)) {
        kill(pid, SIGKILL);
        fail_msg("%s: the first image never appeared", name);
    }
    usleep(200 * 1000); /* into the second image's 1000 steps */
    kill(pid, sig); /* the re-exec keeps the pid */
    /* The second signal after the first has surely been handled: signals
     * pending together are taken in signal-number order, and two threads
     * may take one each, so "first" means first handled. */
    if (then) {
        usleep(300 * 1000);
        kill(pid, then);
    }
    int code = cu_wait(pid);
    char err[4096];
    cu_slurp_into(err_path, err, sizeof err);
    if (code != 128 + sig) fail_msg("%s: exit %d, expected %d; stderr: %s", name, code, 128 + sig, err);
    char expect[80];
    snprintf(expect, sizeof expect, "fmimage: interrupted by %s\n", name);
    assert_string_equal(err, expect);
    /* the finished image and its manifest line kept, nothing else */
    assert_true(cu_exists(png));
    assert_int_equal(count_lines(manifest), 1);
    assert_int_equal(count_entries(out), 2);
}

static void test_signals_exit_128_plus(void **state)
{
    (void)state;
    interrupt_batch(SIGTERM, "SIGTERM", 0);
    interrupt_batch(SIGHUP, "SIGHUP", 0);
    interrupt_batch(SIGINT, "SIGINT", 0);
    /* a second signal changes nothing: the first one is reported */
    interrupt_batch(SIGTERM, "SIGTERM", SIGINT);
    interrupt_batch(SIGINT, "SIGINT", SIGINT);
}

/* ---- item 14: -v ---- */

/* stderr has a line "LABEL: STAGE <seconds> s". */
static int has_stage(const char *err, const char *label, const char *stage)
{
    char head[200];
    int n = snprintf(head, sizeof head, "%s: %s ", label, stage);
    for (const char *l = err; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        double s;
        char unit[4], nl;
        if (!strncmp(l, head, (size_t)n) && sscanf(l + n, "%lf %3s%c", &s, unit, &nl) == 3 && s >= 0 &&
            !strcmp(unit, "s") && nl == '\n')
            return 1;
    }
    return 0;
}

static void test_verbose_stages(void **state)
{
    (void)state;
    char dir[300], png[400];
    fresh_dir(dir, sizeof dir, "verbose");
    snprintf(png, sizeof png, "%s/v.png", dir);
    const char *a[] = {"-m", MODEL, "a fox", "-W", "32", "-H", "32", "--steps", "3", "--seed", "1",
                       "-v", "-o", png, NULL};
    outcome o;
    run(a, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    static const char *const stages[] = {"text encode", "plan", "step 1/3", "step 2/3", "step 3/3",
                                         "sampling", "decode", "write"};
    for (size_t i = 0; i < sizeof stages / sizeof stages[0]; i++)
        if (!has_stage(o.err, png, stages[i])) fail_msg("no '%s' line: %s", stages[i], o.err);
    assert_false(has_stage(o.err, png, "init encode")); /* txt2img */
    /* the stages in order, the peak RSS last */
    const char *te = strstr(o.err, ": text encode "), *s3 = strstr(o.err, ": step 3/3 "),
               *de = strstr(o.err, ": decode "), *wr = strstr(o.err, ": write "),
               *rss = strstr(o.err, "\nfmimage: peak RSS "), *pl = strstr(o.err, ": plan "),
               *s1 = strstr(o.err, ": step 1/3 ");
    assert_non_null(rss);
    assert_true(te < pl && pl < s1 && s1 < s3 && s3 < de && de < wr && wr < rss);
    /* the phases before the first U-Net call, each with its seconds, and
     * their total from the process's start, once, right after the plan */
    static const char *const phases[] = {"fmimage: load (mapping, detection, binding) ", "fmimage: model hash ",
                                         "fmimage: precision decision ", "fmimage: convolution decision "};
    for (size_t i = 0; i < sizeof phases / sizeof phases[0]; i++) {
        const char *l = strstr(o.err, phases[i]);
        double sec;
        if (!l || sscanf(l + strlen(phases[i]), "%lf s\n", &sec) != 1 || sec < 0 || l > te)
            fail_msg("no '%s' line before the text encode: %s", phases[i], o.err);
    }
    const char *first = strstr(o.err, "\nfmimage: first U-Net call ");
    double since, cpu;
    assert_non_null(first);
    if (!(first > pl && first < s1)) fail_msg("first U-Net call line out of place: %s", o.err);
    assert_int_equal(sscanf(first, "\nfmimage: first U-Net call %lf s after the process started (%lf s CPU", &since, &cpu), 2);
    assert_true(since > 0 && cpu > 0);
    assert_null(strstr(first + 2, "fmimage: first U-Net call "));
    double mb;
    char nl;
    assert_int_equal(sscanf(rss, "\nfmimage: peak RSS %lf MB%c", &mb, &nl), 2);
    assert_true(mb > 1 && nl == '\n');
    assert_int_equal(rss[strcspn(rss + 1, "\n") + 2], 0); /* the last line */
    /* img2img adds the init image's encode */
    char init[400];
    snprintf(init, sizeof init, "%s/init.png", dir);
    uint8_t rgb[32 * 32 * 3] = {0};
    fm_error err = {0};
    assert_int_equal(fm_png_write(init, rgb, 32, 32, NULL, &err), 0);
    const char *b[] = {"-m", MODEL, "a fox", "-W", "32", "-H", "32", "--steps", "4", "-i", init, "-q",
                       "-v", "-o", png, "--force", NULL};
    run(b, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    assert_true(has_stage(o.err, png, "init encode"));
    assert_true(has_stage(o.err, png, "decode"));
    /* -q keeps -v's lines but drops the per-image line */
    assert_null(strstr(o.err, " steps "));
    /* without -v: none of it */
    const char *c[] = {"-m", MODEL, "a fox", "-W", "32", "-H", "32", "--steps", "3", "--seed", "1",
                       "-o", png, "--force", NULL};
    run(c, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    char expect[500];
    snprintf(expect, sizeof expect, "%s 3 steps ", png);
    if (strncmp(o.err, expect, strlen(expect)) || strchr(o.err, '\n')[1])
        fail_msg("without -v, expected only the final line: %s", o.err);
}

/* ---- item 17: the bar under a 40-column pseudo-terminal ---- */

typedef struct pty_run {
    int code;
    char out[65536];
    size_t len;
} pty_run;

/* Runs fmimage with stdin, stdout and stderr on a pseudo-terminal of the
 * given size (raw: no \n -> \r\n), COLUMNS as given (NULL: unset). */
static void run_pty(const char *const *args, int cols, const char *columns_env, pty_run *r)
{
    const char *argv[64];
    int n = 0;
    argv[n++] = cu_bin();
    for (; args[n - 1] && n < 63; n++) argv[n] = args[n - 1];
    argv[n] = NULL;
    struct termios t;
    memset(&t, 0, sizeof t);
    cfmakeraw(&t);
    struct winsize ws = {.ws_row = 24, .ws_col = (unsigned short)cols};
    int master;
    pid_t pid = forkpty(&master, NULL, &t, &ws);
    assert_true(pid >= 0);
    if (pid == 0) {
        if (columns_env) setenv("COLUMNS", columns_env, 1);
        else unsetenv("COLUMNS");
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    r->len = 0;
    for (;;) {
        ssize_t k = read(master, r->out + r->len, sizeof r->out - 1 - r->len);
        if (k > 0) r->len += (size_t)k;
        else if (k < 0 && errno == EINTR) continue;
        else break; /* EIO: the child closed the terminal */
        if (r->len == sizeof r->out - 1) break;
    }
    r->out[r->len] = 0;
    close(master);
    r->code = cu_wait(pid);
}

/* Every stretch between \r and \n, escape sequences ("\033[K") left out,
 * is at most cols columns (one per UTF-8 code point); returns the number
 * of \r (redraws) and puts the number of \n in *newlines. */
static int check_width(const char *s, int cols, int *newlines)
{
    int w = 0, cr = 0;
    *newlines = 0;
    for (; *s; s++) {
        if (*s == '\r' || *s == '\n') {
            cr += *s == '\r';
            *newlines += *s == '\n';
            w = 0;
        } else if (*s == '\033') {
            if (s[1] == '[')
                for (s += 2; *s && !(*s >= '@' && *s <= '~'); s++) {}
            if (!*s) break;
        } else if (((unsigned char)*s & 0xc0) != 0x80 && ++w > cols) {
            fail_msg("a line is over %d columns: %s", cols, s - w + 1);
        }
    }
    return cr;
}

static void test_progress_fits_terminal(void **state)
{
    (void)state;
    char dir[300];
    fresh_dir(dir, sizeof dir, "pty");
    /* a batch: labels "00000-1.png" */
    char out[400];
    snprintf(out, sizeof out, "%s/batch", dir);
    const char *a[] = {"-m", MODEL, "a fox", "-W", "32", "-H", "32", "--steps", "12", "--seed", "1",
                       "--batch-count", "2", "-o", out, NULL};
    static pty_run r;
    run_pty(a, 40, NULL, &r);
    if (r.code) fail_msg("exit %d: %s", r.code, r.out);
    int nl, cr = check_width(r.out, 40, &nl);
    assert_int_equal(nl, 2);     /* one final line per image, the bar never wraps */
    assert_true(cr >= 2 * 12);   /* redrawn in place, every step */
    assert_non_null(strstr(r.out, "00000-1.png 12 steps "));
    assert_non_null(strstr(r.out, "00001-2.png 12 steps "));
    assert_non_null(strstr(r.out, "12/12"));
    /* a single image with a path longer than the terminal is wide */
    char png[500];
    snprintf(png, sizeof png, "%s/a-rather-long-name-for-one-image.png", dir);
    const char *b[] = {"-m", MODEL, "a fox", "-W", "32", "-H", "32", "--steps", "6", "--seed", "1", "-o", png, NULL};
    run_pty(b, 40, NULL, &r);
    if (r.code) fail_msg("exit %d: %s", r.code, r.out);
    cr = check_width(r.out, 40, &nl);
    assert_int_equal(nl, 1);
    assert_true(cr >= 6);
    assert_non_null(strstr(r.out, "image.png 6 steps "));
    /* no size from the terminal: $COLUMNS */
    const char *c[] = {"-m", MODEL, "a fox", "-W", "32", "-H", "32", "--steps", "6", "--seed", "1", "-o", png,
                       "--force", NULL};
    run_pty(c, 0, "30", &r);
    if (r.code) fail_msg("exit %d: %s", r.code, r.out);
    cr = check_width(r.out, 30, &nl);
    assert_int_equal(nl, 1);
    assert_true(cr >= 6);
    /* not a terminal: the final line only */
    outcome o;
    run(c, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    assert_null(strchr(o.err, '\r'));
    assert_null(strchr(o.err, '\033'));
    assert_int_equal(strchr(o.err, '\n')[1], 0);
}

int main(void)
{
    cu_tempdir(root, sizeof root, "messages");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_prefix),
        cmocka_unit_test(test_h_is_help),
        cmocka_unit_test(test_bad_option_named),
        cmocka_unit_test(test_opt_equals_value_in_lines),
        cmocka_unit_test(test_opt_equals_value_end_to_end),
        cmocka_unit_test(test_strength_needs_init_image),
        cmocka_unit_test(test_seeds_do_not_wrap),
        cmocka_unit_test(test_signals_exit_128_plus),
        cmocka_unit_test(test_verbose_stages),
        cmocka_unit_test(test_progress_fits_terminal),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
