/* fmimage.h: text-to-image latent diffusion on the CPU.
 *
 * The whole public API. Load a checkpoint, fill a parameter struct (defaults
 * come from the model), generate into an RGB8 buffer, write a PNG with A1111
 * metadata, free. Errors are values: every call that can fail takes an
 * fm_error* and returns non-zero (or NULL) with err->code and err->msg set.
 * Each such call clears *err on entry, so one fm_error may be reused: after
 * a call it holds that call's outcome only (FM_OK and "" on success). err
 * may be NULL. The library never prints, never exits and never aborts.
 *
 * Threads: an fm_model is not locked. fm_generate changes its model (U-Net
 * and VAE precision, activation workspaces, the cached TAESD decoder), so
 * one model serves one fm_generate at a time, and no other call may use it
 * meanwhile except those taking a const fm_model* (they read only what
 * fm_model_load set). Different models may be loaded, used and freed in
 * different threads at the same time; the library keeps no mutable global
 * state of its own (the CPU feature probes are atomics written once;
 * libcjson's parser, reading a safetensors header, stores a process-wide
 * error position that fmimage never reads).
 * Calls without a model (fm_sampler_resolve, fm_scheduler_resolve,
 * fm_sampler_list, fm_family_name, fm_image_read, fm_png_write,
 * fm_tokenize with NULL) may run in any thread at any time. fm_params and
 * the buffers it points to are only read, and may be shared. Each
 * fm_generate computes with OpenMP threads started from its calling thread
 * (omp_set_num_threads in that thread sets their number); the progress
 * callback runs in the calling thread.
 *
 *   fm_error err = {0};
 *   fm_model *m = fm_model_load("v1-5.safetensors", &err);
 *   fm_params p; fm_params_default(m, &p);
 *   p.prompt = "a red fox in snow"; p.seed = 42;
 *   uint8_t *rgb = malloc((size_t)p.width * p.height * 3);
 *   if (fm_generate(m, &p, rgb, &err)) fprintf(stderr, "%s\n", err.msg);
 */
#ifndef FMIMAGE_H
#define FMIMAGE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FM_VERSION "0.1.0"

/* Error codes double as the CLI's exit codes (DESIGN.md). */
enum {
    FM_OK = 0,
    FM_EINPUT = 1,      /* bad file, bad line, I/O error, NaN output, memory refusal */
    FM_EUSAGE = 2,      /* bad option value */
    FM_EINTERRUPT = 130 /* cancelled through fm_params.cancel */
};

typedef struct fm_error {
    int code;
    /* "WHAT: why", e.g. "model.safetensors: tensor data past end of file" */
    char msg[512];
} fm_error;

typedef enum {
    FM_FAMILY_UNKNOWN = 0,
    FM_FAMILY_SD1,
    FM_FAMILY_SD2,
    FM_FAMILY_SD_TURBO,
    FM_FAMILY_SDXL,
    FM_FAMILY_DEMO
} fm_family;

typedef enum { FM_PRED_AUTO = 0, FM_PRED_EPS, FM_PRED_V } fm_prediction;
typedef enum { FM_RNG_CUDA = 0, FM_RNG_CPU } fm_rng_kind;
typedef enum { FM_PREC_AUTO = 0, FM_PREC_FP32, FM_PREC_BF16, FM_PREC_F16 } fm_precision;

typedef struct fm_model fm_model;

/* Prompts longer than this many 75-token chunks (A1111's unit; 4800 tokens)
 * are refused: the cross-attention context grows with every chunk. */
#define FM_MAX_PROMPT_CHUNKS 64

/* Defaults that depend on the model (DESIGN.md "Defaults by family"). */
typedef struct fm_model_defaults {
    int width, height, steps;
    float cfg;
    char sampler[32];   /* ComfyUI name */
    char scheduler[32];
} fm_model_defaults;

/* Progress callback: called after each sampler step (step 1..steps). Return
 * non-zero to cancel; fm_generate then fails with FM_EINTERRUPT. */
typedef int (*fm_progress_fn)(void *user, int step, int steps);

