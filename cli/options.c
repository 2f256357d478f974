#include "options.h"

#include "shard.h"
#include "xyz.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

void cli_print_help(void)
{
    printf(
        "usage: fmimage [OPTIONS] \"PROMPT\"\n"
        "       fmimage [OPTIONS] --prompt-file FILE\n"
        "       fmimage --info -m MODEL | --print-tokens \"TEXT\" [-m MODEL] | --list-samplers\n"
        "       fmimage upscale -m UPSCALER IMAGE [-o OUT.png]\n"
        "\n"
        "  -m, --model FILE         checkpoint or diffusers folder (default: the shipped demo model)\n"
        "  -o, --output PATH        image file, or directory for batches (default fmimage-SEED.png,\n"
        "                           fmimage-out/ for prompt files and --batch-count > 1)\n"
        "  -n, --negative TEXT      negative prompt (default \"\")\n"
        "  -W, --width N            width in pixels (default: by model family, 512 for SD 1.x)\n"
        "  -H, --height N           height in pixels (default: by model family)\n"
        "      --steps N            sampling steps, 1..1000 (default: by family, 20 for SD 1.x)\n"
        "      --cfg X              classifier-free guidance scale (default: by family, 7)\n"
        "      --sampler NAME       ComfyUI name or A1111 label (default: by family, dpmpp_2m)\n"
        "      --scheduler NAME     normal, karras, exponential, sgm_uniform, simple, ddim_uniform\n"
        "                           (default: by family, karras)\n"
        "      --seed N             0..4294967295, -1 = random (default: random, printed)\n"
        "      --rng cuda|cpu       noise generator: A1111 NV (cuda) or PyTorch CPU (default cuda)\n"
        "      --batch-count N      images per prompt; image k uses seed+k (default 1)\n"
        "      --prompt-file FILE   one job per line, A1111 \"prompts from file\" syntax\n"
        "      --shard K/N|auto[/N] run only jobs j with j mod N == K (default 0/1); auto: K and N\n"
        "                           from Slurm, a Kubernetes Indexed Job or FMIMAGE_SHARD=K/N\n"
        "      --status             report done, missing and broken jobs per shard, make nothing\n"
        "                           (exit 0 when complete, 1 otherwise)\n"
        "      --only-missing       make just the unfinished jobs, shared among the N shards\n"
        "  -i, --init-image FILE    img2img from a PNG or JPEG\n"
        "      --strength X         img2img denoising strength in (0,1] (default 0.75)\n"
        "      --mask FILE          inpaint: repaint where FILE is white (grey = partly; an RGBA\n"
        "                           PNG's alpha when not all opaque), A1111's img2img inpaint\n"
        "      --mask-invert        repaint where the mask is black (A1111 \"Inpaint not masked\")\n"
        "      --mask-blur N        Gaussian blur of the mask, pixels (default 4)\n"
        "      --inpaint-fill M     masked content: original, fill, latent-noise, latent-nothing\n"
        "                           (default original; fill with --outpaint)\n"
        "      --inpaint-only-masked  repaint only the region around the mask at -W x -H and\n"
        "                           paste it back (the image keeps its size)\n"
        "      --inpaint-padding N  pixels around the mask for --inpaint-only-masked (default 32)\n"
        "      --outpaint L,T,R,B   extend the image by that many pixels per side (multiples of\n"
        "                           the latent factor) and paint the new area (A1111's poor man's\n"
        "                           outpainting in one pass; the result is (W+L+R) x (H+T+B))\n"
        "      --clip-skip N        A1111 clip skip (default 1)\n"
        "      --prediction eps|v   override the detected parameterisation (default: from the file)\n"
        "      --taesd FILE         decode with TAESD / TAESDXL instead of the full VAE\n"
        "      --vae-tiling         tiled VAE decode for large images (default off)\n"
        "      --lora-dir DIR       where <lora:NAME:MULT> / <lora:NAME:TE:UNET> prompt tags find\n"
        "                           NAME.safetensors (or ss_output_name NAME); alias\n"
        "                           --lora-model-dir (default: loras/ next to the model)\n"
        "      --embeddings-dir DIR textual-inversion embeddings: a prompt word equal to a file\n"
        "                           name (NAME.safetensors/.pt/.bin) becomes its vectors\n"
        "                           (default: embeddings/ next to the model)\n"
        "      --precision MODE     U-Net/VAE math: fp32; bf16 (bf16 products, fp32 sums;\n"
        "                           needs AVX512_BF16, else fp32); f16 = fp32 (f16 weights\n"
        "                           always use fp32 math); auto = bf16 where it measures\n"
        "                           >= 1.10x faster on this CPU, else fp32 (default auto)\n"
        "  -t, --threads N          threads (default: the CPUs granted: affinity, cgroup quota,\n"
        "                           SLURM_CPUS_PER_TASK; OMP_NUM_THREADS respected)\n"
        "      --hires-scale X      hires fix (A1111's): sample at -W x -H, upscale by X, then\n"
        "                           img2img at the new size (int(W*X) x int(H*X), multiples of 8)\n"
        "      --hires-width N, --hires-height N  the hires size instead (A1111's \"Resize\n"
        "                           width/height to\": one alone keeps the aspect ratio, both\n"
        "                           fill and crop)\n"
        "      --hires-steps N      second-pass steps, 0 = --steps (default 0)\n"
        "      --hires-denoise X    second-pass denoising strength in (0,1] (default 0.7)\n"
        "      --hires-upscaler NAME  Latent, Latent (antialiased), Latent (bicubic), Latent (bicubic\n"
        "                           antialiased), Latent (nearest), Latent (nearest-exact), Lanczos,\n"
        "                           Nearest, or an upscaling model FILE (default Latent)\n"
        "      --hires-prompt TEXT, --hires-negative TEXT  the second pass's prompts\n"
        "                           (default: the first pass's)\n"
        "      --hires-sampler NAME the second pass's sampler (default: --sampler)\n"
        "      --upscale-model FILE upscale each image with an ESRGAN / Real-ESRGAN / SRVGG model\n"
        "                           (.safetensors); `fmimage upscale -m FILE IMAGE` upscales a file\n"
        "                           (output default IMAGE-xS.png)\n"
        "      --upscale-tile N     input pixels per tile side, 0 = none (default 192)\n"
        "      --upscale-overlap N  input pixels neighbouring tiles share (default 8)\n"
        "      --metadata a1111|none  PNG parameters chunk (default a1111)\n"
        "      --force              overwrite an existing single output\n"
        "  -q, --quiet              no progress\n"
        "  -v, --verbose            timings per stage and step, peak memory at the end\n"
        "      --vae FILE           the VAE from FILE, ldm or diffusers names (replaces the\n"
        "                           model's; sd.cpp's option)\n"
        "      --clip_l FILE        the CLIP-L text encoder from FILE\n"
        "      --clip_g FILE        the OpenCLIP bigG text encoder from FILE (SDXL)\n"
        "                           (a GGUF holding only a U-Net needs its family's parts)\n"
        "      --type T             convert the weights at load: f32, f16, bf16, q8_0, q4_0,\n"
        "                           q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k; biases,\n"
        "                           norms, embeddings and small convs stay float (default:\n"
        "                           as stored; GGUF files are read in their own types)\n"
        "      --info               print the model's family, config and parameter counts\n"
        "      --print-tokens TEXT  print the 77 token ids\n"
        "      --list-samplers      print sampler and scheduler names\n"
        "      --styles-file FILE   A1111 styles.csv (columns name, prompt, negative_prompt)\n"
        "      --style NAME         apply that style (repeatable, in order): its \"{prompt}\" is\n"
        "                           replaced by the prompt, else it is appended with \", \"\n"
        "  Prompts use A1111's syntax: (word:1.2), [from:to:when] (when < 1: fraction of the\n"
        "  steps, else a step), [a|b] alternation per step, \"a cat AND a dog :0.5\" (composable\n"
        "  diffusion, at most 64 parts), BREAK.\n"
        /* wildcards and dynamic prompts (issue 19 item 3) */
        "  Dynamic Prompts templates (a prompt with '{' or \"__\"): {red|green|blue}, {2$$a|b|c},\n"
        "  {1-2$$ and $$a|b|c}, {0.5::a|b}, __name__ (a line of DIR/name.txt); each image draws\n"
        "  one expansion from its seed, and the chosen text is its prompt.\n"
        "      --combinatorial      every expansion instead (dynamicprompts' order, at most 10000),\n"
        "                           each a job of its own, --batch-count images each\n"
        "      --wildcards-dir DIR  where __name__ wildcards are read (DIR/name.txt, name may\n"
        "                           hold '/' for subfolders)\n"
        /* X/Y/Z plot (issue 19 item 4) */
        "      --xyz AXIS:TYPE:VALUES  X/Y/Z plot (A1111's script), up to three (X, Y, Z); the\n"
        "                           words after the first that read as axes are axes too.\n"
        "                           TYPE: Seed, Steps, CFG Scale, Sampler, Scheduler, Prompt S/R,\n"
        "                           Size (WxH), Denoising, Clip skip, Checkpoint name; VALUES:\n"
        "                           comma separated, ranges 1-4, 1-10 (+2), 1-10 [5],\n"
        "                           0.5-1.5 (+0.25). Each cell is a job; one labelled grid PNG\n"
        "                           per Z value (xyz_grid-N.png), and with several Z values all\n"
        "                           of them side by side (xyz_grid.png)\n"
        "      --models-dir DIR     where Checkpoint name values are found (file name with or\n"
        "                           without extension, or part of it; default: -m's folder)\n"
        "  -h, --help, --version\n"
        "\n"
        /* weight formats and convert (issue 17 items 3-5) */
        "Models (-m): .safetensors; PyTorch .ckpt/.pt/.pth/.bin (zip format; the pickle runs no\n"
        "code: a call outside tensor rebuilding is refused); diffusers folders (model_index.json).\n"
        "fmimage convert IN -o OUT.safetensors [--type f16|bf16|f32] [--force]\n"
        "                           IN (any model above) as one safetensors file, ldm names and\n"
        "                           IN's metadata kept; --type converts the float tensors\n"
        "                           (default: each keeps its dtype)\n"
        "fmimage convert IN -o OUT.gguf [--type f16|q8_0|q4_k|...]\n"
        "                           a GGUF file as stable-diffusion.cpp's -M convert writes it\n"
        "                           (its per-tensor rule decides what --type converts)\n"
        "fmimage serve [--listen 127.0.0.1:7860] [-m MODEL | --models-dir DIR] [--api-auth U:P]\n"
        "                           A1111's HTTP API and a web page (fmimage serve --help)\n"
        "\n"
        "Environment: FMIMAGE_MEMORY_LIMIT=N[K|M|G] caps the memory for activations (default:\n"
        "the machine's available memory); larger sizes are refused before sampling.\n"
        "FMIMAGE_PRECISION_CACHE=FILE|off: where --precision auto keeps its kernel timing\n"
        "(default ~/.cache/fmimage/precision.tsv); off = no timing, auto = fp32.\n"
        "FMIMAGE_SHARD=K/N, or FMIMAGE_SHARD_COUNT=N with JOB_COMPLETION_INDEX, for --shard auto.\n");
}

