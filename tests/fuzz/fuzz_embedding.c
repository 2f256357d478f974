/* libFuzzer: textual-inversion embedding files and diffusers VAE names.
 * The input is read as an embedding file (memfd) for an SD 1.x text side
 * (one tower, width 8) and for SDXL's (two, 32 + 32): accepted vectors are
 * finite, 1..75 of them, of the width asked for; a refusal is one line. The
 * same bytes, as text, are a prompt chunked against tests/data/embeddings
 * (every fix inside its chunk) and lines of tensor names for the diffusers
 * VAE renaming. Run from the repository root. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_memfile.h"
#include "textenc/embedding.h"
#include "textenc/prompt.h"
#include "weights/rename.h"

static te_tokenizer *tok; /* a harness's own state, made once */

static void check_file(const char *path, int n_towers, const int width[2])
{
    te_embedding e = {.name = "fuzz", .path = (char *)path};
    fm_error err = {0};
    if (te_embedding_read(&e, n_towers, width, &err)) {
        if (!err.code || !err.msg[0] || strchr(err.msg, '\n') || e.vec[0] || e.vec[1]) abort();
        return;
    }
    if (e.n_vectors < 1 || e.n_vectors > TE_EMB_MAX_VECTORS) abort();
    for (int k = 0; k < n_towers; k++)
        for (int i = 0; i < e.n_vectors * width[k]; i++)
            if (!isfinite(e.vec[k][i])) abort();
    free(e.vec[0]);
    free(e.vec[1]);
}

static void check_prompt(const char *text)
{
    fm_error err = {0};
    te_embeddings db;
    int width[2] = {8, 0};
    if (te_embeddings_open(&db, "tests/data/embeddings", tok, 1, width, &err)) abort();
    te_token_chunks tc;
    if (!te_prompt_to_chunks_emb(tok, text, FM_CLIP_EOS, &db, &tc, &err)) {
        for (int f = 0; f < tc.n_fixes; f++)
            if (tc.fixes[f].chunk < 0 || tc.fixes[f].chunk >= tc.n_chunks || tc.fixes[f].offset < 0 ||
                tc.fixes[f].offset >= FM_PROMPT_CHUNK_TOKENS || !tc.fixes[f].vec[0])
                abort();
        te_token_chunks_free(&tc);
    } else if (!err.msg[0]) {
        abort();
    }
    te_embeddings_free(&db);
}

static void check_names(char *text)
{
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        char out[300];
        wt_tensor t = {.name = line, .ndim = 2, .shape = {3, 3}}, o;
        int k = wt_vae_diffusers_tensor(&t, 1 + (int)(strlen(line) % 5), out, sizeof out, &o);
        static const char *const heads[] = {"first_stage_model.encoder.", "first_stage_model.decoder.",
                                            "first_stage_model.quant_conv.", "first_stage_model.post_quant_conv."};
        int head = 0;
        for (int h = 0; h < 4 && k == 1; h++) head |= !strncmp(out, heads[h], strlen(heads[h]));
        if (k == 1 && (strlen(out) >= sizeof out || !head || wt_numel(&o) != wt_numel(&t))) abort();
        if (k < -1 || k > 1) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fm_error err = {0};
    if (!tok && !(tok = te_tokenizer_new(&err))) abort();
    const char *path = fuzz_memfile(data, size);
    check_file(path, 1, (const int[2]){8, 0});
    check_file(path, 2, (const int[2]){32, 32});
    if (size > 4096) return 0; /* prompts and names: the first 4 KiB */
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    check_prompt(text);
    check_names(text);
    free(text);
    return 0;
}
