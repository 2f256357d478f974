/* --vae FILE replacing a full checkpoint's VAE (issue 16 item 5), with ldm
 * or diffusers names. The diffusers names come from diffusers' own
 * converter (tests/data/vae-diffusers-names.tsv, tools/ref/vae_names.py):
 * tiny-sd1's VAE written under them (mid attention weights as Linear [C, C])
 * must give the image of the checkpoint alone, byte for byte; the same file
 * with one tensor changed must give the image of a checkpoint with that
 * change baked in (the file's VAE is used, not the checkpoint's). The
 * infotext and manifest carry A1111's "VAE hash" and "VAE". The names
 * themselves: rename.h's mapping (the diffusers folder reader's too) gives
 * the converter's ldm name and shape for each, under both generations of
 * diffusers' attention names. */
#include "cliutil.h"

#include "core/sha256.h"
#include "weights/rename.h"

static char dir[256];

typedef struct {
    char hf[160], ldm[160];
    int linear;
} name_row;

static int read_names(name_row *rows, int cap)
{
    FILE *f = fopen("tests/data/vae-diffusers-names.tsv", "r");
    assert_non_null(f);
    char line[400];
    int n = 0;
    while (fgets(line, sizeof line, f))
        if (line[0] != '#' && n < cap && sscanf(line, "%159s\t%159s\t%d", rows[n].hf, rows[n].ldm, &rows[n].linear) == 3) n++;
    fclose(f);
    return n;
}

/* The checkpoint's VAE under diffusers names; bias_delta added to one
 * tensor (decoder.conv_out.bias) when non-zero. */
static void write_diffusers_vae(const char *out, float bias_delta)
{
    name_row rows[200];
    int n = read_names(rows, 200);
    assert_int_equal(n, 124);
    wt_safetensors st;
    tu_open(&st, "tests/data/tiny-sd1.safetensors");
    tl_st_entry e[200];
    float *changed = NULL;
    for (int i = 0; i < n; i++) {
        const wt_st_tensor *t = wt_st_find(&st, rows[i].ldm);
        if (!t) fail_msg("%s missing", rows[i].ldm);
        e[i] = (tl_st_entry){rows[i].hf, t->dtype, t->ndim, {0}, t->data};
        memcpy(e[i].shape, t->shape, sizeof t->shape);
        if (rows[i].linear) assert_int_equal(t->ndim, 4), e[i].ndim = 2;
        if (bias_delta != 0 && !strcmp(rows[i].hf, "decoder.conv_out.bias")) {
            changed = tu_f32(&st, rows[i].ldm, NULL);
            for (int k = 0; k < 3; k++) changed[k] += bias_delta;
            e[i].dtype = FM_DT_F32;
            e[i].data = changed;
        }
    }
    fm_error err = {0};
    if (tl_st_write(out, e, n, NULL, 0, &err)) fail_msg("%s", err.msg);
    core_free(changed);
    wt_st_close(&st);
}

/* tiny-sd1 with decoder.conv_out.bias + delta, ldm names */
static void write_changed_checkpoint(const char *out, float delta)
{
    wt_safetensors st;
    tu_open(&st, "tests/data/tiny-sd1.safetensors");
    tl_st_entry *e = cu_st_entries(&st);
    float *b = tu_f32(&st, "first_stage_model.decoder.conv_out.bias", NULL);
    for (int k = 0; k < 3; k++) b[k] += delta;
    for (int i = 0; i < st.n_tensors; i++)
        if (!strcmp(e[i].name, "first_stage_model.decoder.conv_out.bias")) e[i].data = b, e[i].dtype = FM_DT_F32;
    wt_st_meta meta = {"fmimage.config", wt_st_meta_get(&st, "fmimage.config")};
    fm_error err = {0};
    if (tl_st_write(out, e, st.n_tensors, &meta, 1, &err)) fail_msg("%s", err.msg);
    core_free(b);
    free(e);
    wt_st_close(&st);
}

static void render(const char *model, const char *vae, const char *out)
{
    const char *args[40] = {"-m", model, "a red fox in snow", "--seed", "42", "-W", "64", "-H", "64", "--steps", "3",
                            "--precision", "fp32", "-q", "-o", out};
    int n = 16;
    if (vae) args[n++] = "--vae", args[n++] = vae;
    args[n] = NULL;
    char err[4096];
    int code = cu_run(args, err, sizeof err);
    if (code) fail_msg("exit %d: %s", code, err);
}

/* the decoded pixels of two PNGs are the same bytes */
static int same_pixels(const char *a, const char *b)
{
    fm_error err = {0};
    int wa, ha, wb, hb;
    uint8_t *pa = fm_image_read(a, &wa, &ha, &err), *pb = fm_image_read(b, &wb, &hb, &err);
    assert_non_null(pa);
    assert_non_null(pb);
    int same = wa == wb && ha == hb && !memcmp(pa, pb, (size_t)wa * ha * 3);
    free(pa);
    free(pb);
    return same;
}