static const char *env_get(const char *name) { return getenv(name); }

/* "fmimage: WHAT: why", or "fmimage: why" when nothing narrower is at
 * fault (the program's own name is never the WHAT). */
static int usage(const char *what, const char *why)
{
    if (what) fprintf(stderr, "fmimage: %s: %s\n", what, why);
    else fprintf(stderr, "fmimage: %s\n", why);
    return 2;
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

static int parse_finite(const char *s, float *out)
{
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

/* FMIMAGE_MEMORY_LIMIT: bytes, or a number with the suffix K, M or G
 * (powers of 1024). */
static int parse_memory(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *s == '-') return -1;
    int shift = 0;
    switch (*end) {
    case 'K': case 'k': shift = 10; end++; break;
    case 'M': case 'm': shift = 20; end++; break;
    case 'G': case 'g': shift = 30; end++; break;
    }
    if (*end || v == 0 || v > (SIZE_MAX >> shift)) return -1;
    *out = (size_t)v << shift;
    return 0;
}

/* "--width" for 'W': error messages name the long option; NULL if c is
 * no option's. */
static const char *option_label(int c, const struct option *longs, char *buf, size_t n)
{
    for (; longs->name; longs++)
        if (longs->val == c) {
            snprintf(buf, n, "--%s", longs->name);
            return buf;
        }
    return NULL;
}

/* getopt_long's '?': optopt is 0 for an unknown long option (the whole word
 * is argv[optind - 1]), an option's value for a known one given a value it
 * does not take ("--force=1"), else the unknown short option's letter (the
 * word may hold more letters, so name the letter). */
static int bad_option(char **argv, const struct option *longs)
{
    char label[40], word[80];
    if (optopt == 0) {
        const char *arg = argv[optind - 1], *eq = strchr(arg, '=');
        snprintf(word, sizeof word, "%.*s", eq ? (int)(eq - arg) : 60, arg);
        return usage(word, "unknown option (see --help)");
    }
    const char *name = option_label(optopt, longs, label, sizeof label);
    if (name) return usage(name, "takes no value");
    snprintf(word, sizeof word, "-%c", optopt > 32 && optopt < 127 ? optopt : '?');
    return usage(word, "unknown option (see --help)");
}

enum {
    OPT_STEPS = 256, OPT_CFG, OPT_SAMPLER, OPT_SCHEDULER, OPT_SEED, OPT_RNG, OPT_BATCH, OPT_PFILE,
    OPT_SHARD, OPT_STRENGTH, OPT_CLIPSKIP, OPT_PRED, OPT_TAESD, OPT_TILING, OPT_PREC, OPT_META,
    OPT_FORCE, OPT_INFO, OPT_TOKENS, OPT_LIST, OPT_VERSION, OPT_STATUS, OPT_ONLY_MISSING,
    OPT_UPSCALE_MODEL, OPT_UPSCALE_TILE, OPT_UPSCALE_OVERLAP,
    OPT_STYLES_FILE, OPT_STYLE,
    OPT_VAE, OPT_CLIP_L, OPT_CLIP_G, OPT_TYPE, /* GGUF and quantised weights */
    OPT_COMBINATORIAL, OPT_WILDCARDS_DIR, /* wildcards */
    OPT_XYZ, OPT_MODELS_DIR /* X/Y/Z plot */
};
enum { OPT_LORA_DIR = 400 }; /* LoRA */
enum { OPT_EMBEDDINGS_DIR = 410 }; /* textual inversion */
/* inpainting and outpainting (issue 18) */
enum { OPT_MASK = 420, OPT_MASK_INVERT, OPT_MASK_BLUR, OPT_INPAINT_FILL, OPT_ONLY_MASKED, OPT_PADDING, OPT_OUTPAINT };
enum { OPT_HIRES_SCALE = 440, OPT_HIRES_W, OPT_HIRES_H, OPT_HIRES_STEPS, OPT_HIRES_DENOISE, OPT_HIRES_UPSCALER,
       OPT_HIRES_PROMPT, OPT_HIRES_NEGATIVE, OPT_HIRES_SAMPLER }; /* hires fix */

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v)) return -1;
    *out = v;
    return 0;
}

