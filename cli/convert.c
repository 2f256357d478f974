/* fmimage convert IN -o OUT [--type T] [--force]: fm_convert
 * with the CLI's conventions (one-line errors, exit codes of DESIGN.md). */
#include "convert.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "fmimage.h"

static int usage(const char *what, const char *why)
{
    if (what) fprintf(stderr, "fmimage: convert: %s: %s\n", what, why);
    else fprintf(stderr, "fmimage: convert: %s\n", why);
    return 2;
}

int cli_convert_main(int argc, char **argv)
{
    static const struct option longs[] = {{"output", 1, 0, 'o'}, {"type", 1, 0, 'T'}, {"force", 0, 0, 'f'},
                                          {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    const char *out = NULL, *type = NULL;
    int force = 0, quiet = 0, c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, ":o:qh", longs, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 'T': type = optarg; break;
        case 'f': force = 1; break;
        case 'q': quiet = 1; break;
        case 'h':
            printf("usage: fmimage convert IN -o OUT.safetensors [--type f16|bf16|f32] [--force] [-q]\n"
                   "       fmimage convert IN -o OUT.gguf [--type f32|f16|bf16|q8_0|q4_0|q4_1|q5_0|q5_1|q2_k|q3_k|q4_k|"
                   "q5_k|q6_k] [--force] [-q]\n");
            return 0;
        case ':': return usage(argv[optind - 1], "needs a value");
        default: return usage(argv[optind - 1], "unknown option (see fmimage --help)");
        }
    }
    if (optind >= argc) return usage(NULL, "no input model");
    if (optind + 1 < argc) return usage(argv[optind + 1], "one input at a time");
    if (!out) return usage(NULL, "no output (-o OUT.safetensors or OUT.gguf)");
    const char *in = argv[optind];
    fm_error err = {0};
    int rc = fm_convert(in, out, type, force, &err);
    if (rc) {
        fprintf(stderr, "fmimage: %s\n", err.msg);
        return rc == FM_EUSAGE ? 2 : 1;
    }
    if (!quiet) fprintf(stderr, "fmimage: wrote %s\n", out);
    return 0;
}
