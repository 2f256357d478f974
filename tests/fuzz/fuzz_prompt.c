/* libFuzzer: A1111 prompt weighting (te_parse_prompt_attention) and the
 * 75-token chunk layout (te_prompt_to_chunks). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "textenc/prompt.h"

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
    char *s = malloc(size + 1);
    memcpy(s, data, size);
    s[size] = 0;
    fm_error err = {0};
    te_prompt_attention a = {0};
    if (te_parse_prompt_attention(s, &a, &err) == 0) {
        if (a.n < 1) abort();
        te_prompt_attention_free(&a);
    } else if (!err.msg[0]) {
        abort();
    }
    te_token_chunks c = {0};
    int pad = size && (data[0] & 1) ? FM_CLIP_PAD_OPENCLIP : FM_CLIP_PAD_SD1;
    if (te_prompt_to_chunks(tok, s, pad, &c, &err) == 0) {
        if (c.n_chunks < 1) abort();
        for (int k = 0; k < c.n_chunks; k++)
            if (c.ids[k][0] != FM_CLIP_BOS) abort();
        if (te_token_chunks_pad(&c, c.n_chunks + 1, pad) == 0 && c.ids[c.n_chunks - 1][1] != FM_CLIP_EOS)
            abort();
        te_token_chunks_free(&c);
    } else if (!err.msg[0]) {
        abort();
    }
    free(s);
    return 0;
}
