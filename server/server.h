/* server: `fmimage serve`, an HTTP server speaking A1111's /sdapi/v1 API
 * (docs/DESIGN.md "fmimage serve"), on libmicrohttpd. One worker thread
 * runs the jobs of a bounded FIFO queue with one cached model; the HTTP
 * threads only parse, queue and wait. Layer 6: above diffusion, below cli.
 * Not installed (the program links it from build/libfmserver.a). */
#ifndef FM_SERVER_H
#define FM_SERVER_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "fmimage.h"

typedef struct srv_config {
    const char *listen;       /* "HOST:PORT"; NULL = 127.0.0.1:7860; port 0 = any free one */
    const char *model;        /* -m FILE, or NULL */
    const char *models_dir;   /* --models-dir DIR, or NULL */
    const char *lora_dir;     /* --lora-dir DIR, or NULL */
    const char *embeddings_dir; /* --embeddings-dir DIR (textual inversion), or NULL */
    const char *taesd;        /* --taesd FILE: /progress's live preview, or NULL */
    int preview_every;        /* a preview every N sampling steps (0 = 10, A1111's default) */
    const char *auth;         /* "U:P[,U:P]" or NULL */
    int insecure_no_auth;
    int queue;                /* jobs waiting at most (default 16) */
    const char *save_dir;     /* also write every image here, or NULL */
    const char *cors;         /* allowed origins ("*" or a list), or NULL */
    size_t body_limit;        /* bytes; 0 = 64 MiB */
    int conn_limit;           /* 0 = 64 */
    int conn_timeout;         /* seconds idle; 0 = 30 */
    /* called once listening, with "http://HOST:PORT/" (the port bound) */
    void (*ready)(void *user, const char *url);
    void *ready_user;
} srv_config;

/* Checks the configuration (the security rules: another address than
 * loopback needs auth or insecure_no_auth), binds, serves until *stop
 * becomes non-zero, then cancels the running job, refuses the queued ones
 * and returns 0. Errors (bad config, bind failure): non-zero, err set. */
int srv_run(const srv_config *c, volatile sig_atomic_t *stop, fm_error *err);

/* ---- the request parser (also the fuzz target) ---- */
#define SRV_MAX_IMAGES 16
#define SRV_JSON_DEPTH 32
#define SRV_STRING_MAX (1 << 20)   /* bytes in any string but an image */

typedef struct srv_gen {
    char *prompt, *negative;       /* malloc'd */
    int width, height, steps;      /* 0 = the model's default */
    float cfg;                     /* NAN = default */
    char sampler[32], scheduler[32]; /* "" = default */
    int64_t seed;                  /* -1 = random */
    int batch_size, n_iter;
    int clip_skip;                 /* 0 = default */
    float strength;                /* img2img denoising_strength */
    uint8_t *init_png;             /* img2img: decoded init_images[0], malloc'd */
    size_t init_len;
    char model[256];               /* override_settings.sd_model_checkpoint, "" = current */
    int img2img;
    int rng_cpu;                   /* ComfyUI's noise (PyTorch CPU), as --rng cpu */
    /* A1111's hires fix (txt2img enable_hr; ComfyUI: KSampler ->
     * LatentUpscale -> KSampler): on when hires_scale > 0 or a size is set */
    double hires_scale;
    int hires_width, hires_height, hires_steps;
    double hires_denoise;
    char hires_upscaler[32], hires_sampler[32];
    char *hires_prompt, *hires_negative; /* malloc'd; NULL = the first pass's */
    /* img2img inpainting: the decoded mask (malloc'd, NULL = none) and
     * A1111's StableDiffusionProcessingImg2Img fields */
    uint8_t *mask_png;
    size_t mask_len;
    int mask_blur, mask_invert, inpaint_fill, inpaint_only_masked, inpaint_padding;
} srv_gen;

/* Parses an A1111 txt2img (img2img = 0) or img2img body into g. Returns
 * the HTTP status: 0 on success, else 400/413/422 with msg (one line) and,
 * for 422, loc the offending field. Unknown fields are ignored. */
int srv_parse_gen(const char *body, size_t n, int img2img, srv_gen *g, char *msg, size_t msg_n,
                  char *loc, size_t loc_n);
void srv_gen_free(srv_gen *g);
/* POST /sdapi/v1/options: checkpoint gets sd_model_checkpoint without
 * A1111's " [hash]" ("" when absent or null). 0, or 400/404/422 with msg. */
int srv_parse_options(const char *body, size_t n, char *checkpoint, size_t checkpoint_n, char *msg, size_t msg_n,
                      char *loc, size_t loc_n);
/* POST /sdapi/v1/png-info: the decoded "image" (malloc'd, may be any
 * bytes). 0, or 400/422 with msg and loc. */
int srv_parse_png_info(const char *body, size_t n, uint8_t **png, size_t *len, char *msg, size_t msg_n, char *loc,
                       size_t loc_n);

/* JSON nesting deeper than SRV_JSON_DEPTH, found without parsing. */
int srv_json_too_deep(const char *s, size_t n);

/* ---- helpers ---- */
char *srv_base64_encode(const uint8_t *d, size_t n);
/* Decodes s (optionally "data:...;base64," prefixed); NULL if not base64. */
uint8_t *srv_base64_decode(const char *s, size_t *n);
/* The file `name` inside dir: no absolute path, no "..", no escape by a
 * symlink (realpath must stay inside dir), a regular file. out gets its
 * real path. Returns 0, or -1 (the caller answers 404). */
int srv_resolve(const char *dir, const char *name, char *out, size_t n);
/* The "parameters" text of a PNG in memory (tEXt or iTXt), malloc'd, or NULL. */
char *srv_png_parameters(const uint8_t *png, size_t n);
/* Constant-time: does "user:pass" equal one of the comma-separated list? */
int srv_auth_ok(const char *list, const char *given, size_t given_n);

#endif
