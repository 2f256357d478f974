/* embedding: textual-inversion embeddings as A1111 uses them
 * (modules/textual_inversion/textual_inversion.py EmbeddingDatabase).
 *
 * Every file under the directory (recursively, symlinks followed, zero-byte
 * files skipped) with extension .safetensors, .pt or .bin (any case) is an
 * embedding named by its file name without the extension, case kept. The
 * name is registered by its tokens (the CLIP tokenizer lower-cases), so a
 * prompt matches it wherever its token sequence appears, longest name first
 * (find_embedding_at_position). A file's vectors are read when a prompt
 * first uses it: SD 1.x/2.x one tensor (emb_params, string_to_param.*, or
 * the single tensor of a diffusers concept file), SDXL clip_l + clip_g. */
#ifndef FM_EMBEDDING_H
#define FM_EMBEDDING_H

#include <stdint.h>
#include "core/core.h"
#include "textenc/tokenizer.h"

#define TE_EMB_MAX_VECTORS 75 /* one chunk (A1111 would overrun the chunk) */

typedef struct te_embedding {
    char *name;       /* file name without its extension */
    char *path;
    int32_t *ids;     /* the name's tokens */
    int n_ids;
    int loaded;       /* vectors read */
    int used;         /* a prompt matched it (for "TI hashes") */
    int n_vectors;
    float *vec[2];    /* per tower [n_vectors][width]: SDXL clip_l, clip_g */
    char sha256[65];  /* of the file, as A1111's hashes.sha256; shorthash = 12 digits */
} te_embedding;

typedef struct te_embeddings {
    te_embedding *e;  /* longest name (in tokens) first, then path order */
    int n;
    int n_towers;
    int width[2];
} te_embeddings;

/* Lists dir (NULL or absent: an empty set) for a model whose text side has
 * n_towers towers of these widths. Errors only when memory runs out or
 * dir cannot be read. */
int te_embeddings_open(te_embeddings *db, const char *dir, const te_tokenizer *tok, int n_towers,
                       const int width[2], fm_error *err);
/* The same; confined: only files whose real path lies inside dir (no
 * symbolic link out of it: fmimage serve's names stay in their directory). */
int te_embeddings_open_in(te_embeddings *db, const char *dir, int confined, const te_tokenizer *tok, int n_towers,
                          const int width[2], fm_error *err);
void te_embeddings_free(te_embeddings *db);

/* The embedding whose name's tokens start at tokens[pos] (NULL: none), its
 * length in tokens in *len. A match is read (once) and checked: a file that
 * is not an embedding, of the wrong width or tower count, with 0 or more
 * than 75 vectors, or non-finite values sets err ("embedding "NAME": why")
 * and returns NULL with *len = -1. */
te_embedding *te_embeddings_match(te_embeddings *db, const int32_t *tokens, int n, int pos, int *len,
                                  fm_error *err);

/* Checks one embedding file on its own (fmimage's hostile tests and fuzzing
 * go through this): reads path as an embedding for the given towers. */
int te_embedding_read(te_embedding *e, int n_towers, const int width[2], fm_error *err);

#endif
