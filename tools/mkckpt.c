/* mkckpt: a random-weight (or all-zero, sparse) safetensors checkpoint in the
 * tensor layout of a real one, for tests and benchmarks.
 *
 *   mkckpt LAYOUT.tsv OUT.safetensors [--seed N] [--dtype F16|F32|BF16] [--zeros]
 *          [--config FILE.json]
 *
 * --dtype    float tensors in this dtype (default: the layout's)
 * --zeros    all-zero sparse file, written instantly (loader/detection tests)
 * --config   store FILE's content as __metadata__["fmimage.config"] */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/lib/randckpt.h"

static int usage(void)
{
    fprintf(stderr, "usage: mkckpt LAYOUT.tsv OUT.safetensors [--seed N] [--dtype F16|F32|BF16] "
                    "[--zeros] [--config FILE.json]\n");
    return 2;
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, len = 0, k;
    char *s = malloc(cap + 1);
    while (s && (k = fread(s + len, 1, cap - len, f)) > 0)
        if ((len += k) == cap) {
            char *p = realloc(s, 2 * cap + 1);
            if (!p) { free(s); s = NULL; break; }
            s = p;
            cap *= 2;
        }
    fclose(f);
    if (s) s[len] = 0;
    return s;
}

int main(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *config_path = NULL;
    tl_randckpt_opts o = {.seed = 0, .float_dtype = -1};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--seed") && i + 1 < argc) {
            char *end;
            errno = 0;
            o.seed = strtoull(argv[++i], &end, 10);
            if (*end || errno) return usage();
        } else if (!strcmp(a, "--dtype") && i + 1 < argc) {
            const char *d = argv[++i];
            if (!strcmp(d, "F16")) o.float_dtype = FM_DT_F16;
            else if (!strcmp(d, "F32")) o.float_dtype = FM_DT_F32;
            else if (!strcmp(d, "BF16")) o.float_dtype = FM_DT_BF16;
            else return usage();
        } else if (!strcmp(a, "--zeros")) {
            o.zeros = 1;
        } else if (!strcmp(a, "--config") && i + 1 < argc) {
            config_path = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            return usage();
        } else if (!in) {
            in = a;
        } else if (!out) {
            out = a;
        } else {
            return usage();
        }
    }
    if (!in || !out) return usage();
    char *config = NULL;
    if (config_path && !(config = read_text(config_path))) {
        fprintf(stderr, "mkckpt: %s: %s\n", config_path, strerror(errno));
        return 1;
    }
    o.config = config;
    fm_error err = {0};
    tl_layout layout;
    if (tl_layout_read(&layout, in, &err) == 0) {
        tl_randckpt_write(&layout, out, &o, &err);
        tl_layout_free(&layout);
    }
    free(config);
    if (err.code) {
        fprintf(stderr, "mkckpt: %s\n", err.msg);
        return 1;
    }
    return 0;
}
