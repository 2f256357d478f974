/* Hostile output locations and resume through the fmimage command (issue 14,
 * items 4-13, 15, 18): never destroy what is not ours (devices, FIFOs,
 * files behind planted symlinks), never trust what is there (broken or
 * stale PNGs, torn manifests), and leave exactly one complete PNG and one
 * manifest line per job whatever kills and races happen. The tiny SD 1.x
 * model at 32x32 throughout, so a 12-job batch takes about a second. */
#include "cliutil.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/sysmacros.h>

#include "core/sha256.h"

#define MODEL "tests/data/tiny-sd1.safetensors"

static char root[256];

typedef struct outcome {
    int code;
    char err[16384];
} outcome;

/* Runs fmimage with the common fast settings plus args; fsize > 0 sets a
 * file-size limit (ulimit -f) in bytes. */
static void run_ex(const char *const *args, rlim_t fsize, outcome *o)
{
    const char *argv[80];
    static const char *const common[] = {"-m", MODEL, "-W", "32", "-H", "32", "--steps", "2", "--sampler", "euler"};
    int n = 0;
    argv[n++] = cu_bin();
    for (size_t i = 0; i < sizeof common / sizeof common[0]; i++) argv[n++] = common[i];
    for (int i = 0; args[i] && n < 79; i++) argv[n++] = args[i];
    argv[n] = NULL;
    char err_path[320];
    snprintf(err_path, sizeof err_path, "%s/stderr-%d", root, (int)getpid());
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0666);
        int nul = open("/dev/null", O_RDWR);
        if (fd < 0 || nul < 0) _exit(127);
        dup2(nul, 0);
        dup2(nul, 1);
        dup2(fd, 2);
        if (fsize) {
            struct rlimit rl = {fsize, fsize};
            if (setrlimit(RLIMIT_FSIZE, &rl)) _exit(127);
        }
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    o->code = cu_wait(pid);
    o->err[0] = 0;
    FILE *f = fopen(err_path, "r");
    if (f) {
        size_t r = fread(o->err, 1, sizeof o->err - 1, f);
        o->err[r] = 0;
        fclose(f);
    }
    unlink(err_path);
}

static void run(const char *const *args, outcome *o) { run_ex(args, 0, o); }

static void assert_stderr_has(const outcome *o, const char *needle)
{
    if (!strstr(o->err, needle)) fail_msg("stderr lacks '%s': %s", needle, o->err);
}

/* Exactly one line "fmimage: ..." containing needle, and the exit code. */
static void assert_refused(const outcome *o, int code, const char *needle)
{
    const char *nl = strchr(o->err, '\n');
    if (o->code != code) fail_msg("exit %d, expected %d; stderr: %s", o->code, code, o->err);
    if (strncmp(o->err, "fmimage: ", 9) || !nl || nl[1]) fail_msg("not one 'fmimage: ' line: %s", o->err);
    assert_stderr_has(o, needle);
}

static void fresh_dir(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", root, name);
    assert_int_equal(mkdir(buf, 0777), 0);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void file_sha(const char *path, char hex[65])
{
    size_t len = 0;
    uint8_t *d = cu_slurp(path, &len);
    if (!d) fail_msg("cannot read %s", path);
    core_sha256_hex(d, len, hex);
    free(d);
}

/* A complete PNG as libpng and stb see it: every pixel decodes. */
static int png_decodes(const char *path)
{
    int w, h;
    fm_error e = {0};
    uint8_t *rgb = fm_image_read(path, &w, &h, &e);
    free(rgb);
    return rgb != NULL && w == 32 && h == 32;
}

/* ---- the state of a directory, to show nothing outside changed ---- */

typedef struct snapshot {
    char names[32][256];
    char what[32][80]; /* type, rdev or content digest */
    int n;
} snapshot;

static void take_snapshot(const char *dir, const char *skip, snapshot *s)
{
    s->n = 0;
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d)) && s->n < 32) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || (skip && !strcmp(e->d_name, skip)) ||
            !strncmp(e->d_name, "stderr-", 7))
            continue;
        char p[600];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        struct stat sb;
        assert_int_equal(lstat(p, &sb), 0);
        snprintf(s->names[s->n], sizeof s->names[0], "%s", e->d_name);
        if (S_ISREG(sb.st_mode)) {
            char hex[65];
            file_sha(p, hex);
            snprintf(s->what[s->n], sizeof s->what[0], "file %s", hex);
        } else if (S_ISLNK(sb.st_mode)) {
            char t[256] = "";
            ssize_t k = readlink(p, t, sizeof t - 1);
            t[k > 0 ? k : 0] = 0;
            snprintf(s->what[s->n], sizeof s->what[0], "link %.70s", t);
        } else {
            snprintf(s->what[s->n], sizeof s->what[0], "mode %o rdev %lx", (unsigned)sb.st_mode,
                     (unsigned long)sb.st_rdev);
        }
        s->n++;
    }
    closedir(d);
}