/* Stage callback: called as each stage of fm_generate ends successfully,
 * with the stage's name and its wall-clock seconds. The names, in order:
 * "text encode" (the prompt and negative), "plan" (the memory check, the
 * U-Net's and the decoder's buffers, the schedule: the last work before the
 * first U-Net call), "init encode" (img2img only: the init image through the
 * VAE encoder), "sampling" (every step; each step is also reported to
 * progress), "decode" (VAE or TAESD). */
typedef void (*fm_stage_fn)(void *user, const char *stage, double seconds);

/* Live-preview callback (fm_params.preview): rgb is width x height x 3
 * bytes (8 x the latent's size), valid during the call, after sampler step
 * `step` (1..steps). */
typedef void (*fm_preview_fn)(void *user, const uint8_t *rgb, int width, int height, int step, int steps);

/* A LoRA / LyCORIS adapter given explicitly (fm_params.loras). */
typedef struct fm_lora {
    const char *path;          /* a .safetensors adapter file */
    float te_mult, unet_mult;  /* A1111's te and unet multipliers */
} fm_lora;

typedef struct fm_params {
    const char *prompt;        /* UTF-8, A1111 weighting syntax allowed */
    const char *negative;      /* may be NULL or "" */
    int width, height;         /* pixels, multiples of the latent factor */
    int steps;                 /* 1..1000 */
    float cfg;                 /* 1 = no unconditional pass */
    /* ComfyUI name or A1111 label, case-insensitive ("dpmpp_2m", "Euler a",
     * "DPM++ 2M Karras"); a label's scheduler suffix wins over scheduler. */
    char sampler[32];
    /* ComfyUI name or A1111 label ("karras", "Uniform"); "" or "automatic"
     * (A1111's Automatic) is the sampler's own default, as A1111 picks it
     * (Uniform for Euler a, Karras for DPM++ 2M, Exponential for DPM++ 2M
     * SDE). fm_params_default fills the family's pair: after changing the
     * sampler, set "" to get A1111's choice. Both arrays must hold a NUL
     * (a name fills at most 31 bytes): the library reads no further. */
    char scheduler[32];
    uint64_t seed;             /* 0..2^32-1 */
    fm_rng_kind rng;
    int clip_skip;             /* 1 = last layer (A1111 semantics) */
    fm_prediction prediction;  /* AUTO = from the file */
    /* img2img: init image, RGB8 interleaved, any size (resized to width x height) */
    const uint8_t *init_rgb;
    int init_width, init_height;
    float strength;            /* (0,1], used with init_rgb */
    const char *taesd_path;    /* decode with TAESD instead of the full VAE */
    int vae_tiling;
    fm_precision precision;
    fm_progress_fn progress;
    void *progress_user;
    /* Bytes the U-Net and VAE activations may take; 0 = the machine's
     * MemAvailable. A size over it is refused (FM_EINPUT) before sampling. */
    size_t memory_limit;
    fm_stage_fn stage;         /* optional, may be NULL */
    void *stage_user;
    /* ---- live preview (A1111's "Live previews", TAESD method) ----
     * With preview and preview_taesd (a TAESD decoder file for the model's
     * latent channels): after every preview_every-th sampling step (0 =
     * every step) and the last, the sampler's current prediction of the
     * clean latent (k-diffusion's denoised, as A1111 previews it) decoded by
     * that TAESD goes to preview, 8 x the latent's size (the image's size
     * for a latent factor of 8). Its buffers are allocated before the first
     * step; a preview that fails to decode is skipped. The image fm_generate
     * returns does not change. */
    const char *preview_taesd;
    int preview_every;
    fm_preview_fn preview;
    void *preview_user;
    /* ---- LoRA / LyCORIS adapters (DESIGN.md "LoRA") ----
     * Merged into the text encoders' and U-Net's weights (float32) before
     * the prompt is encoded: first loras[0..n_loras) in order, then the
     * prompt's <lora:NAME:MULT>, <lora:NAME:TE:UNET> tags (te=/unet= named
     * forms too), which are removed from the text as A1111 removes them.
     * A tag's NAME is a file NAME.safetensors under lora_dir (searched
     * recursively) or one whose ss_output_name metadata is NAME. The merge
     * is kept for the next call with the same set. */
    const fm_lora *loras;      /* may be NULL */
    int n_loras;
    const char *lora_dir;      /* NULL: a tag is an error */
    /* ---- textual-inversion embeddings (DESIGN.md "Embeddings") ----
     * A word of the prompt or negative prompt whose tokens are those of a
     * file name (without extension) under this directory is replaced by the
     * file's vectors, as A1111 does. NULL: none. */
    const char *embeddings_dir;
    int embeddings_confined;   /* 1: only files whose real path is inside it (fmimage serve) */
    /* ---- inpainting and outpainting (issue 18; DESIGN.md "Inpainting") ----
     * With init_rgb and a mask: A1111's img2img inpaint. The mask (8-bit,
     * white = repaint; fm_mask_read makes one from a file as A1111 does) is
     * inverted, blurred, resized to width x height (or, only_masked, the
     * region around it is cropped from the image, repainted at width x
     * height and pasted back), the latent is held to the init image's
     * outside the mask after every step, and the original's unmasked pixels
     * are composited over the result. The result's size is fm_output_size's
     * (the init image's with only_masked). An all-black mask repaints
     * nothing: the result is the resized init image. */
    const uint8_t *mask;       /* mask_width x mask_height bytes; NULL = no mask */
    int mask_width, mask_height;
    int mask_invert;           /* A1111's "Inpaint not masked" */
    int mask_blur;             /* pixels (A1111 "Mask blur"); fm_params_default: 4 */
    int inpaint_fill;          /* FM_FILL_*: A1111's "Masked content" */
    int inpaint_only_masked;   /* A1111's "Inpaint area: Only masked" */
    int inpaint_padding;       /* its "Only masked padding, pixels"; fm_params_default: 32 */
    /* 9-channel inpainting models: how much of the masked area the
     * conditioning image hides (A1111's inpainting_mask_weight); default 1 */
    float inpainting_mask_weight;
    /* Outpainting: pixels added on the left, top, right and bottom
     * (multiples of the latent factor). The init image, resized to width x
     * height, is placed on a black canvas that much larger, and the new
     * area (its mask as A1111's "Poor man's outpainting" draws it) is
     * inpainted in one pass over the whole canvas; mask must be NULL. */
    int outpaint[4];
    /* ---- hires fix (A1111's "Hires. fix"; DESIGN.md "Hires fix") ----
     * On when hires_scale > 0 or hires_width / hires_height > 0 (txt2img
     * only): a first pass at width x height, an upscale, then img2img at the
     * new size (fm_hires_size; rgb must hold that size). As A1111: the
     * size is int(width * hires_scale) x int(height * hires_scale), or
     * hr_resize_x/y: one given keeps the aspect ratio, both given fill and
     * crop the latent. Sizes must come out multiples of the latent factor. */
    double hires_scale;        /* 0 = off unless a size is given */
    int hires_width, hires_height;
    int hires_steps;           /* 0 = steps */
    double hires_denoise;      /* (0,1]; fm_params_default sets A1111's 0.7 */
    /* A1111's upscaler name: "Latent" (NULL = this), "Latent (antialiased)",
     * "Latent (bicubic)", "Latent (bicubic antialiased)", "Latent (nearest)",
     * "Latent (nearest-exact)", "Lanczos", "Nearest"; any other name is
     * hires_model's (the name written to the infotext). */
    const char *hires_upscaler;
    const struct fm_upscaler *hires_model; /* with a model's name above */
    const char *hires_prompt, *hires_negative; /* NULL or "" = the first pass's */
    char hires_sampler[32];    /* "" = sampler; the scheduler stays (a label's suffix wins) */
} fm_params;

