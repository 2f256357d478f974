/* AMX-BF16 micro-kernel (TDPBF16PS), for Intel CPUs with AMX (Sapphire
 * Rapids and later), used by the GEMM driver for bf16 problems.
 *
 * Blocking: a 32 x 32 C block is four 16 x 16 fp32 tiles (tmm0-3) swept
 * over K in steps of 32 (16 bf16 pairs): two A tiles (tmm4-5, 16 rows x 16
 * pairs each) and two B tiles (tmm6-7, 16 pair-rows x 16 columns), four
 * tile products per step. B arrives as the engine's pair panel [kc2][32]
 * (each dword = (k even, k odd)), which is already AMX's B layout with a
 * 128-byte row stride. A tiles need K contiguous per row, so A panels are
 * packed for this arch as rows, [32][kc2] (gemm_arch.a_rows), once per task
 * and K slice. A K tail of fewer than 16 pairs goes through zero-padded
 * copies of its A and B tiles; a C block partly outside C through a local
 * 32 x 32 buffer.
 *
 * Tiles need the kernel's permission (arch_prctl ARCH_REQ_XCOMP_PERM, asked
 * once per process by kn_has_amx) and a tile configuration per thread,
 * which the driver loads once per thread and call (begin/end). */
#if defined(__x86_64__)
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c,amx-tile,amx-bf16")
#include "kernels/gemm.h"

#include <immintrin.h>
#include <string.h>

enum { X_MR = 32, X_NR = 32, X_KP = 16 /* pairs per tile step */ };

/* The tile shapes: 0-3 C (16 rows x 64 bytes), 4-5 A, 6-7 B, all full. */
static const kn_amx_tile_config amx_tiles = {
    .palette = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};

static void amx_begin(void) { _tile_loadconfig(&amx_tiles); }

static void amx_end(void) { _tile_release(); }

/* C block (+)= A . B over kc2 pairs. A: rows [32][lda2] pairs, B: [kc2][32]. */
static void ukernel_amx(int kc2, const uint32_t *A, const uint32_t *B, float *C, ptrdiff_t ldc, int mv, int nv,
                        int acc)
{
    float local[X_MR * X_NR] __attribute__((aligned(64)));
    uint32_t a_tail[X_MR * X_KP] __attribute__((aligned(64)));
    uint32_t b_tail[X_KP * X_NR] __attribute__((aligned(64)));
    int full = mv == X_MR && nv == X_NR;
    float *c = full ? C : local;
    size_t cs = full ? (size_t)ldc * sizeof(float) : X_NR * sizeof(float);
    size_t as = (size_t)kc2 * sizeof(uint32_t), bs = X_NR * sizeof(uint32_t);
    if (full && acc) {
        _tile_loadd(0, c, cs);
        _tile_loadd(1, c + 16, cs);
        _tile_loadd(2, c + 16 * (size_t)ldc, cs);
        _tile_loadd(3, c + 16 * (size_t)ldc + 16, cs);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    int k = 0;
    for (; k + X_KP <= kc2; k += X_KP) {
        _tile_loadd(4, A + k, as);
        _tile_loadd(5, A + 16 * (size_t)kc2 + k, as);
        _tile_loadd(6, B + (size_t)k * X_NR, bs);
        _tile_loadd(7, B + (size_t)k * X_NR + 16, bs);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    if (k < kc2) {
        int t = kc2 - k;
        memset(a_tail, 0, sizeof a_tail);
        memset(b_tail, 0, sizeof b_tail);
        for (int r = 0; r < X_MR; r++) memcpy(a_tail + r * X_KP, A + (size_t)r * kc2 + k, t * sizeof(uint32_t));
        memcpy(b_tail, B + (size_t)k * X_NR, (size_t)t * X_NR * sizeof(uint32_t));
        _tile_loadd(4, a_tail, X_KP * sizeof(uint32_t));
        _tile_loadd(5, a_tail + 16 * X_KP, X_KP * sizeof(uint32_t));
        _tile_loadd(6, b_tail, bs);
        _tile_loadd(7, b_tail + 16, bs);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, c, cs);
    _tile_stored(1, c + 16, cs);
    _tile_stored(2, c + 16 * (cs / sizeof(float)), cs);
    _tile_stored(3, c + 16 * (cs / sizeof(float)) + 16, cs);
    if (full) return;
    for (int r = 0; r < mv; r++) {
        float *cr = C + (ptrdiff_t)r * ldc;
        const float *lr = local + r * X_NR;
        if (acc)
            for (int j = 0; j < nv; j++) cr[j] += lr[j];
        else
            memcpy(cr, lr, (size_t)nv * sizeof(float));
    }
}

/* Only the driver's bf16 problems use this set: no f32 or element-wise
 * kernels (those stay the AVX-512 set's). */
const gemm_arch gemm_arch_amx = {
    .isa = FM_ISA_AVX512, .mr = X_MR, .nr = X_NR, .mc = 512, .kc = 512,
    .f32 = NULL, .bf16 = ukernel_amx, .pair_bf16 = gemm_pair_bf16_avx512, .a_rows = 1,
    .row_bf16 = gemm_row_bf16_avx512, .begin = amx_begin, .end = amx_end,
};
#endif
