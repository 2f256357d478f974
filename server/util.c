/* Small pieces of the server that touch untrusted bytes: base64, names
 * resolved inside a directory, a PNG's parameters chunk, the Basic-auth
 * comparison, the JSON depth pre-scan. */
#include "server.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *srv_base64_encode(const uint8_t *d, size_t n)
{
    char *out = malloc((n + 2) / 3 * 4 + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)d[i] << 16 | (i + 1 < n ? (uint32_t)d[i + 1] << 8 : 0) | (i + 2 < n ? d[i + 2] : 0);
        *o++ = b64[v >> 18 & 63];
        *o++ = b64[v >> 12 & 63];
        *o++ = i + 1 < n ? b64[v >> 6 & 63] : '=';
        *o++ = i + 2 < n ? b64[v & 63] : '=';
    }
    *o = 0;
    return out;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+' || c == '-') return 62;
    if (c == '/' || c == '_') return 63;
    return -1;
}

uint8_t *srv_base64_decode(const char *s, size_t *n)
{
    /* A1111 accepts data URLs: "data:image/png;base64,...." */
    if (!strncmp(s, "data:", 5)) {
        const char *comma = strchr(s, ',');
        if (!comma) return NULL;
        s = comma + 1;
    }
    size_t len = strlen(s);
    uint8_t *out = malloc(len / 4 * 3 + 3);
    if (!out) return NULL;
    uint32_t acc = 0;
    int bits = 0;
    size_t k = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '=') break;
        if (c == '\n' || c == '\r' || c == ' ') continue;
        int v = b64_value(c);
        if (v < 0) { free(out); return NULL; }
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[k++] = (uint8_t)(acc >> bits);
        }
    }
    *n = k;
    return out;
}

int srv_resolve(const char *dir, const char *name, char *out, size_t n)
{
    char root[PATH_MAX], path[PATH_MAX * 2], real[PATH_MAX];
    if (!dir || !name || !*name || name[0] == '/' || strlen(name) > 255) return -1;
    /* no component may be ".." (a name "a..b" is fine) */
    for (const char *p = name; *p; p++)
        if (p[0] == '.' && p[1] == '.' && (p == name || p[-1] == '/') && (p[2] == 0 || p[2] == '/')) return -1;
    if (strchr(name, '\\')) return -1;
    if (!realpath(dir, root)) return -1;
    snprintf(path, sizeof path, "%s/%s", root, name);
    if (!realpath(path, real)) return -1;
    size_t rl = strlen(root);
    if (strncmp(real, root, rl) || real[rl] != '/') return -1;
    struct stat sb;
    if (stat(real, &sb) || !S_ISREG(sb.st_mode)) return -1;
    if (strlen(real) >= n) return -1;
    memcpy(out, real, strlen(real) + 1);
    return 0;
}

static uint32_t be32(const uint8_t *b) { return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3]; }

/* tEXt: key NUL text; iTXt: key NUL flag method lang NUL tkey NUL text
 * (uncompressed only: fmimage and A1111 write it so). */
static char *chunk_text(const uint8_t *d, size_t n, int itxt)
{
    static const char key[] = "parameters";
    if (n < sizeof key || memcmp(d, key, sizeof key)) return NULL;
    size_t i = sizeof key;
    if (itxt) {
        if (i + 2 > n || d[i] != 0) return NULL; /* compressed */
        i += 2;
        for (int z = 0; z < 2; z++) {
            const uint8_t *nul = memchr(d + i, 0, n - i);
            if (!nul) return NULL;
            i = (size_t)(nul - d) + 1;
        }
    }
    char *s = malloc(n - i + 1);
    if (!s) return NULL;
    memcpy(s, d + i, n - i);
    s[n - i] = 0;
    return s;
}

char *srv_png_parameters(const uint8_t *png, size_t n)
{
    static const uint8_t sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
    if (n < 8 || memcmp(png, sig, 8)) return NULL;
    size_t i = 8;
    while (i + 12 <= n) {
        uint32_t len = be32(png + i);
        if (len > n - i - 12) return NULL;
        const uint8_t *type = png + i + 4, *data = png + i + 8;
        if (!memcmp(type, "tEXt", 4) || !memcmp(type, "iTXt", 4)) {
            char *s = chunk_text(data, len, type[0] == 'i');
            if (s) return s;
        }
        if (!memcmp(type, "IEND", 4)) break;
        i += 12 + (size_t)len;
    }
    return NULL;
}

/* Every entry is compared over its whole length and the given string's,
 * whatever matched before, so the time says nothing about where a guess
 * went wrong. */
int srv_auth_ok(const char *list, const char *given, size_t given_n)
{
    int ok = 0;
    const char *p = list;
    while (p && *p) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        unsigned diff = len != given_n;
        size_t m = len > given_n ? len : given_n;
        for (size_t i = 0; i < m; i++) {
            unsigned char a = i < len ? (unsigned char)p[i] : 0, b = i < given_n ? (unsigned char)given[i] : 1;
            diff |= (unsigned)(a ^ b);
        }
        ok |= diff == 0;
        p = end ? end + 1 : NULL;
    }
    return ok;
}

int srv_json_too_deep(const char *s, size_t n)
{
    int depth = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\') i++;
            else if (c == '"') in_str = 0;
        } else if (c == '"') {
            in_str = 1;
        } else if (c == '[' || c == '{') {
            if (++depth > SRV_JSON_DEPTH) return 1;
        } else if (c == ']' || c == '}') {
            depth--;
        }
    }
    return 0;
}
