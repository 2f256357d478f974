/* Tiled KL-VAE decoding. The latent is cut into overlapping tiles on a
 * grid; each tile is decoded on its own (memory: one tile's activations)
 * and the decoded tiles are blended with weights that ramp linearly across
 * each overlap, so tile edges (where zero padding makes a tile wrong) get
 * almost no weight and no seam shows.
 *
 * Per-tile GroupNorm statistics would shift tones from tile to tile. With
 * norm_passes > 0 the tiles are first decoded to gather whole-image
 * statistics (each tile contributing only its own cells, so overlaps are
 * not counted twice); the final pass normalises every tile with them.
 *
 * The mid block's attention is global. While the latent is small enough
 * the decoder's latent-resolution part (post_quant_conv, conv_in, mid) runs
 * once on the whole latent and only the up levels are tiled; beyond that
 * each tile attends within itself, the one approximation left. */
#include "vae/kl_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void vae_tiles_default(vae_tiles *t)
{
    t->tile = 64;
    t->overlap = 16;
    t->norm_passes = 1;
    t->whole_mid_max = 128 * 128;
}

/* Tiles along one axis of length n: equal size, spread evenly, neighbours
 * sharing at least `overlap` cells. Returns the count; start[] gets origins. */
static int tile_starts(int n, int tile, int overlap, int *start)
{
    if (n <= tile) {
        start[0] = 0;
        return 1;
    }
    int step = tile - overlap, count = (n - overlap + step - 1) / step;
    if (count < 2) count = 2;
    for (int i = 0; i < count; i++) start[i] = (int)((long long)i * (n - tile) / (count - 1));
    return count;
}

static int tile_count(int n, int tile, int overlap)
{
    if (n <= tile) return 1;
    int step = tile - overlap, count = (n - overlap + step - 1) / step;
    return count < 2 ? 2 : count;
}

/* Feather weight of pixel p (0..size-1) of a tile whose overlaps with the
 * previous/next tile are ramp_lo/ramp_hi pixels (0 at the image border). */
static float feather(int p, int size, int ramp_lo, int ramp_hi)
{
    float wgt = 1.0f;
    if (ramp_lo > 0) wgt = fminf(wgt, (p + 0.5f) / ramp_lo);
    if (ramp_hi > 0) wgt = fminf(wgt, (size - p - 0.5f) / ramp_hi);
    return wgt;
}

typedef struct axis {
    int n, count, size; /* latent length, tiles, tile size (latent cells) */
    int *start;
    int *core0, *core1; /* each tile's own cells, absolute */
} axis;

/* Takes the axis' arrays from ar; with a counting arena only counts. */
static int axis_init(axis *a, int n, const vae_tiles *t, vae_arena *ar)
{
    a->n = n;
    a->count = tile_count(n, t->tile, t->overlap);
    a->size = n < t->tile ? n : t->tile;
    a->start = vae_take(ar, sizeof(int) * 3 * (size_t)a->count);
    if (!a->start) return -1;
    a->core0 = a->start + a->count;
    a->core1 = a->core0 + a->count;
    tile_starts(n, t->tile, t->overlap, a->start);
    for (int i = 0; i < a->count; i++) {
        /* the border between tiles i-1 and i is the middle of their overlap */
        a->core0[i] = i == 0 ? 0 : (a->start[i] + a->start[i - 1] + a->size) / 2;
        if (i > 0) a->core1[i - 1] = a->core0[i];
    }
    a->core1[a->count - 1] = n;
    return 0;
}

static int ramp_lo(const axis *a, int i, int f)
{
    return i == 0 ? 0 : (a->start[i - 1] + a->size - a->start[i]) * f;
}

static int ramp_hi(const axis *a, int i, int f)
{
    return i == a->count - 1 ? 0 : (a->start[i] + a->size - a->start[i + 1]) * f;
}

/* Sum over tiles of the feather weights along one axis, per pixel. */
static void axis_weight_sum(float *sum, const axis *a, int f)
{
    memset(sum, 0, sizeof(float) * (size_t)a->n * f);
    int size = a->size * f;
    for (int i = 0; i < a->count; i++)
        for (int p = 0; p < size; p++)
            sum[a->start[i] * f + p] += feather(p, size, ramp_lo(a, i, f), ramp_hi(a, i, f));
}

