/* prompt_chunks: A1111's FrozenCLIPEmbedderWithCustomWords.tokenize_line
 * (modules/sd_hijack_clip.py) and the padding of process_tokens and
 * empty_chunk. Each weighted piece is tokenized on its own; tokens fill
 * chunks of 75; BREAK closes a chunk; when a chunk is full and the token to
 * place is not a comma, the tokens after a comma among the last 20 move to
 * the next chunk. */
#include <stdlib.h>
#include <string.h>

#include "textenc/embedding.h"
#include "textenc/prompt.h"

typedef struct {
    te_token_chunks *out;
    int cap;
    int32_t cur_ids[FM_PROMPT_CHUNK_TOKENS]; /* the chunk being filled */
    float cur_w[FM_PROMPT_CHUNK_TOKENS];
    int cur_n;
    int last_comma; /* position in the current chunk, -1: none */
    int fix_cap;
} chunker;

static int grow(te_token_chunks *c, int *cap, int need)
{
    if (need <= *cap)
        return 0;
    int n = *cap ? *cap : 4;
    while (n < need)
        n *= 2;
    int32_t(*ids)[FM_CLIP_LEN] = realloc(c->ids, (size_t)n * sizeof *ids);
    if (ids)
        c->ids = ids;
    float(*w)[FM_CLIP_LEN] = realloc(c->weights, (size_t)n * sizeof *w);
    if (w)
        c->weights = w;
    if (!ids || !w)
        return -1;
    *cap = n;
    return 0;
}

/* [BOS] + tokens + EOS up to 75 + [EOS], weights 1.0 outside the tokens;
 * then, for a pad token other than EOS, pad after the first EOS. */
static void frame_chunk(int32_t ids[FM_CLIP_LEN], float w[FM_CLIP_LEN], const int32_t *tokens,
                        const float *weights, int n, int pad_token)
{
    ids[0] = FM_CLIP_BOS;
    w[0] = 1.0f;
    for (int i = 0; i < FM_PROMPT_CHUNK_TOKENS; i++) {
        ids[i + 1] = i < n ? tokens[i] : FM_CLIP_EOS;
        w[i + 1] = i < n ? weights[i] : 1.0f;
    }
    ids[FM_CLIP_LEN - 1] = FM_CLIP_EOS;
    w[FM_CLIP_LEN - 1] = 1.0f;
    if (pad_token != FM_CLIP_EOS) {
        int e = 1;
        while (ids[e] != FM_CLIP_EOS)
            e++;
        for (int i = e + 1; i < FM_CLIP_LEN; i++)
            ids[i] = pad_token;
    }
}

/* next_chunk(): the current chunk (first `keep` tokens) goes out. */
static int next_chunk(chunker *ch, int keep, int pad_token)
{
    te_token_chunks *c = ch->out;
    if (grow(c, &ch->cap, c->n_chunks + 1))
        return -1;
    frame_chunk(c->ids[c->n_chunks], c->weights[c->n_chunks], ch->cur_ids, ch->cur_w, keep,
                pad_token);
    c->n_chunks++;
    /* what did not go out (comma back-tracking) starts the next chunk */
    memmove(ch->cur_ids, ch->cur_ids + keep, (size_t)(ch->cur_n - keep) * sizeof *ch->cur_ids);
    memmove(ch->cur_w, ch->cur_w + keep, (size_t)(ch->cur_n - keep) * sizeof *ch->cur_w);
    ch->cur_n -= keep;
    ch->last_comma = -1;
    return 0;
}

/* What tokenize_line does before placing the token at a position: the
 * comma bookkeeping and back-tracking, and a new chunk when this is full. */
static int before_token(chunker *ch, int32_t token, int pad_token)
{
    if (token == FM_PROMPT_COMMA_TOKEN) {
        ch->last_comma = ch->cur_n;
    } else if (ch->cur_n == FM_PROMPT_CHUNK_TOKENS && ch->last_comma != -1 &&
               ch->cur_n - ch->last_comma <= FM_PROMPT_COMMA_BACKTRACK) {
        if (next_chunk(ch, ch->last_comma + 1, pad_token))
            return -1;
    }
    if (ch->cur_n == FM_PROMPT_CHUNK_TOKENS && next_chunk(ch, ch->cur_n, pad_token))
        return -1;
    return 0;
}

static void put_token(chunker *ch, int32_t token, float weight)
{
    ch->cur_ids[ch->cur_n] = token;
    ch->cur_w[ch->cur_n] = weight;
    ch->cur_n++;
}

/* The embedding's vectors: token-0 slots with the piece's weight, and a fix
 * at the current chunk (the one being filled is out->n_chunks). */
