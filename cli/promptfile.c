#include "promptfile.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pf_free_words(char **argv, int argc)
{
    for (int i = 0; i < argc; i++) free(argv[i]);
    free(argv);
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static int valid_utf8(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        unsigned c = s[i];
        size_t k;
        unsigned cp;
        if (c < 0x80) { i++; continue; }
        else if ((c & 0xe0) == 0xc0) { k = 1; cp = c & 0x1f; }
        else if ((c & 0xf0) == 0xe0) { k = 2; cp = c & 0x0f; }
        else if ((c & 0xf8) == 0xf0) { k = 3; cp = c & 0x07; }
        else return 0;
        for (size_t j = 1; j <= k; j++) {
            if (i + j >= n || (s[i + j] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if ((k == 1 && cp < 0x80) || (k == 2 && cp < 0x800) || (k == 3 && cp < 0x10000) ||
            cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return 0;
        i += k + 1;
    }
    return 1;
}

typedef struct words {
    char **v;
    int n, cap;
    char *cur;
    size_t len, cur_cap;
    int in_word;
} words;

static int w_putc(words *w, char c)
{
    if (w->len + 2 > w->cur_cap) {
        size_t cap = w->cur_cap ? w->cur_cap * 2 : 32;
        char *p = realloc(w->cur, cap);
        if (!p) return -1;
        w->cur = p;
        w->cur_cap = cap;
    }
    w->cur[w->len++] = c;
    w->cur[w->len] = 0;
    w->in_word = 1;
    return 0;
}

static int w_end(words *w)
{
    if (!w->in_word) return 0;
    if (w->n == w->cap) {
        int cap = w->cap ? w->cap * 2 : 8;
        char **p = realloc(w->v, sizeof *p * (size_t)cap);
        if (!p) return -1;
        w->v = p;
        w->cap = cap;
    }
    w->v[w->n++] = w->cur ? w->cur : strdup("");
    if (!w->v[w->n - 1]) return -1;
    w->cur = NULL;
    w->len = w->cur_cap = 0;
    w->in_word = 0;
    return 0;
}

int pf_shlex_split(const char *s, size_t len, char ***argv, char *why, size_t why_len)
{
    words w = {0};
    int rc = 0;
    for (size_t i = 0; i < len && !rc; i++) {
        char c = s[i];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
            rc = w_end(&w);
        } else if (c == '\\') {
            if (++i >= len) { snprintf(why, why_len, "no escaped character after the final backslash"); rc = -2; break; }
            rc = w_putc(&w, s[i]);
        } else if (c == '\'') {
            w.in_word = 1;
            for (i++; i < len && s[i] != '\'' && !rc; i++) rc = w_putc(&w, s[i]);
            if (i >= len) { snprintf(why, why_len, "no closing quotation"); rc = -2; }
        } else if (c == '"') {
            w.in_word = 1;
            for (i++; i < len && s[i] != '"' && !rc; i++) {
                /* Inside double quotes a backslash escapes only " and \. */
                if (s[i] == '\\' && i + 1 < len && (s[i + 1] == '"' || s[i + 1] == '\\')) i++;
                rc = w_putc(&w, s[i]);
            }
            if (i >= len) { snprintf(why, why_len, "no closing quotation"); rc = -2; }
        } else {
            rc = w_putc(&w, c);
        }
    }
    if (!rc) rc = w_end(&w);
    if (rc) {
        if (rc == -1) snprintf(why, why_len, "out of memory");
        free(w.cur);
        pf_free_words(w.v, w.n);
        return -1;
    }
    free(w.cur);
    *argv = w.v;
    return w.n;
}

static int parse_int(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_float(const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

static int set_string(char **field, const char *v)
{
    free(*field);
    *field = strdup(v);
    return *field ? 0 : -1;
}

void pf_line_free(pf_line *l)
{
    free(l->prompt);
    free(l->negative);
    free(l->sampler);
    free(l->scheduler);
    free(l->init_image);
    memset(l, 0, sizeof *l);
}

/* --prompt and --negative_prompt take their value and every following word
 * up to the next "--" word, joined by spaces (A1111's cmdargs). *pos is the
 * word after the value and ends at the next option. */
static char *join_words(const char *first, char **argv, int argc, int *pos)
{
    size_t n = strlen(first) + 1;
    int end = *pos;
    for (; end < argc && strncmp(argv[end], "--", 2); end++) n += strlen(argv[end]) + 1;
    char *s = malloc(n);
    if (!s) return NULL;
    strcpy(s, first);
    for (int i = *pos; i < end; i++) {
        strcat(s, " ");
        strcat(s, argv[i]);
    }
    *pos = end;
    return s;
}

static int parse_options(char **argv, int argc, pf_line *out, char *why, size_t why_len)
{
    for (int pos = 0; pos < argc;) {
        char *arg = argv[pos];
        if (strncmp(arg, "--", 2)) { snprintf(why, why_len, "must start with \"--\": %.60s", arg); return -1; }
        /* "--key=value" is "--key value", as on the command line. */
        char *eq = strchr(arg, '=');
        if (eq) *eq = 0;
        else if (pos + 1 >= argc) { snprintf(why, why_len, "missing value for %.60s", arg); return -1; }
        const char *key = arg + 2, *val = eq ? eq + 1 : argv[pos + 1];
        int next = pos + (eq ? 1 : 2); /* the word after the value */
        long iv = 0;
        int bad = 0;
        if (!strcmp(key, "prompt") || !strcmp(key, "negative_prompt")) {
            pos = next;
            char *text = join_words(val, argv, argc, &pos);
            if (!text) { snprintf(why, why_len, "out of memory"); return -1; }
            char **field = key[0] == 'p' ? &out->prompt : &out->negative;
            free(*field);
            *field = text;
            continue;
        }
        if (!strcmp(key, "seed")) {
            bad = parse_int(val, -1, 4294967295L, &iv);
            if (!bad && iv >= 0) { out->has_seed = 1; out->seed = (uint64_t)iv; }
        } else if (!strcmp(key, "steps")) {
            bad = parse_int(val, 1, 1000, &iv); out->steps = (int)iv;
        } else if (!strcmp(key, "width") || !strcmp(key, "height")) {
            bad = parse_int(val, 1, 65536, &iv);
            *(key[0] == 'w' ? &out->width : &out->height) = (int)iv;
        } else if (!strcmp(key, "n_iter") || !strcmp(key, "batch_size")) {
            bad = parse_int(val, 1, 100000, &iv); out->n_iter = (int)iv;
        } else if (!strcmp(key, "clip_skip")) {
            bad = parse_int(val, 1, 12, &iv); out->clip_skip = (int)iv;
        } else if (!strcmp(key, "cfg_scale")) {
            bad = parse_float(val, &out->cfg);
        } else if (!strcmp(key, "denoising_strength")) {
            bad = parse_float(val, &out->strength) || !(out->strength > 0 && out->strength <= 1);
        } else if (!strcmp(key, "sampler_name")) {
            bad = set_string(&out->sampler, val);
        } else if (!strcmp(key, "scheduler")) {
            bad = set_string(&out->scheduler, val);
        } else if (!strcmp(key, "init_image")) {
            bad = set_string(&out->init_image, val);
        } else {
            snprintf(why, why_len, "unknown option --%.60s", key);
            return -1;
        }
        if (bad) { snprintf(why, why_len, "bad value for --%s: %.60s", key, val); return -1; }
        pos = next;
    }
    if (!out->prompt) { snprintf(why, why_len, "no --prompt"); return -1; }
    return 0;
}

int pf_parse_line(const char *text, size_t len, int line_no, pf_line *out, char *why, size_t why_len)
{
    memset(out, 0, sizeof *out);
    out->line_no = line_no;
    out->cfg = out->strength = NAN;
    /* A UTF-8 byte order mark (Windows editors) starts the file, not the
     * prompt: left in, it would hide a leading "--". */
    if (line_no == 1 && len >= 3 && !memcmp(text, "\xef\xbb\xbf", 3)) {
        text += 3;
        len -= 3;
    }
    /* Python str.strip(): trim white space at both ends. */
    while (len && strchr(" \t\r\n\v\f", text[0])) { text++; len--; }
    while (len && strchr(" \t\r\n\v\f", text[len - 1])) len--;
    if (len == 0 || text[0] == '#') return 0;
    if (memchr(text, 0, len) || !valid_utf8((const unsigned char *)text, len)) {
        snprintf(why, why_len, "invalid UTF-8");
        return -1;
    }
    if (len < 2 || strncmp(text, "--", 2)) {
        out->prompt = strndup(text, len);
        if (!out->prompt) { snprintf(why, why_len, "out of memory"); return -1; }
        return 1;
    }
    char **argv;
    int argc = pf_shlex_split(text, len, &argv, why, why_len);
    if (argc < 0) return -1;
    int rc = parse_options(argv, argc, out, why, why_len);
    pf_free_words(argv, argc);
    if (rc) { pf_line_free(out); return -1; }
    return 1;
}
