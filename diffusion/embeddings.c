/* embeddings: the pipeline's side of textual inversion (embeddings.h).
 *
 * "TI hashes" follows A1111's FrozenCLIPEmbedderWithCustomWordsBase.forward:
 * each conditioning call lists the embeddings its texts used (chunk by
 * chunk, text by text, in placement order, each name once) and puts its
 * list before the value an earlier call left. A1111 encodes the negative
 * prompt first (processing.setup_conds), so the positive prompt's names
 * come first, then the negative's (a name used in both is listed twice). */
#include <stdlib.h>
#include <string.h>

#include "diffusion/embeddings.h"
#include "diffusion/lora.h"
#include "diffusion/pipeline_internal.h"
#include "textenc/prompt.h"
#include "textenc/prompt_schedule.h"

int df_embeddings_open(const fm_model *m, const char *dir, int confined, te_embeddings *db, fm_error *err)
{
    int width[2] = {0, 0};
    for (int i = 0; i < m->text.n_towers && i < 2; i++) width[i] = te_tower_config(m->text.towers[i])->width;
    return te_embeddings_open_in(db, dir, confined, m->tokenizer, m->text.n_towers, width, err);
}

typedef struct {
    te_token_chunks *tc;
    int n, cap;
} chunk_list;

/* The distinct texts one conditioning call encodes: every AND part's schedule. */
static int chunk_texts(const fm_model *m, te_embeddings *db, const char *prompt, int steps, chunk_list *l,
                       fm_error *err)
{
    te_and_split and = {0};
    int rc = te_prompt_and_split(prompt, &and, err);
    for (int a = 0; !rc && a < and.n; a++) {
        te_schedule s = {0};
        rc = te_prompt_schedule(and.parts[a].text, steps, 0, &s, err);
        for (int i = 0; !rc && i < s.n; i++) {
            if (l->n == l->cap) {
                int cap = l->cap ? 2 * l->cap : 8;
                te_token_chunks *v = realloc(l->tc, sizeof *v * (size_t)cap);
                if (!v) {
                    rc = core_fail(err, FM_EINPUT, "prompt: out of memory");
                    break;
                }
                l->tc = v;
                l->cap = cap;
            }
            rc = te_prompt_to_chunks_emb(m->tokenizer, s.e[i].text, FM_CLIP_EOS, db, &l->tc[l->n], err);
            if (!rc) l->n++;
        }
        te_schedule_free(&s);
    }
    te_and_split_free(&and);
    return rc;
}

static const te_embedding *owner(const te_embeddings *db, const float *vec0)
{
    for (int i = 0; i < db->n; i++)
        if (db->e[i].loaded && db->e[i].vec[0] == vec0) return &db->e[i];
    return NULL;
}

/* One call's "name: hash" list, chunk index first, then text, then placement. */
static int call_hashes(const te_embeddings *db, const chunk_list *l, core_strbuf *b, fm_error *err)
{
    int max_chunks = 0, first = 1;
    const te_embedding **seen = calloc((size_t)db->n + 1, sizeof *seen);
    int n_seen = 0;
    if (!seen) return core_fail(err, FM_EINPUT, "out of memory");
    for (int i = 0; i < l->n; i++)
        if (l->tc[i].n_chunks > max_chunks) max_chunks = l->tc[i].n_chunks;
    for (int c = 0; c < max_chunks; c++)
        for (int i = 0; i < l->n; i++)
            for (int f = 0; f < l->tc[i].n_fixes; f++) {
                if (l->tc[i].fixes[f].chunk != c) continue;
                const te_embedding *e = owner(db, l->tc[i].fixes[f].vec[0]);
                int k = 0;
                while (k < n_seen && seen[k] != e) k++;
                if (!e || k < n_seen) continue;
                seen[n_seen++] = e;
                if (!first) core_sb_puts(b, ", ");
                first = 0;
                for (const char *s = e->name; *s; s++) /* A1111 drops ':' and ',' from the name */
                    if (*s != ':' && *s != ',') core_sb_append(b, s, 1);
                core_sb_puts(b, ": ");
                core_sb_append(b, e->sha256, 12);
            }
    free(seen);
    return 0;
}

static void chunk_list_free(chunk_list *l)
{
    for (int i = 0; i < l->n; i++) te_token_chunks_free(&l->tc[i]);
    free(l->tc);
    *l = (chunk_list){0};
}

char *df_ti_hashes(const fm_model *m, const char *prompt, const char *negative, int steps, const char *dir, int confined,
                   fm_error *err)
{
    te_embeddings db;
    if (df_embeddings_open(m, dir, confined, &db, err)) return NULL;
    core_strbuf pos = {0}, neg = {0};
    chunk_list lp = {0}, ln = {0};
    int rc = 0;
    if (db.n) {
        df_lora_list tags = {0}; /* the text as encoded: without its <lora:...> tags */
        rc = df_lora_parse(prompt ? prompt : "", &tags, err);
        if (!rc) rc = chunk_texts(m, &db, tags.prompt ? tags.prompt : "", steps, &lp, err);
        df_lora_list_free(&tags);
        if (!rc && negative && negative[0]) rc = chunk_texts(m, &db, negative, steps, &ln, err);
        if (!rc) rc = call_hashes(&db, &lp, &pos, err);
        if (!rc) rc = call_hashes(&db, &ln, &neg, err);
    }
    char *p = core_sb_take(&pos), *n = core_sb_take(&neg), *out = NULL;
    if (!rc && (!p || !n)) rc = core_fail(err, FM_EINPUT, "out of memory");
    if (!rc) {
        core_strbuf b = {0};
        core_sb_puts(&b, p);
        if (p[0] && n[0]) core_sb_puts(&b, ", ");
        core_sb_puts(&b, n);
        if (!(out = core_sb_take(&b))) core_fail(err, FM_EINPUT, "out of memory");
    }
    free(p);
    free(n);
    chunk_list_free(&lp);
    chunk_list_free(&ln);
    te_embeddings_free(&db);
    return out;
}
