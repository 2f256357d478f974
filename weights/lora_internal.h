/* What weights/lora_read.c (reading, mapping) and weights/lora_merge.c (the
 * updates, the merged source) share. Not installed. */
#ifndef WT_LORA_INTERNAL_H
#define WT_LORA_INTERNAL_H

#include "weights/binder.h"
#include "weights/lora.h"

/* The tensors a module may have, by their part name in the file. */
typedef enum {
    WT_LP_UP, WT_LP_DOWN, WT_LP_MID,
    WT_LP_HADA_W1A, WT_LP_HADA_W1B, WT_LP_HADA_W2A, WT_LP_HADA_W2B, WT_LP_HADA_T1, WT_LP_HADA_T2,
    WT_LP_LOKR_W1, WT_LP_LOKR_W1A, WT_LP_LOKR_W1B, WT_LP_LOKR_W2, WT_LP_LOKR_W2A, WT_LP_LOKR_W2B,
    WT_LP_LOKR_T2,
    WT_LP_DIFF, WT_LP_DIFF_B,
    WT_LP_IA3_W, WT_LP_IA3_ON_INPUT,
    WT_LP_W_NORM, WT_LP_B_NORM,
    WT_LP_GLORA_A1, WT_LP_GLORA_A2, WT_LP_GLORA_B1, WT_LP_GLORA_B2,
    WT_LP_OFT_BLOCKS, WT_LP_OFT_DIAG,
    WT_LP_ALPHA, WT_LP_SCALE, WT_LP_DORA,
    WT_LP_COUNT
} wt_lora_part;

/* A1111's module types, in the order its create_module tries them. */
typedef enum {
    WT_LK_LORA, WT_LK_HADA, WT_LK_IA3, WT_LK_LOKR, WT_LK_FULL, WT_LK_NORM, WT_LK_GLORA, WT_LK_OFT
} wt_lora_kind;

typedef struct wt_lora_module {
    char key[WT_NAME_MAX];      /* the module's name in the file (before the part) */
    const wt_tensor *part[WT_LP_COUNT];
    wt_lora_kind kind;
    const wt_tensor *target;    /* the checkpoint's weight */
    const wt_tensor *target_bias; /* its bias (for diff_b), or NULL */
    int row0, rows;             /* the rows of target it updates (fused q/k/v: a third) */
    int cols;                   /* numel of those rows / rows */
    int te;                     /* a text-encoder layer: the te multiplier applies */
    float scale;                /* A1111's calc_scale: scale, else alpha/dim, else 1 */
    int ia3_on_input;           /* IA3: w scales the inputs (columns), else the outputs (rows) */
    int oft_blocks, oft_size;   /* OFT: R is block-diagonal, oft_blocks blocks of oft_size rows */
    float oft_constraint;       /* kohya OFT: ||Q|| is clamped to alpha * rows; < 0: none (LyCORIS) */
} wt_lora_module;

/* The module's bias update (diff_b, b_norm), or NULL. */
static inline const wt_tensor *wt_lora_bias_part(const wt_lora_module *m)
{
    return m->part[WT_LP_DIFF_B] ? m->part[WT_LP_DIFF_B] : m->part[WT_LP_B_NORM];
}

struct wt_lora {
    wt_source *src;
    wt_lora_module *mods;
    int n_mods, cap_mods;
    char **unmapped;
    int n_unmapped, cap_unmapped;
};

#endif
