/* A1111's styles (modules/styles.py): the csv reading of StyleDatabase and
 * merge_prompts / apply_styles_to_prompt. */
#include "styles.h"

#include "core/core.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Python's str.isspace on ASCII. */
static int is_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

char *sty_merge(const char *style_prompt, const char *prompt)
{
    core_strbuf b = {0};
    const char *hit = strstr(style_prompt, "{prompt}");
    if (hit) {
        const char *s = style_prompt;
        for (; hit; hit = strstr(s, "{prompt}")) {
            core_sb_append(&b, s, (size_t)(hit - s));
            core_sb_append(&b, prompt, strlen(prompt));
            s = hit + 8;
        }
        core_sb_append(&b, s, strlen(s));
        return core_sb_take(&b);
    }
    const char *parts[2] = {prompt, style_prompt};
    int any = 0;
    for (int i = 0; i < 2; i++) {
        const char *a = parts[i], *e = a + strlen(a);
        while (a < e && is_space((unsigned char)*a)) a++;
        while (e > a && is_space((unsigned char)e[-1])) e--;
        if (a == e) continue;
        if (any) core_sb_append(&b, ", ", 2);
        core_sb_append(&b, a, (size_t)(e - a));
        any = 1;
    }
    return core_sb_take(&b);
}

char *sty_apply(const sty_style *const *styles, int n, const char *prompt, int negative)
{
    char *cur = strdup(prompt);
    for (int i = 0; cur && i < n; i++) {
        char *next = sty_merge(negative ? styles[i]->negative : styles[i]->prompt, cur);
        free(cur);
        cur = next;
    }
    return cur;
}

/* ---- csv (Python's csv module, excel dialect, skipinitialspace) ---- */

typedef struct {
    char **f;
    int n, cap;
} row;

static void row_free(row *r)
{
    for (int i = 0; i < r->n; i++) free(r->f[i]);
    free(r->f);
    r->f = NULL;
    r->n = r->cap = 0;
}

static int row_add(row *r, core_strbuf *field)
{
    char *s = core_sb_take(field); /* leaves field empty for the next one */
    if (!s) return -1;
    if (r->n == r->cap) {
        int cap = r->cap ? r->cap * 2 : 8;
        char **f = realloc(r->f, sizeof(char *) * (size_t)cap);
        if (!f) {
            free(s);
            return -1;
        }
        r->f = f;
        r->cap = cap;
    }
    r->f[r->n++] = s;
    return 0;
}

/* One record from *pos (quoted fields may hold newlines). Returns 1 with a
 * record, 0 at the end, -1 on memory. An empty line is a record of no
 * fields, as Python's reader gives []. */
static int read_row(const char *t, size_t n, size_t *pos, row *r)
{
    size_t i = *pos;
    if (i >= n) return 0;
    core_strbuf f = {0};
    enum { START, UNQUOTED, QUOTED, AFTER_QUOTE } st = START;
    int fields_started = 0;
    for (;;) {
        if (i >= n) {
            if (st != START || fields_started) {
                if (row_add(r, &f)) return -1;
            }
            break;
        }
        char c = t[i++];
        if (c != '\r' && c != '\n') fields_started = 1; /* a line of spaces is [''] */
        if (c == '\r' || c == '\n') {
            if (st == QUOTED) {
                core_sb_append(&f, &c, 1);
                continue;
            }
            if (c == '\r' && i < n && t[i] == '\n') i++;
            if (st != START || fields_started) {
                if (row_add(r, &f)) return -1;
            }
            break;
        }
        switch (st) {
        case START:
            if (c == ' ') break; /* skipinitialspace */
            if (c == '"') st = QUOTED;
            else if (c == ',') {
                if (row_add(r, &f)) return -1;
                fields_started = 1;
            } else {
                core_sb_append(&f, &c, 1);
                st = UNQUOTED;
            }
            break;
        case UNQUOTED:
            if (c == ',') {
                if (row_add(r, &f)) return -1;
                fields_started = 1;
                st = START;
            } else {
                core_sb_append(&f, &c, 1);
            }
            break;
        case QUOTED:
            if (c == '"') {
                if (i < n && t[i] == '"') {
                    core_sb_append(&f, "\"", 1);
                    i++;
                } else {
                    st = AFTER_QUOTE;
                }
            } else {
                core_sb_append(&f, &c, 1);
            }
            break;
        case AFTER_QUOTE: /* non-strict: text after the closing quote is kept */
            if (c == ',') {
                if (row_add(r, &f)) return -1;
                fields_started = 1;
                st = START;
            } else {
                core_sb_append(&f, &c, 1);
                st = UNQUOTED;
            }
            break;
        }
    }
    free(f.s);
    *pos = i;
    return f.oom ? -1 : 1;
}

