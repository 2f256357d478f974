/* Element-wise and data-movement kernels: memory bound, so plain loops that
 * the compiler vectorises, split across threads when large. */
#include "kernels/gemm.h"

#include <math.h>
#include <string.h>

#define PAR_MIN 65536 /* below this many elements a parallel region costs more than it saves */

/* Splits n elements into cache-friendly chunks across threads. */
#define CHUNK 16384

void kn_silu(float *x, size_t n)
{
    const gemm_arch *a = gemm_arch_get();
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i += CHUNK)
        a->sigmoid_gate(x + i, x + i, n - i < CHUNK ? n - i : CHUNK, 1.0f);
}

void kn_gelu(float *x, size_t n)
{
    const gemm_arch *a = gemm_arch_get();
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i += CHUNK)
        a->gelu(x + i, x + i, NULL, n - i < CHUNK ? n - i : CHUNK);
}

void kn_quick_gelu(float *x, size_t n)
{
    const gemm_arch *a = gemm_arch_get();
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i += CHUNK)
        a->sigmoid_gate(x + i, x + i, n - i < CHUNK ? n - i : CHUNK, 1.702f);
}

void kn_geglu(float *y, const float *x, int rows, int dim)
{
    const gemm_arch *a = gemm_arch_get();
#pragma omp parallel for schedule(static) if ((size_t)rows * dim > PAR_MIN)
    for (int r = 0; r < rows; r++) {
        const float *xa = x + (size_t)r * 2 * dim;
        a->gelu(y + (size_t)r * dim, xa + dim, xa, (size_t)dim);
    }
}

void kn_softmax(float *x, int rows, int n)
{
#pragma omp parallel for schedule(static) if ((size_t)rows * n > PAR_MIN)
    for (int r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * n, mx = xr[0], sum = 0;
        for (int i = 1; i < n; i++) mx = xr[i] > mx ? xr[i] : mx;
        for (int i = 0; i < n; i++) { xr[i] = expf(xr[i] - mx); sum += xr[i]; }
        for (int i = 0; i < n; i++) xr[i] /= sum;
    }
}

void kn_add(float *y, const float *a, const float *b, size_t n)
{
#pragma omp parallel for schedule(static) if (n > PAR_MIN)
    for (size_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}

void kn_upsample_nearest(float *y, int oh, int ow, const float *x, int nc, int h, int w)
{
#pragma omp parallel for schedule(static) if ((size_t)nc * oh * ow > PAR_MIN)
    for (int c = 0; c < nc; c++)
        for (int oy = 0; oy < oh; oy++) {
            int iy = (int)((long)oy * h / oh);
            const float *xr = x + ((size_t)c * h + iy) * w;
            float *yr = y + ((size_t)c * oh + oy) * ow;
            for (int ox = 0; ox < ow; ox++)
                yr[ox] = xr[(long)ox * w / ow];
        }
}

void kn_concat_channels(float *y, const float *a, int ca, const float *b, int cb, int n, int hw)
{
    for (int i = 0; i < n; i++) {
        memcpy(y + (size_t)i * (ca + cb) * hw, a + (size_t)i * ca * hw, sizeof(float) * ca * hw);
        memcpy(y + ((size_t)i * (ca + cb) + ca) * hw, b + (size_t)i * cb * hw, sizeof(float) * cb * hw);
    }
}

/* y[c][r] = x[r][c] for an rows x cols matrix, in 32 x 32 tiles so that both
 * sides move whole cache lines. */
static void transpose(float *y, const float *x, int rows, int cols)
{
    enum { T = 32 };
    int tr = (rows + T - 1) / T, tc = (cols + T - 1) / T;
#pragma omp parallel for schedule(static) if ((size_t)rows * cols > PAR_MIN)
    for (long t = 0; t < (long)tr * tc; t++) {
        int r0 = (int)(t / tc) * T, c0 = (int)(t % tc) * T;
        int r1 = r0 + T < rows ? r0 + T : rows, c1 = c0 + T < cols ? c0 + T : cols;
        for (int c = c0; c < c1; c++)
            for (int r = r0; r < r1; r++)
                y[(size_t)c * rows + r] = x[(size_t)r * cols + c];
    }
}

void kn_nchw_to_nhwc(float *y, const float *x, int n, int c, int hw)
{
    for (int b = 0; b < n; b++)
        transpose(y + (size_t)b * c * hw, x + (size_t)b * c * hw, c, hw);
}

void kn_nhwc_to_nchw(float *y, const float *x, int n, int c, int hw)
{
    for (int b = 0; b < n; b++)
        transpose(y + (size_t)b * c * hw, x + (size_t)b * c * hw, hw, c);
}
