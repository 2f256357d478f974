/* The upscaling networks' structure, read from a weight file's names and
 * shapes, and bound through the weight binder (weights/binder.h). */
#include "upscale/upscale.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The prefixes state dicts saved by the training code carry. */
static const char *const prefixes[] = {"", "params_ema.", "params.", "module."};

enum { NAMING_NEW, NAMING_OLD }; /* RRDBNet: BasicSR's names, or the old ESRGAN Sequential's */

typedef struct probe {
    const wt_source *src;
    const char *prefix;
} probe;

static const wt_tensor *find(const probe *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const wt_tensor *find(const probe *p, const char *fmt, ...)
{
    char name[WT_NAME_MAX];
    int n = snprintf(name, sizeof name, "%s", p->prefix);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name + n, sizeof name - (size_t)n, fmt, ap);
    va_end(ap);
    return wt_find(p->src, name);
}

static int is_conv3(const wt_tensor *t)
{
    return t && t->ndim == 4 && t->shape[2] == 3 && t->shape[3] == 3 && t->shape[0] > 0 && t->shape[1] > 0 &&
           t->shape[0] <= 4096 && t->shape[1] <= 4096;
}

static void conv3_shape(kn_conv *c, int cin, int cout)
{
    memset(c, 0, sizeof *c);
    c->cin = cin;
    c->cout = cout;
    c->kh = c->kw = 3;
    c->stride = 1;
    c->pad_t = c->pad_l = c->pad_b = c->pad_r = 1;
    c->w.rows = cout;
    c->w.cols = cin * 9;
}

