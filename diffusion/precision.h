/* `--precision auto`: the fastest mode on the machine it runs on, decided
 * from a short timing of the real kernels (kernels/precision_probe.h) that
 * is cached per CPU model and fmimage version (docs/DESIGN.md "Precision").
 * Not installed. */
#ifndef FM_DIFFUSION_PRECISION_H
#define FM_DIFFUSION_PRECISION_H

#include <limits.h>
#include <stddef.h>

#include "fmimage.h"
#include "kernels/precision_probe.h"

/* bf16 is chosen only when it is at least this much faster than fp32 for
 * the U-Net and for the VAE: a mode that is merely as fast would trade
 * image quality (>= 35 dB, not bit-exact) for timing noise. */
#define FM_PREC_MARGIN 1.10

/* The U-Net's share of each probed kind of work, from SD 1.5's FLOPs at
 * 512x512 (3x3 convolutions 55%; linears and 1x1 convolutions 31%; the
 * attention products 14%): the weights of the per-kernel time ratios. */
#define FM_PREC_SHARE_CONV 0.55
#define FM_PREC_SHARE_LINEAR 0.31
#define FM_PREC_SHARE_ATTENTION 0.14

/* bf16's speed relative to fp32 (fp32 time / bf16 time; > 1 = bf16 faster)
 * over a U-Net's mix of kernels, and over a VAE's (its 3x3 convolutions).
 * 0 when a time is not a positive finite number. */
double df_prec_speed_unet(const kn_probe_times *t);
double df_prec_speed_vae(const kn_probe_times *t);
/* The mode auto takes for these times: FM_PREC_BF16 when bf16 is at least
 * FM_PREC_MARGIN times as fast as fp32 for both, else FM_PREC_FP32. */
fm_precision df_prec_decide(const kn_probe_times *t);

/* ---- the cache file ---- */

/* The user's cache directory, as the XDG spec asks: $XDG_CACHE_HOME when it
 * is absolute, else $HOME/.cache (fmimage's files go in its fmimage/). 0, or
 * -1 with base "" when neither is usable. Also where LoRA merges spill. */
int df_cache_base(char base[PATH_MAX]);

/* Lines "cpu<TAB>kernels<TAB>version<TAB>" then the six times (conv fp32,
 * conv bf16, linear fp32, linear bf16, attention fp32, attention bf16), in
 * seconds; '#' lines are comments. A file over FM_PREC_CACHE_MAX bytes, or
 * not a regular file, is read as empty. */
#define FM_PREC_CACHE_MAX 65536
#define FM_PREC_KEY_MAX 256

/* This machine's key: "<cpu model><TAB><kernels><TAB><version>", e.g.
 * "Intel(R) Xeon(R) Processor (family 6 model 207 stepping 2)\tavx512+avx512_bf16\t0.1.0"
 * (an ASan or unoptimised build adds "+asan" or "+O0" to the kernels). */
void df_prec_cache_key(char key[FM_PREC_KEY_MAX]);
/* Parses one line (no newline) strictly: 9 tab-separated fields of
 * printable ASCII, the key's three non-empty, six times that are plain
 * decimal numbers in (0, 100) seconds. Returns 1 and fills key (the first
 * three fields and their tabs) and t, or 0 for any other line. */
int df_prec_cache_parse_line(const char *line, size_t len, char key[FM_PREC_KEY_MAX], kn_probe_times *t);
/* Finds key's first valid line in the text of a cache file. Returns 1 and
 * fills t, or 0 (no such line: every invalid line is skipped). */
int df_prec_cache_find(const char *text, size_t len, const char *key, kn_probe_times *t);
/* Reads path's text (malloc'd, NUL-terminated; *len its length), or NULL
 * when there is no usable file. */
char *df_prec_cache_read(const char *path, size_t *len);
/* Writes path anew, atomically (a temporary file in its directory, then
 * rename): the valid lines of other keys kept (at most 31), key's line with
 * t. Returns 0, or -1 with why (strerror-style, may be NULL) filled. */
int df_prec_cache_store(const char *path, const char *key, const kn_probe_times *t, char *why, size_t why_size);

/* ---- the decision a model keeps ---- */

/* Measures the kernels (0) or fails (-1): kn_precision_probe, or a test's. */
typedef int (*df_prec_measure_fn)(void *user, kn_probe_times *t);

typedef enum {
    FM_PREC_FROM_NONE = 0,  /* not decided yet */
    FM_PREC_FROM_NO_BF16,   /* the kernels have no native bf16 here: fp32, nothing timed */
    FM_PREC_FROM_OFF,       /* FMIMAGE_PRECISION_CACHE=off: fp32, nothing timed */
    FM_PREC_FROM_HOOK,      /* a test's measurements */
    FM_PREC_FROM_CACHE,     /* the cache file's line for this machine */
    FM_PREC_FROM_PROBE,     /* timed now */
    FM_PREC_FROM_FAILED     /* the timing could not run (out of memory): fp32 */
} df_prec_source;

typedef struct df_prec_auto {
    df_prec_source from;   /* FM_PREC_FROM_NONE until the first resolve */
    fm_precision mode;     /* FM_PREC_FP32 or FM_PREC_BF16 */
    kn_probe_times times;  /* valid for HOOK, CACHE, PROBE */
    int probes;            /* timings this model ran (tests: a cache hit runs none) */
    char cache[PATH_MAX];  /* the cache file, "" for none */
    char cache_note[128];  /* why it could not be written, "" when it was (or was not tried) */
    /* test hook: when set, measures instead of the probe, and no cache file
     * is read or written */
    df_prec_measure_fn measure;
    void *measure_user;
} df_prec_auto;

/* Decides once (later calls return the same mode): see fm_model_precision
 * in fmimage.h. Reads FMIMAGE_PRECISION_CACHE, XDG_CACHE_HOME and HOME. */
fm_precision df_prec_auto_resolve(df_prec_auto *a);

#endif
