/* options: the fmimage command line (DESIGN.md "Options and defaults"). */
#ifndef FM_CLI_OPTIONS_H
#define FM_CLI_OPTIONS_H

#include <stddef.h>
#include <stdint.h>
#include "fmimage.h"

typedef enum { MODE_GENERATE, MODE_INFO, MODE_PRINT_TOKENS, MODE_LIST_SAMPLERS, MODE_HELP, MODE_VERSION, MODE_UPSCALE } cli_mode;

typedef struct cli_options {
    cli_mode mode;
    const char *model, *output, *prompt, *negative, *prompt_file, *init_image, *taesd;
    /* 0 / NaN / "" = take the model's default */
    int width, height, steps;
    float cfg;
    char sampler[32], scheduler[32];
    int has_seed;
    uint64_t seed;
    fm_rng_kind rng;
    int batch_count, shard_k, shard_n;
    float strength;
    int has_strength; /* --strength was given */
    int clip_skip;
    fm_prediction prediction;
    int vae_tiling;
    fm_precision precision;
    int threads;
    size_t memory_limit; /* $FMIMAGE_MEMORY_LIMIT in bytes; 0 = MemAvailable */
    int metadata; /* 1 = a1111, 0 = none */
    int force, quiet, verbose;
    int has_shard;    /* --shard given (K/N or auto) */
    int status;       /* --status: report done / missing / broken, make nothing */
    int only_missing; /* --only-missing: claim and make just the unfinished jobs */
    /* upscaling: `fmimage upscale -m MODEL IMAGE` (model, init_image, output),
     * or --upscale-model after each generated image */
    const char *upscale_model;
    int upscale_tile, upscale_overlap; /* 0 = the library's defaults (192, 8), -1 = none */
    /* prompt schedules, AND and styles (A1111's styles.csv) */
    const char *styles_file;   /* --styles-file */
    const char *styles[16];    /* --style NAME, in the order given */
    int n_styles;
    /* LoRA */
    const char *lora_dir; /* --lora-dir / --lora-model-dir; NULL: loras/ next to the model */
    const char *embeddings_dir; /* --embeddings-dir; NULL: embeddings/ next to the model */
    const char *models_dir; /* --models-dir: X/Y/Z Checkpoint name values; NULL: -m's folder */
    /* GGUF and quantised weights (issue 17): part files and --type */
    const char *vae, *clip_l, *clip_g, *type;
    /* inpainting and outpainting (issue 18): --mask ... --outpaint */
    const char *mask;
    int mask_invert, mask_blur, inpaint_fill; /* inpaint_fill -1 = not given */
    int inpaint_only_masked, inpaint_padding;
    int outpaint[4], has_outpaint;
    /* wildcards and dynamic prompts (issue 19 item 3): --combinatorial makes
     * every expansion a job, else each job draws one from its seed */
    int combinatorial;
    const char *wildcards_dir;
    /* X/Y/Z plot (issue 19 item 4): "AXIS:TYPE:VALUES" per --xyz */
    const char *xyz[3];
    int n_xyz;
    /* hires fix (issue 18 item 4): A1111's hr_* fields */
    double hires_scale, hires_denoise;
    int hires_width, hires_height, hires_steps, has_hires_denoise;
    const char *hires_upscaler, *hires_prompt, *hires_negative;
    char hires_sampler[32];
} cli_options;

/* The part files and --type of o for fm_model_load_with. */
static inline fm_load_options cli_load_options(const cli_options *o)
{
    return (fm_load_options){o->vae, o->clip_l, o->clip_g, o->type};
}

/* Parses argv; on a usage error prints "fmimage: WHAT: why" and returns 2. */
int cli_parse(int argc, char **argv, cli_options *o);
void cli_print_help(void);

#endif
