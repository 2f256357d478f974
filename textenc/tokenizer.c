/* tokenizer: CLIP byte-level BPE (openai/CLIP simple_tokenizer.py). Cleaning
 * lives in text_clean.c; this file holds the vocabulary, the pre-tokenizer
 * and the merge loop. The steps are those of tests/data/README.md#bpe. */
#include "textenc/tokenizer.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>
#include <zlib.h>

#include "textenc/text_clean.h"

/* The gzip'd merges file, assembled into the library by textenc/module.mk. */
extern const unsigned char te_clip_bpe_gz[];
extern const unsigned char te_clip_bpe_gz_end[];

enum {
    N_MERGES = 48894, /* 49152 - 256 - 2: the merges CLIP uses */
    FIRST_MERGE_ID = 512,
    PAIR_SLOTS = 1 << 17, /* open addressing, load < 0.4 */
};

typedef struct {
    uint64_t key;   /* left << 32 | right */
    int32_t merged; /* >= 512; 0 marks an empty slot */
} pair_slot;

struct te_tokenizer {
    uint8_t byte_id[256]; /* byte -> id of its symbol (ids 0..255) */
    pair_slot *pairs;     /* (left id, right id) -> merged id; rank = id - 512 */
};

/* ---- vocabulary ----------------------------------------------------------- */

/* bytes_to_unicode: the printable bytes keep their code point, the
 * other 68 get U+0100.. in byte order. */
