/* Every input the fuzzers (tests/fuzz/) ever crashed on, replayed through
 * the same entry point: tests/fuzz/regressions/<target>-<what>. Each must
 * now fail cleanly (or succeed); `make sanitize` runs this under ASan+UBSan,
 * where the original bugs were reported. */
#include "testutil.h"

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../cli/promptfile.c"
#include "../cli/wildcards.c"
#include "diffusion/detect.h"
#include "weights/gguf.h"
#include "weights/safetensors.h"
#include "weights/pickle.h"
#include "fmimage.h"
#include "textenc/prompt.h"
#include "textenc/tokenizer.h"

#define DIR_REGRESSIONS "tests/fuzz/regressions"

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    assert_int_equal(fread(b, 1, (size_t)n, f), (size_t)n);
    b[n] = 0;
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* What the image regressions must say: the allocation a PNG chunk length
 * claims ("-png-chunk-", an out-of-memory and slow units under ASan) and the
 * huge JPEG of a few bytes. The others (stb 2.27's Huffman overflow and
 * shift, "-jpeg-dht-", "-code-bits-") only must not crash or trip the
 * sanitizers: stb 2.30 decodes or refuses them itself. */
static void replay_image(const char *path, const char *name)
{
    fm_error err = {0};
    int w, h;
    uint8_t *rgb = fm_image_read(path, &w, &h, &err);
    if (strstr(name, "-png-chunk-")) {
        assert_null(rgb);
        if (!strstr(err.msg, "truncated PNG")) fail_msg("%s: %s", name, err.msg);
    }
    if (strstr(name, "-huge-size-")) {
        assert_null(rgb);
        if (!strstr(err.msg, "truncated JPEG (")) fail_msg("%s: %s", name, err.msg);
    }
    if (!rgb) assert_true(err.msg[0]);
    free(rgb);
}

static void replay_safetensors(const char *path)
{
    wt_safetensors st;
    fm_error err = {0};
    if (wt_st_open(&st, path, &err)) {
        assert_true(err.msg[0] && !strchr(err.msg, '\n'));
        return;
    }
    wt_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    if (df_detect_config(&st.src, &cfg, &err) == 0) free(df_config_describe(&cfg, &st.src));
    wt_st_close(&st);
}

/* gguf inputs are whole files, read through wt_open (and detection). */
static void replay_gguf(const char *path)
{
    fm_error err = {0};
    wt_source *s = wt_open(path, &err);
    if (!s) {
        assert_true(err.msg[0] && !strchr(err.msg, '\n'));
        return;
    }
    wt_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    if (df_detect_config(s, &cfg, &err) == 0) free(df_config_describe(&cfg, s));
    wt_close(s);
}

/* detect inputs are bare JSON headers (see tests/fuzz/fuzz_detect.c). */
static void replay_detect(const uint8_t *json, size_t len)
{
    char path[] = "build/test-tmp/fuzz-detect-XXXXXX";
    mkdir("build", 0777);
    mkdir("build/test-tmp", 0777);
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    uint8_t n[8];
    for (int i = 0; i < 8; i++) n[i] = (uint8_t)((uint64_t)len >> (8 * i));
    assert_int_equal(write(fd, n, 8), 8);
    assert_int_equal(write(fd, json, len), (ssize_t)len);
    assert_int_equal(ftruncate(fd, 8 + (off_t)len + (64 << 20)), 0);
    close(fd);
    replay_safetensors(path);
    unlink(path);
}

static void replay_text(const char *target, const uint8_t *data, size_t len, const te_tokenizer *tok)
{
    fm_error err = {0};
    if (!strcmp(target, "tokenizer")) {
        int32_t ids[256];
        assert_true(te_tokenizer_encode_n(tok, (const char *)data, len, ids, 256, &err) >= 0);
    } else if (!strcmp(target, "prompt")) {
        te_prompt_attention a = {0};
        if (!te_parse_prompt_attention((const char *)data, &a, &err)) te_prompt_attention_free(&a);
        te_token_chunks c = {0};
        if (!te_prompt_to_chunks(tok, (const char *)data, FM_CLIP_PAD_SD1, &c, &err)) te_token_chunks_free(&c);
    } else if (!strcmp(target, "promptfile")) {
        pf_line l;
        char why[256];
        if (pf_parse_line((const char *)data, len, 1, &l, why, sizeof why) >= 0) pf_line_free(&l);
    } else if (!strcmp(target, "wildcards")) {
        char *t = strndup((const char *)data, len), why[300] = "";
        wc_list l;
        if (!wc_expand_all(t, "tests/data/wildcards", 100, &l, why, sizeof why)) wc_list_free(&l);
        else assert_null(strchr(why, '\n'));
        free(wc_expand_random(t, "tests/data/wildcards", len, why, sizeof why));
        free(t);
    } else {
        fail_msg("unknown fuzz target %s", target);
    }
}

