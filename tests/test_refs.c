/* Every file a comment or document points at is in the repository.
 *
 * The reference data was made outside this repository, and comments used to
 * send the reader to documents that only existed there. This test walks the
 * repository (from the root, where `make test` runs it) and reads every
 * source, script and Markdown file. A path-like word that ends in ".md",
 * or that names the reference set's original directory (see the
 * DANGLING_DIR pattern below), must name a file of the repository: relative
 * to the file that mentions it, to the root, or as the tail of a repository
 * path ("DESIGN.md" is docs/DESIGN.md), tried in that order. A "#anchor" after a Markdown name
 * must be a heading of that file, in the GitHub spelling (lower case, spaces
 * to '-', other punctuation dropped). Words that start with "//" are URLs
 * and are not checked.
 *
 * Self-contained on purpose: it reads files only, with no part of the
 * library, so that moving modules around never breaks it. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

/* Written split so that this file does not match itself. */
#define DANGLING_DIR "golden" "/"
#define MD ".md"

typedef struct {
    char **path; /* repository-relative, no leading "./" */
    size_t n, cap;
} path_list;

static void list_push(path_list *l, const char *p)
{
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->path = realloc(l->path, l->cap * sizeof *l->path);
        assert_non_null(l->path);
    }
    l->path[l->n] = strdup(p);
    assert_non_null(l->path[l->n]);
    l->n++;
}

static void list_free(path_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->path[i]);
    free(l->path);
    memset(l, 0, sizeof *l);
}

/* Hidden entries (.git, .ci), build trees and vendored code are not ours to
 * check; everything else is part of the repository's tree. */
static int skip_entry(const char *name)
{
    return name[0] == '.' || !strncmp(name, "build", 5) || !strcmp(name, "third_party");
}

static void walk(path_list *l, const char *dir)
{
    DIR *d = opendir(dir[0] ? dir : ".");
    assert_non_null(d);
    struct dirent *e;
    while ((e = readdir(d))) {
        if (skip_entry(e->d_name))
            continue;
        char p[4096];
        snprintf(p, sizeof p, "%s%s%s", dir, dir[0] ? "/" : "", e->d_name);
        struct stat sb;
        if (stat(p, &sb))
            continue;
        if (S_ISDIR(sb.st_mode))
            walk(l, p);
        else
            list_push(l, p);
    }
    closedir(d);
}

static int ends_with(const char *s, size_t n, const char *suf)
{
    size_t k = strlen(suf);
    return n >= k && !memcmp(s + n - k, suf, k);
}

/* Lexical "a/b/../c" -> "a/c" (in place); 0 when it climbs out of the root. */
static int normalise(char *p)
{
    char *seg[512];
    int n = 0;
    for (char *s = strtok(p, "/"); s; s = strtok(NULL, "/")) {
        if (!strcmp(s, "."))
            continue;
        if (!strcmp(s, "..")) {
            if (!n)
                return 0;
            n--;
            continue;
        }
        if (n == 512)
            return 0;
        seg[n++] = s;
    }
    char out[4096] = "";
    for (int i = 0; i < n; i++) {
        if (i)
            strcat(out, "/");
        strncat(out, seg[i], sizeof out - strlen(out) - 2);
    }
    strcpy(p, out);
    return 1;
}

/* 1 when repository path p is the file (or, for a name ending in '/', lies
 * under the directory) that candidate c names. */
static int names(const char *p, const char *c, int is_dir)
{
    size_t cn = strlen(c);
    return cn && (is_dir ? !strncmp(p, c, cn) && p[cn] == '/' : !strcmp(p, c));
}

/* 1 when repository path p ends with the path tail t ("layouts/README.md",
 * "DESIGN.md"), at a '/' boundary; for a directory, contains it. */
static int has_tail(const char *p, const char *t, int is_dir)
{
    size_t pn = strlen(p), tn = strlen(t);
    if (!tn)
        return 0;
    if (is_dir) {
        char pat[4096];
        snprintf(pat, sizeof pat, "/%s", t);
        return !strncmp(p, t, tn) || strstr(p, pat) != NULL;
    }
    return pn >= tn && !strcmp(p + pn - tn, t) && (pn == tn || p[pn - tn - 1] == '/');
}

