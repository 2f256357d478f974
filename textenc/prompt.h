/* prompt: AUTOMATIC1111's prompt weighting. A prompt is parsed into
 * (text, weight) pieces exactly as A1111's prompt_parser.parse_prompt_attention
 * does ((x) x1.1, (x:w), [x] /1.1, nesting multiplies, escapes \( \) \[ \] \\,
 * BREAK), then tokenized piece by piece and laid out in 75-token chunks as
 * A1111's FrozenCLIPEmbedderWithCustomWords.tokenize_line does with its
 * default settings (emphasis "Original", comma_padding_backtrack 20) and
 * its textual-inversion embeddings (te_prompt_to_chunks_emb). See tests/data/README.md#prompt-weighting. */
#ifndef FM_PROMPT_H
#define FM_PROMPT_H

#include "core/core.h"
#include "textenc/tokenizer.h"
#include "textenc/tokens.h"

/* A1111 ties the comma back-tracking to the ',</w>' token. */
#define FM_PROMPT_COMMA_TOKEN 267
#define FM_PROMPT_CHUNK_TOKENS 75
#define FM_PROMPT_COMMA_BACKTRACK 20 /* A1111 default of comma_padding_backtrack */

typedef struct {
    char *text;    /* UTF-8 */
    double weight; /* the BREAK marker is ("BREAK", -1) (times enclosing brackets) */
} te_prompt_piece;

typedef struct {
    te_prompt_piece *pieces;
    int n;
} te_prompt_attention;

/* parse_prompt_attention(prompt): at least one piece ("" -> [("", 1.0)]).
 * Ill-formed UTF-8 bytes become U+FFFD. Fails with FM_EINPUT where A1111's
 * float() would raise (a weight like "(a:1.2.3)" or "(a:.)"), when memory
 * runs out, or when brackets would cost more than 10^8 weight
 * multiplications (A1111's rule is quadratic: "(a" repeated 10^5 times). */
int te_parse_prompt_attention(const char *prompt, te_prompt_attention *out, fm_error *err);
void te_prompt_attention_free(te_prompt_attention *a);

/* The chunks of prompt: each [BOS, 75 slots, EOS] with per-position weights;
 * unused slots hold EOS with weight 1.0 and, when pad_token differs from EOS
 * (OpenCLIP: 0), everything after the first EOS becomes pad_token, as A1111's
 * process_tokens does. A BREAK marker starts a new chunk; a 76th token starts
 * a new chunk, moving the tokens after a comma among the last 20 with it. A
 * prompt without syntax gives the weights 1.0 exactly. Returns 0 or an error
 * code; out is freed with te_token_chunks_free. */
int te_prompt_to_chunks(const te_tokenizer *tok, const char *prompt, int pad_token,
                        te_token_chunks *out, fm_error *err);
void te_token_chunks_free(te_token_chunks *c);

/* The same with textual-inversion embeddings (textenc/embedding.h; NULL:
 * none), as tokenize_line places them: at a match, when the chunk cannot
 * hold all its vectors a new chunk starts; the vectors take token-0 slots
 * with the piece's weight and a fix (out->fixes). A fix stays with the chunk
 * it was placed in, also when comma back-tracking moves its slots on (as
 * A1111's relocation does). A file that fails to read is an error. */
struct te_embeddings;
int te_prompt_to_chunks_emb(const te_tokenizer *tok, const char *prompt, int pad_token,
                            struct te_embeddings *emb, te_token_chunks *out, fm_error *err);

/* Appends empty chunks [BOS, EOS, pad_token...] (weights 1.0) until c has
 * n_chunks, so that CFG's cond and uncond line up; a longer c is left as it
 * is. Returns 0 or an error code (memory). */
int te_token_chunks_pad(te_token_chunks *c, int n_chunks, int pad_token);

#endif
