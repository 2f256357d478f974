/* diffusers folders (diffusers.h): the files (from a wt_df_files table:
 * diffusers_disk.c's, or the fuzz target's) read and checked, the names
 * converted, the configs turned into fmimage.config. */
#include "weights/diffusers.h"
#include "weights/compose.h"
#include "weights/rename.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_JSON (16u << 20) /* an index of a huge model is a few MB */
#define MAX_LEVELS 8
#define MAX_SHARDS 1024

typedef struct folder {
    const wt_df_files *fs;
    fm_error *err;
} folder;

static int dfail(const folder *f, const char *file, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int dfail(const folder *f, const char *file, const char *fmt, ...)
{
    char why[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    return core_fail(f->err, FM_EINPUT, "%s: %s", file, why);
}

/* ---- files inside the folder ---- */

/* DIR/rel into out (the name messages give it), then whether the folder has
 * it. 1: there; 0: absent; -1: error set. */
static int inside(const folder *f, const char *rel, char *out, size_t size)
{
    if (snprintf(out, size, "%s/%s", f->fs->dir, rel) >= (int)size) return dfail(f, f->fs->dir, "path too long"), -1;
    return f->fs->exists(f->fs->ctx, rel, out, f->err);
}

/* A shard's file name from an index: one plain name. */
static int plain_name(const char *s)
{
    size_t n = strlen(s);
    return n > 0 && n < 256 && !strchr(s, '/') && !strchr(s, '\\') && strcmp(s, ".") && strcmp(s, "..");
}

/* rel (whose name in messages is path, as inside() made it) as a JSON object. */
static cJSON *read_json(const folder *f, const char *rel, const char *path)
{
    char *buf = NULL;
    size_t n = 0;
    if (f->fs->read(f->fs->ctx, rel, path, MAX_JSON, &buf, &n, f->err)) return NULL;
    cJSON *j = cJSON_ParseWithLength(buf, n);
    if (!j || !cJSON_IsObject(j)) {
        dfail(f, path, "not a JSON object");
        cJSON_Delete(j);
        j = NULL;
    }
    free(buf);
    return j;
}

/* DIR/part/config.json (must be there). */
static cJSON *part_config(const folder *f, const char *part)
{
    char rel[300], path[PATH_MAX];
    snprintf(rel, sizeof rel, "%s/config.json", part);
    int r = inside(f, rel, path, sizeof path);
    if (r == 0) dfail(f, path, "missing (a diffusers %s needs its config)", part);
    return r == 1 ? read_json(f, rel, path) : NULL;
}

typedef struct listed {
    const char *name; /* a weight_map key */
    int shard;        /* which of the index's files it names */
} listed;

static int by_name(const void *a, const void *b) { return strcmp(((const listed *)a)->name, ((const listed *)b)->name); }

/* The shards an index lists, each checked against the names it holds. */
static wt_source *open_sharded(const folder *f, const char *part, const char *index_rel, const char *index_path)
{
    cJSON *j = read_json(f, index_rel, index_path);
    if (!j) return NULL;
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(j, "weight_map");
    wt_source *shards[MAX_SHARDS];
    const char *names[MAX_SHARDS];
    int n = 0, rc = 0;
    if (!cJSON_IsObject(map) || !map->child) rc = dfail(f, index_path, "no weight_map object of tensor names");
    for (const cJSON *e = map ? map->child : NULL; e && !rc; e = e->next) {
        if (!cJSON_IsString(e) || !e->string) {
            rc = dfail(f, index_path, "weight_map: %.100s: not a file name", e->string ? e->string : "?");
            break;
        }
        if (!plain_name(e->valuestring)) {
            rc = dfail(f, index_path, "weight_map: %.100s: %.100s is not a file name in %s/", e->string, e->valuestring, part);
            break;
        }
        int k = 0;
        while (k < n && strcmp(names[k], e->valuestring)) k++;
        if (k < n) continue;
        if (n == MAX_SHARDS) {
            rc = dfail(f, index_path, "over %d shards", MAX_SHARDS);
            break;
        }
        char rel[600], path[PATH_MAX];
        snprintf(rel, sizeof rel, "%s/%s", part, e->valuestring);
        int r = inside(f, rel, path, sizeof path);
        if (r == 0) rc = dfail(f, path, "missing (listed in %s)", index_path);
        if (r != 1) {
            rc = -1;
            break;
        }
        if (!(shards[n] = f->fs->open(f->fs->ctx, rel, path, f->err))) {
            rc = -1;
            break;
        }
        names[n++] = e->valuestring;
    }
    /* every listed name in its shard, every shard's tensor listed there
     * (by a search in the names sorted: an SDXL index has 1680) */
    listed *l = rc ? NULL : malloc((size_t)cJSON_GetArraySize(map) * sizeof *l);
    size_t nl = 0;
    if (!rc && !l) rc = dfail(f, index_path, "out of memory");
    for (const cJSON *e = map ? map->child : NULL; e && !rc; e = e->next) {
        int k = 0;
        while (k < n && strcmp(names[k], e->valuestring)) k++;
        if (!wt_find(shards[k], e->string))
            rc = dfail(f, shards[k]->path, "tensor %.200s: missing (%s lists it here)", e->string, index_path);
        l[nl++] = (listed){e->string, k};
    }
    if (!rc) qsort(l, nl, sizeof *l, by_name);
    for (size_t i = 1; i < nl && !rc; i++)
        if (!strcmp(l[i - 1].name, l[i].name)) rc = dfail(f, index_path, "weight_map: %.200s: listed twice", l[i].name);
    for (int k = 0; k < n && !rc; k++)
        for (int i = 0; i < wt_count(shards[k]) && !rc; i++) {
            const listed key = {wt_at(shards[k], i)->name, 0}, *e = bsearch(&key, l, nl, sizeof *l, by_name);
            if (!e || e->shard != k)
                rc = dfail(f, shards[k]->path, "tensor %.200s: not listed for this shard in %s", key.name, index_path);
        }
    free(l);
    cJSON_Delete(j);
    if (rc) {
        for (int k = 0; k < n; k++) wt_close(shards[k]);
        return NULL;
    }
    return n == 1 ? shards[0] : wt_compose(shards, n, f->err);
}

/* The weights of a part: one file, or the shards of an index. */
static wt_source *open_part(const folder *f, const char *part)
{
    static const char *const stems[] = {"diffusion_pytorch_model", "model", "pytorch_model"};
    static const char *const exts[] = {".safetensors", ".fp16.safetensors", ".bin", ".fp16.bin"};
    for (size_t e = 0; e < sizeof exts / sizeof exts[0]; e++)
        for (size_t s = 0; s < sizeof stems / sizeof stems[0]; s++) {
            char rel[300], path[PATH_MAX];
            snprintf(rel, sizeof rel, "%s/%s%s", part, stems[s], exts[e]);
            int r = inside(f, rel, path, sizeof path);
            if (r < 0) return NULL;
            if (r) return f->fs->open(f->fs->ctx, rel, path, f->err);
            snprintf(rel, sizeof rel, "%s/%s%s.index.json", part, stems[s], exts[e]);
            if ((r = inside(f, rel, path, sizeof path)) < 0) return NULL;
            if (r) return open_sharded(f, part, rel, path);
        }
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s/%s", f->fs->dir, part);
    dfail(f, path, "no weights (diffusion_pytorch_model.safetensors, model.safetensors, an index json or a .bin)");
    return NULL;
}

/* ---- configs ---- */

static const cJSON *get(const cJSON *o, const char *k) { return cJSON_GetObjectItemCaseSensitive(o, k); }

static int get_int(const cJSON *o, const char *k, int dflt)
{
    const cJSON *v = get(o, k);
    return cJSON_IsNumber(v) && v->valuedouble >= 0 && v->valuedouble < 1e6 ? (int)v->valuedouble : dflt;
}

/* A per-level count (heads, layers, dims): 1 .. 1e5, so it is an int. */
static int level_value_ok(const cJSON *x) { return x->valuedouble >= 1 && x->valuedouble <= 1e5; }

/* An int or a list of ints, per level, into out[n]; 0 when absent or out of
 * range. */
static int per_level(const cJSON *o, const char *k, int *out, int n)
{
    const cJSON *v = get(o, k);
    if (cJSON_IsNumber(v)) {
        if (!level_value_ok(v)) return 0;
        for (int i = 0; i < n; i++) out[i] = (int)v->valuedouble;
        return 1;
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != n) return 0;
    for (int i = 0; i < n; i++) {
        const cJSON *x = cJSON_GetArrayItem(v, i);
        if (!cJSON_IsNumber(x) || !level_value_ok(x)) return 0;
        out[i] = (int)x->valuedouble;
    }
    return 2;
}

typedef struct unet_layout {
    int levels, layers;            /* block_out_channels, layers_per_block */
    int down_attn[MAX_LEVELS], up_attn[MAX_LEVELS];
} unet_layout;

static int block_has_attn(const cJSON *types, int i)
{
    const cJSON *t = cJSON_GetArrayItem(types, i);
    return cJSON_IsString(t) && strstr(t->valuestring, "CrossAttn") != NULL;
}

static int levels_of(const folder *f, const cJSON *cfg, const char *file, int *levels)
{
    const cJSON *ch = get(cfg, "block_out_channels");
    *levels = cJSON_IsArray(ch) ? cJSON_GetArraySize(ch) : 0;
    if (*levels < 1 || *levels > MAX_LEVELS) return dfail(f, file, "block_out_channels: not a list of 1..%d", MAX_LEVELS);
    return 0;
}

static int unet_layout_of(const folder *f, const cJSON *cfg, const char *file, unet_layout *u)
{
    memset(u, 0, sizeof *u);
    if (levels_of(f, cfg, file, &u->levels)) return -1;
    u->layers = get_int(cfg, "layers_per_block", -1);
    const cJSON *down = get(cfg, "down_block_types"), *up = get(cfg, "up_block_types");
    if (u->layers < 1 || u->layers > 16) return dfail(f, file, "layers_per_block: not 1..16");
    if (!cJSON_IsArray(down) || cJSON_GetArraySize(down) != u->levels || !cJSON_IsArray(up) ||
        cJSON_GetArraySize(up) != u->levels)
        return dfail(f, file, "down_block_types / up_block_types: not one per level");
    for (int i = 0; i < u->levels; i++) {
        u->down_attn[i] = block_has_attn(down, i);
        u->up_attn[i] = block_has_attn(up, i);
    }
    return 0;
}

/* ---- names: the U-Net ---- */

static int starts(const char *s, const char *p) { return !strncmp(s, p, strlen(p)); }

static int put(char *out, size_t size, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int put(char *out, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, size, fmt, ap);
    va_end(ap);
    return n < 0 || (size_t)n >= size ? -1 : 1;
}

/* A resnet's words (diffusers ResnetBlock2D -> ldm ResBlock). */
static const char *resnet_word(const char *rest, const char **tail)
{
    static const char *const w[][2] = {{"norm1.", "in_layers.0."}, {"conv1.", "in_layers.2."},
                                       {"norm2.", "out_layers.0."}, {"conv2.", "out_layers.3."},
                                       {"time_emb_proj.", "emb_layers.1."}, {"conv_shortcut.", "skip_connection."}};
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
        if (starts(rest, w[i][0])) {
            *tail = rest + strlen(w[i][0]);
            return w[i][1];
        }
    return NULL;
}

/* "i.KIND.j.rest" of down_blocks / up_blocks. */
static int block_parts(const char *s, unsigned *i, char *kind, unsigned *j, const char **rest)
{
    int used = 0;
    if (sscanf(s, "%u.%15[a-z].%u.%n", i, kind, j, &used) != 3 || !used) return 0;
    *rest = s + used;
    return 1;
}

static int unet_name(void *ctx, const wt_tensor *t, char *out, size_t size, wt_tensor *o)
{
    (void)o;
    const unet_layout *u = ctx;
    static const char P[] = "model.diffusion_model.";
    static const char *const fixed[][2] = {
        {"time_embedding.linear_1.", "time_embed.0."}, {"time_embedding.linear_2.", "time_embed.2."},
        {"add_embedding.linear_1.", "label_emb.0.0."}, {"add_embedding.linear_2.", "label_emb.0.2."},
        {"conv_in.", "input_blocks.0.0."},             {"conv_norm_out.", "out.0."},
        {"conv_out.", "out.2."},
    };
    const char *n = t->name, *rest, *tail, *w;
    for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++)
        if (starts(n, fixed[k][0])) return put(out, size, "%s%s%s", P, fixed[k][1], n + strlen(fixed[k][0]));
    unsigned i, j;
    char kind[16];
    const unsigned L = (unsigned)u->layers, lv = (unsigned)u->levels;
    if (starts(n, "down_blocks.") && block_parts(n + 12, &i, kind, &j, &rest) && i < lv) {
        unsigned at = 1 + i * (L + 1) + j;
        if (!strcmp(kind, "resnets") && j < L && (w = resnet_word(rest, &tail)))
            return put(out, size, "%sinput_blocks.%u.0.%s%s", P, at, w, tail);
        if (!strcmp(kind, "attentions") && j < L && u->down_attn[i]) return put(out, size, "%sinput_blocks.%u.1.%s", P, at, rest);
        if (!strcmp(kind, "downsamplers") && j == 0 && i + 1 < lv && starts(rest, "conv."))
            return put(out, size, "%sinput_blocks.%u.0.op.%s", P, (i + 1) * (L + 1), rest + 5);
        return -2;
    }
    if (starts(n, "up_blocks.") && block_parts(n + 10, &i, kind, &j, &rest) && i < lv) {
        unsigned at = i * (L + 1) + j;
        if (!strcmp(kind, "resnets") && j <= L && (w = resnet_word(rest, &tail)))
            return put(out, size, "%soutput_blocks.%u.0.%s%s", P, at, w, tail);
        if (!strcmp(kind, "attentions") && j <= L && u->up_attn[i]) return put(out, size, "%soutput_blocks.%u.1.%s", P, at, rest);
        if (!strcmp(kind, "upsamplers") && j == 0 && i + 1 < lv)
            return put(out, size, "%soutput_blocks.%u.%d.%s", P, i * (L + 1) + L, u->up_attn[i] ? 2 : 1, rest);
        return -2;
    }
    if (starts(n, "mid_block.resnets.") && sscanf(n + 18, "%u.", &j) == 1 && j < 2) {
        rest = strchr(n + 18, '.') + 1;
        if ((w = resnet_word(rest, &tail))) return put(out, size, "%smiddle_block.%u.%s%s", P, 2 * j, w, tail);
    }
    if (starts(n, "mid_block.attentions.0.")) return put(out, size, "%smiddle_block.1.%s", P, n + 23);
    return -2;
}

/* ---- names: the VAE ---- */

/* rename.h's mapping (the one --vae uses too); in a folder's vae/ every
 * tensor must be one of the VAE's */
static int vae_name(void *ctx, const wt_tensor *t, char *out, size_t size, wt_tensor *o)
{
    int k = wt_vae_diffusers_tensor(t, *(const int *)ctx, out, size, o);
    return k == 0 ? -2 : k;
}

/* SD 2.x's OpenCLIP tower: the CLIP-G part view's names, moved from SDXL's
 * embedder to cond_stage_model.model. */
static int sd2_text_name(void *ctx, const wt_tensor *t, char *out, size_t size, wt_tensor *o)
{
    (void)ctx;
    (void)o;
    static const char G[] = "conditioner.embedders.1.model.";
    if (!starts(t->name, G)) return -2;
    return put(out, size, "cond_stage_model.model.%s", t->name + strlen(G));
}

/* ---- fmimage.config from the configs ---- */

/* The ldm heads: diffusers' attention_head_dim is the number of heads per
 * level (its legacy name; num_attention_heads when set). Constant heads:
 * num_heads; constant head width: num_head_channels. */
static int unet_heads(const folder *f, const cJSON *cfg, const char *file, cJSON *unet)
{
    int levels, heads[MAX_LEVELS], ch[MAX_LEVELS];
    if (levels_of(f, cfg, file, &levels)) return -1;
    int kind = per_level(cfg, "num_attention_heads", heads, levels);
    if (!kind) kind = per_level(cfg, "attention_head_dim", heads, levels);
    if (!kind || per_level(cfg, "block_out_channels", ch, levels) != 2)
        return dfail(f, file, "attention_head_dim / block_out_channels: not numbers per level");
    int same_heads = 1, same_width = 1;
    for (int i = 0; i < levels; i++) {
        if (heads[i] < 1 || ch[i] % heads[i]) return dfail(f, file, "level %d: %d channels in %d heads", i, ch[i], heads[i]);
        same_heads &= heads[i] == heads[0];
        same_width &= ch[i] / heads[i] == ch[0] / heads[0];
    }
    if (kind == 1 || (same_heads && !same_width)) {
        cJSON_AddNumberToObject(unet, "num_heads", heads[0]);
        cJSON_AddNumberToObject(unet, "num_head_channels", -1);
    } else if (same_width) {
        cJSON_AddNumberToObject(unet, "num_heads", -1);
        cJSON_AddNumberToObject(unet, "num_head_channels", ch[0] / heads[0]);
    } else {
        return dfail(f, file, "heads per level that neither keep a count nor a width (ldm has no such U-Net)");
    }
    return 0;
}

/* hidden_idx >= 0: HF hidden_states[hidden_idx] (no final LN); -1: the
 * family's choice; -2: the last layer + final LN (a CLIPTextModel's
 * last_hidden_state, what diffusers' SD 2.x pipeline takes: its converted
 * OpenCLIP tower already lacks the layer ldm's "penultimate" skips). */
static cJSON *text_config(const cJSON *cfg, int openclip, int hidden_idx)
{
    cJSON *t = cJSON_CreateObject();
    cJSON_AddStringToObject(t, "kind", openclip ? "openclip" : "clip");
    static const char *const keys[][2] = {{"hidden_size", "width"},     {"num_hidden_layers", "layers"},
                                          {"num_attention_heads", "heads"}, {"vocab_size", "vocab_size"},
                                          {"max_position_embeddings", "max_length"}, {"intermediate_size", "mlp_dim"}};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        int v = get_int(cfg, keys[i][0], -1);
        if (v > 0) cJSON_AddNumberToObject(t, keys[i][1], v);
    }
    const cJSON *act = get(cfg, "hidden_act");
    if (cJSON_IsString(act)) cJSON_AddStringToObject(t, "act", act->valuestring);
    if (hidden_idx >= 0) {
        cJSON_AddStringToObject(t, "layer", "hidden");
        cJSON_AddNumberToObject(t, "layer_idx", hidden_idx);
    } else if (hidden_idx == -2) {
        cJSON_AddStringToObject(t, "layer", "last");
    }
    return t;
}