/* PyTorch files: the pickle alone, and the whole zip file. */
static void replay_pickle(const uint8_t *data, size_t len)
{
    wt_pk_result r;
    fm_error err = {0};
    if (!wt_pk_parse(data, len, &r, "regression.pkl", &err)) wt_pk_free(&r);
}

static void replay_torchfile(const char *path)
{
    fm_error err = {0};
    wt_close(wt_open(path, &err));
}

/* diffusers inputs: byte 0 picks the folder of tests/data/diffusers and
 * which of its JSON files (name order) the rest replaces (empty: removes),
 * as tests/fuzz/fuzz_diffusers.c does; here in a copy on disk, opened by
 * wt_open: it must open or fail with one line. */
static void replay_diffusers(const uint8_t *data, size_t len)
{
    static const char *const family[] = {"sd1", "sd2", "sdxl"};
    static const char *const json[3][7] = {
        {"model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json", "unet/config.json",
         "unet/diffusion_pytorch_model.safetensors.index.json", "vae/config.json"},
        {"model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json", "unet/config.json",
         "vae/config.json"},
        {"model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json", "text_encoder_2/config.json",
         "unet/config.json", "vae/config.json"},
    };
    assert_true(len >= 1);
    int fam = data[0] % 3, n_json = 0;
    while (n_json < 7 && json[fam][n_json]) n_json++;
    const char *rel = json[fam][(data[0] / 3) % n_json];
    char dir[300], cmd[700], path[600];
    mkdir("build", 0777);
    mkdir("build/test-tmp", 0777);
    snprintf(dir, sizeof dir, "build/test-tmp/regression-diffusers-XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(cmd, sizeof cmd, "cp -r tests/data/diffusers/%s/. '%s'", family[fam], dir);
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    if (len > 1) {
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        assert_int_equal(fwrite(data + 1, 1, len - 1, f), len - 1);
        fclose(f);
    } else {
        assert_int_equal(unlink(path), 0);
    }
    fm_error err = {0};
    wt_source *s = wt_open(dir, &err);
    if (!s && (!err.msg[0] || strchr(err.msg, '\n'))) fail_msg("not one line: %s", err.msg);
    wt_close(s);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_replay_all(void **state)
{
    (void)state;
    fm_error err = {0};
    te_tokenizer *tok = te_tokenizer_new(&err);
    assert_non_null(tok);
    DIR *d = opendir(DIR_REGRESSIONS);
    assert_non_null(d);
    struct dirent *e;
    int n = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[512], target[32];
        snprintf(path, sizeof path, "%s/%s", DIR_REGRESSIONS, e->d_name);
        const char *dash = strchr(e->d_name, '-');
        assert_non_null(dash);
        snprintf(target, sizeof target, "%.*s", (int)(dash - e->d_name), e->d_name);
        size_t len;
        uint8_t *data = slurp(path, &len);
        if (!strcmp(target, "image")) replay_image(path, e->d_name);
        else if (!strcmp(target, "safetensors")) replay_safetensors(path);
        else if (!strcmp(target, "detect")) replay_detect(data, len);
        else if (!strcmp(target, "gguf")) replay_gguf(path);
        else if (!strcmp(target, "pickle")) replay_pickle(data, len);
        else if (!strcmp(target, "torchfile")) replay_torchfile(path);
        else if (!strcmp(target, "diffusers")) replay_diffusers(data, len);
        else replay_text(target, data, len, tok);
        free(data);
        n++;
    }
    closedir(d);
    te_tokenizer_free(tok);
    assert_true(n >= 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_all),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
