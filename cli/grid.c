/* grid: A1111's annotated image grid (cli/grid.h). The layout is
 * draw_grid_annotations': font size (w + h) / 25 px, line spacing half of
 * it; column labels wrapped by words to the cell width in a band on top
 * (tallest label + 2 line spacings), row labels wrapped to 3/4 of the cell
 * width in a band on the left; each line centred on its point ("mm"
 * anchor), shrunk a pixel size at a time while wider than its room; black on
 * white. Text sizes are FreeType's advances and the font's ascender to
 * descender, where Pillow measures ink boxes: lines can sit a pixel or two
 * from where A1111 puts them. */
#include "grid.h"

#include <ft2build.h>
#include FT_FREETYPE_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const FONT_PATHS[] = {
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", /* Debian fonts-dejavu-core */
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
};

/* Smallest label size (px), and the smallest a too-wide line shrinks to
 * (A1111: 1): below them letters cannot be read. */
#define GD_MIN_SIZE 12
#define GD_MIN_SHRINK 8

typedef struct gd_font {
    FT_Library lib;
    FT_Face face;
    int size;
} gd_font;

static int gd_fail(char *why, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, n, fmt, ap);
    va_end(ap);
    return -1;
}

static const char *font_path(void)
{
    const char *env = getenv("FMIMAGE_FONT");
    if (env && *env) return access(env, R_OK) == 0 ? env : NULL;
    for (size_t i = 0; i < sizeof FONT_PATHS / sizeof *FONT_PATHS; i++)
        if (access(FONT_PATHS[i], R_OK) == 0) return FONT_PATHS[i];
    return NULL;
}

static void set_size(gd_font *f, int size)
{
    if (size < 1) size = 1;
    if (size != f->size) FT_Set_Pixel_Sizes(f->face, 0, (FT_UInt)size);
    f->size = size;
}

/* One UTF-8 code point at *s (a bad byte reads as itself). */
static unsigned long next_cp(const char **s)
{
    const unsigned char *p = (const unsigned char *)*s;
    unsigned long c = *p++;
    int extra = c >= 0xF0 ? 3 : c >= 0xE0 ? 2 : c >= 0xC0 ? 1 : 0;
    if (extra) {
        c &= 0x3F >> extra;
        for (int i = 0; i < extra && (*p & 0xC0) == 0x80; i++) c = c << 6 | (*p++ & 0x3F);
    }
    *s = (const char *)p;
    return c;
}

/* Pillow's textlength: the sum of the advances, in pixels. */
static int text_width(gd_font *f, const char *s)
{
    long w = 0;
    while (*s) {
        unsigned long cp = next_cp(&s);
        if (!FT_Load_Char(f->face, cp, FT_LOAD_DEFAULT)) w += f->face->glyph->advance.x;
    }
    return (int)((w + 32) >> 6);
}

static int line_height(gd_font *f)
{
    return (int)((f->face->size->metrics.ascender - f->face->size->metrics.descender + 32) >> 6);
}

/* s drawn black with its centre at (cx, cy) onto rgb (W x H). */
static void draw_text(gd_font *f, uint8_t *rgb, int W, int H, double cx, double cy, const char *s)
{
    int asc = (int)(f->face->size->metrics.ascender >> 6), desc = (int)(f->face->size->metrics.descender >> 6);
    int pen = (int)(cx - text_width(f, s) / 2.0 + 0.5), base = (int)(cy + (asc + desc) / 2.0 + 0.5);
    while (*s) {
        unsigned long cp = next_cp(&s);
        if (FT_Load_Char(f->face, cp, FT_LOAD_RENDER)) continue;
        FT_GlyphSlot g = f->face->glyph;
        for (unsigned r = 0; r < g->bitmap.rows; r++)
            for (unsigned c = 0; c < g->bitmap.width; c++) {
                int x = pen + g->bitmap_left + (int)c, y = base - g->bitmap_top + (int)r;
                if (x < 0 || y < 0 || x >= W || y >= H) continue;
                unsigned a = g->bitmap.buffer[r * g->bitmap.pitch + c];
                uint8_t *px = rgb + ((size_t)y * W + x) * 3;
                for (int k = 0; k < 3; k++) px[k] = (uint8_t)((px[k] * (255 - a) + 127) / 255); /* toward black */
            }
        pen += (int)((g->advance.x + 32) >> 6);
    }
}

/* A1111's wrap(): words added to the line while it fits, else a new line. */
typedef struct gd_lines {
    char **v;
    int n;
} gd_lines;

static int wrap(gd_font *f, const char *text, int room, gd_lines *out)
{
    out->v = calloc(1, sizeof *out->v);
    if (!out->v || !(out->v[0] = strdup(""))) return -1;
    out->n = 1;
    for (const char *p = text; *p;) {
        while (*p == ' ' || (*p >= 9 && *p <= 13)) p++;
        if (!*p) break;
        const char *e = p;
        while (*e && !(*e == ' ' || (*e >= 9 && *e <= 13))) e++;
        char *last = out->v[out->n - 1];
        size_t ll = strlen(last), wl = (size_t)(e - p);
        char *cand = malloc(ll + wl + 2);
        if (!cand) return -1;
        snprintf(cand, ll + wl + 2, "%s%s%.*s", last, ll ? " " : "", (int)wl, p);
        if (text_width(f, cand) <= room) {
            free(last);
            out->v[out->n - 1] = cand;
        } else {
            free(cand);
            char **nv = realloc(out->v, sizeof *nv * (size_t)(out->n + 1));
            if (!nv) return -1;
            out->v = nv;
            if (!(out->v[out->n] = strndup(p, wl))) return -1;
            out->n++;
        }
        p = e;
    }
    return 0;
}