/* --type's words (fm_load_options.type). */
static int weight_type_ok(const char *t)
{
    static const char *const ok[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1",
                                     "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!strcasecmp(t, ok[i])) return 1;
    return 0;
}

int cli_parse(int argc, char **argv, cli_options *o)
{
    static const struct option longs[] = {
        {"model", 1, 0, 'm'}, {"output", 1, 0, 'o'}, {"negative", 1, 0, 'n'}, {"width", 1, 0, 'W'},
        {"height", 1, 0, 'H'}, {"steps", 1, 0, OPT_STEPS}, {"cfg", 1, 0, OPT_CFG},
        {"sampler", 1, 0, OPT_SAMPLER}, {"scheduler", 1, 0, OPT_SCHEDULER}, {"seed", 1, 0, OPT_SEED},
        {"rng", 1, 0, OPT_RNG}, {"batch-count", 1, 0, OPT_BATCH}, {"prompt-file", 1, 0, OPT_PFILE},
        {"shard", 1, 0, OPT_SHARD}, {"init-image", 1, 0, 'i'}, {"strength", 1, 0, OPT_STRENGTH},
        {"clip-skip", 1, 0, OPT_CLIPSKIP}, {"prediction", 1, 0, OPT_PRED}, {"taesd", 1, 0, OPT_TAESD},
        {"vae-tiling", 0, 0, OPT_TILING}, {"precision", 1, 0, OPT_PREC}, {"threads", 1, 0, 't'},
        {"metadata", 1, 0, OPT_META}, {"force", 0, 0, OPT_FORCE}, {"quiet", 0, 0, 'q'},
        {"verbose", 0, 0, 'v'}, {"info", 0, 0, OPT_INFO}, {"print-tokens", 1, 0, OPT_TOKENS},
        {"list-samplers", 0, 0, OPT_LIST}, {"help", 0, 0, 'h'}, {"version", 0, 0, OPT_VERSION},
        {"status", 0, 0, OPT_STATUS}, {"only-missing", 0, 0, OPT_ONLY_MISSING},
        {"upscale-model", 1, 0, OPT_UPSCALE_MODEL}, {"upscale-tile", 1, 0, OPT_UPSCALE_TILE},
        {"upscale-overlap", 1, 0, OPT_UPSCALE_OVERLAP},
        {"styles-file", 1, 0, OPT_STYLES_FILE}, {"style", 1, 0, OPT_STYLE},
        {"lora-dir", 1, 0, OPT_LORA_DIR}, {"lora-model-dir", 1, 0, OPT_LORA_DIR}, /* LoRA */
        {"embeddings-dir", 1, 0, OPT_EMBEDDINGS_DIR}, /* textual inversion */
        {"vae", 1, 0, OPT_VAE}, {"clip_l", 1, 0, OPT_CLIP_L}, {"clip_g", 1, 0, OPT_CLIP_G},
        {"type", 1, 0, OPT_TYPE},
        {"mask", 1, 0, OPT_MASK}, {"mask-invert", 0, 0, OPT_MASK_INVERT}, {"mask-blur", 1, 0, OPT_MASK_BLUR},
        {"inpaint-fill", 1, 0, OPT_INPAINT_FILL}, {"inpaint-only-masked", 0, 0, OPT_ONLY_MASKED},
        {"inpaint-padding", 1, 0, OPT_PADDING}, {"outpaint", 1, 0, OPT_OUTPAINT},
        {"combinatorial", 0, 0, OPT_COMBINATORIAL}, {"wildcards-dir", 1, 0, OPT_WILDCARDS_DIR}, /* wildcards */
        {"xyz", 1, 0, OPT_XYZ}, {"models-dir", 1, 0, OPT_MODELS_DIR}, /* X/Y/Z plot */
        {"hires-scale", 1, 0, OPT_HIRES_SCALE}, {"hires-width", 1, 0, OPT_HIRES_W}, /* hires fix */
        {"hires-height", 1, 0, OPT_HIRES_H}, {"hires-steps", 1, 0, OPT_HIRES_STEPS},
        {"hires-denoise", 1, 0, OPT_HIRES_DENOISE}, {"hires-upscaler", 1, 0, OPT_HIRES_UPSCALER},
        {"hires-prompt", 1, 0, OPT_HIRES_PROMPT}, {"hires-negative", 1, 0, OPT_HIRES_NEGATIVE},
        {"hires-sampler", 1, 0, OPT_HIRES_SAMPLER},
        {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    o->cfg = NAN;
    o->strength = 0.75f;
    o->clip_skip = 1;
    o->batch_count = 1;
    o->shard_n = 1;
    o->metadata = 1;
    o->mask_blur = 4;
    o->inpaint_fill = -1;
    o->inpaint_padding = 32;
    o->hires_denoise = 0.7;
    opterr = 0;
    const char *mem = getenv("FMIMAGE_MEMORY_LIMIT");
    if (mem && *mem && parse_memory(mem, &o->memory_limit))
        return usage("FMIMAGE_MEMORY_LIMIT", "must be a positive number of bytes, optionally with K, M or G");
    /* `fmimage upscale ...`: a subcommand, the rest parsed as usual */
    if (argc > 1 && !strcmp(argv[1], "upscale")) {
        o->mode = MODE_UPSCALE;
        argv[1] = argv[0];
        argc--;
        argv++;
    }
    int c, shard_is_auto = 0, shard_auto_n = 0;
    long v;
    char label[40];
    while ((c = getopt_long(argc, argv, ":m:o:n:W:H:i:t:qvh", longs, NULL)) != -1) {
        const char *arg = optarg;
        const char *opt_name = option_label(c, longs, label, sizeof label);
        if (!opt_name) opt_name = "option";
        switch (c) {
        case 'm': o->model = arg; break;
        case 'o': o->output = arg; break;
        case 'n': o->negative = arg; break;
        case 'W': case 'H':
            /* Large values reach fm_params_check, which names the limit. */
            if (parse_long(arg, 1, INT_MAX, &v)) return usage(opt_name, "must be a positive number of pixels");
            *(c == 'W' ? &o->width : &o->height) = (int)v;
            break;
        case OPT_STEPS:
            if (parse_long(arg, 1, 1000, &v)) return usage(opt_name, "must be 1..1000");
            o->steps = (int)v;
            break;
        case OPT_CFG:
            if (parse_finite(arg, &o->cfg)) return usage(opt_name, "must be a finite number");
            break;
        case OPT_SAMPLER: snprintf(o->sampler, sizeof o->sampler, "%s", arg); break;
        case OPT_SCHEDULER: snprintf(o->scheduler, sizeof o->scheduler, "%s", arg); break;
        case OPT_SEED:
            if (parse_long(arg, -1, 4294967295L, &v)) return usage(opt_name, "must be 0..4294967295 or -1");
            o->has_seed = v >= 0;
            o->seed = v >= 0 ? (uint64_t)v : 0;
            break;
        case OPT_RNG:
            if (!strcmp(arg, "cuda")) o->rng = FM_RNG_CUDA;
            else if (!strcmp(arg, "cpu")) o->rng = FM_RNG_CPU;
            else return usage(opt_name, "must be cuda or cpu");
            break;
        case OPT_BATCH:
            if (parse_long(arg, 1, 100000, &v)) return usage(opt_name, "must be 1..100000");
            o->batch_count = (int)v;
            break;
        case OPT_PFILE: o->prompt_file = arg; break;
        case OPT_SHARD: {
            long k, n;
            const char *slash = strchr(arg, '/');
            char kbuf[32];
            const char *bad = "must be K/N with 0 <= K < N, auto or auto/N";
            o->has_shard = 1;
            if (!strncmp(arg, "auto", 4) && (!arg[4] || arg[4] == '/')) {
                /* Resolved from the environment once the options are read. */
                if (arg[4] && parse_long(arg + 5, 1, 1000000, &n)) return usage(opt_name, bad);
                shard_auto_n = arg[4] ? (int)n : 0;
                shard_is_auto = 1;
                break;
            }
            shard_is_auto = 0;
            if (!slash || slash - arg >= (long)sizeof kbuf) return usage(opt_name, bad);
            snprintf(kbuf, sizeof kbuf, "%.*s", (int)(slash - arg), arg);
            if (parse_long(kbuf, 0, 1000000, &k) || parse_long(slash + 1, 1, 1000000, &n) || k >= n)
                return usage(opt_name, bad);
            o->shard_k = (int)k;
            o->shard_n = (int)n;
            break;
        }
        case OPT_VAE: o->vae = arg; break;
        case OPT_CLIP_L: o->clip_l = arg; break;
        case OPT_CLIP_G: o->clip_g = arg; break;
        case OPT_TYPE:
            if (!weight_type_ok(arg))
                return usage(opt_name, "must be f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k or q6_k");
            o->type = arg;
            break;
        case OPT_STATUS: o->status = 1; break;
        case OPT_ONLY_MISSING: o->only_missing = 1; break;
        case 'i': o->init_image = arg; break;
        /* inpainting and outpainting (issue 18) */
        case OPT_MASK: o->mask = arg; break;
        case OPT_MASK_INVERT: o->mask_invert = 1; break;
        case OPT_MASK_BLUR:
            if (parse_long(arg, 0, 256, &v)) return usage(opt_name, "must be 0..256 pixels");
            o->mask_blur = (int)v;
            break;
        case OPT_INPAINT_FILL:
            if (!strcmp(arg, "original")) o->inpaint_fill = FM_FILL_ORIGINAL;
            else if (!strcmp(arg, "fill")) o->inpaint_fill = FM_FILL_FILL;
            else if (!strcmp(arg, "latent-noise")) o->inpaint_fill = FM_FILL_LATENT_NOISE;
            else if (!strcmp(arg, "latent-nothing")) o->inpaint_fill = FM_FILL_LATENT_NOTHING;
            else return usage(opt_name, "must be original, fill, latent-noise or latent-nothing");
            break;
        case OPT_ONLY_MASKED: o->inpaint_only_masked = 1; break;
        case OPT_PADDING:
            if (parse_long(arg, 0, 16384, &v)) return usage(opt_name, "must be 0..16384 pixels");
            o->inpaint_padding = (int)v;
            break;
        case OPT_OUTPAINT: {
            int k = 0;
            const char *q = arg;
            char *end;
            for (; k < 4; k++) {
                errno = 0;
                long x = strtol(q, &end, 10);
                if (errno || end == q || x < 0 || x > 16384) break;
                o->outpaint[k] = (int)x;
                if (k < 3 && *end != ',') break;
                q = end + 1;
            }
            if (k < 3 || *end) return usage(opt_name, "must be L,T,R,B: four pixel counts 0..16384");
            o->has_outpaint = 1;
            break;
        }
        case OPT_STRENGTH:
            if (parse_finite(arg, &o->strength) || !(o->strength > 0 && o->strength <= 1))
                return usage(opt_name, "must be in (0,1]");
            o->has_strength = 1;
            break;
        case OPT_CLIPSKIP:
            if (parse_long(arg, 1, 12, &v)) return usage(opt_name, "must be 1..12");
            o->clip_skip = (int)v;
            break;
        case OPT_PRED:
            if (!strcmp(arg, "eps")) o->prediction = FM_PRED_EPS;
            else if (!strcmp(arg, "v")) o->prediction = FM_PRED_V;
            else return usage(opt_name, "must be eps or v");
            break;
        case OPT_TAESD: o->taesd = arg; break;
        case OPT_LORA_DIR: o->lora_dir = arg; break; /* LoRA */
        case OPT_MODELS_DIR: o->models_dir = arg; break; /* X/Y/Z plot: Checkpoint name */
        case OPT_EMBEDDINGS_DIR: o->embeddings_dir = arg; break; /* textual inversion */
        case OPT_TILING: o->vae_tiling = 1; break;
        case OPT_PREC:
            if (!strcmp(arg, "auto")) o->precision = FM_PREC_AUTO;
            else if (!strcmp(arg, "fp32")) o->precision = FM_PREC_FP32;
            else if (!strcmp(arg, "bf16")) o->precision = FM_PREC_BF16;
            else if (!strcmp(arg, "f16")) o->precision = FM_PREC_F16;
            else return usage(opt_name, "must be auto, fp32, bf16 or f16");
            break;
        case 't':
            if (parse_long(arg, 1, 1024, &v)) return usage(opt_name, "must be 1..1024");
            o->threads = (int)v;
            break;
        case OPT_META:
            if (!strcmp(arg, "a1111")) o->metadata = 1;
            else if (!strcmp(arg, "none")) o->metadata = 0;
            else return usage(opt_name, "must be a1111 or none");
            break;
        case OPT_FORCE: o->force = 1; break;
        case OPT_UPSCALE_MODEL: o->upscale_model = arg; break;
        case OPT_UPSCALE_TILE:
        case OPT_UPSCALE_OVERLAP:
            if (parse_long(arg, 0, 4096, &v)) return usage(opt_name, "must be an integer in 0..4096");
            if (c == OPT_UPSCALE_TILE) o->upscale_tile = v ? (int)v : -1;
            else o->upscale_overlap = v ? (int)v : -1;
            break;
        /* styles (A1111's styles.csv) */
        case OPT_STYLES_FILE: o->styles_file = arg; break;
        case OPT_COMBINATORIAL: o->combinatorial = 1; break; /* wildcards */
        case OPT_WILDCARDS_DIR: o->wildcards_dir = arg; break;
        case OPT_XYZ: /* X/Y/Z plot */
            if (o->n_xyz == 3) return usage("--xyz", "at most three axes (X, Y, Z)");
            o->xyz[o->n_xyz++] = arg;
            break;
        case OPT_STYLE:
            if (o->n_styles == (int)(sizeof o->styles / sizeof o->styles[0]))
                return usage(opt_name, "at most 16 styles");
            o->styles[o->n_styles++] = arg;
            break;
        /* hires fix */
        case OPT_HIRES_SCALE:
            if (parse_double(arg, &o->hires_scale) || !(o->hires_scale > 0 && o->hires_scale <= 16))
                return usage(opt_name, "must be a number in (0,16]");
            break;
        case OPT_HIRES_W: case OPT_HIRES_H:
            if (parse_long(arg, 1, 16384, &v)) return usage(opt_name, "must be 1..16384 pixels");
            *(c == OPT_HIRES_W ? &o->hires_width : &o->hires_height) = (int)v;
            break;
        case OPT_HIRES_STEPS:
            if (parse_long(arg, 0, 1000, &v)) return usage(opt_name, "must be 0..1000 (0 = --steps)");
            o->hires_steps = (int)v;
            break;
        case OPT_HIRES_DENOISE:
            if (parse_double(arg, &o->hires_denoise) || !(o->hires_denoise > 0 && o->hires_denoise <= 1))
                return usage(opt_name, "must be in (0,1]");
            o->has_hires_denoise = 1;
            break;
        case OPT_HIRES_UPSCALER: o->hires_upscaler = arg; break;
        case OPT_HIRES_PROMPT: o->hires_prompt = arg; break;
        case OPT_HIRES_NEGATIVE: o->hires_negative = arg; break;
        case OPT_HIRES_SAMPLER:
            if (strlen(arg) >= sizeof o->hires_sampler) return usage(opt_name, "at most 31 bytes");
            snprintf(o->hires_sampler, sizeof o->hires_sampler, "%s", arg);
            break;
        case 'q': o->quiet = 1; break;
        case 'v': o->verbose = 1; break;
        case OPT_INFO: o->mode = MODE_INFO; break;
        case OPT_TOKENS: o->mode = MODE_PRINT_TOKENS; o->prompt = arg; break;
        case OPT_LIST: o->mode = MODE_LIST_SAMPLERS; break;
        case 'h': o->mode = MODE_HELP; return 0;
        case OPT_VERSION: o->mode = MODE_VERSION; return 0;
        case ':': {
            const char *name = option_label(optopt, longs, label, sizeof label);
            return usage(name ? name : argv[optind - 1], "needs a value");
        }
        default: return bad_option(argv, longs);
        }
    }
    int rest = argc - optind;
    if (shard_is_auto) {
        char why[200];
        if (shard_auto(shard_auto_n, env_get, &o->shard_k, &o->shard_n, why, sizeof why)) return usage(NULL, why);
    }
    if (o->mode == MODE_GENERATE && o->n_xyz) {
        /* X/Y/Z plot: `--xyz "X:..." "Y:..." "Z:..."` -- the axes after the
         * first are words that read as axes; the one other word is the prompt */
        int prompt_at = -1, n_words = 0;
        for (int i = optind; i < argc; i++) {
            if (xyz_is_spec(argv[i]) && o->n_xyz < 3) o->xyz[o->n_xyz++] = argv[i];
            else { prompt_at = i; n_words++; }
        }
        if (n_words == 1) {
            argv[optind] = argv[prompt_at];
            rest = 1;
        } else {
            rest = n_words;
        }
        if (o->prompt_file) return usage("--xyz", "and --prompt-file exclude each other");
        if (o->combinatorial) return usage("--xyz", "and --combinatorial exclude each other");
        if (o->batch_count > 1) return usage("--xyz", "makes one image per cell (no --batch-count)");
    }
    if (o->mode == MODE_GENERATE) {
        if (o->prompt_file && rest > 0) return usage(argv[optind], "a prompt and --prompt-file exclude each other");
        if (!o->prompt_file && rest != 1)
            return usage(NULL, rest ? "one prompt at a time (quote it)" : "no prompt (see --help)");
        if (!o->prompt_file) o->prompt = argv[optind];
        /* --strength only means something for img2img: given without -i it
         * is a mistake (a prompt file's lines may bring their own
         * --init_image, so there it is allowed). */
        if (o->has_strength && !o->init_image && !o->prompt_file)
            return usage("--strength", "only for img2img (needs -i/--init-image)");
        if (o->mask && !o->init_image && !o->prompt_file) return usage("--mask", "needs an init image (-i)");
        if (o->has_outpaint && !o->init_image && !o->prompt_file) return usage("--outpaint", "needs an init image (-i)");
        if (o->has_outpaint && o->mask) return usage("--outpaint", "makes its own mask (no --mask with it)");
        /* Seeds do not wrap (DESIGN.md): the last image's seed must exist.
         * A prompt file is checked once its lines are known. */
        if (o->has_seed && !o->prompt_file && o->seed + (uint64_t)o->batch_count - 1 > 4294967295u) {
            char why[160];
            snprintf(why, sizeof why, "images %llu..%llu pass the largest seed 4294967295 (seeds do not wrap)",
                     (unsigned long long)o->seed, (unsigned long long)(o->seed + (uint64_t)o->batch_count - 1));
            return usage("--seed", why);
        }
        int batch = o->prompt_file || o->batch_count > 1 || o->combinatorial || o->n_xyz;
        if (o->status && !batch) return usage("--status", "only for batches (--prompt-file or --batch-count)");
        if (o->only_missing && !batch) return usage("--only-missing", "only for batches (--prompt-file or --batch-count)");
        if (o->status && o->only_missing) return usage("--only-missing", "makes images; --status makes none");
        if (o->only_missing && o->force) return usage("--only-missing", "and --force exclude each other");
    } else if (o->mode == MODE_UPSCALE) {
        if (!o->model) return usage("upscale", "needs -m UPSCALER (an ESRGAN / Real-ESRGAN / SRVGG model)");
        if (rest > (o->init_image ? 0 : 1)) return usage(argv[optind + (o->init_image ? 0 : 1)], "unexpected argument");
        if (!o->init_image && rest == 0) return usage("upscale", "no image given");
        if (!o->init_image) o->init_image = argv[optind];
    } else if (rest > 0) {
        return usage(argv[optind], "unexpected argument");
    }
    if (o->mode == MODE_INFO && !o->model) return usage("--info", "needs -m MODEL");
    /* hires fix: its options without one of the three that turn it on are a mistake */
    int hires_on = o->hires_scale > 0 || o->hires_width || o->hires_height;
    if (!hires_on && (o->hires_steps || o->has_hires_denoise || o->hires_upscaler || o->hires_prompt ||
                      o->hires_negative || o->hires_sampler[0]))
        return usage("--hires-steps", "the hires options need --hires-scale, --hires-width or --hires-height");
    if (hires_on && o->hires_scale > 0 && (o->hires_width || o->hires_height))
        return usage("--hires-scale", "and --hires-width/--hires-height exclude each other");
    if (hires_on && o->init_image) return usage("--hires-scale", "the hires fix is for txt2img (not with -i)");
    if (o->n_styles && !o->styles_file) return usage("--style", "needs --styles-file FILE");
    return 0;
}