static void bind_conv(wt_binder *B, kn_conv *c, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void bind_conv(wt_binder *B, kn_conv *c, const char *fmt, ...)
{
    char base[WT_NAME_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(base, sizeof base, fmt, ap);
    va_end(ap);
    int64_t shape[4] = {c->cout, c->cin, 3, 3};
    wt_bind_mat(B, &c->w, c->w.rows, c->w.cols, 4, shape, "%s.weight", base);
    wt_bind_vec(B, &c->bias, c->cout, "%s.bias", base);
}

static kn_conv *dense_conv(const up_model *m, int block, int rdb, int k)
{
    return &m->dense[((size_t)block * 3 + rdb) * 5 + k];
}

/* ---------------------------------------------------------------- RRDBNet */

/* Sizes from the names: conv_first [nf][3*u*u], the dense layers' growth,
 * the trunk's length, the upsampling stages. */
static int rrdb_shape(up_model *m, const probe *p, int naming, fm_error *err)
{
    const char *path = p->src->path;
    const wt_tensor *first = find(p, naming == NAMING_NEW ? "conv_first.weight" : "model.0.weight");
    const wt_tensor *grow = find(p, naming == NAMING_NEW ? "body.0.rdb1.conv1.weight" : "model.1.sub.0.RDB1.conv1.0.weight");
    if (!is_conv3(first) || !is_conv3(grow))
        return core_fail(err, FM_EINPUT, "%s: RRDBNet: conv_first or the first dense layer is not a 3x3 convolution", path);
    int cin = (int)first->shape[1];
    m->nf = (int)first->shape[0];
    m->gc = (int)grow->shape[0];
    m->unshuffle = cin == 3 ? 1 : cin == 12 ? 2 : cin == 48 ? 4 : 0;
    if (!m->unshuffle)
        return core_fail(err, FM_EINPUT, "%s: RRDBNet with %d input channels (3, 12 or 48 expected)", path, cin);
    while (m->n_blocks < 1000 && (naming == NAMING_NEW ? find(p, "body.%d.rdb1.conv1.weight", m->n_blocks)
                                                     : find(p, "model.1.sub.%d.RDB1.conv1.0.weight", m->n_blocks)))
        m->n_blocks++;
    if (naming == NAMING_NEW) {
        while (m->n_up < UP_MAX_UP && find(p, "conv_up%d.weight", m->n_up + 1)) m->n_up++;
    } else {
        /* the Sequential's last conv is model.(3n+4), n = upsampling stages */
        int last = -1;
        for (int i = 4; i <= 3 * UP_MAX_UP + 4; i += 3)
            if (find(p, "model.%d.weight", i)) last = i;
        m->n_up = last < 0 ? -1 : (last - 4) / 3;
    }
    /* BasicSR's RRDBNet always has conv_up1 and conv_up2 (x8 variants a third) */
    if (m->n_up < 0 || (naming == NAMING_NEW && m->n_up < 2) || (m->unshuffle > 1 && m->n_up != 2))
        return core_fail(err, FM_EINPUT, "%s: RRDBNet: cannot tell the upsampling stages from the names", path);
    m->scale = (1 << m->n_up) / m->unshuffle;
    if (m->scale < 1) return core_fail(err, FM_EINPUT, "%s: RRDBNet scales down", path);
    const wt_tensor *last = naming == NAMING_NEW ? find(p, "conv_last.weight") : find(p, "model.%d.weight", 3 * m->n_up + 4);
    if (!is_conv3(last)) return core_fail(err, FM_EINPUT, "%s: RRDBNet: conv_last is not a 3x3 convolution", path);
    m->out_ch = (int)last->shape[0];
    if (m->out_ch != 3) return core_fail(err, FM_EINPUT, "%s: RRDBNet with %d output channels (3 expected)", path, m->out_ch);

    m->dense = calloc((size_t)m->n_blocks * 15, sizeof *m->dense);
    if (!m->dense) return core_fail(err, FM_EINPUT, "%s: out of memory", path);
    conv3_shape(&m->first, cin, m->nf);
    for (int b = 0; b < m->n_blocks; b++)
        for (int r = 0; r < 3; r++)
            for (int k = 0; k < 5; k++)
                conv3_shape(dense_conv(m, b, r, k), m->nf + k * m->gc, k == 4 ? m->nf : m->gc);
    conv3_shape(&m->body, m->nf, m->nf);
    for (int i = 0; i < m->n_up; i++) conv3_shape(&m->up[i], m->nf, m->nf);
    conv3_shape(&m->hr, m->nf, m->nf);
    conv3_shape(&m->last, m->nf, m->out_ch);
    return 0;
}

static void rrdb_bind(wt_binder *B, up_model *m, int naming)
{
    int old = naming == NAMING_OLD;
    bind_conv(B, &m->first, old ? "model.0" : "conv_first");
    for (int b = 0; b < m->n_blocks; b++)
        for (int r = 0; r < 3; r++)
            for (int k = 0; k < 5; k++)
                bind_conv(B, dense_conv(m, b, r, k), old ? "model.1.sub.%d.RDB%d.conv%d.0" : "body.%d.rdb%d.conv%d",
                          b, r + 1, k + 1);
    if (old) bind_conv(B, &m->body, "model.1.sub.%d", m->n_blocks);
    else bind_conv(B, &m->body, "conv_body");
    for (int i = 0; i < m->n_up; i++) {
        if (old) bind_conv(B, &m->up[i], "model.%d", 3 + 3 * i);
        else bind_conv(B, &m->up[i], "conv_up%d", i + 1);
    }
    if (old) {
        bind_conv(B, &m->hr, "model.%d", 3 * m->n_up + 2);
        bind_conv(B, &m->last, "model.%d", 3 * m->n_up + 4);
    } else {
        bind_conv(B, &m->hr, "conv_hr");
        bind_conv(B, &m->last, "conv_last");
    }
}

/* ---------------------------------------------------------------- SRVGG */

/* body.(2i) are the convs, body.(2i+1) the PReLU slopes between them. */
static int srvgg_shape(up_model *m, const probe *p, fm_error *err)
{
    const char *path = p->src->path;
    while (m->n_convs < 1000 && is_conv3(find(p, "body.%d.weight", 2 * m->n_convs))) m->n_convs++;
    if (m->n_convs < 2) return core_fail(err, FM_EINPUT, "%s: SRVGGNetCompact with fewer than two convolutions", path);
    const wt_tensor *first = find(p, "body.0.weight"), *last = find(p, "body.%d.weight", 2 * m->n_convs - 2);
    m->nf = (int)first->shape[0];
    if (first->shape[1] != 3)
        return core_fail(err, FM_EINPUT, "%s: SRVGGNetCompact with %lld input channels (3 expected)", path,
                         (long long)first->shape[1]);
    if (!find(p, "body.1.weight"))
        return core_fail(err, FM_EINPUT, "%s: SRVGGNetCompact without PReLU slopes (its ReLU and LeakyReLU variants "
                                         "store nothing to tell them apart): not supported", path);
    int c = (int)last->shape[0];
    m->out_ch = 3;
    for (m->scale = 1; m->scale <= 8 && 3 * m->scale * m->scale < c; m->scale++) {}
    if (3 * m->scale * m->scale != c)
        return core_fail(err, FM_EINPUT, "%s: SRVGGNetCompact's last convolution has %d channels, not 3 x scale^2", path, c);
    m->convs = calloc((size_t)m->n_convs, sizeof *m->convs);
    m->prelu = calloc((size_t)m->n_convs, sizeof *m->prelu);
    if (!m->convs || !m->prelu) return core_fail(err, FM_EINPUT, "%s: out of memory", path);
    for (int i = 0; i < m->n_convs; i++)
        conv3_shape(&m->convs[i], i == 0 ? 3 : m->nf, i == m->n_convs - 1 ? c : m->nf);
    return 0;
}

static void srvgg_bind(wt_binder *B, up_model *m)
{
    for (int i = 0; i < m->n_convs; i++) {
        bind_conv(B, &m->convs[i], "body.%d", 2 * i);
        if (i < m->n_convs - 1) wt_bind_vec(B, &m->prelu[i], m->nf, "body.%d.weight", 2 * i + 1);
    }
}

/* ---------------------------------------------------------------- loading */

up_model *up_load(const wt_source *src, fm_error *err)
{
    probe p = {src, NULL};
    int naming = NAMING_NEW;
    up_arch arch = UP_RRDBNET;
    for (size_t i = 0; i < sizeof prefixes / sizeof *prefixes && !p.prefix; i++) {
        probe q = {src, prefixes[i]};
        if (find(&q, "conv_first.weight")) p = q, arch = UP_RRDBNET, naming = NAMING_NEW;
        else if (find(&q, "model.0.weight") && find(&q, "model.1.sub.0.RDB1.conv1.0.weight"))
            p = q, arch = UP_RRDBNET, naming = NAMING_OLD;
        else if (find(&q, "body.0.weight") && !find(&q, "body.0.rdb1.conv1.weight")) p = q, arch = UP_SRVGG;
    }
    if (!p.prefix) {
        wt_fail(err, src, "not an upscaling model (no ESRGAN/RRDBNet or SRVGGNetCompact tensors)");
        return NULL;
    }
    up_model *m = calloc(1, sizeof *m);
    if (!m) {
        wt_fail(err, src, "out of memory");
        return NULL;
    }
    m->arch = arch;
    int rc = arch == UP_RRDBNET ? rrdb_shape(m, &p, naming, err) : srvgg_shape(m, &p, err);
    if (rc) {
        up_free(m);
        return NULL;
    }
    wt_binder B;
    wt_bind_begin(&B, src, p.prefix, "upscaler", err);
    do {
        if (arch == UP_RRDBNET) rrdb_bind(&B, m, naming);
        else srvgg_bind(&B, m);
    } while (wt_bind_again(&B));
    if (!(m->weights = wt_bind_end(&B))) {
        up_free(m);
        return NULL;
    }
    return m;
}

void up_free(up_model *m)
{
    if (!m) return;
    wt_weights_free(m->weights);
    free(m->dense);
    free(m->convs);
    free(m->prelu);
    free(m);
}
