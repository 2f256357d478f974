#include "diffusion/infotext.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "fmimage.h"


static void sb_printf(core_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(core_strbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    core_sb_puts(b, tmp);
}

/* json.dumps(text, ensure_ascii=False): escapes quote, backslash and control
 * characters; everything else (UTF-8 included) is copied. */
static void sb_json_string(core_strbuf *b, const char *s)
{
    core_sb_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': core_sb_puts(b, "\\\""); break;
        case '\\': core_sb_puts(b, "\\\\"); break;
        case '\n': core_sb_puts(b, "\\n"); break;
        case '\r': core_sb_puts(b, "\\r"); break;
        case '\t': core_sb_puts(b, "\\t"); break;
        case '\b': core_sb_puts(b, "\\b"); break;
        case '\f': core_sb_puts(b, "\\f"); break;
        default:
            if (*p < 0x20) sb_printf(b, "\\u%04x", *p);
            else core_sb_append(b, (const char *)p, 1);
        }
    }
    core_sb_puts(b, "\"");
}

/* A1111's quote(): a value containing ',', ':' or a newline becomes a JSON string. */
static void sb_value(core_strbuf *b, const char *v)
{
    if (strpbrk(v, ",:\n")) sb_json_string(b, v);
    else core_sb_puts(b, v);
}

void df_format_float(char *buf, size_t n, float v)
{
    for (int prec = 1; prec <= 9; prec++) {
        snprintf(buf, n, "%.*g", prec, (double)v);
        if (strtof(buf, NULL) == v) return;
    }
}

void df_format_double(char *buf, size_t n, double v)
{
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, n, "%.*g", prec, v);
        if (strtod(buf, NULL) == v) return;
    }
}

static void sb_param(core_strbuf *b, int *first, const char *key, const char *value)
{
    if (!value) return;
    if (!*first) core_sb_puts(b, ", ");
    *first = 0;
    core_sb_puts(b, key);
    core_sb_puts(b, ": ");
    sb_value(b, value);
}

char *df_infotext_format(const df_infotext_fields *f)
{
    core_strbuf b = {0};
    char num[64], size[64];
    int first = 1;
    core_sb_puts(&b, f->prompt ? f->prompt : "");
    core_sb_puts(&b, "\n");
    if (f->negative && f->negative[0]) {
        core_sb_puts(&b, "Negative prompt: ");
        core_sb_puts(&b, f->negative);
        core_sb_puts(&b, "\n");
    }
    snprintf(num, sizeof num, "%d", f->steps);
    sb_param(&b, &first, "Steps", num);
    sb_param(&b, &first, "Sampler", f->sampler_label);
    sb_param(&b, &first, "Schedule type", f->schedule_label);
    df_format_float(num, sizeof num, f->cfg);
    sb_param(&b, &first, "CFG scale", num);
    snprintf(num, sizeof num, "%llu", (unsigned long long)f->seed);
    sb_param(&b, &first, "Seed", num);
    snprintf(size, sizeof size, "%dx%d", f->width, f->height);
    sb_param(&b, &first, "Size", size);
    sb_param(&b, &first, "Model hash", f->model_hash && *f->model_hash ? f->model_hash : NULL); /* none for a folder */
    sb_param(&b, &first, "Model", f->model_name);
    sb_param(&b, &first, "VAE hash", f->vae_hash); /* A1111 writes these two after Model */
    sb_param(&b, &first, "VAE", f->vae_name);
    if (f->denoising_strength >= 0) {
        if (f->denoising_strength_d > 0) df_format_double(num, sizeof num, f->denoising_strength_d);
        else df_format_float(num, sizeof num, f->denoising_strength);
        sb_param(&b, &first, "Denoising strength", num);
    }
    if (f->cond_mask) {
        df_format_float(num, sizeof num, f->cond_mask_weight);
        sb_param(&b, &first, "Conditional mask weight", num);
    }
    if (f->clip_skip > 1) {
        snprintf(num, sizeof num, "%d", f->clip_skip);
        sb_param(&b, &first, "Clip skip", num);
    }
    sb_param(&b, &first, "RNG", f->rng_label);
    if (f->inpaint) { /* img2img's extra_generation_params, added by init() */
        if (f->mask_invert) sb_param(&b, &first, "Mask mode", "Inpaint not masked");
        if (f->mask_blur > 0) {
            snprintf(num, sizeof num, "%d", f->mask_blur);
            sb_param(&b, &first, "Mask blur", num);
        }
        if (f->only_masked) {
            sb_param(&b, &first, "Inpaint area", "Only masked");
            snprintf(num, sizeof num, "%d", f->padding);
            sb_param(&b, &first, "Masked area padding", num);
        }
        sb_param(&b, &first, "Masked content", f->masked_content);
    }
    /* hires fix: txt2img's init() adds these to extra_generation_params
     * before the extra networks add theirs */
    sb_param(&b, &first, "Hires sampler", f->hires_sampler);
    sb_param(&b, &first, "Hires prompt", f->hires_prompt);
    sb_param(&b, &first, "Hires negative prompt", f->hires_negative);
    sb_param(&b, &first, "Hires upscale", f->hires_upscale);
    sb_param(&b, &first, "Hires resize", f->hires_resize);
    if (f->hires_steps > 0) {
        snprintf(num, sizeof num, "%d", f->hires_steps);
        sb_param(&b, &first, "Hires steps", num);
    }
    sb_param(&b, &first, "Hires upscaler", f->hires_upscaler);
    /* LoRA: one of A1111's extra_generation_params, which come before Version */
    if (f->lora_hashes && f->lora_hashes[0]) sb_param(&b, &first, "Lora hashes", f->lora_hashes);
    if (f->ti_hashes && f->ti_hashes[0]) sb_param(&b, &first, "TI hashes", f->ti_hashes);
    sb_param(&b, &first, "Version", "fmimage " FM_VERSION);
    return core_sb_take(&b);
}
