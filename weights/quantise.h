/* Quantising a model: which type each tensor gets, a source that presents
 * another source's tensors converted, and the GGUF writer.
 *
 * The rule is stable-diffusion.cpp's (ModelLoader::tensor_should_be_converted,
 * used by its `--type` at load and by `-M convert`): every float tensor is
 * converted to the asked type except biases (*.bias), *.scale, embeddings
 * (names containing "embedding", the U-Net's time_embed.* and label_emb.*),
 * and tensors whose rows are not whole blocks of the type. fmimage also
 * keeps integer tensors and the top-level buffers (alphas_cumprod: no dot in
 * the name) as they are, and in memory 1-D tensors (norm weights) in float;
 * written to a file, 1-D tensors are converted as sd.cpp converts them.
 * A row is ggml's ne[0] (the last PyTorch dimension, so a 3x3 conv's rows
 * of 3 are never quantised) when the result is written as GGUF; in memory
 * (fmimage --type) a row is what the kernels read: a conv's cin*kh*kw, so
 * the convolutions are quantised too, except the small ones (under 2^14
 * elements: conv_in, conv_out, the VAE's quant convs), and the text
 * encoders (cond_stage_model.*, conditioner.*) keep the file's type when the
 * type asked is a quantised one: the pipeline drops their file pages once
 * the prompts are encoded, which a quantised copy in memory would prevent. */
#ifndef WT_QUANTISE_H
#define WT_QUANTISE_H

#include "weights/source.h"

/* The type t gets when converting to want (F32, F16, BF16 or a quantised
 * type); t->dtype when it stays. ggml_rows: ggml's row rule (for files). */
core_dtype wt_quant_choice(const wt_tensor *t, core_dtype want, int ggml_rows);

/* A source with inner's tensors converted by wt_quant_choice (in one
 * allocation, in parallel); it owns inner (wt_close closes both; on
 * failure inner is closed too). Metadata lookups go to inner. */
wt_source *wt_quantised(wt_source *inner, core_dtype want, int ggml_rows, fm_error *err);

/* Writes src's tensors, in its order and dtypes, as a GGUF v3 file at path
 * (alignment 32, through path.tmp renamed), with the string metadata
 * kv[i][0] = kv[i][1] first. A quantised tensor whose last dimension is
 * not whole blocks cannot be written (ggml's layout): error. */
int wt_gguf_write(const char *path, const wt_source *src, const char *const (*kv)[2], int n_kv, fm_error *err);

#endif