static int validate(const vae_tiles *t, fm_error *err)
{
    if (t->tile < 4 || t->overlap < 0 || t->overlap >= t->tile / 2 + 1 || t->norm_passes < 0 ||
        t->norm_passes > 8 || t->whole_mid_max < 0)
        return core_fail(err, FM_EUSAGE, "vae tiling: tile %d, overlap %d, norm passes %d", t->tile,
                       t->overlap, t->norm_passes);
    return 0;
}

static void crop(float *dst, const float *src, int c, int h, int w, int y0, int x0, int th, int tw)
{
    for (int ch = 0; ch < c; ch++)
        for (int y = 0; y < th; y++)
            memcpy(dst + ((size_t)ch * th + y) * tw, src + ((size_t)ch * h + y0 + y) * w + x0,
                   sizeof(float) * (size_t)tw);
}

static void finish_stats(vae_norm_share *ns)
{
    size_t n = (size_t)ns->n_calls * VAE_GROUPS;
    for (size_t i = 0; i < n; i++) {
        double cnt = ns->count[i] > 0 ? ns->count[i] : 1, m = ns->sum[i] / cnt;
        double var = ns->sumsq[i] / cnt - m * m;
        ns->mean[i] = (float)m;
        ns->rstd[i] = (float)(1.0 / sqrt((var > 0 ? var : 0) + VAE_EPS));
    }
}

typedef struct tiled {
    vae_kl *vae;
    const float *z; /* or the whole mid output, when from_mid */
    int in_ch, from_mid;
    float *img;
    int h, w, f;
    axis ay, ax;
    float *ztile, *itile, *wy, *wx, *wrow;
    vae_run run;
    vae_norm_share ns;
} tiled;

/* One sweep over all tiles; `blend` accumulates the weighted tiles in img. */
static int sweep(tiled *T, int blend, fm_error *err)
{
    const wt_vae_config *cfg = &T->vae->cfg;
    int th = T->ay.size, tw = T->ax.size, f = T->f, H = T->h * f, W = T->w * f;
    for (int i = 0; i < T->ay.count; i++)
        for (int j = 0; j < T->ax.count; j++) {
            int y0 = T->ay.start[i], x0 = T->ax.start[j];
            T->ns.core_y0 = T->ay.core0[i] - y0;
            T->ns.core_y1 = T->ay.core1[i] - y0;
            T->ns.core_x0 = T->ax.core0[j] - x0;
            T->ns.core_x1 = T->ax.core1[j] - x0;
            crop(T->ztile, T->z, T->in_ch, T->h, T->w, y0, x0, th, tw);
            if (vae_decode_with(&T->run, T->itile, T->ztile, th, tw, err)) return FM_EINPUT;
            if (!blend) continue;
            int ph = th * f, pw = tw * f;
            int rl = ramp_lo(&T->ay, i, f), rh = ramp_hi(&T->ay, i, f);
            int cl = ramp_lo(&T->ax, j, f), cr = ramp_hi(&T->ax, j, f);
            for (int x = 0; x < pw; x++) T->wrow[x] = feather(x, pw, cl, cr);
#pragma omp parallel for schedule(static)
            for (int y = 0; y < ph; y++) {
                float wy = feather(y, ph, rl, rh);
                for (int c = 0; c < cfg->out_ch; c++) {
                    const float *src = T->itile + ((size_t)c * ph + y) * pw;
                    float *dst = T->img + ((size_t)c * H + y0 * f + y) * W + x0 * f;
                    for (int x = 0; x < pw; x++) dst[x] += wy * T->wrow[x] * src[x];
                }
            }
        }
    return 0;
}

static int whole_mid(const vae_tiles *t, int h, int w) { return (long long)h * w <= t->whole_mid_max; }

static int short_arena(fm_error *err)
{
    return core_fail(err, FM_EINPUT, "vae: internal error: the decode arena is smaller than its plan");
}

/* A tiled decode in arena ar; a counting arena (base NULL) only counts, so
 * the size is this code path. Layout: [mid output][trunk's run, given back]
 * then [axes][tile buffers][statistics][the tiles' run]. */
