/* libFuzzer: the CLIP tokenizer on arbitrary bytes (with and without NUL),
 * and the 77-id layout. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "textenc/tokenizer.h"

static te_tokenizer *tok;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc; (void)argv;
    fm_error err = {0};
    tok = te_tokenizer_new(&err);
    if (!tok) abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fm_error err = {0};
    int32_t ids[256];
    int n = te_tokenizer_encode_n(tok, (const char *)data, size, ids, 256, &err);
    if (n < 0) abort();
    for (int i = 0; i < n && i < 256; i++)
        if (ids[i] < 0 || ids[i] > FM_CLIP_EOS) abort(); /* "<|endoftext|>" in the text is EOS */
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = 0;
    int m = te_tokenizer_encode(tok, s, ids, 8, &err);
    if (m < 0) abort();
    int32_t out[FM_CLIP_LEN];
    int kept = te_tokenize_77(tok, s, FM_CLIP_PAD_OPENCLIP, out, &err);
    if (kept < 0 || kept > 75 || out[0] != FM_CLIP_BOS || out[kept + 1] != FM_CLIP_EOS) abort();
    free(s);
    return 0;
}