static int byte_is_printable(int b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

static void byte_alphabet(uint32_t cp[256], uint8_t id[256])
{
    int next_cp = 0x100, next_id = 0;
    for (int b = 0; b < 256; b++)
        if (byte_is_printable(b)) {
            cp[b] = (uint32_t)b;
            id[b] = (uint8_t)next_id++;
        }
    for (int b = 0; b < 256; b++)
        if (!byte_is_printable(b)) {
            cp[b] = (uint32_t)next_cp++;
            id[b] = (uint8_t)next_id++;
        }
}

static uint64_t hash64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static uint64_t pair_key(int32_t left, int32_t right)
{
    return (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
}

static int32_t pair_find(const pair_slot *pairs, int32_t left, int32_t right)
{
    uint64_t key = pair_key(left, right);
    for (uint64_t h = hash64(key);; h++) {
        const pair_slot *s = &pairs[h & (PAIR_SLOTS - 1)];
        if (!s->merged)
            return -1;
        if (s->key == key)
            return s->merged;
    }
}

static void pair_insert(pair_slot *pairs, int32_t left, int32_t right, int32_t merged)
{
    uint64_t key = pair_key(left, right);
    for (uint64_t h = hash64(key);; h++) {
        pair_slot *s = &pairs[h & (PAIR_SLOTS - 1)];
        if (!s->merged || s->key == key) {
            s->key = key;
            s->merged = merged;
            return;
        }
    }
}

/* String -> id while reading the merges: FNV-1a over the token's UTF-8. */
typedef struct {
    const char **str; /* [id] into the merges text or the byte names */
    uint16_t *len;
    int32_t *slot;    /* id + 1, 0 = empty */
    uint32_t mask;
} vocab_index;

static uint32_t fnv1a(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static void vocab_add(vocab_index *v, int32_t id, const char *s, size_t n)
{
    v->str[id] = s;
    v->len[id] = (uint16_t)n;
    for (uint32_t h = fnv1a(s, n);; h++)
        if (!v->slot[h & v->mask]) {
            v->slot[h & v->mask] = id + 1;
            return;
        }
}

static int32_t vocab_find(const vocab_index *v, const char *s, size_t n)
{
    for (uint32_t h = fnv1a(s, n);; h++) {
        int32_t e = v->slot[h & v->mask];
        if (!e)
            return -1;
        if (v->len[e - 1] == n && !memcmp(v->str[e - 1], s, n))
            return e - 1;
    }
}

/* The first header + N_MERGES lines of the embedded gzip file, NUL-terminated. */
static char *inflate_merges(size_t *len_out)
{
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    if (!buf)
        return NULL;
    z_stream zs = {0};
    zs.next_in = (Bytef *)te_clip_bpe_gz;
    zs.avail_in = (uInt)(te_clip_bpe_gz_end - te_clip_bpe_gz);
    if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
        free(buf);
        return NULL;
    }
    int lines = 0, status = Z_OK;
    while (lines <= N_MERGES && status == Z_OK) {
        if (cap - len < 65536) {
            char *b = realloc(buf, cap * 2);
            if (!b)
                break;
            buf = b;
            cap *= 2;
        }
        zs.next_out = (Bytef *)buf + len;
        zs.avail_out = (uInt)(cap - len - 1);
        status = inflate(&zs, Z_NO_FLUSH);
        size_t got = (size_t)((char *)zs.next_out - (buf + len));
        for (size_t i = len; i < len + got; i++)
            lines += buf[i] == '\n';
        len += got;
    }
    inflateEnd(&zs);
    if (lines <= N_MERGES) {
        free(buf);
        return NULL;
    }
    buf[len] = 0;
    *len_out = len;
    return buf;
}

/* Reads the merges into the pair table. Returns 0 or -1 (memory or a
 * damaged asset). */
static int build_merges(te_tokenizer *tok)
{
    uint32_t cp[256];
    byte_alphabet(cp, tok->byte_id);
    /* names of the 512 byte symbols: "x" and "x</w>" */
    static const char eow[] = "</w>";
    char names[512][8];
    size_t text_len = 0;
    char *text = inflate_merges(&text_len);
    vocab_index v = {0};
    v.mask = (1u << 17) - 1;
    v.str = malloc((FIRST_MERGE_ID + N_MERGES) * sizeof *v.str);
    v.len = malloc((FIRST_MERGE_ID + N_MERGES) * sizeof *v.len);
    v.slot = calloc(v.mask + 1, sizeof *v.slot);
    tok->pairs = calloc(PAIR_SLOTS, sizeof *tok->pairs);
    int rc = -1;
    if (!text || !v.str || !v.len || !v.slot || !tok->pairs)
        goto done;
    for (int b = 0; b < 256; b++) {
        int id = tok->byte_id[b];
        int n = te_utf8_put(cp[b], names[id]);
        memcpy(names[id + 256], names[id], (size_t)n);
        memcpy(names[id + 256] + n, eow, 4);
        vocab_add(&v, id, names[id], (size_t)n);
        vocab_add(&v, id + 256, names[id + 256], (size_t)n + 4);
    }
    char *line = strchr(text, '\n'); /* skip the "#version" header */
    for (int k = 0; k < N_MERGES; k++) {
        if (!line)
            goto done;
        line++;
        char *end = strchr(line, '\n'), *space = memchr(line, ' ', (size_t)(end - line));
        if (!end || !space)
            goto done;
        int32_t left = vocab_find(&v, line, (size_t)(space - line));
        int32_t right = vocab_find(&v, space + 1, (size_t)(end - space - 1));
        if (left < 0 || right < 0)
            goto done;
        int32_t id = FIRST_MERGE_ID + k;
        /* the merged token's text is the line without the space: shift the
         * left part one byte right, in place (the line is not needed again) */
        memmove(line + 1, line, (size_t)(space - line));
        vocab_add(&v, id, line + 1, (size_t)(end - line - 1));
        pair_insert(tok->pairs, left, right, id);
        line = end;
    }
    rc = 0;
done:
    free(text);
    free(v.str);
    free(v.len);
    free(v.slot);
    return rc;
}

te_tokenizer *te_tokenizer_new(fm_error *err)
{
    te_tokenizer *tok = calloc(1, sizeof *tok);
    if (!tok || build_merges(tok)) {
        te_tokenizer_free(tok);
        core_fail(err, FM_EINPUT, "tokenizer: out of memory or damaged embedded BPE merges");
        return NULL;
    }
    return tok;
}

void te_tokenizer_free(te_tokenizer *tok)
{
    if (!tok)
        return;
    free(tok->pairs);
    free(tok);
}

/* ---- BPE of one pre-token ------------------------------------------------------- */

typedef struct {
    int32_t rank; /* of the pair (sym[pos], sym[next[pos]]) when pushed */
    int32_t pos;
    int32_t left, right;
} heap_entry;

/* Per-call scratch memory, grown as needed. */
typedef struct {
    int32_t *sym, *next, *prev;
    heap_entry *heap;
    size_t cap, heap_n;
    char *bytes;
    size_t bytes_n, bytes_cap;
    int32_t *ids; /* output */
    size_t ids_n, ids_cap;
} scratch;

static void scratch_free(scratch *s)
{
    free(s->sym);
    free(s->next);
    free(s->prev);
    free(s->heap);
    free(s->bytes);
    free(s->ids);
}

static int scratch_reserve(scratch *s, size_t n)
{
    if (n <= s->cap)
        return 0;
    size_t cap = s->cap ? s->cap : 64;
    while (cap < n)
        cap *= 2;
    int32_t *a = realloc(s->sym, cap * sizeof *a);
    if (a)
        s->sym = a;
    int32_t *b = realloc(s->next, cap * sizeof *b);
    if (b)
        s->next = b;
    int32_t *c = realloc(s->prev, cap * sizeof *c);
    if (c)
        s->prev = c;
    heap_entry *h = realloc(s->heap, 3 * cap * sizeof *h); /* n-1 pairs + 2 per merge */
    if (h)
        s->heap = h;
    if (!a || !b || !c || !h)
        return -1;
    s->cap = cap;
    return 0;
}

static int push_id(scratch *s, int32_t id)
{
    if (s->ids_n == s->ids_cap) {
        size_t cap = s->ids_cap ? s->ids_cap * 2 : 256;
        int32_t *v = realloc(s->ids, cap * sizeof *v);
        if (!v)
            return -1;
        s->ids = v;
        s->ids_cap = cap;
    }
    s->ids[s->ids_n++] = id;
    return 0;
}

static int heap_less(const heap_entry *a, const heap_entry *b)
{
    return a->rank < b->rank || (a->rank == b->rank && a->pos < b->pos);
}

static void heap_push(scratch *s, heap_entry e)
{
    size_t i = s->heap_n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!heap_less(&e, &s->heap[p]))
            break;
        s->heap[i] = s->heap[p];
        i = p;
    }
    s->heap[i] = e;
}

