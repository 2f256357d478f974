/* libFuzzer: the adapter reader (wt_lora_open: key names, module kinds,
 * shapes against the layers, alpha/scale/dora_scale) on an input file read
 * against tests/data/tiny-sd1.safetensors, then the merge of whatever it
 * accepts (every merged value must be a float, the sizes the checks
 * promised); and the prompt's <lora:...> tags on the same bytes as text.
 * Run from the repository root. */
#include <stdint.h>
#include <string.h>

#include "diffusion/detect.h"
#include "diffusion/lora.h"
#include "kernels/kernels.h"
#include "fuzz_memfile.h"
#include "weights/lora.h"

/* The merge's GEMM as the kernels' plain loop: the fuzz archive has no
 * SIMD kernels (Makefile, FUZZ_LIB_SRC). */
void kn_sgemm(int M, int N, int K, const float *A, int lda, const float *B, int ldb, int trans_b, float beta, float *C,
              int ldc)
{
    kn_sgemm_ref(M, N, K, A, lda, B, ldb, trans_b, beta, C, ldc);
}

/* The model, opened once for the process (a harness's own state). */
static wt_source *model;
static wt_model_config cfg;

static void open_model(void)
{
    fm_error err = {0};
    if (model) return;
    if (!(model = wt_open("tests/data/tiny-sd1.safetensors", &err)) || df_detect_config(model, &cfg, &err)) abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    open_model();
    fm_error err = {0};
    wt_lora *l = wt_lora_open(fuzz_memfile(data, size), model, &cfg, &err);
    if (!l) {
        if (!err.code || !err.msg[0] || strchr(err.msg, '\n')) abort();
    } else {
        wt_lora_use u = {l, 0.75f, 1.25f};
        wt_source *m = wt_merged_open(model, &u, 1, NULL, &err);
        if (!m || wt_merged_count(m, NULL) < 1) abort();
        wt_close(m);
        wt_lora_close(l);
    }
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = 0;
    df_lora_list tags;
    if (!df_lora_parse(text, &tags, &err)) {
        if (strlen(tags.prompt) > strlen(text)) abort();
        df_lora_list_free(&tags);
    } else if (!err.msg[0]) {
        abort();
    }
    free(text);
    return 0;
}