static void lines_free(gd_lines *l)
{
    for (int i = 0; l->v && i < l->n; i++) free(l->v[i]);
    free(l->v);
}

/* draw_texts: each line shrunk until it fits its room, centred on x, the
 * lines stacked from y down. */
static void draw_lines(gd_font *f, int size, uint8_t *rgb, int W, int H, double x, double y, const gd_lines *l,
                       int room, int lh, int spacing)
{
    for (int i = 0; i < l->n; i++) {
        int s = size;
        set_size(f, s);
        while (text_width(f, l->v[i]) > room && s > GD_MIN_SHRINK) set_size(f, --s);
        draw_text(f, rgb, W, H, x, y + lh / 2.0, l->v[i]);
        y += lh + spacing;
    }
    set_size(f, size);
}

static int any_text(const char *const *t, int n)
{
    for (int i = 0; i < n; i++)
        if (t[i] && t[i][0]) return 1;
    return 0;
}

int grid_draw(const uint8_t *const *cells, int w, int h, int nx, int ny, const char *const *xlabels,
              const char *const *ylabels, uint8_t **out, int *ow, int *oh, char *note, size_t note_len, char *why,
              size_t why_len)
{
    gd_font f = {0};
    const char *path = font_path();
    if (note_len) note[0] = 0;
    int labels = any_text(xlabels, nx) || any_text(ylabels, ny);
    if (labels && !path) {
        snprintf(note, note_len, "no DejaVuSans.ttf (fonts-dejavu-core, or $FMIMAGE_FONT): the grid has no labels");
        labels = 0;
    }
    if (labels && (FT_Init_FreeType(&f.lib) || FT_New_Face(f.lib, path, 0, &f.face))) {
        snprintf(note, note_len, "%s: FreeType cannot read it: the grid has no labels", path);
        if (f.lib) FT_Done_FreeType(f.lib);
        f.lib = NULL;
        labels = 0;
    }
    /* A1111's (w + h) / 25, but at least GD_MIN_SIZE: 64 px cells (the demo
     * model) would get 5 px letters nobody can read */
    int size = (w + h) / 25 > GD_MIN_SIZE ? (w + h) / 25 : GD_MIN_SIZE, spacing = size / 2, lh = 0;
    gd_lines *xl = calloc((size_t)nx, sizeof *xl), *yl = calloc((size_t)ny, sizeof *yl);
    int *xh = calloc((size_t)nx, sizeof *xh), *yh = calloc((size_t)ny, sizeof *yh);
    int rc = xl && yl && xh && yh ? 0 : gd_fail(why, why_len, "grid: out of memory");
    int pad_left = 0, pad_top = 0;
    if (!rc && labels) {
        set_size(&f, size);
        lh = line_height(&f);
        pad_left = any_text(ylabels, ny) ? w * 3 / 4 : 0;
        int top = 0;
        for (int i = 0; i < nx && !rc; i++) {
            rc = wrap(&f, xlabels[i] ? xlabels[i] : "", w, &xl[i]);
            xh[i] = xl[i].n * (lh + spacing) - spacing;
            if (xh[i] > top) top = xh[i];
        }
        for (int i = 0; i < ny && !rc; i++) {
            rc = wrap(&f, ylabels[i] ? ylabels[i] : "", pad_left, &yl[i]);
            yh[i] = yl[i].n * (lh + spacing) - spacing * yl[i].n; /* A1111's sum, as written */
        }
        if (rc) gd_fail(why, why_len, "grid: out of memory");
        pad_top = any_text(xlabels, nx) ? top + spacing * 2 : 0;
    }
    int W = w * nx + pad_left, H = h * ny + pad_top;
    uint8_t *img = rc ? NULL : malloc((size_t)W * H * 3);
    if (!rc && !img) rc = gd_fail(why, why_len, "grid: out of memory for %dx%d", W, H);
    if (!rc) {
        memset(img, 255, (size_t)W * H * 3);
        for (int iy = 0; iy < ny; iy++)
            for (int ix = 0; ix < nx; ix++) {
                const uint8_t *c = cells[ix + iy * nx];
                for (int r = 0; r < h; r++) {
                    uint8_t *dst = img + ((size_t)(pad_top + iy * h + r) * W + pad_left + ix * w) * 3;
                    if (c) memcpy(dst, c + (size_t)r * w * 3, (size_t)w * 3);
                    else memset(dst, 0, (size_t)w * 3);
                }
            }
        if (labels) {
            for (int ix = 0; ix < nx; ix++)
                draw_lines(&f, size, img, W, H, pad_left + w * ix + w / 2.0, pad_top / 2.0 - xh[ix] / 2.0, &xl[ix], w,
                           lh, spacing);
            for (int iy = 0; iy < ny; iy++)
                draw_lines(&f, size, img, W, H, pad_left / 2.0, pad_top + h * iy + h / 2.0 - yh[iy] / 2.0, &yl[iy],
                           pad_left, lh, spacing);
        }
        *out = img;
        *ow = W;
        *oh = H;
    }
    for (int i = 0; xl && i < nx; i++) lines_free(&xl[i]);
    for (int i = 0; yl && i < ny; i++) lines_free(&yl[i]);
    free(xl);
    free(yl);
    free(xh);
    free(yh);
    if (f.face) FT_Done_Face(f.face);
    if (f.lib) FT_Done_FreeType(f.lib);
    return rc;
}