static int put_embedding(chunker *ch, const te_embedding *e, int n_towers, float weight, int pad_token)
{
    te_token_chunks *c = ch->out;
    if (ch->cur_n + e->n_vectors > FM_PROMPT_CHUNK_TOKENS && next_chunk(ch, ch->cur_n, pad_token))
        return -1;
    if (c->n_fixes == ch->fix_cap) {
        int cap = ch->fix_cap ? 2 * ch->fix_cap : 4;
        te_token_fix *f = realloc(c->fixes, sizeof *f * (size_t)cap);
        if (!f)
            return -1;
        c->fixes = f;
        ch->fix_cap = cap;
    }
    c->fixes[c->n_fixes++] = (te_token_fix){c->n_chunks, ch->cur_n, e->n_vectors,
                                            {e->vec[0], n_towers > 1 ? e->vec[1] : NULL}};
    for (int i = 0; i < e->n_vectors; i++)
        put_token(ch, 0, weight);
    return 0;
}

static int is_break_marker(const te_prompt_piece *p)
{
    return p->weight == -1 && !strcmp(p->text, "BREAK");
}

static int encode_piece(const te_tokenizer *tok, const char *text, int32_t **ids, int *cap,
                        fm_error *err)
{
    int n = te_tokenizer_encode(tok, text, *ids, *cap, err);
    if (n > *cap) {
        int32_t *v = realloc(*ids, (size_t)n * sizeof *v);
        if (!v)
            return core_fail(err, FM_EINPUT, "prompt: out of memory"), -1;
        *ids = v;
        *cap = n;
        n = te_tokenizer_encode(tok, text, *ids, *cap, err);
    }
    return n;
}

int te_prompt_to_chunks(const te_tokenizer *tok, const char *prompt, int pad_token,
                        te_token_chunks *out, fm_error *err)
{
    return te_prompt_to_chunks_emb(tok, prompt, pad_token, NULL, out, err);
}

int te_prompt_to_chunks_emb(const te_tokenizer *tok, const char *prompt, int pad_token,
                            te_embeddings *emb, te_token_chunks *out, fm_error *err)
{
    *out = (te_token_chunks){0};
    te_prompt_attention parsed;
    int rc = te_parse_prompt_attention(prompt, &parsed, err);
    if (rc)
        return rc;
    chunker ch = {.out = out, .last_comma = -1};
    int32_t *ids = NULL;
    int ids_cap = 0;
    for (int p = 0; p < parsed.n && !rc; p++) {
        const te_prompt_piece *piece = &parsed.pieces[p];
        if (is_break_marker(piece)) {
            if (next_chunk(&ch, ch.cur_n, pad_token))
                rc = core_fail(err, FM_EINPUT, "prompt: out of memory");
            continue;
        }
        int n = encode_piece(tok, piece->text, &ids, &ids_cap, err);
        if (n < 0) {
            rc = err ? err->code : FM_EINPUT;
            break;
        }
        float w = (float)piece->weight;
        for (int i = 0; i < n && !rc;) {
            if (before_token(&ch, ids[i], pad_token)) {
                rc = core_fail(err, FM_EINPUT, "prompt: out of memory");
                break;
            }
            int len;
            const te_embedding *e = te_embeddings_match(emb, ids, n, i, &len, err);
            if (len < 0) {
                rc = FM_EINPUT;
            } else if (!e) {
                put_token(&ch, ids[i], w);
                i++;
            } else {
                if (put_embedding(&ch, e, emb->n_towers, w, pad_token))
                    rc = core_fail(err, FM_EINPUT, "prompt: out of memory");
                i += len;
            }
        }
    }
    if (!rc && (ch.cur_n > 0 || out->n_chunks == 0) && next_chunk(&ch, ch.cur_n, pad_token))
        rc = core_fail(err, FM_EINPUT, "prompt: out of memory");
    free(ids);
    te_prompt_attention_free(&parsed);
    if (rc)
        te_token_chunks_free(out);
    return rc;
}

void te_token_chunks_free(te_token_chunks *c)
{
    if (!c)
        return;
    free(c->ids);
    free(c->weights);
    free(c->fixes);
    *c = (te_token_chunks){0};
}

int te_token_chunks_pad(te_token_chunks *c, int n_chunks, int pad_token)
{
    if (c->n_chunks >= n_chunks)
        return 0;
    int cap = c->n_chunks; /* the arrays may be larger; growing from here is safe */
    if (grow(c, &cap, n_chunks))
        return FM_EINPUT;
    for (int k = c->n_chunks; k < n_chunks; k++)
        frame_chunk(c->ids[k], c->weights[k], NULL, NULL, 0, pad_token);
    c->n_chunks = n_chunks;
    return 0;
}