/* fm_params.inpaint_fill: A1111's "Masked content" (its indices 1, 0, 2, 3) */
enum { FM_FILL_ORIGINAL = 0, FM_FILL_FILL, FM_FILL_LATENT_NOISE, FM_FILL_LATENT_NOTHING };

/* ---- model ---- */
fm_model *fm_model_load(const char *path, fm_error *err);
void fm_model_free(fm_model *model);
fm_family fm_model_family(const fm_model *model);
const char *fm_family_name(fm_family family); /* "sd1", "sd2", "sd-turbo", "sdxl", "demo" */
void fm_model_get_defaults(const fm_model *model, fm_model_defaults *out);
/* Human-readable description for `fmimage --info`: family, full config,
 * parameter counts per component. Returns a malloc'd string. */
char *fm_model_describe(fm_model *model, fm_error *err);
int fm_model_latent_factor(const fm_model *model);
/* The mode fm_generate computes the U-Net and the VAE in when asked for
 * `requested` (FM_PREC_FP32 or FM_PREC_BF16), and, when why is non-NULL,
 * why in one line, e.g. "auto = fp32 (bf16 measured 0.73x the fp32 speed
 * for the U-Net, ...)". FM_PREC_AUTO is decided once per model, at its first
 * use: fp32 where the kernels have no native bf16 products; else a timing
 * of the kernels in both modes (about 0.35 s of one core) and bf16 only if
 * it is at least 1.10x as fast for the U-Net and the VAE (DESIGN.md). The
 * timing is cached, one line per CPU model and fmimage version, in
 * $XDG_CACHE_HOME/fmimage/precision.tsv (without XDG_CACHE_HOME:
 * ~/.cache/...), read and rewritten atomically by the library;
 * FMIMAGE_PRECISION_CACHE=FILE uses FILE instead, and
 * FMIMAGE_PRECISION_CACHE=off times nothing (auto is then fp32). */
