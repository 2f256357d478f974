/* Corrupt checkpoints: every one is refused with one line "PATH: why" and
 * FM_EINPUT, by the reader (header), by detection (structure) or by the
 * weight binder (every other tensor).
 * The files are made here, in a temporary directory. */
#include "testutil.h"

#include <sys/stat.h>
#include <unistd.h>

#include "diffusion/detect.h"
#include "tools/lib/randckpt.h"

static void path_of(char *out, size_t len, const char *name)
{
    snprintf(out, len, "%s/%s", tu_dir, name);
}

/* A file: 8-byte length (hlen, or the header's own length when hlen < 0),
 * the header text, then data_len bytes of data (zeros). */
static void write_raw(const char *path, long long hlen, const char *header, size_t data_len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t n = hlen < 0 ? strlen(header) : (uint64_t)hlen;
    uint8_t len8[8];
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)(n >> (8 * i));
    assert_int_equal(fwrite(len8, 1, 8, f), 8);
    assert_int_equal(fwrite(header, 1, strlen(header), f), strlen(header));
    for (size_t i = 0; i < data_len; i++) fputc(0, f);
    fclose(f);
}

/* Loading path (open, detect, bind every part) fails with FM_EINPUT and
 * exactly one line "PATH: ..." containing why. Detection reads only the
 * tensors that show the structure; the binder checks the others. */
static void expect_refused(const char *path, const char *why)
{
    fm_error err = {0};
    fm_model *m = fm_model_load(path, &err);
    int rc = m ? 0 : err.code;
    fm_model_free(m);
    if (rc != FM_EINPUT) fail_msg("%s: accepted (rc %d)", path, rc);
    assert_int_equal(err.code, FM_EINPUT);
    size_t pl = strlen(path);
    if (strncmp(err.msg, path, pl) || strncmp(err.msg + pl, ": ", 2))
        fail_msg("message does not start with \"%s: \": %s", path, err.msg);
    if (strchr(err.msg, '\n')) fail_msg("message is not one line: %s", err.msg);
    if (!strstr(err.msg, why)) fail_msg("message \"%s\" does not say \"%s\"", err.msg, why);
    print_message("  %s\n", err.msg + strlen(tu_dir) + 1);
}

/* A header case: name, header text, data bytes, expected message part. */
typedef struct header_case {
    const char *file, *header;
    size_t data_len;
    const char *why;
} header_case;

