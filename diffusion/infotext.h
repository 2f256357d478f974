/* infotext: A1111's "parameters" text, so fmimage PNGs read back in A1111's
 * PNG Info and its tools. */
#ifndef FM_INFOTEXT_H
#define FM_INFOTEXT_H

#include <stddef.h>
#include <stdint.h>

typedef struct df_infotext_fields {
    const char *prompt, *negative;   /* negative NULL or "" = no line */
    int steps;
    const char *sampler_label;       /* "DPM++ 2M" */
    const char *schedule_label;      /* "Karras"; NULL = omitted */
    float cfg;
    uint64_t seed;
    int width, height;
    const char *model_hash;          /* 10 hex digits or NULL */
    const char *model_name;          /* NULL = omitted */
    float denoising_strength;        /* < 0 = not img2img */
    int clip_skip;                   /* written when > 1 */
    const char *rng_label;           /* "NV" or "CPU" */
    /* LoRA (issue 16): A1111's "Lora hashes" value, NULL or "" = omitted */
    const char *lora_hashes;
    /* textual inversion: A1111's "TI hashes" value, NULL or "" = omitted */
    const char *ti_hashes;
    /* --vae: A1111's "VAE hash" (10 hex digits) and "VAE" (file name), NULL = omitted */
    const char *vae_hash, *vae_name;
    /* inpainting (issue 18), A1111's img2img extra_generation_params in the
     * order init() adds them: "Mask mode", "Mask blur", "Inpaint area",
     * "Masked area padding", "Masked content"; and "Conditional mask
     * weight" (9-channel models) after Denoising strength */
    int inpaint;                     /* 0 = none of these */
    int mask_invert, mask_blur, only_masked, padding;
    const char *masked_content;      /* NULL = omitted (A1111: for "original") */
    int cond_mask;                   /* 1: write cond_mask_weight */
    float cond_mask_weight;
    /* hires fix (A1111's extra_generation_params, in its order); NULL /
     * 0 = omitted. denoising_strength_d > 0: written instead of the float
     * (A1111 writes the Python float the user gave) */
    double denoising_strength_d;
    const char *hires_sampler, *hires_prompt, *hires_negative;
    const char *hires_upscale, *hires_resize; /* "2", "1024x0" */
    int hires_steps;
    const char *hires_upscaler;
} df_infotext_fields;

/* The infotext, malloc'd (NULL when out of memory). */
char *df_infotext_format(const df_infotext_fields *f);

/* Shortest decimal that reads back as the same float ("7", "7.5", "0.75"). */
void df_format_float(char *buf, size_t n, float v);
/* The same for a double (Python's repr without a trailing ".0": "2", "1.5"). */
void df_format_double(char *buf, size_t n, double v);

#endif