static heap_entry heap_pop(scratch *s)
{
    heap_entry top = s->heap[0], last = s->heap[--s->heap_n];
    size_t i = 0, n = s->heap_n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && heap_less(&s->heap[c + 1], &s->heap[c]))
            c++;
        if (!heap_less(&s->heap[c], &last))
            break;
        s->heap[i] = s->heap[c];
        i = c;
    }
    s->heap[i] = last;
    return top;
}

static void push_pair(const te_tokenizer *tok, scratch *s, int32_t pos)
{
    if (pos < 0 || s->next[pos] < 0)
        return;
    int32_t nx = s->next[pos];
    int32_t merged = pair_find(tok->pairs, s->sym[pos], s->sym[nx]);
    if (merged >= 0)
        heap_push(s, (heap_entry){merged - FIRST_MERGE_ID, pos, s->sym[pos], s->sym[nx]});
}

/* The reference merges, round after round, every occurrence of the
 * lowest-ranked adjacent pair from left to right. A heap ordered by (rank,
 * position) visits the same merges in the same order: a merge only creates
 * pairs of higher rank than its own (a token exists before merges using it),
 * and stale entries are skipped. O(n log n) even for a megabyte-long word. */
static int bpe_word(const te_tokenizer *tok, scratch *s, const unsigned char *b, size_t n)
{
    if (scratch_reserve(s, n))
        return -1;
    for (size_t i = 0; i < n; i++) {
        s->sym[i] = tok->byte_id[b[i]];
        s->prev[i] = (int32_t)i - 1;
        s->next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
    s->sym[n - 1] += 256; /* the last symbol carries </w> */
    s->heap_n = 0;
    for (size_t i = 0; i + 1 < n; i++)
        push_pair(tok, s, (int32_t)i);
    while (s->heap_n) {
        heap_entry e = heap_pop(s);
        int32_t nx = s->next[e.pos];
        if (s->sym[e.pos] != e.left || nx < 0 || s->sym[nx] != e.right)
            continue; /* stale: one side was merged away or changed */
        s->sym[e.pos] = e.rank + FIRST_MERGE_ID;
        s->sym[nx] = -1;
        s->next[e.pos] = s->next[nx];
        if (s->next[nx] >= 0)
            s->prev[s->next[nx]] = e.pos;
        push_pair(tok, s, s->prev[e.pos]);
        push_pair(tok, s, e.pos);
    }
    for (int32_t i = 0; i >= 0; i = s->next[i])
        if (push_id(s, s->sym[i]))
            return -1;
    return 0;
}

/* ---- pre-tokenizer ----------------------------------------------------------------- */

enum { CH_OTHER, CH_LETTER, CH_NUMBER, CH_NONE };

static int char_class(uint32_t c)
{
    if (te_is_regex_space(c) || c == 0x345) /* U+0345: IGNORECASE quirk, matches nothing */
        return CH_NONE;
    switch (utf8proc_category((utf8proc_int32_t)c)) {
    case UTF8PROC_CATEGORY_LU:
    case UTF8PROC_CATEGORY_LL:
    case UTF8PROC_CATEGORY_LT:
    case UTF8PROC_CATEGORY_LM:
    case UTF8PROC_CATEGORY_LO:
        return CH_LETTER;
    case UTF8PROC_CATEGORY_ND:
    case UTF8PROC_CATEGORY_NL:
    case UTF8PROC_CATEGORY_NO:
        return CH_NUMBER;
    default:
        return CH_OTHER;
    }
}

static size_t match_ascii(const uint32_t *t, size_t n, size_t i, const char *lit)
{
    size_t k = 0;
    for (; lit[k]; k++) {
        if (i + k >= n)
            return 0;
        uint32_t c = t[i + k];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (c != (unsigned char)lit[k])
            return 0;
    }
    return k;
}

/* 's 't 're 've 'm 'll 'd (IGNORECASE lets 'ſ stand for 's) */
static size_t match_contraction(const uint32_t *t, size_t n, size_t i)
{
    if (t[i] != '\'' || i + 1 >= n)
        return 0;
    uint32_t a = t[i + 1], b = i + 2 < n ? t[i + 2] : 0;
    if (a == 's' || a == 0x17F || a == 't' || a == 'm' || a == 'd')
        return 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return 3;
    return 0;
}

static int emit_word(const te_tokenizer *tok, scratch *s, const uint32_t *t, size_t len)
{
    if (s->bytes_cap < len * 4) {
        char *b = realloc(s->bytes, len * 4);
        if (!b)
            return -1;
        s->bytes = b;
        s->bytes_cap = len * 4;
    }
    size_t m = 0;
    for (size_t i = 0; i < len; i++)
        m += (size_t)te_utf8_put(t[i], s->bytes + m);
    return bpe_word(tok, s, (const unsigned char *)s->bytes, m);
}

static int encode_cleaned(const te_tokenizer *tok, scratch *s, const uint32_t *t, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t len;
        if ((len = match_ascii(t, n, i, "<|startoftext|>"))) {
            if (push_id(s, FM_CLIP_BOS))
                return -1;
            i += len;
            continue;
        }
        if ((len = match_ascii(t, n, i, "<|endoftext|>"))) {
            if (push_id(s, FM_CLIP_EOS))
                return -1;
            i += len;
            continue;
        }
        len = match_contraction(t, n, i);
        int cls = char_class(t[i]);
        if (!len) {
            if (cls == CH_NONE) {
                i++;
                continue;
            }
            len = 1;
            if (cls != CH_NUMBER)
                while (i + len < n && char_class(t[i + len]) == cls)
                    len++;
        }
        if (emit_word(tok, s, t + i, len))
            return -1;
        i += len;
    }
    return 0;
}

