/* libFuzzer: fmimage serve's request-to-parameters parser (server/parse.c
 * srv_parse_gen, txt2img or img2img by the first byte's low bit) on the
 * rest as the request body, and the helpers that read untrusted bytes:
 * srv_png_parameters on the decoded init image, srv_base64_decode,
 * srv_json_too_deep, srv_auth_ok. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "server/server.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size) return 0;
    int img2img = data[0] & 1;
    char *body = malloc(size); /* exact size (no NUL kept): ASan sees any over-read */
    memcpy(body, data + 1, size - 1);
    srv_gen g;
    char msg[256], loc[64];
    msg[0] = loc[0] = 0;
    int st = srv_parse_gen(body, size - 1, img2img, &g, msg, sizeof msg, loc, sizeof loc);
    if (st != 0 && st != 400 && st != 413 && st != 422 && st != 500) abort();
    if (st && !msg[0]) abort();
    if (!st) {
        if (!g.prompt || !g.negative) abort();
        if (g.batch_size < 1 || g.n_iter < 1 || g.batch_size * g.n_iter > SRV_MAX_IMAGES) abort();
        if (g.seed < -1 || g.seed > 4294967295LL) abort();
        if (img2img && (!g.init_png || !g.init_len)) abort();
        if (img2img) free(srv_png_parameters(g.init_png, g.init_len));
        srv_gen_free(&g);
    }
    (void)srv_json_too_deep(body, size - 1);
    char *s = malloc(size);
    memcpy(s, data + 1, size - 1);
    s[size - 1] = 0;
    size_t n;
    uint8_t *d = srv_base64_decode(s, &n);
    free(d);
    (void)srv_auth_ok("alice:s3cret,bob:pw", s, strlen(s));
    free(s);
    free(body);
    return 0;
}
