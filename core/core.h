/* core: what every module shares and nothing else: error values, element
 * types and their conversion to float, aligned allocation. */
#ifndef FM_CORE_H
#define FM_CORE_H

#include <stddef.h>
#include <stdint.h>
#include "fmimage.h"

/* Set err (if non-NULL) to code and a printf-formatted message; returns code,
 * so `return fm_fail(err, FM_EINPUT, "%s: truncated", path);` reads well.
 * An error already set during this call is kept (the first cause wins) and
 * its code returned. Every public call clears err on entry
 * (fm_error_clear), so no message outlives the call that set it. */
int fm_fail(fm_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void fm_error_clear(fm_error *err);
/* Prefix an already-set message with "what: " (e.g. a file name). */
void fm_error_prefix(fm_error *err, const char *what);

typedef enum {
    FM_DT_F32 = 0,
    FM_DT_F16,
    FM_DT_BF16,
    FM_DT_F64,
    FM_DT_I64,
    FM_DT_I32,
    FM_DT_U8,
    FM_DT_COUNT
} fm_dtype;

size_t fm_dtype_size(fm_dtype t);
const char *fm_dtype_name(fm_dtype t); /* "F32", "F16", ... as in safetensors */

/* Element-wise conversion to float32 (vectorised where the CPU allows). */
void fm_f16_to_f32(float *dst, const uint16_t *src, size_t n);
void fm_bf16_to_f32(float *dst, const uint16_t *src, size_t n);
void fm_f32_to_f16(uint16_t *dst, const float *src, size_t n);
void fm_f32_to_bf16(uint16_t *dst, const float *src, size_t n); /* round to nearest even */
float fm_f16_to_f32_1(uint16_t h);
uint16_t fm_f32_to_f16_1(float f);
/* Any float or integer dtype to float32. */
void fm_convert_to_f32(float *dst, const void *src, fm_dtype t, size_t n);
/* The CPU has F16C and AVX2 (the one cpuid probe; asked once, cached). */
int fm_cpu_has_f16c_avx2(void);

/* 64-byte aligned allocation (free with fm_free). Returns NULL on failure. */
void *fm_alloc(size_t bytes);
void *fm_calloc(size_t bytes);
void fm_free(void *p);

/* A hook on the planned allocations (the U-Net workspace, the VAE and TAESD
 * arenas, the sampler's latents: everything a generation takes before its
 * first step). It is a field of whoever owns the plan (fm_model), never a
 * global, so a test can count those allocations or refuse one to see the
 * failure come back as an error value. */
typedef struct fm_alloc_hook {
    int (*refuse)(void *user, size_t bytes); /* non-zero: this allocation fails */
    void *user;
} fm_alloc_hook;

/* fm_alloc through hook (which may be NULL). */
void *fm_alloc_hooked(const fm_alloc_hook *hook, size_t bytes);

#endif