/* Index of the repository file that word names, or -1. Tried in order:
 * relative to the mentioning file's directory, relative to the root, then
 * as the tail of a repository path. */
static long find(const path_list *l, const char *word, const char *from_dir)
{
    size_t wn = strlen(word);
    int is_dir = wn && word[wn - 1] == '/';
    char rel[4096], root[4096];
    snprintf(rel, sizeof rel, "%s%s%s", from_dir, from_dir[0] ? "/" : "", word);
    snprintf(root, sizeof root, "%s", word);
    int rel_ok = normalise(rel), root_ok = normalise(root);
    const char *tail = word;
    while (!strncmp(tail, "./", 2) || !strncmp(tail, "../", 3))
        tail += tail[1] == '/' ? 2 : 3;
    for (int pass = 0; pass < 3; pass++) {
        for (size_t i = 0; i < l->n; i++) {
            const char *p = l->path[i];
            if ((pass == 0 && rel_ok && names(p, rel, is_dir)) || (pass == 1 && root_ok && names(p, root, is_dir)) ||
                (pass == 2 && has_tail(p, tail, is_dir)))
                return (long)i;
        }
    }
    return -1;
}

static char *read_all(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, fp)) > 0) {
        n += got;
        if (cap - n - 1 == 0) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
    }
    fclose(fp);
    buf[n] = 0;
    return buf;
}

/* GitHub's anchor for a heading text of n bytes. */
static void slug(const char *h, size_t n, char *out, size_t cap)
{
    size_t k = 0;
    for (size_t i = 0; i < n && k + 1 < cap; i++) {
        unsigned char c = (unsigned char)h[i];
        if (c >= 'A' && c <= 'Z')
            out[k++] = (char)(c - 'A' + 'a');
        else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_')
            out[k++] = (char)c;
        else if (c == ' ')
            out[k++] = '-';
        else if (c >= 0x80)
            out[k++] = (char)c; /* non-ASCII letters stay */
    }
    out[k] = 0;
}

/* 1 when the Markdown file at path has a heading whose anchor is anchor. */
static int has_anchor(const char *path, const char *anchor)
{
    char *text = read_all(path);
    if (!text)
        return 0;
    int found = 0;
    for (char *line = text; line && *line && !found;) {
        char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (line[0] == '#') {
            size_t i = 0;
            while (i < len && line[i] == '#')
                i++;
            while (i < len && line[i] == ' ')
                i++;
            size_t e = len;
            while (e > i && (line[e - 1] == ' ' || line[e - 1] == '\r'))
                e--;
            char s[512];
            slug(line + i, e - i, s, sizeof s);
            found = !strcmp(s, anchor);
        }
        line = end ? end + 1 : NULL;
    }
    free(text);
    return found;
}

static int path_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '.' || c == '/' || c == '-';
}

static int anchor_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Checks every path-like word of text (the contents of file `where`, in
 * directory from_dir); reports each dangling one to report (when not NULL)
 * and returns their count. */
static int check_text(const path_list *l, const char *where, const char *from_dir, const char *text,
                      FILE *report)
{
    int bad = 0, line = 1;
    for (const char *p = text; *p;) {
        if (*p == '\n')
            line++;
        if (!path_char(*p) || (p > text && path_char(p[-1]))) {
            p++;
            continue;
        }
        const char *s = p;
        while (path_char(*p))
            p++;
        size_t n = (size_t)(p - s);
        while (n && s[n - 1] == '.') /* sentence end: "see DESIGN.md." */
            n--;
        char word[1024];
        if (n == 0 || n >= sizeof word)
            continue;
        memcpy(word, s, n);
        word[n] = 0;
        int is_md = n > 3 && ends_with(word, n, MD) && word[n - 4] != '/';
        if (!is_md && !strstr(word, DANGLING_DIR))
            continue;
        if (!strncmp(word, "//", 2)) /* https://... */
            continue;
        const char *why = NULL;
        long at = word[0] == '/' ? -1 : find(l, word, from_dir);
        if (at < 0)
            why = word[0] == '/' ? "absolute path outside the repository" : "no such file in the repository";
        char anchor[256] = "";
        if (!why && is_md && s + n == p && *p == '#') {
            size_t k = 0;
            for (const char *a = p + 1; anchor_char(*a) && k + 1 < sizeof anchor; a++)
                anchor[k++] = *a;
            anchor[k] = 0;
            if (k && !has_anchor(l->path[at], anchor))
                why = "no such heading";
        }
        if (why && report)
            fprintf(report, "%s:%d: %s%s%s: %s\n", where, line, word, anchor[0] ? "#" : "", anchor, why);
        bad += why != NULL;
    }
    return bad;
}