fm_precision fm_model_precision(fm_model *model, fm_precision requested, char *why, size_t why_size);
/* How this process computes the 3x3 stride-1 convolutions, in one line
 * for -v: the direct implicit GEMM, or Winograd F(4x4,3x3) for the shape
 * classes where a short timing (about 0.1 s of one core, at the first
 * convolution planned) measured it faster on this CPU. FM_CONV=direct,
 * winograd or winograd2 in the environment decides without timing. */
void fm_conv_choice(char *why, size_t why_size);

/* ---- generation ---- */
void fm_params_default(const fm_model *model, fm_params *p);
/* A job's sampler and scheduler, as A1111 and ComfyUI name them, into p
 * (which holds the family's pair from fm_params_default) as ComfyUI names.
 * As in A1111, a label's scheduler suffix ("DPM++ 2M Karras") wins, and an
 * A1111 label or alias without a scheduler ("Euler a") gets the sampler's
 * own schedule ("Automatic": Uniform for Euler a). A plain ComfyUI name
 * ("euler") without one keeps p's scheduler: ComfyUI always names both.
 * NULL sampler = p's; NULL scheduler = as just said. FM_EUSAGE on an
 * unknown name, p unchanged. The CLI and the server fill p through this. */
int fm_params_set_sampler(fm_params *p, const char *sampler, const char *scheduler, fm_error *err);
/* Checks p against the model: sizes (positive multiples of the latent
 * factor, within limits), steps, cfg, sampler and scheduler names (resolved
 * here: labels are accepted as they are), strength, init image, prompt, and
 * that a taesd_path goes with a model of latent factor 8 (TAESD decodes by
 * 8). FM_EUSAGE with "--width: why"-style messages. fm_generate checks too. */
int fm_params_check(const fm_model *model, const fm_params *p, fm_error *err);
/* The size fm_generate's image has for p: width x height, the init
 * image's size with inpaint_only_masked, the canvas with outpaint. 0, or
 * FM_EUSAGE for parameters fm_params_check refuses. */
int fm_output_size(const fm_model *model, const fm_params *p, int *width, int *height, fm_error *err);
/* Writes w*h*3 bytes (RGB, row-major; w x h = fm_output_size, width x
 * height without a mask or outpainting) to rgb, which must hold
 * them. A prompt or negative over FM_MAX_PROMPT_CHUNKS chunks of 75 tokens
 * is refused. See "Threads" above for what may run alongside. */
