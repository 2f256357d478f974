/* xyz: X/Y/Z plot axes and cells (cli/xyz.h). */
#include "xyz.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/core.h"

typedef struct xt_info {
    xt_kind kind;
    const char *label; /* A1111's label, matched without case */
    xa_type type;
    int named;         /* format_value_add_label ("Seed: 1") rather than the bare value */
} xt_info;

static const xt_info TYPES[] = {
    {XT_SEED, "Seed", XA_INT, 1},
    {XT_STEPS, "Steps", XA_INT, 1},
    {XT_CFG, "CFG Scale", XA_FLOAT, 1},
    {XT_SAMPLER, "Sampler", XA_STR, 0},
    {XT_SCHEDULER, "Schedule type", XA_STR, 1},
    {XT_SCHEDULER, "Scheduler", XA_STR, 1},
    {XT_PROMPT_SR, "Prompt S/R", XA_STR, 0},
    {XT_SIZE, "Size", XA_STR, 1},
    {XT_DENOISING, "Denoising", XA_FLOAT, 1},
    {XT_CLIP_SKIP, "Clip skip", XA_INT, 1},
    {XT_CHECKPOINT, "Checkpoint name", XA_STR, 0},
};

static const xt_info *find_type(const char *s, size_t n)
{
    for (size_t i = 0; i < sizeof TYPES / sizeof *TYPES; i++)
        if (strlen(TYPES[i].label) == n && !strncasecmp(s, TYPES[i].label, n)) return &TYPES[i];
    return NULL;
}

static const xt_info *info_of(xt_kind k)
{
    for (size_t i = 0; i < sizeof TYPES / sizeof *TYPES; i++)
        if (TYPES[i].kind == k) return &TYPES[i];
    return &TYPES[0];
}

int xyz_is_spec(const char *s)
{
    if (!strchr("XYZxyz", s[0]) || !s[0] || s[1] != ':') return 0;
    const char *colon = strchr(s + 2, ':');
    return colon && find_type(s + 2, (size_t)(colon - s - 2)) != NULL;
}

static int parse_size(const char *s, int *w, int *h)
{
    char x;
    return sscanf(s, "%d%c%d", w, &x, h) == 3 && (x == 'x' || x == 'X') && *w > 0 && *h > 0 ? 0 : -1;
}

int xyz_add(xyz_plan *p, const char *spec, char *why, size_t why_len)
{
    if (!xyz_is_spec(spec)) {
        snprintf(why, why_len, "\"%s\": not AXIS:TYPE:VALUES (AXIS X, Y or Z; TYPE Seed, Steps, CFG Scale, Sampler, "
                               "Scheduler, Prompt S/R, Size, Denoising, Clip skip, Checkpoint name)", spec);
        return -1;
    }
    int a = strchr("XxYyZz", spec[0]) ? (int)(strchr("XxYyZz", spec[0]) - "XxYyZz") / 2 : 0;
    if (p->ax[a].used) {
        snprintf(why, why_len, "%c: given twice", "XYZ"[a]);
        return -1;
    }
    const char *colon = strchr(spec + 2, ':');
    const xt_info *t = find_type(spec + 2, (size_t)(colon - spec - 2));
    for (int k = 0; k < 3; k++)
        if (p->ax[k].used && p->ax[k].kind == t->kind) {
            snprintf(why, why_len, "%s: on two axes", t->label);
            return -1;
        }
    xyz_axis *ax = &p->ax[a];
    char vwhy[300];
    if (xa_parse(t->type, colon + 1, &ax->v, vwhy, sizeof vwhy)) {
        snprintf(why, why_len, "%c:%s: %s", "XYZ"[a], t->label, vwhy);
        return -1;
    }
    if (ax->v.n == 0) {
        xa_free(&ax->v);
        snprintf(why, why_len, "%c:%s: no values", "XYZ"[a], t->label);
        return -1;
    }
    for (int i = 0; i < ax->v.n; i++) {
        int w, h, bad = 0;
        double x = ax->v.num ? ax->v.num[i] : 0;
        switch (t->kind) {
        case XT_SEED: bad = x < -1 || x > 4294967295.0; break;
        case XT_STEPS: bad = x < 1 || x > 1000; break;
        case XT_CLIP_SKIP: bad = x < 1 || x > 12; break;
        case XT_DENOISING: bad = x < 0 || x > 1; break;
        case XT_SIZE: bad = parse_size(ax->v.str[i], &w, &h); break;
        default: break;
        }
        if (bad) {
            char val[64];
            if (ax->v.str) snprintf(val, sizeof val, "%s", ax->v.str[i]);
            else snprintf(val, sizeof val, "%.17g", x);
            snprintf(why, why_len, "%c:%s: %s is out of range", "XYZ"[a], t->label, val);
            xa_free(&ax->v);
            return -1;
        }
    }
    ax->used = 1;
    ax->kind = t->kind;
    ax->label = info_of(t->kind)->label;
    ax->text = colon + 1;
    return 0;
}

