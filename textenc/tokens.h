/* tokens: a prompt as the text encoders consume it. A1111 splits a prompt
 * into chunks of 75 tokens (at BREAK, or when 75 are full), each encoded as
 * its own 77-token sequence [BOS, up to 75 tokens, EOS, padding], with an
 * emphasis weight per position. Produced by the weighting parser
 * (textenc/prompt.h), consumed by the text towers (textenc/textenc.h). */
#ifndef FM_TOKENS_H
#define FM_TOKENS_H

#include <stdint.h>

#define FM_CLIP_LEN 77
#define FM_CLIP_BOS 49406
#define FM_CLIP_EOS 49407

/* A textual-inversion embedding placed in a chunk (A1111's PromptChunkFix):
 * its vectors replace the token embeddings at positions offset+1 ... (after
 * BOS), at most up to the chunk's end; vec[k] is tower k's [n_vectors][width]
 * (owned by the embedding set, textenc/embedding.h). */
typedef struct te_token_fix {
    int chunk, offset;
    int n_vectors;
    const float *vec[2];
} te_token_fix;

typedef struct te_token_chunks {
    int n_chunks;                    /* >= 1 (an empty prompt is one chunk) */
    int32_t (*ids)[FM_CLIP_LEN];     /* [n_chunks][77] */
    float (*weights)[FM_CLIP_LEN];   /* [n_chunks][77]; 1.0 at BOS/EOS/padding */
    /* textual-inversion embeddings (none: n_fixes 0, fixes NULL) */
    te_token_fix *fixes;
    int n_fixes;
} te_token_chunks;

#endif