/* All ids of text into s->ids. */
static int encode_all(const te_tokenizer *tok, const char *text, size_t len, scratch *s,
                      fm_error *err)
{
    te_cps clean = {0};
    int rc = te_clip_clean(text, len, &clean) || encode_cleaned(tok, s, clean.v, clean.n);
    te_cps_free(&clean);
    if (rc)
        return core_fail(err, FM_EINPUT, "tokenizer: out of memory");
    return 0;
}

int te_tokenizer_encode(const te_tokenizer *tok, const char *utf8, int32_t *ids, int max_ids,
                        fm_error *err)
{
    return te_tokenizer_encode_n(tok, utf8, utf8 ? strlen(utf8) : 0, ids, max_ids, err);
}

int te_tokenizer_encode_n(const te_tokenizer *tok, const char *utf8, size_t len, int32_t *ids,
                          int max_ids, fm_error *err)
{
    scratch s = {0};
    if (encode_all(tok, utf8 ? utf8 : "", utf8 ? len : 0, &s, err)) {
        scratch_free(&s);
        return -1;
    }
    if (s.ids_n > INT32_MAX) {
        scratch_free(&s);
        return core_fail(err, FM_EINPUT, "tokenizer: text too long"), -1;
    }
    int n = (int)s.ids_n;
    if (ids && max_ids > 0 && n > 0)
        memcpy(ids, s.ids, (size_t)(n < max_ids ? n : max_ids) * sizeof *ids);
    scratch_free(&s);
    return n;
}

int te_tokenize_77(const te_tokenizer *tok, const char *text, int pad_token,
                   int32_t out[FM_CLIP_LEN], fm_error *err)
{
    int32_t ids[FM_CLIP_LEN - 2];
    int n = te_tokenizer_encode(tok, text, ids, FM_CLIP_LEN - 2, err);
    if (n < 0)
        return -1;
    if (n > FM_CLIP_LEN - 2)
        n = FM_CLIP_LEN - 2;
    out[0] = FM_CLIP_BOS;
    memcpy(out + 1, ids, (size_t)n * sizeof *ids);
    out[n + 1] = FM_CLIP_EOS;
    for (int i = n + 2; i < FM_CLIP_LEN; i++)
        out[i] = pad_token;
    return n;
}