static int decode_tiled_in(vae_kl *vae, float *img, const float *z, int h, int w, const vae_tiles *tiling,
                           vae_arena *ar, fm_error *err)
{
    const wt_vae_config *cfg = &vae->cfg;
    int counting = !ar->base;
    tiled T;
    memset(&T, 0, sizeof T);
    T.vae = vae;
    T.z = z;
    T.in_ch = cfg->embed_dim;
    T.img = img;
    T.h = h;
    T.w = w;
    T.f = cfg->latent_factor;
    int f = T.f;
    if (whole_mid(tiling, h, w)) {
        T.in_ch = vae->dec.mid.attn_1.c;
        float *mid = vae_take(ar, sizeof(float) * T.in_ch * h * w);
        if (!counting && !mid) return short_arena(err);
        if (vae_decode_trunk(vae, mid, z, h, w, ar, err)) return FM_EINPUT;
        T.z = mid;
        T.from_mid = 1;
    }
    int bad = axis_init(&T.ay, h, tiling, ar) | axis_init(&T.ax, w, tiling, ar);
    int th = T.ay.size, tw = T.ax.size, n_calls = vae_decoder_norm_calls(cfg);
    size_t nst = (size_t)n_calls * VAE_GROUPS;
    T.ztile = vae_take(ar, sizeof(float) * T.in_ch * th * tw);
    T.itile = vae_take(ar, sizeof(float) * cfg->out_ch * th * tw * f * f);
    T.wy = vae_take(ar, sizeof(float) * h * f);
    T.wx = vae_take(ar, sizeof(float) * w * f);
    T.wrow = vae_take(ar, sizeof(float) * tw * f);
    T.ns.sum = vae_take(ar, nst * (3 * sizeof(double) + 2 * sizeof(float)));
    if (vae_run_take_decode(&T.run, vae, th, tw, T.from_mid, ar, err)) return FM_EINPUT;
    if (counting) return 0;
    if (bad || !T.ztile || !T.itile || !T.wy || !T.wx || !T.wrow || !T.ns.sum) return short_arena(err);
    T.ns.sumsq = T.ns.sum + nst;
    T.ns.count = T.ns.sumsq + nst;
    T.ns.mean = (float *)(T.ns.count + nst);
    T.ns.rstd = T.ns.mean + nst;
    T.ns.n_calls = n_calls;
    T.ns.tile_h = th;
    T.ns.tile_w = tw;
    T.run.norms = &T.ns;

    for (int pass = 0; pass < tiling->norm_passes; pass++) {
        memset(T.ns.sum, 0, nst * 3 * sizeof(double));
        T.ns.collect = 1;
        T.ns.shared = pass > 0;
        if (sweep(&T, 0, err)) return FM_EINPUT;
        finish_stats(&T.ns);
    }
    T.ns.collect = 0;
    T.ns.shared = tiling->norm_passes > 0;
    size_t H = (size_t)h * f, W = (size_t)w * f;
    memset(img, 0, sizeof(float) * cfg->out_ch * H * W);
    if (sweep(&T, 1, err)) return FM_EINPUT;

    axis_weight_sum(T.wy, &T.ay, f);
    axis_weight_sum(T.wx, &T.ax, f);
#pragma omp parallel for schedule(static)
    for (size_t y = 0; y < H; y++)
        for (int c = 0; c < cfg->out_ch; c++) {
            float *row = img + ((size_t)c * H + y) * W;
            for (size_t x = 0; x < W; x++) row[x] /= T.wy[y] * T.wx[x];
        }
    return 0;
}

/* Untiled when tiling is NULL or the latent fits one tile. */
static int decode_in(vae_kl *vae, float *img, const float *z, int h, int w, const vae_tiles *tiling,
                     vae_arena *ar, fm_error *err)
{
    if (tiling && (h > tiling->tile || w > tiling->tile))
        return decode_tiled_in(vae, img, z, h, w, tiling, ar, err);
    return vae_decode_untiled(vae, img, z, h, w, ar, err);
}

/* Bytes decode_in takes (vae may be a weightless skeleton); SIZE_MAX for
 * an impossible plan. */