static void assert_same_snapshot(const snapshot *a, const snapshot *b)
{
    if (a->n != b->n) fail_msg("%d entries became %d", a->n, b->n);
    for (int i = 0; i < a->n; i++) {
        int found = 0;
        for (int j = 0; j < b->n; j++)
            if (!strcmp(a->names[i], b->names[j])) {
                found = 1;
                if (strcmp(a->what[i], b->what[j])) fail_msg("%s changed: %s -> %s", a->names[i], a->what[i], b->what[j]);
            }
        if (!found) fail_msg("%s disappeared", a->names[i]);
    }
}

/* ---- batch directory checks ---- */

/* The directory holds exactly n complete PNGs, nothing temporary, and a
 * manifest of exactly n lines, each a JSON object naming a distinct PNG of
 * the directory with that file's SHA-256. */
static void assert_complete_batch(const char *dir, int n)
{
    DIR *d = opendir(dir);
    assert_non_null(d);
    struct dirent *e;
    int pngs = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, "manifest.jsonl")) continue;
        char p[600];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        size_t len = strlen(e->d_name);
        if (len < 4 || strcmp(e->d_name + len - 4, ".png")) fail_msg("%s: not ours (a temporary left?)", p);
        struct stat sb;
        assert_int_equal(lstat(p, &sb), 0);
        if (!S_ISREG(sb.st_mode)) fail_msg("%s is not a regular file", p);
        if (!png_decodes(p)) fail_msg("%s is not a complete PNG", p);
        pngs++;
    }
    closedir(d);
    assert_int_equal(pngs, n);
    char mpath[600];
    snprintf(mpath, sizeof mpath, "%s/manifest.jsonl", dir);
    size_t len = 0;
    char *text = (char *)cu_slurp(mpath, &len);
    assert_non_null(text);
    assert_true(len > 0 && text[len - 1] == '\n');
    char seen[64][64];
    int lines = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        cJSON *j = cJSON_Parse(line);
        if (!j) fail_msg("manifest line %d is not JSON: %s", lines + 1, line);
        const cJSON *file = cJSON_GetObjectItemCaseSensitive(j, "file");
        const cJSON *sha = cJSON_GetObjectItemCaseSensitive(j, "sha256");
        assert_true(cJSON_IsString(file) && cJSON_IsString(sha));
        assert_true(lines < 64);
        for (int i = 0; i < lines; i++)
            if (!strcmp(seen[i], file->valuestring)) fail_msg("%s listed twice", file->valuestring);
        snprintf(seen[lines], sizeof seen[0], "%s", file->valuestring);
        char p[700], hex[65];
        snprintf(p, sizeof p, "%s/%s", dir, file->valuestring);
        file_sha(p, hex);
        if (strcmp(hex, sha->valuestring)) fail_msg("%s: manifest digest is not the file's", p);
        cJSON_Delete(j);
    }
    free(text);
    assert_int_equal(lines, n);
}

/* ---- items 4, 5: devices, FIFOs, dangling links as the single output ---- */

/* ---- item 4: devices and FIFOs as the output ---- */

/* A character device (1,3) at path; a container without CAP_MKNOD skips. */
static void make_null_device(const char *path)
{
    if (mknod(path, S_IFCHR | 0666, makedev(1, 3)) == 0) return;
    if (errno != EPERM) fail_msg("mknod %s: %s", path, strerror(errno));
    print_message("[  SKIPPED ] mknod: %s (no CAP_MKNOD here)\n", strerror(errno));
    skip();
}

