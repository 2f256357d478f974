/* kn_linear on Q8_0 weights with int8 products, as ggml computes it: each
 * activation row is quantised per block of 32 to Q8_0 (d = max|x| / 127,
 * q = round(x / d)), and y = bias + sum over blocks of
 * (float)(sum_j qw_j qx_j) * (dw * dx). The integer sums are exact, and the
 * float sums run in the same order on every ISA, so the AVX2 (vpmaddubsw)
 * and VNNI (vpdpbusd: AVX-512 VNNI or AVX-VNNI) paths equal the plain loop
 * bit for bit (tests/test_kernels.c). */
#include "kernels/kernels.h"

#include <math.h>
#include <string.h>
#include <omp.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

enum { QK = 32, QB = 34 }; /* block elements; bytes of a Q8_0 block */

/* One activation block: its scale and 32 int8 values. */
typedef struct q8_act {
    float d;
    int8_t q[QK];
} q8_act;

static void quantise_act(q8_act *a, const float *x)
{
    float amax = 0.0f;
    for (int j = 0; j < QK; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    /* ggml keeps the activation scale as fp16 too (block_q8_0) */
    a->d = core_f16_to_f32_1(core_f32_to_f16_1(d));
    for (int j = 0; j < QK; j++) a->q[j] = (int8_t)roundf(x[j] * id);
}

static float w_scale(const uint8_t *b) { return core_f16_to_f32_1((uint16_t)(b[0] | b[1] << 8)); }

static int32_t dot_ref(const int8_t *w, const int8_t *x)
{
    int32_t s = 0;
    for (int j = 0; j < QK; j++) s += (int32_t)w[j] * x[j];
    return s;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static int32_t hsum8(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* |w| (unsigned) times x with w's sign: vpmaddubsw pairs, then to int32. The
 * pairs cannot saturate: |w| <= 127 (ggml's quantiser never writes -128;
 * the absolute value of -128 is read as 128 unsigned, still within range:
 * 2 * 128 * 127 < 32767). */
__attribute__((target("avx2"))) static int32_t dot_avx2(const int8_t *w, const int8_t *x)
{
    __m256i a = _mm256_loadu_si256((const __m256i *)w), b = _mm256_loadu_si256((const __m256i *)x);
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a));
    return hsum8(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

__attribute__((target("avx2,avx512vnni,avx512vl"))) static int32_t dot_vnni512(const int8_t *w, const int8_t *x)
{
    __m256i a = _mm256_loadu_si256((const __m256i *)w), b = _mm256_loadu_si256((const __m256i *)x);
    return hsum8(_mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a)));
}

__attribute__((target("avx2,avxvnni"))) static int32_t dot_avxvnni(const int8_t *w, const int8_t *x)
{
    __m256i a = _mm256_loadu_si256((const __m256i *)w), b = _mm256_loadu_si256((const __m256i *)x);
    return hsum8(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), _mm256_sign_epi8(a, a), _mm256_sign_epi8(b, a)));
}
#endif

typedef int32_t (*dot_fn)(const int8_t *, const int8_t *);

static const struct { const char *name; dot_fn fn; const char *cpu; } paths[] = {
    {"scalar", dot_ref, NULL},
#if defined(__x86_64__)
    {"avx2", dot_avx2, "avx2"},
    {"avx-vnni", dot_avxvnni, "avxvnni"},
    {"avx512-vnni", dot_vnni512, "avx512vnni"},
#endif
};
enum { N_PATHS = sizeof paths / sizeof paths[0] };

static int path_runs(int i)
{
#if defined(__x86_64__)
    if (!paths[i].cpu) return 1;
    if (!__builtin_cpu_supports("avx2")) return 0;
    if (!strcmp(paths[i].cpu, "avxvnni")) return __builtin_cpu_supports("avxvnni");
    if (!strcmp(paths[i].cpu, "avx512vnni")) return __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl");
    return 1;
#else
    return i == 0;
#endif
}

/* The best path the chosen ISA allows (FM_ISA lowers it as for the GEMM):
 * AVX-512 VNNI under avx512, AVX-VNNI or AVX2 under avx2, else scalar. */
static int choose_path(void)
{
    kn_isa isa = kn_isa_chosen();
    int best = 0;
    for (int i = 1; i < N_PATHS; i++) {
        int allowed = !strcmp(paths[i].name, "avx512-vnni") ? isa == FM_ISA_AVX512 : isa >= FM_ISA_AVX2;
        if (allowed && path_runs(i)) best = i;
    }
    return best;
}

const char *kn_q8_path(void) { return paths[choose_path()].name; }

int kn_q8_applies(const kn_mat *w) { return w->dtype == FM_DT_Q8_0 && w->cols % QK == 0; }

size_t kn_q8_linear_scratch(int n, const kn_mat *w)
{
    return (size_t)n * (size_t)(w->cols / QK) * sizeof(q8_act) + 64;
}

static void q8_linear(q8_act *act, float *y, const float *x, int n, const kn_mat *w, const float *bias, int path)
{
    int nb = w->cols / QK, ref = path == 0;
    dot_fn dot = paths[path].fn;
    const uint8_t *wd = w->data;
    double flops = 2.0 * n * w->rows * (double)w->cols;
#pragma omp parallel if (!ref && flops > 2e6)
    {
#pragma omp for schedule(static)
        for (long r = 0; r < (long)n * nb; r++) quantise_act(&act[r], x + (size_t)r * QK);
#pragma omp for schedule(static)
        for (int o = 0; o < w->rows; o++) {
            const uint8_t *wr = wd + (size_t)o * nb * QB;
            for (int i = 0; i < n; i++) {
                const q8_act *a = act + (size_t)i * nb;
                float sum = 0.0f;
                for (int b = 0; b < nb; b++)
                    sum += (float)dot((const int8_t *)(wr + (size_t)b * QB + 2), a[b].q) * (w_scale(wr + (size_t)b * QB) * a[b].d);
                y[(size_t)i * w->rows + o] = sum + (bias ? bias[o] : 0.0f);
            }
        }
    }
}

int kn_q8_linear_ws(const kn_scratch *s, float *y, const float *x, int n, const kn_mat *w, const float *bias)
{
    if (!s || !s->base || s->bytes < kn_q8_linear_scratch(n, w)) return -1;
    q8_linear(s->base, y, x, n, w, bias, choose_path());
    return 0;
}

int kn_q8_linear_path(const char *path, float *y, const float *x, int n, const kn_mat *w, const float *bias)
{
    for (int i = 0; i < N_PATHS; i++)
        if (!strcmp(paths[i].name, path)) {
            if (!path_runs(i)) return -1;
            q8_act *act = core_alloc(kn_q8_linear_scratch(n, w));
            if (!act) return -1;
            q8_linear(act, y, x, n, w, bias, i);
            core_free(act);
            return 0;
        }
    return -1;
}

void kn_q8_linear_ref(float *y, const float *x, int n, const kn_mat *w, const float *bias)
{
    q8_act *act = core_alloc(kn_q8_linear_scratch(n, w));
    if (!act) { /* without memory: the float reference (never wrong, not the same bits) */
        kn_linear_ref(y, x, n, w, bias);
        return;
    }
    q8_linear(act, y, x, n, w, bias, 0);
    core_free(act);
}
