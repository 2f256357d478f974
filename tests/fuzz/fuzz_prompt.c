/* libFuzzer: A1111 prompt weighting (te_parse_prompt_attention), the
 * 75-token chunk layout (te_prompt_to_chunks), and prompt editing,
 * alternation and AND (te_prompt_schedule, te_prompt_and_split). */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "textenc/prompt.h"
#include "textenc/prompt_schedule.h"

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
    /* schedules: an error with a message, or entries ending at the steps */
    int steps = size ? 1 + data[size - 1] % 40 : 20;
    te_schedule sc = {0};
    if (te_prompt_schedule(s, steps, size > 1 && (data[1] & 1) ? steps / 2 + 1 : 0, &sc, &err) == 0) {
        if (sc.n < 1) abort();
        for (int k = 1; k < sc.n; k++)
            if (sc.e[k].end_at_step <= sc.e[k - 1].end_at_step) abort();
        if (te_schedule_index(&sc, 2 * steps + 3) < 0) abort();
        te_schedule_free(&sc);
    } else if (!err.msg[0]) {
        abort();
    }
    te_and_split sp = {0};
    if (te_prompt_and_split(s, &sp, &err) == 0) {
        if (sp.n < 1 || sp.n > TE_MAX_AND_PARTS) abort();
        te_and_split_free(&sp);
    } else if (!err.msg[0]) {
        abort();
    }
    free(s);
    return 0;
}