static void test_char_device_as_root(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        print_message("[  SKIPPED ] mknod needs root: the character-device case runs as root (CI)\n");
        skip();
    }
    char dir[300], dev[400], link[400];
    fresh_dir(dir, sizeof dir, "chardev");
    snprintf(dev, sizeof dev, "%s/null", dir);
    /* Our own /dev/null twin (1,3), never the system's. */
    make_null_device(dev);
    snprintf(link, sizeof link, "%s/stdout", dir);
    assert_int_equal(symlink("null", link), 0);
    snapshot before, after;
    take_snapshot(dir, NULL, &before);
    outcome o;
    const char *a1[] = {"a fox", "-q", "--force", "-o", dev, NULL};
    run(a1, &o);
    struct stat sb;
    assert_int_equal(lstat(dev, &sb), 0);
    if (!S_ISCHR(sb.st_mode) || sb.st_rdev != makedev(1, 3)) fail_msg("the device was replaced: %s", o.err);
    assert_refused(&o, 1, "null: not a regular file (character device)");
    const char *a2[] = {"a fox", "-q", "-o", dev, NULL};
    run(a2, &o);
    assert_refused(&o, 1, "null: not a regular file (character device)");
    /* A link to it (as /dev/stdout is) is not replaced either. */
    const char *a3[] = {"a fox", "-q", "--force", "-o", link, NULL};
    run(a3, &o);
    assert_refused(&o, 1, "stdout: not a regular file (symbolic link to a character device)");
    take_snapshot(dir, NULL, &after);
    assert_same_snapshot(&before, &after);
}

static void test_char_device_in_batch_as_root(void **state)
{
    (void)state;
    if (geteuid() != 0) {
        print_message("[  SKIPPED ] mknod needs root: the character-device case runs as root (CI)\n");
        skip();
    }
    char out[300], job[500];
    fresh_dir(out, sizeof out, "chardev-batch");
    snprintf(job, sizeof job, "%s/00000-4.png", out);
    make_null_device(job);
    /* A device under a job's name fails that job alone, even with --force. */
    outcome o;
    const char *a[] = {"a fox", "-q", "--force", "--seed", "4", "--batch-count", "2", "-o", out, NULL};
    run(a, &o);
    struct stat sb;
    assert_int_equal(lstat(job, &sb), 0);
    if (!S_ISCHR(sb.st_mode)) fail_msg("the device was replaced: %s", o.err);
    if (o.code != 1) fail_msg("exit %d: %s", o.code, o.err);
    assert_stderr_has(&o, "00000-4.png: not a regular file (character device)");
    snprintf(job, sizeof job, "%s/00001-5.png", out);
    assert_true(png_decodes(job));
}

static void test_fifo_is_not_replaced(void **state)
{
    (void)state;
    char out[300], fifo[400];
    fresh_dir(out, sizeof out, "fifo");
    /* A FIFO is refused outright: nothing is opened on it, so nothing
     * blocks waiting for a reader. */
    snprintf(fifo, sizeof fifo, "%s/fifo", out);
    assert_int_equal(mkfifo(fifo, 0666), 0);
    outcome o;
    const char *a1[] = {"a fox", "-q", "--force", "-o", fifo, NULL};
    run(a1, &o);
    struct stat sb;
    assert_int_equal(lstat(fifo, &sb), 0);
    if (!S_ISFIFO(sb.st_mode)) fail_msg("the FIFO was replaced: %s", o.err);
    assert_refused(&o, 1, "fifo: not a regular file (FIFO)");
    const char *a2[] = {"a fox", "-q", "-o", fifo, NULL};
    run(a2, &o);
    assert_refused(&o, 1, "fifo: not a regular file (FIFO)");
    assert_int_equal(lstat(fifo, &sb), 0);
    assert_true(S_ISFIFO(sb.st_mode));
}

/* ---- item 5: links as the single output ---- */

