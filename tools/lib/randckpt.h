/* randckpt: checkpoints with random (or zero) weights in a real layout, for
 * tests and benchmarks. A layout is a TSV file, one tensor a line:
 * name<TAB>dtype<TAB>shape (comma-separated, empty for a scalar), see
 * tests/data/layouts/README.md. */
#ifndef FM_RANDCKPT_H
#define FM_RANDCKPT_H

#include "tools/lib/st_write.h"

typedef struct tl_layout {
    tl_st_entry *entries;
    int n;
    char *strings; /* names */
} tl_layout;

/* Reads a layout TSV. Errors "PATH:LINE: why". */
int tl_layout_read(tl_layout *layout, const char *path, fm_error *err);
void tl_layout_free(tl_layout *layout);

typedef struct tl_randckpt_opts {
    uint64_t seed;
    int float_dtype;        /* -1 keeps the layout's dtype, else FM_DT_F32/F16/BF16 */
    int zeros;              /* sparse all-zero file: header only, instant */
    const char *config;     /* __metadata__["fmimage.config"], or NULL */
} tl_randckpt_opts;

/* Writes every tensor of layout to out. Random weights keep a forward pass
 * finite: conv/linear U(-b, b) with b = sqrt(3 / fan_in), norm weights near
 * 1, small biases, embeddings N(0, 0.02^2), position_ids = arange, and the
 * DDPM buffers / denoiser.sigmas with their true values (scaled linear
 * schedule 0.00085..0.012, 1000 steps). A tensor's values depend only on the
 * seed and its name. */
int tl_randckpt_write(const tl_layout *layout, const char *out, const tl_randckpt_opts *opts,
                      fm_error *err);

#endif
