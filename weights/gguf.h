/* GGUF: ggml's weight file (stable-diffusion.cpp's `-M convert`, model
 * hubs), versions 2 and 3, little-endian, mapped read-only and validated
 * completely before any tensor is handed out.
 *
 * Layout: "GGUF", u32 version, u64 tensor count, u64 KV count; the KV pairs
 * (gguf string key, u32 value type, value: scalars, strings = u64 length +
 * bytes, arrays = u32 element type + u64 count + elements, arrays nest);
 * the tensor infos (name, u32 n_dims, u64 ne[n_dims] fastest first, u32
 * ggml type, u64 offset); padding to general.alignment (default 32); the
 * data section, every tensor at an aligned offset into it.
 *
 * An open file is a wt_source: shapes in PyTorch order (ne reversed), the
 * tensors under the ldm names the model parts bind (sd.cpp's names mapped
 * back, weights/gguf_names.c), string metadata through wt_meta (numbers as
 * decimal text). */
#ifndef WT_GGUF_H
#define WT_GGUF_H

#include "weights/source.h"

/* Maps and validates path; the source's close op frees it. NULL with
 * err = "PATH: why" (one line). */
wt_source *wt_gguf_open(const char *path, fm_error *err);

/* The same on a buffer in memory (the fuzz target; buf must outlive the
 * source, which then only frees its index). */
wt_source *wt_gguf_open_mem(const void *buf, size_t size, const char *name, fm_error *err);

/* ggml's type number -> core_dtype; -1 with *why set ("IQ2_XS: ...") for a
 * type fmimage does not read. */
int wt_gguf_dtype(uint32_t ggml_type, const char **why);
/* The inverse (for writers): ggml's type number of a core_dtype, or -1. */
int wt_gguf_type_of(core_dtype t);

/* ldm name of a tensor as stable-diffusion.cpp names it (its converter
 * keeps ldm names for the U-Net and VAE, renames text encoders, and a
 * U-Net-only file may carry no prefix). openclip: the file's text encoder
 * under "cond_stage_model.transformer." is an OpenCLIP tower (SD 2.x: it has
 * self_attn.in_proj); sdxl: the file has "cond_stage_model.1.". Writes at
 * most size bytes of out; returns 0, or -1 when it does not fit. */
int wt_gguf_ldm_name(char *out, size_t size, const char *name, int openclip, int sdxl);

#endif
