/* core: what every module shares and nothing else: error values, element
 * types and their conversion to float, aligned allocation. */
#ifndef FM_CORE_H
#define FM_CORE_H

#include <stddef.h>
#include <stdint.h>
#include "fmimage.h"

/* Set err (if non-NULL) to code and a printf-formatted message; returns code,
 * so `return core_fail(err, FM_EINPUT, "%s: truncated", path);` reads well.
 * An error already set during this call is kept (the first cause wins) and
 * its code returned. Every public call clears err on entry
 * (core_error_clear), so no message outlives the call that set it. */
int core_fail(fm_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void core_error_clear(fm_error *err);
/* Prefix an already-set message with "what: " (e.g. a file name). */
void core_error_prefix(fm_error *err, const char *what);

typedef enum {
    FM_DT_F32 = 0,
    FM_DT_F16,
    FM_DT_BF16,
    FM_DT_F64,
    FM_DT_I64,
    FM_DT_I32,
    FM_DT_U8,
    /* ggml's block-quantised types (GGUF): a row is whole blocks of
     * core_dtype_block(t) elements, each block core_dtype_block_bytes(t)
     * bytes (core/quant.c has the layouts). */
    FM_DT_Q4_0,
    FM_DT_Q4_1,
    FM_DT_Q5_0,
    FM_DT_Q5_1,
    FM_DT_Q8_0,
    FM_DT_Q2_K,
    FM_DT_Q3_K,
    FM_DT_Q4_K,
    FM_DT_Q5_K,
    FM_DT_Q6_K,
    FM_DT_COUNT
} core_dtype;

/* Bytes of one element; 0 for the block-quantised types (use core_dtype_bytes). */
size_t core_dtype_size(core_dtype t);
const char *core_dtype_name(core_dtype t); /* "F32", "F16", ... as in safetensors; "Q8_0", "Q4_K", ... as ggml */
/* Elements per block (1 for the plain types) and bytes per block. */
int core_dtype_block(core_dtype t);
size_t core_dtype_block_bytes(core_dtype t);
static inline int core_dtype_is_quant(core_dtype t) { return core_dtype_block(t) > 1; }
/* Bytes of n elements (n a multiple of the block for quantised types). */
size_t core_dtype_bytes(core_dtype t, size_t n);
/* The type named s ("Q8_0", "q4_k", "F16", ...: case-insensitive), or -1. */
int core_dtype_from_name(const char *s);

/* Element-wise conversion to float32 (vectorised where the CPU allows). */
void core_f16_to_f32(float *dst, const uint16_t *src, size_t n);
void core_bf16_to_f32(float *dst, const uint16_t *src, size_t n);
void core_f32_to_f16(uint16_t *dst, const float *src, size_t n);
void core_f32_to_bf16(uint16_t *dst, const float *src, size_t n); /* round to nearest even */
float core_f16_to_f32_1(uint16_t h);
uint16_t core_f32_to_f16_1(float f);
/* Any float, integer or quantised dtype to float32 (quantised: n a
 * multiple of the block, src at a block's start; no alignment needed). */
void core_convert_to_f32(float *dst, const void *src, core_dtype t, size_t n);
/* ggml's reference dequantisation of nblocks blocks of a quantised type
 * (plain loops in ggml's order of operations: bit-exact with it). */
void core_dequant_ref(float *dst, const void *src, core_dtype t, size_t nblocks);
/* The 6-bit scale and min of sub-block j (0..7) from a Q4_K / Q5_K block's
 * 12 scale bytes s (ggml's get_scale_min_k4). */
void core_scale_min_k4(int j, const uint8_t *s, int *sc, int *m);
/* Quantises n floats (a multiple of the block) into dst: Q4_0..Q8_0 as
 * ggml's reference quantisers do (bit for bit), the K types with a plain
 * range fit of their own (core/quant.c). 0, or -1 for another type. */
int core_quantize(void *dst, const float *src, core_dtype t, size_t n);
/* The CPU has F16C and AVX2 (the one cpuid probe; asked once, cached). */
int core_cpu_has_f16c_avx2(void);

/* 64-byte aligned allocation (free with core_free). Returns NULL on failure. */
/* A growing NUL-terminated string. Running out of memory is sticky (oom):
 * appends after it do nothing, and the builder is checked once, at
 * core_sb_take. */
typedef struct core_strbuf {
    char *s;
    size_t len, cap;
    int oom;
} core_strbuf;
void core_sb_append(core_strbuf *b, const char *s, size_t n);
void core_sb_puts(core_strbuf *b, const char *s);
/* The string (malloc'd; "" when nothing was appended), or NULL after an
 * out-of-memory; b is left empty. */
char *core_sb_take(core_strbuf *b);

void *core_alloc(size_t bytes);
void *core_calloc(size_t bytes);
void core_free(void *p);

/* A hook on the planned allocations (the U-Net workspace, the VAE and TAESD
 * arenas, the sampler's latents: everything a generation takes before its
 * first step). It is a field of whoever owns the plan (fm_model), never a
 * global, so a test can count those allocations or refuse one to see the
 * failure come back as an error value. */
typedef struct core_alloc_hook {
    int (*refuse)(void *user, size_t bytes); /* non-zero: this allocation fails */
    void *user;
} core_alloc_hook;

/* core_alloc through hook (which may be NULL). */
void *core_alloc_hooked(const core_alloc_hook *hook, size_t bytes);

#endif