/* ---- the folder ---- */

typedef struct parts {
    cJSON *index, *unet, *vae, *te, *te2, *sched;
    wt_source *src[5];
    int n;
} parts;

static void parts_free(parts *p)
{
    cJSON_Delete(p->index);
    cJSON_Delete(p->unet);
    cJSON_Delete(p->vae);
    cJSON_Delete(p->te);
    cJSON_Delete(p->te2);
    cJSON_Delete(p->sched);
    for (int i = 0; i < p->n; i++) wt_close(p->src[i]);
}

/* The fmimage.config text (cJSON_Print's, free()). */
static char *config_of(const folder *f, const parts *p, int family, const char *unet_file)
{
    static const char *const fam[] = {"sd1", "sd2", "sdxl"};
    cJSON *c = cJSON_CreateObject(), *unet = cJSON_CreateObject(), *vae = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "family", fam[family]);
    const cJSON *pt = p->sched ? get(p->sched, "prediction_type") : NULL;
    if (cJSON_IsString(pt) && !strcmp(pt->valuestring, "v_prediction")) cJSON_AddStringToObject(c, "prediction", "v");
    else if (cJSON_IsString(pt) && !strcmp(pt->valuestring, "epsilon")) cJSON_AddStringToObject(c, "prediction", "eps");
    cJSON_AddItemToObject(c, "unet", unet);
    if (unet_heads(f, p->unet, unet_file, unet)) {
        cJSON_Delete(c);
        cJSON_Delete(vae);
        return NULL;
    }
    const cJSON *sf = get(p->vae, "scaling_factor");
    if (cJSON_IsNumber(sf)) cJSON_AddNumberToObject(vae, "scale_factor", sf->valuedouble);
    cJSON_AddItemToObject(c, "vae", vae);
    if (family == 2) {
        cJSON *list = cJSON_CreateArray();
        /* sgm and diffusers both take hidden_states[-2] of CLIP-L */
        cJSON_AddItemToArray(list, text_config(p->te, 0, get_int(p->te, "num_hidden_layers", 2) - 1));
        cJSON *g = text_config(p->te2, 1, -1);
        int proj = get_int(p->te2, "projection_dim", -1);
        if (proj > 0) cJSON_AddNumberToObject(g, "projection_dim", proj);
        cJSON_AddItemToArray(list, g);
        cJSON_AddItemToObject(c, "text", list);
    } else {
        cJSON_AddItemToObject(c, "text", text_config(p->te, family == 1, family == 1 ? -2 : -1));
    }
    const cJSON *bs = p->sched ? get(p->sched, "beta_schedule") : NULL;
    if (cJSON_IsString(bs) && !strcmp(bs->valuestring, "scaled_linear")) {
        cJSON *s = cJSON_CreateObject();
        const cJSON *a = get(p->sched, "beta_start"), *b = get(p->sched, "beta_end");
        if (cJSON_IsNumber(a)) cJSON_AddNumberToObject(s, "linear_start", a->valuedouble);
        if (cJSON_IsNumber(b)) cJSON_AddNumberToObject(s, "linear_end", b->valuedouble);
        int n = get_int(p->sched, "num_train_timesteps", -1);
        if (n > 0) cJSON_AddNumberToObject(s, "timesteps", n);
        cJSON_AddItemToObject(c, "schedule", s);
    }
    char *txt = cJSON_PrintUnformatted(c);
    cJSON_Delete(c);
    if (!txt) dfail(f, f->fs->dir, "out of memory");
    return txt;
}