static const header_case header_cases[] = {
    {"bad-json.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, "not valid JSON"},
    {"not-object.safetensors", "[1,2,3]", 0, "header is not a JSON object"},
    {"trailing.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}xx", 4, "data after the JSON object"},
    {"unknown-dtype.safetensors", "{\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "unknown dtype F8_E4M3"},
    {"span-mismatch.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 24, "shape needs 24 bytes, span has 20"},
    {"overlap.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[6,10]}}", 16, "tensors a and b overlap"},
    {"out-of-range.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[8,24]}}", 16, "past the end of the data section (16 bytes)"},
    {"inverted-offsets.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,4]}}", 8, "data_offsets is not [begin, end]"},
    {"offsets-not-pair.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 8, "data_offsets is not [begin, end]"},
    {"negative-shape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0, "shape entry 0 is not a non-negative integer"},
    {"float-shape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,2.5],\"data_offsets\":[0,10]}}", 10, "shape entry 1 is not a non-negative integer"},
    {"string-shape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":\"4\",\"data_offsets\":[0,16]}}", 16, "needs dtype, shape and data_offsets"},
    {"huge-shape.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}", 4, "shape too large"},
    {"too-many-dims.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "9 dimensions"},
    {"entry-not-object.safetensors", "{\"a\":[1,2]}", 0, "tensor a: entry is not an object"},
    {"duplicate.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "tensor a: listed twice"},
    {"metadata-not-strings.safetensors", "{\"__metadata__\":{\"fmimage.config\":{\"family\":\"sd1\"}},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "__metadata__ value of fmimage.config is not a string"},
    {"metadata-not-object.safetensors", "{\"__metadata__\":\"sd1\"}", 0, "__metadata__ is not an object"},
    {"newline-in-name.safetensors", "{\"a\\nb\":{\"dtype\":\"F9\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1, "tensor a?b: unknown dtype F9"},
    {"no-unet.safetensors", "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "not a Stable Diffusion checkpoint"},
};

static void test_header_corruptions(void **state)
{
    (void)state;
    char path[512];
    for (size_t i = 0; i < sizeof header_cases / sizeof header_cases[0]; i++) {
        const header_case *c = &header_cases[i];
        path_of(path, sizeof path, c->file);
        write_raw(path, -1, c->header, c->data_len);
        expect_refused(path, c->why);
    }
}

static void test_file_level(void **state)
{
    (void)state;
    char path[512];

    path_of(path, sizeof path, "empty.safetensors");
    write_raw(path, -1, "", 0);
    truncate(path, 0);
    expect_refused(path, "too short for a safetensors file (0 bytes)");

    path_of(path, sizeof path, "a-directory.safetensors");
    mkdir(path, 0755);
    expect_refused(path, "is a directory");

    path_of(path, sizeof path, "fifo.safetensors");
    assert_int_equal(mkfifo(path, 0644), 0);
    expect_refused(path, "not a regular file");

    path_of(path, sizeof path, "missing.safetensors");
    expect_refused(path, "No such file or directory");

    path_of(path, sizeof path, "header-past-end.safetensors");
    write_raw(path, 1000, "{}", 0);
    expect_refused(path, "header length 1000 past end of file (10 bytes)");

    path_of(path, sizeof path, "huge-header-length.safetensors");
    write_raw(path, 0x7fffffffffffffffLL, "{}", 0);
    expect_refused(path, "header length 9223372036854775807 over the");

    /* A header over the cap inside a (sparse) file that is long enough. */
    path_of(path, sizeof path, "header-over-cap.safetensors");
    write_raw(path, (long long)FM_ST_MAX_HEADER + 1, "{", 0);
    assert_int_equal(truncate(path, (off_t)FM_ST_MAX_HEADER + 64), 0);
    expect_refused(path, "over the 104857600-byte limit");

    path_of(path, sizeof path, "header-too-short.safetensors");
    write_raw(path, 0, "", 16);
    expect_refused(path, "header too short");

    path_of(path, sizeof path, "nul-in-header.safetensors");
    write_raw(path, 8, "{}", 6); /* "{}" then 6 NUL bytes counted as header */
    expect_refused(path, "data after the JSON object");
}

/* tiny-sd1 rewritten with one change: tensor `drop` left out, tensor
 * `reshape` given shape (ndim, shape) (zeros), metadata replaced. */
static void rewrite_tiny(const char *out, const char *drop, const char *reshape, int ndim,
                         const int64_t *shape, const char *config)
{
    wt_safetensors st;
    tu_open(&st, "tests/data/tiny-sd1.safetensors");
    tl_st_entry *e = calloc((size_t)st.n_tensors, sizeof *e);
    int n = 0;
    for (int i = 0; i < st.n_tensors; i++) {
        const wt_st_tensor *t = &st.tensors[i];
        if (drop && !strcmp(t->name, drop)) continue;
        e[n] = (tl_st_entry){.name = t->name, .dtype = t->dtype, .ndim = t->ndim, .data = t->data};
        memcpy(e[n].shape, t->shape, sizeof t->shape);
        if (reshape && !strcmp(t->name, reshape)) {
            e[n].ndim = ndim;
            memcpy(e[n].shape, shape, sizeof *shape * (size_t)ndim);
            e[n].data = NULL;
        }
        n++;
    }
    wt_st_meta meta = {"fmimage.config", config ? config : wt_st_meta_get(&st, "fmimage.config")};
    fm_error err = {0};
    if (tl_st_write(out, e, n, &meta, 1, &err)) fail_msg("%s", err.msg);
    free(e);
    wt_st_close(&st);
}

static void test_model_corruptions(void **state)
{
    (void)state;
    char path[512];

    path_of(path, sizeof path, "truncated.safetensors");
    {
        wt_safetensors st;
        tu_open(&st, "tests/data/tiny-sd1.safetensors");
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        fwrite(st.map, 1, st.map_size / 2, f);
        fclose(f);
        wt_st_close(&st);
    }
    expect_refused(path, "past the end of the data section");

    path_of(path, sizeof path, "missing-tensor.safetensors");
    rewrite_tiny(path, "model.diffusion_model.output_blocks.2.1.transformer_blocks.0.attn2.to_v.weight", NULL, 0, NULL, NULL);
    expect_refused(path, "tensor model.diffusion_model.output_blocks.2.1.transformer_blocks.0.attn2.to_v.weight: missing");

    path_of(path, sizeof path, "missing-vae.safetensors");
    rewrite_tiny(path, "first_stage_model.decoder.up.1.upsample.conv.weight", NULL, 0, NULL, NULL);
    expect_refused(path, "first_stage_model.decoder.up.1.upsample.conv.weight: missing");

    path_of(path, sizeof path, "wrong-shape.safetensors");
    rewrite_tiny(path, NULL, "model.diffusion_model.time_embed.2.weight", 2, (const int64_t[]){128, 64}, NULL);
    expect_refused(path, "tensor model.diffusion_model.time_embed.2.weight: shape [128,64], expected [128,128]");

    path_of(path, sizeof path, "wrong-rank.safetensors");
    rewrite_tiny(path, NULL, "cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc1.weight", 1, (const int64_t[]){256}, NULL);
    expect_refused(path, "layers.1.mlp.fc1.weight: shape [256], expected [32,8]");

    path_of(path, sizeof path, "context-mismatch.safetensors");
    rewrite_tiny(path, NULL, "cond_stage_model.transformer.text_model.final_layer_norm.weight", 1, (const int64_t[]){12}, NULL);
    expect_refused(path, "final_layer_norm.weight: shape [12], expected [8]");

    path_of(path, sizeof path, "config-contradiction.safetensors");
    rewrite_tiny(path, NULL, NULL, 0, NULL, "{\"family\":\"sd1\",\"unet\":{\"model_channels\":64}}");
    expect_refused(path, "fmimage.config: unet.model_channels is 64, the tensors say 32");

    path_of(path, sizeof path, "config-family.safetensors");
    rewrite_tiny(path, NULL, NULL, 0, NULL, "{\"family\":\"sdxl\"}");
    expect_refused(path, "fmimage.config: family is sdxl, the tensors are sd1");

    path_of(path, sizeof path, "config-depth.safetensors");
    rewrite_tiny(path, NULL, NULL, 0, NULL, "{\"unet\":{\"attention_resolutions\":[1,2],\"transformer_depth\":1}}");
    expect_refused(path, "fmimage.config: unet: 1 transformer blocks at level 1, the tensors have 0");

    path_of(path, sizeof path, "config-not-json.safetensors");
    rewrite_tiny(path, NULL, NULL, 0, NULL, "{\"family\": sd1}");
    expect_refused(path, "fmimage.config: not valid JSON");

    path_of(path, sizeof path, "config-newline.safetensors");
    rewrite_tiny(path, NULL, NULL, 0, NULL, "{\"family\":\"sd\\n1\"}");
    expect_refused(path, "fmimage.config: family \"sd?1\" is not sd1, sd2, sd-turbo, sdxl or demo");

    path_of(path, sizeof path, "config-heads.safetensors");
    rewrite_tiny(path, NULL, NULL, 0, NULL, "{\"text\":{\"heads\":3}}");
    expect_refused(path, "fmimage.config: text.heads 3 does not divide the width 8");
}

/* A full-size layout changed by edit(), written sparse, must be refused. */
static void expect_layout_refused(const char *layout_name, const char *file,
                                  void (*edit)(tl_layout *), const char *why)
{
    char tsv[256], path[512];
    snprintf(tsv, sizeof tsv, "tests/data/layouts/%s.tsv", layout_name);
    path_of(path, sizeof path, file);
    tl_layout layout;
    fm_error err = {0};
    if (tl_layout_read(&layout, tsv, &err)) fail_msg("%s", err.msg);
    edit(&layout);
    tl_randckpt_opts o = {.float_dtype = -1, .zeros = 1};
    if (tl_randckpt_write(&layout, path, &o, &err)) fail_msg("%s", err.msg);
    tl_layout_free(&layout);
    expect_refused(path, why);
    unlink(path);
}

static void widen_context(tl_layout *l)
{
    for (int i = 0; i < l->n; i++)
        if (strstr(l->entries[i].name, "attn2.to_k.weight") || strstr(l->entries[i].name, "attn2.to_v.weight"))
            l->entries[i].shape[1] = 1024;
}

/* 9 inputs are an inpainting U-Net (tests/test_inpaint.c); 5 are nothing */
static void odd_in_channels(tl_layout *l)
{
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->entries[i].name, "model.diffusion_model.input_blocks.0.0.weight")) l->entries[i].shape[1] = 5;
}

static void as_refiner(tl_layout *l)
{
    /* Rename CLIP-L's token embedding into an open_clip embedder 0. */
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->entries[i].name, "conditioner.embedders.0.transformer.text_model.embeddings.token_embedding.weight"))
            l->entries[i].name = "conditioner.embedders.0.model.token_embedding.weight";
}

static void extra_block(tl_layout *l)
{
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->entries[i].name, "model.diffusion_model.input_blocks.9.0.op.weight"))
            l->entries[i].name = "model.diffusion_model.input_blocks.12.0.op.weight";
}

static void sdxl_label_emb_renamed(tl_layout *l)
{
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->entries[i].name, "model.diffusion_model.label_emb.0.0.weight"))
            l->entries[i].name = "model.diffusion_model.label_emb.0.0.weight_";
}

static void test_layout_corruptions(void **state)
{
    (void)state;
    expect_layout_refused("sd1", "sd1-context-1024.safetensors", widen_context,
                          "U-Net cross-attention context is 1024 wide, the text encoder gives 768");
    expect_layout_refused("sd2", "sd2-in5.safetensors", odd_in_channels,
                          "U-Net has 5->4 channels, the VAE latent 4 (an inpainting U-Net takes 9)");
    expect_layout_refused("sdxl", "sdxl-refiner.safetensors", as_refiner, "an SDXL refiner");
    expect_layout_refused("sd1", "sd1-extra-block.safetensors", extra_block, "model.diffusion_model.input_blocks.9: not a ResBlock or Downsample");
    expect_layout_refused("sdxl", "sdxl-no-label-emb.safetensors", sdxl_label_emb_renamed, "tensor model.diffusion_model.label_emb.0.0.weight: missing");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_corruptions),
        cmocka_unit_test(test_file_level),
        cmocka_unit_test(test_model_corruptions),
        cmocka_unit_test(test_layout_corruptions),
    };
    return cmocka_run_group_tests(tests, tu_make_dir, tu_remove_dir);
}