static size_t decode_bytes(vae_kl *vae, int h, int w, const vae_tiles *tiling)
{
    vae_arena count = {0};
    if (decode_in(vae, NULL, NULL, h, w, tiling, &count, NULL)) return SIZE_MAX;
    return count.peak;
}

static int check_decode(vae_kl *vae, int h, int w, const vae_tiles *tiling, fm_error *err)
{
    if (tiling && validate(tiling, err)) return err ? err->code : FM_EUSAGE;
    return vae_check_size(vae, h, w, "decode", err);
}

size_t vae_decode_arena_bytes(vae_kl *vae, int h, int w, const vae_tiles *tiling)
{
    if (check_decode(vae, h, w, tiling, NULL)) return 0;
    return decode_bytes(vae, h, w, tiling);
}

int vae_decode_in(vae_kl *vae, float *img, const float *z, int h, int w, const vae_tiles *tiling,
                     void *arena, size_t bytes, fm_error *err)
{
    int rc = check_decode(vae, h, w, tiling, err);
    if (rc) return rc;
    if (!arena) return core_fail(err, FM_EINPUT, "vae decode: no arena");
    vae_arena ar = {.base = arena, .cap = bytes};
    return decode_in(vae, img, z, h, w, tiling, &ar, err);
}

/* The entry points without a caller's arena: one allocation up front. */
static int decode_alloc(vae_kl *vae, float *img, const float *z, int h, int w, const vae_tiles *tiling,
                        fm_error *err)
{
    int rc = check_decode(vae, h, w, tiling, err);
    if (rc) return rc;
    size_t bytes = decode_bytes(vae, h, w, tiling);
    void *arena = bytes != SIZE_MAX ? core_alloc(bytes) : NULL;
    if (!arena) return core_fail(err, FM_EINPUT, "vae: out of memory for %zu MB of activations", bytes >> 20);
    rc = vae_decode_in(vae, img, z, h, w, tiling, arena, bytes, err);
    core_free(arena);
    return rc;
}

int vae_decode(vae_kl *vae, float *img, const float *z, int h, int w, fm_error *err)
{
    return decode_alloc(vae, img, z, h, w, NULL, err);
}

int vae_decode_tiled(vae_kl *vae, float *img, const float *z, int h, int w,
                        const vae_tiles *tiling, fm_error *err)
{
    vae_tiles def;
    if (!tiling) {
        vae_tiles_default(&def);
        tiling = &def;
    }
    return decode_alloc(vae, img, z, h, w, tiling, err);
}

/* ---------------------------------------------------------------- memory */

size_t vae_decode_bytes(const wt_vae_config *cfg, int h, int w, const vae_tiles *tiling)
{
    vae_kl *skel = calloc(1, sizeof *skel);
    if (!skel) return SIZE_MAX;
    size_t bytes = SIZE_MAX;
    if (!vae_build(skel, cfg, NULL)) {
        bytes = decode_bytes(skel, h, w, tiling);
    }
    vae_free(skel);
    return bytes;
}

int vae_check_decode_memory(const wt_vae_config *cfg, int h, int w,
                               const vae_tiles *tiling, size_t budget, fm_error *err)
{
    size_t need = vae_decode_bytes(cfg, h, w, tiling);
    if (need <= budget) return 0;
    int f = vae_latent_factor(cfg);
    if (tiling)
        return core_fail(err, FM_EINPUT,
                       "decoding %dx%d needs %zu MB even with --vae-tiling (tile %d), more than the %zu MB available",
                       w * f, h * f, need >> 20, tiling->tile, budget >> 20);
    return core_fail(err, FM_EINPUT,
                   "decoding %dx%d needs %zu MB, more than the %zu MB available: use --vae-tiling",
                   w * f, h * f, need >> 20, budget >> 20);
}

size_t vae_memory_available(void)
{
    FILE *fp = fopen("/proc/meminfo", "r");
    if (fp) {
        char line[128];
        unsigned long long kb;
        while (fgets(line, sizeof line, fp))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
                fclose(fp);
                return (size_t)kb * 1024;
            }
        fclose(fp);
    }
    long pages = sysconf(_SC_AVPHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 0;
}