/* Optional DIR/part/NAME.json (scheduler): NULL when absent or on error (err set). */
static cJSON *optional_json(const folder *f, const char *rel, int *failed)
{
    char path[PATH_MAX];
    int r = inside(f, rel, path, sizeof path);
    if (r < 0) *failed = 1;
    if (r != 1) return NULL;
    cJSON *j = read_json(f, rel, path);
    if (!j) *failed = 1;
    return j;
}

static wt_source *open_folder(const wt_df_files *fs, fm_error *err)
{
    folder f = {.fs = fs, .err = err};
    const char *dir = fs->dir;
    parts p = {0};
    char path[PATH_MAX], file[PATH_MAX];
    int failed = 0;
    if (inside(&f, "model_index.json", path, sizeof path) != 1 || !(p.index = read_json(&f, "model_index.json", path))) {
        if (!err->code) dfail(&f, dir, "no model_index.json: not a diffusers folder");
        return NULL;
    }
    int sdxl = get(p.index, "text_encoder_2") != NULL && !cJSON_IsNull(get(p.index, "text_encoder_2"));
    static const char *const need[] = {"unet", "vae", "text_encoder"};
    for (size_t i = 0; i < 3; i++)
        if (!get(p.index, need[i]) || cJSON_IsNull(get(p.index, need[i]))) {
            dfail(&f, path, "no %s: fmimage needs a U-Net, a VAE and the text encoder", need[i]);
            parts_free(&p);
            return NULL;
        }
    snprintf(file, sizeof file, "%s/unet/config.json", dir);
    unet_layout u;
    int levels = 0;
    if (!(p.unet = part_config(&f, "unet")) || !(p.vae = part_config(&f, "vae")) || !(p.te = part_config(&f, "text_encoder")) ||
        (sdxl && !(p.te2 = part_config(&f, "text_encoder_2"))) ||
        (p.sched = optional_json(&f, "scheduler/scheduler_config.json", &failed), failed) ||
        unet_layout_of(&f, p.unet, file, &u)) {
        parts_free(&p);
        return NULL;
    }
    snprintf(path, sizeof path, "%s/vae/config.json", dir);
    if (levels_of(&f, p.vae, path, &levels)) {
        parts_free(&p);
        return NULL;
    }
    const cJSON *act = get(p.te, "hidden_act");
    int family = sdxl ? 2 : cJSON_IsString(act) && !strcmp(act->valuestring, "gelu") ? 1 : 0;
    char *cfg = config_of(&f, &p, family, file);
    if (!cfg) {
        parts_free(&p);
        return NULL;
    }
    const char *const kv[][2] = {{"fmimage.config", cfg}};
    wt_source *s;
    int ok = 1;
    /* each part: open, rename; a failure closes what it was given */
    ok = ok && (s = open_part(&f, "unet")) && (s = wt_renamed(s, unet_name, &u, kv, 1, err)) && (p.src[p.n++] = s);
    ok = ok && (s = open_part(&f, "vae")) && (s = wt_renamed(s, vae_name, &levels, NULL, 0, err)) && (p.src[p.n++] = s);
    if (ok && family == 1)
        ok = (s = open_part(&f, "text_encoder")) && (s = wt_part_view(s, WT_PART_CLIP_G, 0, err)) &&
             (s = wt_renamed(s, sd2_text_name, NULL, NULL, 0, err)) && (p.src[p.n++] = s);
    else if (ok)
        ok = (s = open_part(&f, "text_encoder")) && (s = wt_part_view(s, WT_PART_CLIP_L, sdxl, err)) && (p.src[p.n++] = s);
    if (ok && sdxl)
        ok = (s = open_part(&f, "text_encoder_2")) && (s = wt_part_view(s, WT_PART_CLIP_G, 1, err)) && (p.src[p.n++] = s);
    free(cfg);
    if (!ok) {
        parts_free(&p);
        return NULL;
    }
    wt_source *all = wt_compose(p.src, p.n, err);
    p.n = 0; /* the union owns them now (closed by it on failure too) */
    parts_free(&p);
    return all;
}

wt_source *wt_diffusers_open_files(const wt_df_files *fs, fm_error *err)
{
    wt_source *s = open_folder(fs, err);
    /* names in messages come from the index (and the disk): one line */
    for (char *c = err->msg; !s && *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f) *c = '?';
    return s;
}