static void test_dangling_link_output(void **state)
{
    (void)state;
    char dir[300], out[300], link[400], victim[400];
    fresh_dir(dir, sizeof dir, "dangling");
    fresh_dir(out, sizeof out, "dangling/out");
    /* A dangling link is an existing name: refused without --force; with
     * it the link itself becomes the image, its target is never created. */
    snprintf(victim, sizeof victim, "%s/victim.png", dir);
    snprintf(link, sizeof link, "%s/dangling.png", out);
    assert_int_equal(symlink("../victim.png", link), 0);
    snapshot before, after;
    take_snapshot(dir, "out", &before);
    outcome o;
    const char *a1[] = {"a fox", "-q", "-o", link, NULL};
    run(a1, &o);
    take_snapshot(dir, "out", &after);
    assert_same_snapshot(&before, &after);
    assert_refused(&o, 1, "dangling.png: exists (use --force to overwrite)");
    struct stat sb;
    assert_int_equal(lstat(link, &sb), 0);
    assert_true(S_ISLNK(sb.st_mode));
    const char *a2[] = {"a fox", "-q", "--force", "-o", link, NULL};
    run(a2, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    take_snapshot(dir, "out", &after);
    assert_same_snapshot(&before, &after);
    assert_int_equal(lstat(link, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    assert_true(png_decodes(link));
}

static void test_link_to_outside_file_output(void **state)
{
    (void)state;
    char dir[300], out[300], link[400], victim[400];
    fresh_dir(dir, sizeof dir, "tovictim");
    fresh_dir(out, sizeof out, "tovictim/out");
    snprintf(victim, sizeof victim, "%s/victim.png", dir);
    write_file(victim, "not an image\n");
    snprintf(link, sizeof link, "%s/tovictim.png", out);
    assert_int_equal(symlink("../victim.png", link), 0);
    snapshot before, after;
    take_snapshot(dir, "out", &before);
    outcome o;
    const char *a[] = {"a fox", "-q", "--force", "-o", link, NULL};
    run(a, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    take_snapshot(dir, "out", &after);
    assert_same_snapshot(&before, &after);
    struct stat sb;
    assert_int_equal(lstat(link, &sb), 0);
    assert_true(S_ISREG(sb.st_mode));
    assert_true(png_decodes(link));
}

/* ---- item 6: symlinks planted in a batch directory ---- */

static void test_planted_manifest_link(void **state)
{
    (void)state;
    char dir[300], out[300], p[500], secret[400], job[500];
    fresh_dir(dir, sizeof dir, "planted");
    fresh_dir(out, sizeof out, "planted/out");
    snprintf(secret, sizeof secret, "%s/secret.txt", dir);
    write_file(secret, "do not touch\n");
    snprintf(p, sizeof p, "%s/manifest.jsonl", out);
    assert_int_equal(symlink("../secret.txt", p), 0);
    snapshot before, after;
    take_snapshot(dir, "out", &before);
    outcome o;
    const char *a[] = {"a fox", "-q", "--seed", "1", "--batch-count", "2", "-o", out, NULL};
    run(a, &o);
    take_snapshot(dir, "out", &after);
    assert_same_snapshot(&before, &after);
    assert_refused(&o, 1, "manifest.jsonl: a symbolic link (refused)");
    snprintf(job, sizeof job, "%s/00000-1.png", out);
    assert_false(cu_exists(job));
}

static void test_planted_job_link(void **state)
{
    (void)state;
    char dir[300], out[300], job[500], outside[400];
    fresh_dir(dir, sizeof dir, "planted-job");
    fresh_dir(out, sizeof out, "planted-job/out");
    outcome o;
    const char *a[] = {"a fox", "--seed", "1", "--batch-count", "2", "-o", out, NULL};
    run(a, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    /* The job's PNG linked to a finished, matching image outside: a link is
     * not a finished job; it is replaced, the image outside untouched. */
    snprintf(job, sizeof job, "%s/00000-1.png", out);
    snprintf(outside, sizeof outside, "%s/finished.png", dir);
    assert_int_equal(rename(job, outside), 0);
    assert_int_equal(symlink("../finished.png", job), 0);
    snapshot before, after;
    take_snapshot(dir, "out", &before);
    run(a, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    take_snapshot(dir, "out", &after);
    assert_same_snapshot(&before, &after);
    struct stat sb;
    assert_int_equal(lstat(job, &sb), 0);
    if (!S_ISREG(sb.st_mode)) fail_msg("the planted link counted as a finished job: %s", o.err);
    assert_stderr_has(&o, "00000-1.png: replaced (was a symbolic link)");
    assert_stderr_has(&o, "fmimage: skipped 1 finished image\n");
    assert_complete_batch(out, 2);
}

/* ---- item 7: resume checks what is there ---- */

static const char *red_args[] = {"a red circle", "--seed", "10", "--batch-count", "3", "-o", NULL, NULL};

static void run_red(const char *out, outcome *o)
{
    const char *a[8];
    memcpy(a, red_args, sizeof a);
    a[6] = out;
    run(a, o);
    if (o->code) fail_msg("exit %d: %s", o->code, o->err);
}

static void test_resume_redoes_broken_files(void **state)
{
    (void)state;
    char out[300], p0[400], p1[400], want[2][65], hex[65];
    fresh_dir(out, sizeof out, "broken");
    outcome o;
    run_red(out, &o);
    snprintf(p0, sizeof p0, "%s/00000-10.png", out);
    snprintf(p1, sizeof p1, "%s/00001-11.png", out);
    file_sha(p0, want[0]);
    file_sha(p1, want[1]);
    /* An empty and a truncated file are not finished images. */
    assert_int_equal(truncate(p0, 0), 0);
    struct stat sb;
    stat(p1, &sb);
    assert_int_equal(truncate(p1, sb.st_size - 20), 0);
    run_red(out, &o);
    if (!png_decodes(p0) || !png_decodes(p1)) fail_msg("broken files kept: %s", o.err);
    file_sha(p0, hex);
    assert_string_equal(hex, want[0]);
    file_sha(p1, hex);
    assert_string_equal(hex, want[1]);
    assert_stderr_has(&o, "00000-10.png: replaced (not a complete PNG)");
    assert_stderr_has(&o, "00001-11.png: replaced (not a complete PNG)");
    assert_stderr_has(&o, "fmimage: skipped 1 finished image\n");
    assert_complete_batch(out, 3);
    /* Same settings: every image skipped and said so, nothing rewritten. */
    stat(p0, &sb);
    run_red(out, &o);
    assert_stderr_has(&o, "fmimage: skipped 3 finished images\n");
    struct stat sb2;
    stat(p0, &sb2);
    assert_true(sb.st_ino == sb2.st_ino && sb.st_mtim.tv_nsec == sb2.st_mtim.tv_nsec);
    /* -q silences the summary. */
    const char *q[] = {"a red circle", "-q", "--seed", "10", "--batch-count", "3", "-o", out, NULL};
    run(q, &o);
    assert_int_equal(o.code, 0);
    assert_string_equal(o.err, "");
}

/* ---- item 8: changed settings replace the images ---- */

static void test_changed_prompt_replaces(void **state)
{
    (void)state;
    char out[300], p0[400];
    fresh_dir(out, sizeof out, "changed");
    outcome o;
    run_red(out, &o);
    snprintf(p0, sizeof p0, "%s/00000-10.png", out);
    const char *green[] = {"a green square on a red background", "--seed", "10", "--batch-count", "3", "-o", out, NULL};
    run(green, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    char *params = cu_png_parameters(p0);
    assert_non_null(params);
    if (strncmp(params, "a green square on a red background\n", 35)) fail_msg("old image kept: %s", params);
    free(params);
    assert_stderr_has(&o, "00000-10.png: replaced (parameters changed)");
    assert_stderr_has(&o, "00002-12.png: replaced (parameters changed)");
    /* --force makes every image again (new files), listed once each. */
    struct stat sb, sb2;
    stat(p0, &sb);
    const char *force[] = {"a green square on a red background", "-q", "--force", "--seed", "10", "--batch-count", "3",
                           "-o", out, NULL};
    run(force, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    stat(p0, &sb2);
    assert_true(sb.st_ino != sb2.st_ino);
    /* The manifest: a line per image of the first run and one per replaced
     * image; read by name, the last line wins and has the green prompt. */
    char mpath[400];
    snprintf(mpath, sizeof mpath, "%s/manifest.jsonl", out);
    char *text = (char *)cu_slurp(mpath, NULL);
    assert_non_null(text);
    int lines = 0, green_lines = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        cJSON *j = cJSON_Parse(line);
        assert_non_null(j);
        const cJSON *pr = cJSON_GetObjectItemCaseSensitive(j, "prompt");
        green_lines += lines >= 3 && cJSON_IsString(pr) && !strcmp(pr->valuestring, "a green square on a red background");
        cJSON_Delete(j);
    }
    free(text);
    assert_int_equal(lines, 6);
    assert_int_equal(green_lines, 3);
}

static void test_resume_without_metadata(void **state)
{
    (void)state;
    char out[300];
    fresh_dir(out, sizeof out, "nometa");
    outcome o;
    const char *a[] = {"a fox", "--metadata", "none", "--seed", "3", "--batch-count", "2", "-o", out, NULL};
    run(a, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    run(a, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    assert_stderr_has(&o, "fmimage: skipped 2 finished images\n");
    /* The manifest line vouches for a text-less PNG: another prompt redoes it. */
    const char *b[] = {"a cat", "--metadata", "none", "--seed", "3", "--batch-count", "2", "-o", out, NULL};
    run(b, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    assert_stderr_has(&o, "00000-3.png: replaced (parameters changed)");
}

/* ---- item 10: one line per image ---- */

static void test_deleted_image_one_line(void **state)
{
    (void)state;
    char out[300], p2[400];
    fresh_dir(out, sizeof out, "deleted");
    outcome o;
    run_red(out, &o);
    snprintf(p2, sizeof p2, "%s/00002-12.png", out);
    unlink(p2);
    run_red(out, &o);
    assert_stderr_has(&o, "skipped 2 finished images");
    assert_complete_batch(out, 3);
}

/* ---- item 9: torn manifest lines ---- */

static void test_torn_manifest_repaired(void **state)
{
    (void)state;
    char out[300], mpath[400];
    fresh_dir(out, sizeof out, "torn");
    snprintf(mpath, sizeof mpath, "%s/manifest.jsonl", out);
    /* A line for another image and half of one (a writer killed mid-write). */
    static const char torn[] = "{\"file\":\"00000-5.png\",\"jo";
    char text0[200], want[100];
    snprintf(text0, sizeof text0, "{\"file\":\"other.png\",\"job\":9}\n%s", torn);
    write_file(mpath, text0);
    outcome o;
    const char *b[] = {"a fox", "-q", "--seed", "5", "--batch-count", "2", "-o", out, NULL};
    run(b, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    size_t len;
    char *text = (char *)cu_slurp(mpath, &len);
    int lines = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n"), lines++) {
        cJSON *j = cJSON_Parse(line);
        if (!j) fail_msg("line %d is not JSON: %s", lines + 1, line);
        cJSON_Delete(j);
    }
    free(text);
    assert_int_equal(lines, 3);
    snprintf(want, sizeof want, "manifest.jsonl: removed a torn last line (%zu bytes)", strlen(torn));
    assert_stderr_has(&o, want);
}

static void test_failed_append_truncated_back(void **state)
{
    (void)state;
    char big[300], bpath[400];
    fresh_dir(big, sizeof big, "full");
    snprintf(bpath, sizeof bpath, "%s/manifest.jsonl", big);
    FILE *f = fopen(bpath, "w");
    for (int i = 0; i < 200; i++) fprintf(f, "{\"file\":\"old-%03d.png\",\"job\":%d,\"pad\":\"xxxxxxxxxxxxxxxxxxxx\"}\n", i, i);
    fclose(f);
    struct stat sb, sb2;
    stat(bpath, &sb);
    /* The file-size limit hits the manifest line, not the (smaller) PNG. */
    outcome o;
    const char *c[] = {"a fox", "-q", "--seed", "5", "--batch-count", "2", "-o", big, NULL};
    run_ex(c, (rlim_t)sb.st_size + 100, &o);
    stat(bpath, &sb2);
    if (sb2.st_size != sb.st_size) fail_msg("manifest %lld bytes, was %lld: %s", (long long)sb2.st_size, (long long)sb.st_size, o.err);
    assert_int_equal(o.code, 1);
    assert_stderr_has(&o, "manifest.jsonl: short write");
}

/* ---- item 11: stale temporary files ---- */

static void test_stale_temporaries_removed(void **state)
{
    (void)state;
    char out[300], stale[400], live[400], old[400];
    fresh_dir(out, sizeof out, "temps");
    /* Left by killed runs: fmimage 0.1's naming with a PID that has exited,
     * and ours with no lock held. */
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    waitpid(dead, NULL, 0);
    snprintf(old, sizeof old, "%s/.00000-1.png.tmp-%d", out, (int)dead);
    write_file(old, "half a png");
    snprintf(stale, sizeof stale, "%s/.fmimage-Ab12Cd", out);
    write_file(stale, "half a png");
    /* A live writer's file: locked, so kept. */
    snprintf(live, sizeof live, "%s/.fmimage-Ef34Gh", out);
    int fd = open(live, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX), 0);
    outcome o;
    const char *a[] = {"a fox", "-q", "--seed", "1", "--batch-count", "2", "-o", out, NULL};
    run(a, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    assert_false(cu_exists(old));
    assert_false(cu_exists(stale));
    assert_true(cu_exists(live));
    close(fd);
    unlink(live);
    assert_complete_batch(out, 2);
}

/* ---- item 12: the longest legal name ---- */

static void test_255_byte_name(void **state)
{
    (void)state;
    char out[300], name[256], path[700];
    fresh_dir(out, sizeof out, "longname");
    memset(name, 'n', 251);
    memcpy(name + 251, ".png", 5);
    snprintf(path, sizeof path, "%s/%s", out, name);
    outcome o;
    const char *b[] = {"a fox", "-q", "--seed", "1", "-o", path, NULL};
    run(b, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    assert_true(png_decodes(path));
}

/* ---- the acceptance run: kill -9 at random moments, then racing runs ---- */

static pid_t spawn_batch(const char *out, const char *shard)
{
    const char *args[] = {"-m", MODEL, "a fox in snow", "-W", "32", "-H", "32", "--steps", "4", "--sampler", "euler",
                          "--seed", "100", "--batch-count", "12", "-q", "-o", out, "--shard", shard, NULL};
    return cu_spawn(args, NULL, NULL);
}

static void test_kill9_and_races(void **state)
{
    (void)state;
    char out[300], timing[300];
    fresh_dir(timing, sizeof timing, "timing");
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(cu_wait(spawn_batch(timing, "0/1")), 0);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double total = (t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9;
    assert_complete_batch(timing, 12);
    fresh_dir(out, sizeof out, "killed");
    srand((unsigned)time(NULL));
    for (int k = 0; k < 5; k++) {
        pid_t pid = spawn_batch(out, "0/1");
        useconds_t delay = (useconds_t)((double)rand() / RAND_MAX * total * 1e6);
        print_message("kill -9 after %.3f s of %.3f s\n", delay * 1e-6, total);
        usleep(delay);
        kill(pid, SIGKILL);
        cu_wait(pid);
    }
    assert_int_equal(cu_wait(spawn_batch(out, "0/1")), 0);
    assert_complete_batch(out, 12);
    /* Two shards and an unsharded run at once on one directory, twice: the
     * second time with one of them killed midway. */
    for (int round = 0; round < 2; round++) {
        char race[300], name[16];
        snprintf(name, sizeof name, "race%d", round);
        fresh_dir(race, sizeof race, name);
        pid_t a = spawn_batch(race, "0/2"), b = spawn_batch(race, "0/1"), c = spawn_batch(race, "1/2");
        if (round == 1) {
            usleep((useconds_t)(total * 0.4e6));
            kill(b, SIGKILL);
        }
        int ca = cu_wait(a), cb = cu_wait(b), cc = cu_wait(c);
        assert_int_equal(ca, 0);
        assert_int_equal(cc, 0);
        if (round == 0) assert_int_equal(cb, 0);
        else assert_int_equal(cu_wait(spawn_batch(race, "0/1")), 0);
        assert_complete_batch(race, 12);
        /* Same bytes as one undisturbed run. */
        for (int j = 0; j < 12; j++) {
            char pa[500], pb[500], ha[65], hb[65];
            snprintf(pa, sizeof pa, "%s/%05d-%d.png", timing, j, 100 + j);
            snprintf(pb, sizeof pb, "%s/%05d-%d.png", race, j, 100 + j);
            file_sha(pa, ha);
            file_sha(pb, hb);
            assert_string_equal(ha, hb);
        }
    }
}

/* ---- items 13, 15: prompt files ---- */


/* ---- item 13: prompt-file read errors ---- */

static void test_prompt_file_is_a_directory(void **state)
{
    (void)state;
    char dir[300], out[400];
    fresh_dir(dir, sizeof dir, "pfdir");
    snprintf(out, sizeof out, "%s/ne", dir);
    outcome o;
    const char *a[] = {"--prompt-file", dir, "-o", out, NULL};
    run(a, &o);
    assert_false(cu_exists(out));
    char want[400];
    snprintf(want, sizeof want, "fmimage: %s: Is a directory\n", dir);
    assert_refused(&o, 1, want);
    /* A file whose read fails (its first page is not mapped): EIO. */
    const char *b[] = {"--prompt-file", "/proc/self/mem", "-o", out, NULL};
    run(b, &o);
    assert_false(cu_exists(out));
    assert_refused(&o, 1, "fmimage: /proc/self/mem: Input/output error\n");
}

/* ---- item 15: a byte order mark ---- */

static void test_prompt_file_bom(void **state)
{
    (void)state;
    char dir[300], out[400], pf[400], png[500];
    fresh_dir(dir, sizeof dir, "bom");
    snprintf(out, sizeof out, "%s/out", dir);
    snprintf(pf, sizeof pf, "%s/bom.txt", dir);
    /* The mark does not become part of the first line; later it is text. */
    write_file(pf, "\xef\xbb\xbf--prompt \"a cat\" --seed 3\n\xef\xbb\xbf" "a dog\n");
    outcome o;
    const char *b[] = {"--prompt-file", pf, "--seed", "50", "-q", "-o", out, NULL};
    run(b, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    snprintf(png, sizeof png, "%s/00000-3.png", out);
    char *params = cu_png_parameters(png);
    if (!params) fail_msg("%s missing: the first line's options were not read", png);
    assert_true(!strncmp(params, "a cat\n", 6));
    free(params);
    snprintf(png, sizeof png, "%s/00001-51.png", out);
    params = cu_png_parameters(png);
    assert_non_null(params);
    assert_true(!strncmp(params, "\xef\xbb\xbf" "a dog\n", 9));
    free(params);
}

/* ---- item 18: -o DIR for one image, -o NAME.png for several ---- */

static void test_single_image_into_directory(void **state)
{
    (void)state;
    char dir[300], p[500], d[400];
    fresh_dir(dir, sizeof dir, "intodir");
    outcome o;
    /* An existing directory receives fmimage-SEED.png. */
    const char *a[] = {"a fox", "-q", "--seed", "5", "-o", dir, NULL};
    run(a, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    snprintf(p, sizeof p, "%s/fmimage-5.png", dir);
    assert_true(png_decodes(p));
    run(a, &o);
    assert_refused(&o, 1, "fmimage-5.png: exists (use --force to overwrite)");
    /* A path ending in '/' is a directory, created. */
    snprintf(d, sizeof d, "%s/new/", dir);
    const char *b[] = {"a fox", "-q", "--seed", "6", "-o", d, NULL};
    run(b, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    snprintf(p, sizeof p, "%s/new/fmimage-6.png", dir);
    assert_true(png_decodes(p));
}

static void test_batch_with_png_name(void **state)
{
    (void)state;
    char dir[300], p[500], d[400];
    fresh_dir(dir, sizeof dir, "pngname");
    /* Several images and -o NAME.png: NAME-NNNNN-SEED.png beside it. */
    snprintf(d, sizeof d, "%s/b.png", dir);
    outcome o;
    const char *c[] = {"a fox", "--seed", "7", "--batch-count", "3", "-o", d, NULL};
    run(c, &o);
    if (o.code) fail_msg("exit %d: %s", o.code, o.err);
    assert_false(cu_exists(d));
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/b-%05d-%d.png", dir, i, 7 + i);
        assert_true(png_decodes(p));
    }
    snprintf(p, sizeof p, "%s/b-manifest.jsonl", dir);
    assert_true(cu_exists(p));
    run(c, &o);
    assert_int_equal(o.code, 0);
    assert_stderr_has(&o, "fmimage: skipped 3 finished images\n");
}

int main(void)
{
    cu_tempdir(root, sizeof root, "output");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_char_device_as_root),
        cmocka_unit_test(test_char_device_in_batch_as_root),
        cmocka_unit_test(test_fifo_is_not_replaced),
        cmocka_unit_test(test_dangling_link_output),
        cmocka_unit_test(test_link_to_outside_file_output),
        cmocka_unit_test(test_planted_manifest_link),
        cmocka_unit_test(test_planted_job_link),
        cmocka_unit_test(test_resume_redoes_broken_files),
        cmocka_unit_test(test_changed_prompt_replaces),
        cmocka_unit_test(test_resume_without_metadata),
        cmocka_unit_test(test_deleted_image_one_line),
        cmocka_unit_test(test_torn_manifest_repaired),
        cmocka_unit_test(test_failed_append_truncated_back),
        cmocka_unit_test(test_stale_temporaries_removed),
        cmocka_unit_test(test_255_byte_name),
        cmocka_unit_test(test_kill9_and_races),
        cmocka_unit_test(test_prompt_file_is_a_directory),
        cmocka_unit_test(test_prompt_file_bom),
        cmocka_unit_test(test_single_image_into_directory),
        cmocka_unit_test(test_batch_with_png_name),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