void sty_free(sty_db *db)
{
    for (int i = 0; i < db->n; i++) {
        free(db->s[i].name);
        free(db->s[i].prompt);
        free(db->s[i].negative);
    }
    free(db->s);
    db->s = NULL;
    db->n = 0;
}

const sty_style *sty_find(const sty_db *db, const char *name)
{
    for (int i = 0; i < db->n; i++)
        if (!strcmp(db->s[i].name, name)) return &db->s[i];
    return NULL;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    core_strbuf b = {0};
    char chunk[65536];
    size_t k;
    while ((k = fread(chunk, 1, sizeof chunk, fp)) > 0) core_sb_append(&b, chunk, k);
    int bad = ferror(fp);
    fclose(fp);
    size_t n = b.len;
    char *s = core_sb_take(&b);
    if (bad) {
        free(s);
        return NULL;
    }
    *len = n;
    return s;
}

static int col(const row *header, const char *name)
{
    for (int i = 0; i < header->n; i++)
        if (!strcmp(header->f[i], name)) return i;
    return -1;
}

int sty_load(const char *path, sty_db *db, char *why, size_t why_len)
{
    memset(db, 0, sizeof *db);
    size_t n = 0, pos = 0;
    char *t = slurp(path, &n);
    if (!t) {
        snprintf(why, why_len, "cannot read it");
        return -1;
    }
    if (n >= 3 && !memcmp(t, "\xef\xbb\xbf", 3)) pos = 3; /* utf-8-sig */
    row header = {0}, r = {0};
    int rc = 0, got, line = 1;
    /* DictReader: the first non-empty record names the columns */
    while ((got = read_row(t, n, &pos, &header)) == 1 && header.n == 0) line++;
    int c_name = col(&header, "name"), c_prompt = col(&header, "prompt"), c_neg = col(&header, "negative_prompt");
    if (c_prompt < 0) c_prompt = col(&header, "text");
    if (got < 0) {
        snprintf(why, why_len, "out of memory");
        rc = -1;
    } else if (got == 0 || c_name < 0 || c_prompt < 0) {
        snprintf(why, why_len, "no header with the columns name and prompt");
        rc = -1;
    }
    while (!rc && (got = read_row(t, n, &pos, &r)) != 0) {
        line++;
        if (got < 0) {
            snprintf(why, why_len, "out of memory");
            rc = -1;
            break;
        }
        if (r.n == 0) continue;
        const char *name = c_name < r.n ? r.f[c_name] : "";
        if (name[0] == '#') {
            row_free(&r);
            continue;
        }
        sty_style st = {strdup(name), strdup(c_prompt < r.n ? r.f[c_prompt] : ""),
                        strdup(c_neg >= 0 && c_neg < r.n ? r.f[c_neg] : "")};
        sty_style *slot = (sty_style *)sty_find(db, name);
        if (!st.name || !st.prompt || !st.negative) {
            free(st.name), free(st.prompt), free(st.negative);
            snprintf(why, why_len, "out of memory");
            rc = -1;
        } else if (slot) {
            free(slot->prompt), free(slot->negative), free(st.name);
            slot->prompt = st.prompt;
            slot->negative = st.negative;
        } else {
            sty_style *s = realloc(db->s, sizeof *s * (size_t)(db->n + 1));
            if (!s) {
                free(st.name), free(st.prompt), free(st.negative);
                snprintf(why, why_len, "out of memory");
                rc = -1;
            } else {
                db->s = s;
                db->s[db->n++] = st;
            }
        }
        row_free(&r);
    }
    row_free(&r);
    row_free(&header);
    free(t);
    if (rc) sty_free(db);
    return rc;
}
