/* xyz: the X/Y/Z plot (A1111's scripts/xyz_grid.py) on the command line:
 * `--xyz "X:Seed:1-4" --xyz "Y:CFG Scale:5,7,9" --xyz "Z:Sampler:Euler a,DPM++ 2M"`
 * (docs/DESIGN.md "X/Y/Z plot"). Every cell is an ordinary job; the grids
 * (one per Z value) are drawn from the cells' PNGs once all are there. */
#ifndef FM_CLI_XYZ_H
#define FM_CLI_XYZ_H

#include <stddef.h>
#include <stdint.h>

#include "fmimage.h"
#include "xyz_axis.h"

typedef enum { XT_SEED, XT_STEPS, XT_CFG, XT_SAMPLER, XT_SCHEDULER, XT_PROMPT_SR, XT_SIZE, XT_DENOISING, XT_CLIP_SKIP, XT_CHECKPOINT } xt_kind;

typedef struct xyz_axis {
    int used;
    xt_kind kind;
    const char *label;  /* A1111's AxisOption label */
    const char *text;   /* the values as given (the infotext's "X Values") */
    xa_values v;
    char **path;        /* Checkpoint name: each value's file (xyz_resolve_checkpoints) */
} xyz_axis;

typedef struct xyz_plan {
    xyz_axis ax[3];     /* X, Y, Z */
} xyz_plan;

/* 1 if s looks like an axis: "X:", "Y:" or "Z:" and a known type, then ':'. */
int xyz_is_spec(const char *s);
/* Adds "AXIS:TYPE:VALUES" to the plan. Returns 0, or -1 with why. */
int xyz_add(xyz_plan *p, const char *spec, char *why, size_t why_len);
void xyz_free(xyz_plan *p);
/* Values on axis a (1 for an unused one), cells in all. */
int xyz_len(const xyz_plan *p, int a);
int xyz_cells(const xyz_plan *p);
/* Cell c's index on each axis: c = ix + iy * nx + iz * nx * ny (A1111's). */
void xyz_coords(const xyz_plan *p, int c, int i[3]);
/* The seed of cell c: its Seed axis value, else base. */
uint64_t xyz_seed(const xyz_plan *p, int c, uint64_t base);

/* What cell c changes in a job: the fields of prm it sets, and the sampler
 * and scheduler names (NULL: unchanged). Prompt S/R replaces every
 * occurrence of the axis' first value in prompt and negative; *prompt and
 * *negative get malloc'd texts (NULL when there is no S/R axis). */
/* stage 0: Prompt S/R only (before the styles); stage 1: the rest. */
int xyz_apply(const xyz_plan *p, int c, int stage, fm_params *prm, const char **sampler, const char **scheduler,
              char **prompt, char **negative, fm_error *err);
/* Prompt S/R's first value must be in the prompt or the negative (A1111's
 * RuntimeError otherwise). Returns 0, or -1 with why. */
int xyz_check(const xyz_plan *p, const char *prompt, const char *negative, char *why, size_t why_len);
/* The label of value i on axis a as A1111 formats it ("Seed: 1", "CFG
 * Scale: 7.0", "Euler a"), into buf. */
const char *xyz_label(const xyz_plan *p, int a, int i, char *buf, size_t n);
/* A grid's infotext: a cell's, with ", Script: X/Y/Z plot, X Type: ...,
 * X Values: ..." appended as A1111's extra_generation_params; the Z axis'
 * fields only with_z (A1111 gives them to the combined grid, not to the
 * per-Z grids). Malloc'd. */
char *xyz_grid_infotext(const xyz_plan *p, const char *cell_infotext, int with_z);

/* Checkpoint name (cli/xyz_ckpt.c): every value of the axis resolved to a
 * file, looked up in dir. Returns 0, or -1 with why ("\"foo\": not found in
 * DIR"). */
int xyz_resolve_checkpoints(xyz_plan *p, const char *dir, char *why, size_t why_len);
/* Cell c's checkpoint file (NULL: no Checkpoint name axis), and its index
 * on that axis (0 without one). */
const char *xyz_checkpoint(const xyz_plan *p, int c);
/* The file of value k of the Checkpoint name axis (NULL past its end). */
const char *xyz_checkpoint_value(const xyz_plan *p, int k);
int xyz_checkpoint_index(const xyz_plan *p, int c);

#endif