void xyz_free(xyz_plan *p)
{
    for (int a = 0; a < 3; a++) {
        if (!p->ax[a].used) continue;
        for (int i = 0; p->ax[a].path && i < p->ax[a].v.n; i++) free(p->ax[a].path[i]);
        free(p->ax[a].path);
        p->ax[a].path = NULL;
        xa_free(&p->ax[a].v);
    }
}

int xyz_len(const xyz_plan *p, int a) { return p->ax[a].used ? p->ax[a].v.n : 1; }
int xyz_cells(const xyz_plan *p) { return xyz_len(p, 0) * xyz_len(p, 1) * xyz_len(p, 2); }

void xyz_coords(const xyz_plan *p, int c, int i[3])
{
    int nx = xyz_len(p, 0), ny = xyz_len(p, 1);
    i[0] = c % nx;
    i[1] = c / nx % ny;
    i[2] = c / (nx * ny);
}

/* A1111's fix_axis_seeds turns -1 into a random seed; fmimage takes the
 * run's base seed plus the cell, so a rerun names the same files. */
uint64_t xyz_seed(const xyz_plan *p, int c, uint64_t base)
{
    int i[3];
    xyz_coords(p, c, i);
    for (int a = 0; a < 3; a++)
        if (p->ax[a].used && p->ax[a].kind == XT_SEED) {
            double s = p->ax[a].v.num[i[a]];
            return s < 0 ? base + (uint64_t)c : (uint64_t)s;
        }
    return base;
}

static char *replace_all(const char *s, const char *from, const char *to)
{
    core_strbuf b = {0};
    size_t lf = strlen(from);
    for (const char *p = s; *p;) {
        const char *q = lf ? strstr(p, from) : NULL;
        if (!q) { core_sb_puts(&b, p); break; }
        core_sb_append(&b, p, (size_t)(q - p));
        core_sb_puts(&b, to);
        p = q + lf;
    }
    return core_sb_take(&b);
}

int xyz_check(const xyz_plan *p, const char *prompt, const char *negative, char *why, size_t why_len)
{
    for (int a = 0; a < 3; a++) {
        const xyz_axis *ax = &p->ax[a];
        if (!ax->used || ax->kind != XT_PROMPT_SR) continue;
        const char *first = ax->v.str[0];
        if (!strstr(prompt, first) && !strstr(negative, first)) {
            snprintf(why, why_len, "%c:Prompt S/R: \"%s\" is not in the prompt or the negative prompt", "XYZ"[a], first);
            return -1;
        }
    }
    return 0;
}

int xyz_apply(const xyz_plan *p, int c, int stage, fm_params *prm, const char **sampler, const char **scheduler,
              char **prompt, char **negative, fm_error *err)
{
    int i[3];
    xyz_coords(p, c, i);
    *prompt = *negative = NULL;
    for (int a = 0; a < 3; a++) {
        const xyz_axis *ax = &p->ax[a];
        if (!ax->used || (ax->kind == XT_PROMPT_SR) != (stage == 0)) continue;
        double x = ax->v.num ? ax->v.num[i[a]] : 0;
        const char *s = ax->v.str ? ax->v.str[i[a]] : NULL;
        switch (ax->kind) {
        case XT_SEED: break; /* the job's seed (xyz_seed) */
        case XT_STEPS: prm->steps = (int)x; break;
        case XT_CFG: prm->cfg = (float)x; break;
        case XT_SAMPLER: *sampler = s; break;
        case XT_SCHEDULER: *scheduler = s; break;
        case XT_DENOISING: prm->strength = (float)x; break;
        case XT_CLIP_SKIP: prm->clip_skip = (int)x; break;
        case XT_SIZE: parse_size(s, &prm->width, &prm->height); break;
        case XT_CHECKPOINT: break; /* the run loads the cell's model (xyz_checkpoint) */
        case XT_PROMPT_SR:
            *prompt = replace_all(prm->prompt, ax->v.str[0], s);
            *negative = replace_all(prm->negative ? prm->negative : "", ax->v.str[0], s);
            if (!*prompt || !*negative) {
                free(*prompt);
                free(*negative);
                *prompt = *negative = NULL;
                return core_fail(err, FM_EINPUT, "Prompt S/R: out of memory");
            }
            prm->prompt = *prompt;
            prm->negative = *negative;
            break;
        }
    }
    return 0;
}