static void test_diffusers_vae_identical(void **state)
{
    (void)state;
    char vae[300], base[300], with[300];
    snprintf(vae, sizeof vae, "%s/diffusers-vae.safetensors", dir);
    snprintf(base, sizeof base, "%s/base.png", dir);
    snprintf(with, sizeof with, "%s/with.png", dir);
    write_diffusers_vae(vae, 0);
    render("tests/data/tiny-sd1.safetensors", NULL, base);
    render("tests/data/tiny-sd1.safetensors", vae, with);
    assert_true(same_pixels(base, with));
    /* A1111's "VAE hash" (sha256, 10 digits) and "VAE" (the file name) after Model */
    size_t len = 0;
    uint8_t *bytes = cu_slurp(vae, &len);
    char hex[65], want[200];
    core_sha256_hex(bytes, len, hex);
    free(bytes);
    snprintf(want, sizeof want, "Model: tiny-sd1, VAE hash: %.10s, VAE: diffusers-vae.safetensors, ", hex);
    char *params = cu_png_parameters(with);
    assert_non_null(params);
    if (!strstr(params, want)) fail_msg("%s\nlacks %s", params, want);
    free(params);
    params = cu_png_parameters(base);
    assert_null(strstr(params, "VAE"));
    free(params);
}

static void test_diffusers_vae_replaces(void **state)
{
    (void)state;
    char vae[300], ckpt[300], a[300], b[300], base[300];
    snprintf(vae, sizeof vae, "%s/changed-vae.safetensors", dir);
    snprintf(ckpt, sizeof ckpt, "%s/changed-ckpt.safetensors", dir);
    snprintf(a, sizeof a, "%s/a.png", dir);
    snprintf(b, sizeof b, "%s/b.png", dir);
    snprintf(base, sizeof base, "%s/base.png", dir);
    write_diffusers_vae(vae, 0.25f);
    write_changed_checkpoint(ckpt, 0.25f);
    render("tests/data/tiny-sd1.safetensors", vae, a);
    render(ckpt, NULL, b);
    assert_true(same_pixels(a, b));
    assert_false(same_pixels(a, base));
}

/* tensor name (2-D when linear) -> ldm name and 4-D shape */
static void check_name(const char *hf, const name_row *r, int levels)
{
    wt_tensor t = {.name = hf, .ndim = r->linear ? 2 : 4, .shape = {8, 8, 3, 3}}, o;
    char out[300];
    int k = wt_vae_diffusers_tensor(&t, levels, out, sizeof out, &o);
    if (k != 1 || strcmp(out, r->ldm)) fail_msg("%s: %d %s, diffusers' converter: %s", hf, k, k == 1 ? out : "", r->ldm);
    if (r->linear && (o.ndim != 4 || o.shape[2] != 1 || o.shape[3] != 1)) fail_msg("%s: not a 1x1 conv", hf);
    if (!r->linear && (o.ndim != 4 || o.shape[2] != 3)) fail_msg("%s: reshaped", hf);
}

/* The converter's names (newer to_q/to_k/to_v/to_out.0), and the same
 * with the older query/key/value/proj_attn the script's
 * vae_conversion_map_attn lists. */
static void test_names_as_converter(void **state)
{
    (void)state;
    name_row rows[200];
    int n = read_names(rows, 200), older = 0;
    assert_int_equal(n, 124);
    static const char *const gen[][2] = {{"to_q.", "query."}, {"to_k.", "key."}, {"to_v.", "value."}, {"to_out.0.", "proj_attn."}};
    for (int i = 0; i < n; i++) {
        check_name(rows[i].hf, &rows[i], 4); /* the script's four levels: up_blocks 2, 3 */
        for (int g = 0; g < 4; g++) {
            const char *p = strstr(rows[i].hf, gen[g][0]);
            if (!p) continue;
            char old[200];
            snprintf(old, sizeof old, "%.*s%s%s", (int)(p - rows[i].hf), rows[i].hf, gen[g][1], p + strlen(gen[g][0]));
            check_name(old, &rows[i], 4);
            older++;
        }
    }
    assert_int_equal(older, 16);
    /* blocks ldm's VAE does not have are not VAE tensors */
    static const char *const none[] = {"encoder.mid_block.resnets.2.conv1.weight", "encoder.down_blocks.4.resnets.0.conv1.weight",
                                       "decoder.up_blocks.4.resnets.0.conv1.weight", "encoder.mid_block.attentions.0.to_out.1.weight",
                                       "decoder.down_blocks.0.resnets.0.conv1.weight", "text_model.final_layer_norm.weight"};
    for (size_t i = 0; i < sizeof none / sizeof none[0]; i++) {
        wt_tensor t = {.name = none[i], .ndim = 1, .shape = {8}}, o;
        char out[300];
        if (wt_vae_diffusers_tensor(&t, 4, out, sizeof out, &o) != 0) fail_msg("%s: mapped to %s", none[i], out);
    }
}

int main(void)
{
    cu_tempdir(dir, sizeof dir, "vae-override");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names_as_converter),
        cmocka_unit_test(test_diffusers_vae_identical),
        cmocka_unit_test(test_diffusers_vae_replaces),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