int fm_generate(fm_model *model, const fm_params *p, uint8_t *rgb, fm_error *err);
/* The size fm_generate writes: width x height, or the hires fix's target. */
int fm_hires_size(const fm_model *model, const fm_params *p, int *width, int *height, fm_error *err);

/* ---- LoRA ---- */
/* What the model's current LoRA merge is (after an fm_generate): adapter
 * files, modules merged, tensors changed (and how many of them were kept
 * from the previous set), keys that mapped to no weight, seconds it took,
 * and how many merged tensors are held in a file rather than in memory
 * (docs/DESIGN.md "LoRA"). */
typedef struct fm_lora_info {
    int files, modules, tensors, reused, unmapped;
    double seconds;
    int in_file;
} fm_lora_info;
void fm_model_lora_info(const fm_model *model, fm_lora_info *out);
/* A1111's "Lora hashes" value for p's adapters and prompt tags, e.g.
 * "my_style: 0123456789ab, other: ba9876543210" (name as mentioned, ':'
 * and ',' removed; the file's sshs_model_hash metadata, else the sha256
 * of its data after the header, 12 hex digits); "" when there are none.
 * malloc'd; NULL with err set for an unknown name or a bad tag. */
char *fm_lora_hashes(const fm_params *p, fm_error *err);

/* A1111's "TI hashes" value for the embeddings p's prompt and negative use,
 * e.g. "my_emb: 0123456789ab" (name with ':' and ',' removed, the first 12
 * hex digits of the file's sha256; positive prompt's first, then the
 * negative's, as A1111 lists them); "" when none. malloc'd; NULL with err set
 * for an embedding that does not read. */
char *fm_ti_hashes(const fm_model *model, const fm_params *p, fm_error *err);

/* ---- text ---- */
/* The 77 CLIP token ids of text (A1111/open_clip padding per model; SD 1.x
 * padding when model is NULL). Returns 77 or -1. */
int fm_tokenize(const fm_model *model, const char *text, int32_t ids[77], fm_error *err);

/* ---- samplers ---- */
/* Resolve a ComfyUI name or A1111 label ("DPM++ 2M Karras") case-insensitively.
 * sampler_out gets the ComfyUI sampler name; scheduler_out (may be NULL) gets
 * the scheduler the label implies or "" if none. Returns 0, or FM_EUSAGE with
 * a message listing the valid names. */
int fm_sampler_resolve(const char *name, char sampler_out[32], char scheduler_out[32], fm_error *err);
int fm_scheduler_resolve(const char *name, char scheduler_out[32], fm_error *err);
/* Lines "comfy_name<TAB>A1111 label", one per sampler then scheduler. Static string. */
const char *fm_sampler_list(void);

/* ---- images ---- */
/* Reads a PNG or JPEG file as RGB8 (malloc'd, free()). Refuses truncated
 * files and images over 16384 pixels a side. */
uint8_t *fm_image_read(const char *path, int *width, int *height, fm_error *err);
/* An inpainting mask from a PNG or JPEG file, as A1111's
 * create_binary_mask reads it: an RGBA image whose alpha is not all opaque
 * gives its alpha thresholded (> 128 = 255, else 0); any other its
 * luminance (PIL's convert("L")). malloc'd, width x height bytes. */
uint8_t *fm_mask_read(const char *path, int *width, int *height, fm_error *err);

/* ---- output ---- */
/* A1111 infotext ("parameters" chunk) for the image made with p by model.
 * model_hash: 10 hex digits or NULL. Returns a malloc'd string, or NULL
 * (FM_EUSAGE) for a prompt, sampler or scheduler fm_params_check refuses.
 * Sampler and Schedule type are A1111's labels of the pair used. */
char *fm_infotext(const fm_model *model, const fm_params *p, const char *model_name,
                  const char *model_hash, fm_error *err);
/* Writes an 8-bit RGB PNG with an iTXt "parameters" chunk (if non-NULL),
 * no timestamps. Writes to path directly: callers do temp+rename. */
