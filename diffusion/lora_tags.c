/* The prompt's extra-network tags (diffusion/lora.h): A1111's
 * extra_networks.parse_prompt and ExtraNetworkParams. Kept apart from the
 * merge so the tag parser links alone (tests/fuzz/fuzz_lora.c). */
#include "diffusion/lora.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- tags ---- */

/* Python's \w for str, on UTF-8 bytes: ASCII letters, digits, '_', and
 * every non-ASCII byte (letters of other scripts; their punctuation is rare
 * in a network name). */
static int word(unsigned char c) { return c == '_' || (c >= '0' && c <= '9') || ((c | 32) >= 'a' && (c | 32) <= 'z') || c >= 0x80; }

/* Python float(): surrounding whitespace allowed, the whole rest a number. */
static int py_float(const char *s, size_t n, float *v)
{
    char buf[64];
    while (n && (*s == ' ' || *s == '\t' || *s == '\n')) s++, n--;
    while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n')) n--;
    if (!n || n >= sizeof buf) return -1;
    memcpy(buf, s, n);
    buf[n] = 0;
    char *end;
    double d = strtod(buf, &end);
    if (*end) return -1;
    *v = (float)d; /* A1111 keeps a Python float; torch multiplies by it in float32 */
    return 0;
}

int df_lora_add(df_lora_list *l, const char *name, size_t nl, float te, float unet)
{
    df_lora_ref *v = realloc(l->v, sizeof *v * (size_t)(l->n + 1));
    if (!v) return -1;
    l->v = v;
    df_lora_ref *r = &v[l->n];
    *r = (df_lora_ref){0};
    if (!(r->name = strndup(name, nl))) return -1;
    r->te = te;
    r->unet = unet;
    l->n++;
    return 0;
}

/* ExtraNetworkParams of one <lora:ARGS> (args [a, a+n)). */
static int lora_args(df_lora_list *l, const char *a, size_t n, fm_error *err)
{
    const char *pos[4] = {0}, *te_s = NULL, *unet_s = NULL;
    size_t pl[4] = {0}, tel = 0, unl = 0;
    int np = 0;
    for (size_t i = 0; i <= n;) {
        size_t j = i;
        while (j < n && a[j] != ':') j++;
        const char *item = a + i, *eq = memchr(item, '=', j - i);
        const char *eq2 = eq ? memchr(eq + 1, '=', (size_t)(a + j - eq - 1)) : NULL;
        if (eq && !eq2) { /* item.split('=', 2) of length 2: named */
            size_t kl = (size_t)(eq - item);
            if (kl == 2 && !strncmp(item, "te", 2)) te_s = eq + 1, tel = (size_t)(a + j - eq - 1);
            else if (kl == 4 && !strncmp(item, "unet", 4)) unet_s = eq + 1, unl = (size_t)(a + j - eq - 1);
        } else if (np < 4) {
            pos[np] = item;
            pl[np++] = j - i;
        }
        i = j + 1;
    }
    float te = 1, unet;
    const char *bad = NULL;
    if (np > 1 && py_float(pos[1], pl[1], &te)) bad = pos[1];
    if (!bad && te_s && py_float(te_s, tel, &te)) bad = te_s;
    unet = te;
    if (!bad && np > 2 && py_float(pos[2], pl[2], &unet)) bad = pos[2];
    if (!bad && unet_s && py_float(unet_s, unl, &unet)) bad = unet_s;
    if (!np) return core_fail(err, FM_EINPUT, "<lora:%.*s>: no name", (int)n, a);
    if (bad) return core_fail(err, FM_EINPUT, "<lora:%.*s>: a multiplier is not a number", (int)n, a);
    if (!isfinite(te) || !isfinite(unet)) return core_fail(err, FM_EINPUT, "<lora:%.*s>: a multiplier is not finite", (int)n, a);
    if (df_lora_add(l, pos[0], pl[0], te, unet)) return core_fail(err, FM_EINPUT, "out of memory");
    return 0;
}

int df_lora_parse(const char *prompt, df_lora_list *out, fm_error *err)
{
    *out = (df_lora_list){0};
    size_t len = strlen(prompt), o = 0;
    if (!(out->prompt = malloc(len + 1))) return core_fail(err, FM_EINPUT, "out of memory");
    for (size_t i = 0; i < len;) {
        /* <(\w+):([^>]+)> at i? */
        size_t w = i + 1;
        while (prompt[i] == '<' && w < len && word((unsigned char)prompt[w])) w++;
        if (prompt[i] == '<' && w > i + 1 && prompt[w] == ':') {
            const char *gt = strchr(prompt + w + 1, '>');
            if (gt && gt > prompt + w + 1) {
                size_t nl = w - i - 1;
                const char *name = prompt + i + 1;
                if ((nl == 4 && (!strncmp(name, "lora", 4) || !strncmp(name, "lyco", 4))) &&
                    lora_args(out, prompt + w + 1, (size_t)(gt - prompt - w - 1), err)) {
                    df_lora_list_free(out);
                    return FM_EINPUT;
                }
                i = (size_t)(gt - prompt) + 1;
                continue;
            }
        }
        out->prompt[o++] = prompt[i++];
    }
    out->prompt[o] = 0;
    return 0;
}

void df_lora_list_free(df_lora_list *l)
{
    for (int i = 0; i < l->n; i++) {
        free(l->v[i].name);
        free(l->v[i].path);
    }
    free(l->v);
    free(l->prompt);
    *l = (df_lora_list){0};
}

