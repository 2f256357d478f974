/* tokenizer: the CLIP byte-level BPE tokenizer (openai/CLIP
 * simple_tokenizer.py, the reference of tests/data/README.md#tokenizer):
 * ftfy-style cleaning, HTML unescaping, whitespace collapse, lower case,
 * CLIP's pre-tokenizer and BPE with the 48894 merges of
 * bpe_simple_vocab_16e6.txt.gz, which is embedded in the library (nothing is
 * read at run time).
 *
 * Input is UTF-8. Ill-formed input is not an error: each byte that does not
 * start a well-formed sequence (bad lead byte, truncated or overlong
 * sequence, surrogate, > U+10FFFF) is read as one U+FFFD.
 *
 * A tokenizer is immutable once created (no cache: BPE on a heap is fast
 * enough), so any number of threads may encode with the same tokenizer at
 * the same time; every call uses its own scratch memory. */
#ifndef FM_TOKENIZER_H
#define FM_TOKENIZER_H

#include <stdint.h>

#include "core/core.h"
#include "textenc/tokens.h"

#define FM_CLIP_PAD_SD1 FM_CLIP_EOS /* CLIPTokenizer pads with <|endoftext|> */
#define FM_CLIP_PAD_OPENCLIP 0      /* open_clip.tokenize pads with 0 */

typedef struct te_tokenizer te_tokenizer;

/* Builds the vocabulary and merge table from the embedded merges file
 * (~60 ms). NULL with err set when memory runs out. */
te_tokenizer *te_tokenizer_new(fm_error *err);
void te_tokenizer_free(te_tokenizer *tok);

/* The BPE ids of utf8 without BOS/EOS (SimpleTokenizer.encode). Writes at
 * most max_ids ids and returns the total count, which may be larger than
 * max_ids (as snprintf does); -1 with err set when memory runs out. */
int te_tokenizer_encode(const te_tokenizer *tok, const char *utf8, int32_t *ids, int max_ids,
                        fm_error *err);

/* The same for len bytes that may contain NUL (ftfy deletes U+0000). */
int te_tokenizer_encode_n(const te_tokenizer *tok, const char *utf8, size_t len, int32_t *ids,
                          int max_ids, fm_error *err);

/* The 77-id sequence the text encoders take: BOS, the first 75 ids, EOS, then
 * pad_token (FM_CLIP_PAD_SD1 or FM_CLIP_PAD_OPENCLIP). Returns the number of
 * content ids kept (0..75) or -1 with err set. */
int te_tokenize_77(const te_tokenizer *tok, const char *text, int pad_token,
                   int32_t out[FM_CLIP_LEN], fm_error *err);

#endif