static int scanned(const char *p)
{
    size_t n = strlen(p);
    const char *base = strrchr(p, '/');
    base = base ? base + 1 : p;
    return ends_with(p, n, ".c") || ends_with(p, n, ".h") || ends_with(p, n, ".md") || ends_with(p, n, ".py") ||
           ends_with(p, n, ".sh") || !strcmp(base, "Makefile");
}

static void test_no_dangling_paths(void **state)
{
    (void)state;
    path_list l = {0};
    walk(&l, "");
    assert_true(l.n > 100); /* run from the repository root */
    int bad = 0, files = 0;
    for (size_t i = 0; i < l.n; i++) {
        if (!scanned(l.path[i]))
            continue;
        char *text = read_all(l.path[i]);
        assert_non_null(text);
        char dir[4096];
        snprintf(dir, sizeof dir, "%s", l.path[i]);
        char *slash = strrchr(dir, '/');
        if (slash)
            *slash = 0;
        else
            dir[0] = 0;
        bad += check_text(&l, l.path[i], dir, text, stderr);
        free(text);
        files++;
    }
    print_message("%d files read, %d dangling path(s)\n", files, bad);
    list_free(&l);
    assert_int_equal(bad, 0);
}

/* The scanner itself, on a made-up tree: what counts as dangling. */
static void test_scanner(void **state)
{
    (void)state;
    path_list l = {0};
    list_push(&l, "docs/DESIGN.md");
    list_push(&l, "tests/data/README.md");
    list_push(&l, "tests/data/layouts/README.md");
    list_push(&l, "samplers/samplers.h");
    /* resolvable: from the root, as a tail, relative to the file, URLs */
    assert_int_equal(check_text(&l, "x.c", "samplers", "see docs/DESIGN.md and DESIGN.md.", NULL), 0);
    assert_int_equal(check_text(&l, "x.c", "tests/data", "layouts/README.md, ../../docs/DESIGN.md", NULL), 0);
    assert_int_equal(check_text(&l, "x.c", "", "https://github.com/o/r/blob/main/NOTES.md", NULL), 0);
    /* dangling: missing files, the original reference directory, absolute paths */
    assert_int_equal(check_text(&l, "x.c", "", "(" DANGLING_DIR "SAMPLERS" MD " 3.3)", NULL), 1);
    assert_int_equal(check_text(&l, "x.c", "", "see TINY-SD1" MD " section 3", NULL), 1);
    assert_int_equal(check_text(&l, "x.c", "", "against " DANGLING_DIR "rng.safetensors", NULL), 1);
    assert_int_equal(check_text(&l, "x.c", "", "/work/shared/notes" MD " and sd2/README" MD, NULL), 2);
    list_free(&l);
}

/* Anchors are checked against the headings of the real tests/data/README.md. */
static void test_anchor(void **state)
{
    (void)state;
    path_list l = {0};
    list_push(&l, "tests/data/README.md");
    assert_int_equal(check_text(&l, "x.c", "", "tests/data/README.md#tolerances", NULL), 0);
    assert_int_equal(check_text(&l, "x.c", "", "tests/data/README" MD "#no-such-heading", NULL), 1);
    list_free(&l);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scanner),
        cmocka_unit_test(test_anchor),
        cmocka_unit_test(test_no_dangling_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