int fm_png_write(const char *path, const uint8_t *rgb, int width, int height,
                 const char *parameters, fm_error *err);

/* ---- upscaling models ---- */
/* ESRGAN / Real-ESRGAN RRDBNet (x4plus, x2plus, anime_6B, the old ESRGAN
 * names) and SRVGGNetCompact (realesr-general-x4v3, animevideov3), told
 * from the file's tensors; the scale is the network's. An fm_upscaler is
 * read-only after loading: several threads may upscale with one at once. */
typedef struct fm_upscaler fm_upscaler;
fm_upscaler *fm_upscaler_load(const char *path, fm_error *err);
void fm_upscaler_free(fm_upscaler *u);
int fm_upscaler_scale(const fm_upscaler *u);
/* "RRDBNet x4 (23 blocks, 64 features)"-style one line; static storage in u. */
const char *fm_upscaler_describe(const fm_upscaler *u);

typedef struct fm_upscale_opts {
    int tile;       /* input pixels per tile side; 0 = 192 (A1111's ESRGAN tile), -1 = no tiling */
    int overlap;    /* input pixels shared by neighbouring tiles; 0 = 8 (A1111's), -1 = none */
    fm_progress_fn progress; /* (user, tiles done, tiles) after each tile; non-zero cancels */
    void *progress_user;
} fm_upscale_opts;

/* out (width*s x height*s x 3 bytes, s = fm_upscaler_scale) = the network
 * applied to rgb (RGB8, row-major), in overlapping tiles blended across the
 * overlap; opts may be NULL. Values are clamped to [0,1] and rounded. */
int fm_upscale(const fm_upscaler *u, const uint8_t *rgb, int width, int height, uint8_t *out,
               const fm_upscale_opts *opts, fm_error *err);
/* ---- loading with part files and a weight type (GGUF, issue 17) ----
 * fm_model_load(path) is fm_model_load_with(path, NULL). */
typedef struct fm_load_options {
    /* Part files, as stable-diffusion.cpp takes them (--vae, --clip_l,
     * --clip_g): their tensors replace or complete the model file's (a GGUF
     * holding only a U-Net needs all of its family's parts). NULL = none. */
    const char *vae;
    const char *clip_l;
    const char *clip_g;
    /* Convert the weights at load (--type): "f32", "f16", "bf16" or a ggml
     * type ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k",
     * "q5_k", "q6_k"), per tensor with sd.cpp's exclusions (DESIGN.md "GGUF
     * and quantised weights"). NULL or "" = as stored. */
    const char *type;
} fm_load_options;
fm_model *fm_model_load_with(const char *path, const fm_load_options *opt, fm_error *err);
/* The VAE file given as fm_load_options.vae (ldm or diffusers names; it
 * replaces the checkpoint's VAE): its base name, as A1111's "VAE: name", or
 * NULL when none; *hash (may be NULL) gets A1111's "VAE hash", the first 10
 * hex digits of the file's sha256. */
const char *fm_model_vae(const fm_model *model, const char **hash);
/* ---- weight files: convert (issue 17 item 5) ---- */
/* Writes every tensor of the weight file or diffusers folder `in` (any
 * format fm_model_load reads) as one safetensors file `out`, with the ldm
 * names fmimage binds and the input's metadata (safetensors __metadata__;
 * a pickle's scalar entries beside its state dict). type: NULL or "keep"
 * (each tensor's dtype), "f16", "bf16" or "f32" (float tensors only; round
 * to nearest even). out appears only when complete (temp file + rename);
 * an existing out is refused unless overwrite. An out ending in .gguf is
 * written as GGUF v3 the way stable-diffusion.cpp's -M convert writes it
 * (names as they are, its per-tensor type rule; type then also takes the
 * ggml types "q8_0" ... "q6_k"), the metadata as string KVs. */
int fm_convert(const char *in, const char *out, const char *type, int overwrite, fm_error *err);

#ifdef __cplusplus
}
#endif
#endif