/* Python's repr of round(x, 8): the shortest text that reads back as x,
 * with ".0" when it has no '.' or exponent. */
static void py_float_repr(double x, char *buf, size_t n)
{
    x = round(x * 1e8) / 1e8;
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, x);
        if (strtod(buf, NULL) == x) break;
    }
    if (!strpbrk(buf, ".eninf")) strncat(buf, ".0", n - strlen(buf) - 1);
}

const char *xyz_label(const xyz_plan *p, int a, int i, char *buf, size_t n)
{
    const xyz_axis *ax = &p->ax[a];
    if (!ax->used) {
        snprintf(buf, n, "%s", ""); /* "Nothing": format_nothing */
        return buf;
    }
    char val[256];
    const xt_info *t = info_of(ax->kind);
    if (t->type == XA_STR) snprintf(val, sizeof val, "%s", ax->v.str[i]);
    else if (t->type == XA_INT) snprintf(val, sizeof val, "%.0f", ax->v.num[i]);
    else py_float_repr(ax->v.num[i], val, sizeof val);
    if (t->named) snprintf(buf, n, "%s: %s", ax->label, val);
    else snprintf(buf, n, "%s", val);
    return buf;
}

/* infotext_utils.quote: as it is unless it holds ',', ':' or a newline,
 * else as a JSON string. */
static void put_quoted(core_strbuf *b, const char *v)
{
    if (!strpbrk(v, ",:\n")) {
        core_sb_puts(b, v);
        return;
    }
    core_sb_puts(b, "\"");
    for (const char *p = v; *p; p++) {
        char e[8];
        if (*p == '"' || *p == '\\') snprintf(e, sizeof e, "\\%c", *p);
        else if (*p == '\n') snprintf(e, sizeof e, "\\n");
        else if ((unsigned char)*p < 0x20) snprintf(e, sizeof e, "\\u%04x", (unsigned char)*p);
        else snprintf(e, sizeof e, "%c", *p);
        core_sb_puts(b, e);
    }
    core_sb_puts(b, "\"");
}

char *xyz_grid_infotext(const xyz_plan *p, const char *cell_infotext, int with_z)
{
    core_strbuf b = {0};
    core_sb_puts(&b, cell_infotext);
    core_sb_puts(&b, ", Script: X/Y/Z plot");
    for (int a = 0; a < 3; a++) {
        const xyz_axis *ax = &p->ax[a];
        if (!ax->used || (a == 2 && !with_z)) continue;
        char k[32];
        snprintf(k, sizeof k, ", %c Type: ", "XYZ"[a]);
        core_sb_puts(&b, k);
        put_quoted(&b, ax->label);
        snprintf(k, sizeof k, ", %c Values: ", "XYZ"[a]);
        core_sb_puts(&b, k);
        put_quoted(&b, ax->text);
        if (ax->kind == XT_SEED) { /* "Fixed X Values": the seeds used */
            core_strbuf f = {0};
            for (int i = 0; i < ax->v.n; i++) {
                char s[32];
                snprintf(s, sizeof s, "%s%.0f", i ? ", " : "", ax->v.num[i]);
                core_sb_puts(&f, s);
            }
            char *fixed = core_sb_take(&f);
            snprintf(k, sizeof k, ", Fixed %c Values: ", "XYZ"[a]);
            core_sb_puts(&b, k);
            put_quoted(&b, fixed ? fixed : "");
            free(fixed);
        }
    }
    return core_sb_take(&b);
}
