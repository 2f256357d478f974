/* Textual-inversion embeddings in the pipeline: the model's embedding set
 * for a directory, and A1111's "TI hashes" (docs/DESIGN.md "Embeddings").
 * Not installed. */
#ifndef FM_DIFFUSION_EMBEDDINGS_H
#define FM_DIFFUSION_EMBEDDINGS_H

#include "fmimage.h"
#include "textenc/embedding.h"

/* The set under dir (NULL: empty) for m's text towers; confined: only
 * files really inside dir (fm_params.embeddings_confined). */
int df_embeddings_open(const fm_model *m, const char *dir, int confined, te_embeddings *db, fm_error *err);

/* "TI hashes" for a prompt and negative as fm_generate encodes them, the
 * schedules made for steps (the sampler's total steps). */
char *df_ti_hashes(const fm_model *m, const char *prompt, const char *negative, int steps, const char *dir, int confined,
                   fm_error *err);

#endif
