/* libFuzzer: fmimage serve's request-to-parameters parsers (server/parse.c)
 * on the rest of the input as a request body, the route picked by the
 * first byte: txt2img or img2img (srv_parse_gen), /sdapi/v1/options
 * (srv_parse_options) or /sdapi/v1/png-info (srv_parse_png_info, then
 * srv_png_parameters on the decoded image); and on every input the helpers
 * that read untrusted bytes: srv_base64_decode, srv_json_too_deep,
 * srv_auth_ok, and srv_resolve with the body as a request's file name
 * (model, LoRA, /view: whatever it returns must lie inside the directory).
 * ComfyUI's graph validation needs the server's state (server/comfy.c) and
 * is not reached from here. */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/server.h"

static int status_ok(int st) { return st == 0 || st == 400 || st == 404 || st == 413 || st == 422 || st == 500; }

static void gen(const char *body, size_t n, int img2img)
{
    srv_gen g;
    char msg[256] = "", loc[64] = "";
    int st = srv_parse_gen(body, n, img2img, &g, msg, sizeof msg, loc, sizeof loc);
    if (!status_ok(st) || st == 404 || (st && !msg[0])) abort();
    if (st) return;
    if (!g.prompt || !g.negative) abort();
    if (g.batch_size < 1 || g.n_iter < 1 || g.batch_size * g.n_iter > SRV_MAX_IMAGES) abort();
    if (g.seed < -1 || g.seed > 4294967295LL) abort();
    if (img2img && (!g.init_png || !g.init_len)) abort();
    if (img2img) free(srv_png_parameters(g.init_png, g.init_len));
    srv_gen_free(&g);
}

static void options(const char *body, size_t n)
{
    char name[256], msg[256] = "", loc[64] = "";
    int st = srv_parse_options(body, n, name, sizeof name, msg, sizeof msg, loc, sizeof loc);
    if (!status_ok(st) || (st && !msg[0]) || strlen(name) >= sizeof name || strstr(name, " [")) abort();
}

static void png_info(const char *body, size_t n)
{
    char msg[256] = "", loc[64] = "";
    uint8_t *png;
    size_t len;
    int st = srv_parse_png_info(body, n, &png, &len, msg, sizeof msg, loc, sizeof loc);
    if (!status_ok(st) || (st && !msg[0]) || (!st && !png) || (st && png)) abort();
    if (png) free(srv_png_parameters(png, len));
    free(png);
}

/* A directory with a file, a subdirectory and a symlink out of it, made
 * once; real gets its real path. */
static const char *jail(const char **real)
{
    static char dir[64], real_dir[PATH_MAX];
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/fuzz_serve.%d", (int)getpid());
        char p[128];
        mkdir(dir, 0700);
        snprintf(p, sizeof p, "%s/sub", dir);
        mkdir(p, 0700);
        snprintf(p, sizeof p, "%s/a.png", dir);
        fclose(fopen(p, "w"));
        snprintf(p, sizeof p, "%s/sub/b.png", dir);
        fclose(fopen(p, "w"));
        snprintf(p, sizeof p, "%s/out", dir);
        if (symlink("/etc/passwd", p)) {}
        if (!realpath(dir, real_dir)) abort();
    }
    *real = real_dir;
    return dir;
}

static void resolve(const char *name)
{
    const char *real;
    const char *dir = jail(&real);
    char out[PATH_MAX];
    if (srv_resolve(dir, name, out, sizeof out)) return;
    size_t k = strlen(real);
    if (strncmp(out, real, k) || out[k] != '/' || strstr(out, "/../")) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size) return 0;
    char *body = malloc(size); /* exact size (no NUL kept): ASan sees any over-read */
    memcpy(body, data + 1, size - 1);
    switch (data[0] & 3) {
    case 0: gen(body, size - 1, data[0] >> 2 & 1); break;
    case 1: gen(body, size - 1, 1); break;
    case 2: options(body, size - 1); break;
    default: png_info(body, size - 1); break;
    }
    (void)srv_json_too_deep(body, size - 1);
    char *s = malloc(size);
    memcpy(s, data + 1, size - 1);
    s[size - 1] = 0;
    size_t n;
    uint8_t *d = srv_base64_decode(s, &n);
    free(d);
    (void)srv_auth_ok("alice:s3cret,bob:pw", s, strlen(s));
    if (strlen(s) < 256) resolve(s);
    free(s);
    free(body);
    return 0;
}
