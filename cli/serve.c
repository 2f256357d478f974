/* fmimage serve [--listen HOST:PORT] [-m MODEL | --models-dir DIR] ...:
 * the options, the signals, then srv_run (server/). */
#include "serve.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fmimage.h"
#include "server/server.h"

static volatile sig_atomic_t stop_signal;

static void on_stop(int sig) { stop_signal = sig; }

static int usage(const char *what, const char *why)
{
    if (what) fprintf(stderr, "fmimage: serve: %s: %s\n", what, why);
    else fprintf(stderr, "fmimage: serve: %s\n", why);
    return 2;
}

static void on_ready(void *user, const char *url)
{
    (void)user;
    fprintf(stderr, "fmimage: serving on %s\n", url);
}

static const char help[] =
    "usage: fmimage serve [--listen HOST:PORT] [-m MODEL | --models-dir DIR] [--lora-dir DIR]\n"
    "                     [--embeddings-dir DIR] [--taesd FILE [--preview-every N]]\n"
    "                     [--api-auth USER:PASS[,USER:PASS]] [--insecure-no-auth] [--queue N]\n"
    "                     [--save-dir DIR] [--cors-allow-origins LIST]\n"
    "  A1111's /sdapi/v1 API, ComfyUI's /prompt API (default workflow) and a web page at /\n"
    "  (docs/DESIGN.md \"fmimage serve\").\n"
    "      --listen HOST:PORT   address to listen on (default 127.0.0.1:7860; port 0 = any free)\n"
    "                           an address other than loopback needs --api-auth or --insecure-no-auth\n"
    "  -m, --model FILE         the one checkpoint (default: the demo model)\n"
    "      --models-dir DIR     checkpoints to choose from (sd_model_checkpoint); names stay inside DIR\n"
    "      --lora-dir DIR       where <lora:NAME:MULT> tags find NAME.safetensors\n"
    "      --embeddings-dir DIR textual-inversion embeddings a prompt's words may name\n"
    "      --taesd FILE         TAESD decoder for /sdapi/v1/progress's live preview (current_image)\n"
    "      --preview-every N    a preview every N sampling steps (default 10, as A1111)\n"
    "      --api-auth U:P,...   HTTP Basic credentials every request must carry\n"
    "      --insecure-no-auth   allow a non-loopback address without --api-auth\n"
    "      --queue N            jobs waiting at most, 1..4096 (default 16; full = 503)\n"
    "      --save-dir DIR       also write every image to DIR (complete files only)\n"
    "      --cors-allow-origins LIST  comma-separated origins (or *) allowed by CORS (default none)\n"
    "      --body-limit MIB     request body limit (default 64)\n";

int cli_serve_main(int argc, char **argv, const char *demo_model)
{
    enum { O_LISTEN = 256, O_MODELS, O_LORA, O_AUTH, O_INSECURE, O_QUEUE, O_SAVE, O_CORS, O_BODY, O_EMB, O_TAESD, O_PREVIEW };
    static const struct option longs[] = {
        {"listen", 1, 0, O_LISTEN}, {"model", 1, 0, 'm'}, {"models-dir", 1, 0, O_MODELS},
        {"lora-dir", 1, 0, O_LORA}, {"api-auth", 1, 0, O_AUTH}, {"insecure-no-auth", 0, 0, O_INSECURE},
        {"queue", 1, 0, O_QUEUE}, {"save-dir", 1, 0, O_SAVE}, {"cors-allow-origins", 1, 0, O_CORS},
        {"body-limit", 1, 0, O_BODY},
        {"embeddings-dir", 1, 0, O_EMB}, {"taesd", 1, 0, O_TAESD}, {"preview-every", 1, 0, O_PREVIEW}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}};
    srv_config c = {.queue = 16, .ready = on_ready};
    int ch;
    char *end;
    opterr = 0;
    optind = 1;
    while ((ch = getopt_long(argc, argv, ":m:h", longs, NULL)) != -1) {
        switch (ch) {
        case O_LISTEN: c.listen = optarg; break;
        case 'm': c.model = optarg; break;
        case O_MODELS: c.models_dir = optarg; break;
        case O_LORA: c.lora_dir = optarg; break;
        case O_AUTH: c.auth = optarg; break;
        case O_INSECURE: c.insecure_no_auth = 1; break;
        case O_QUEUE:
            c.queue = (int)strtol(optarg, &end, 10);
            if (*end || !*optarg || c.queue < 1 || c.queue > 4096) return usage("--queue", "not in 1..4096");
            break;
        case O_SAVE: c.save_dir = optarg; break;
        case O_EMB: c.embeddings_dir = optarg; break;
        case O_TAESD: c.taesd = optarg; break;
        case O_PREVIEW:
            c.preview_every = (int)strtol(optarg, &end, 10);
            if (*end || !*optarg || c.preview_every < 1 || c.preview_every > 1000)
                return usage("--preview-every", "not in 1..1000");
            break;
        case O_CORS: c.cors = optarg; break;
        case O_BODY: {
            long v = strtol(optarg, &end, 10);
            if (*end || !*optarg || v < 1 || v > 4096) return usage("--body-limit", "not in 1..4096 (MiB)");
            c.body_limit = (size_t)v << 20;
            break;
        }
        case 'h': fputs(help, stdout); return 0;
        case ':': return usage(argv[optind - 1], "needs a value");
        default: return usage(argv[optind - 1], "unknown option (see fmimage serve --help)");
        }
    }
    if (optind < argc) return usage(argv[optind], "unexpected argument");
    if (c.model && c.models_dir) return usage("--models-dir", "give -m MODEL or --models-dir DIR, not both");
    if (!c.model && !c.models_dir && !(c.model = demo_model))
        return usage("--model", "no model given and the demo model is not installed");
    struct sigaction sa = {.sa_handler = on_stop};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    fm_error err = {0};
    int rc = srv_run(&c, &stop_signal, &err);
    if (rc) {
        fprintf(stderr, "fmimage: %s\n", err.msg);
        return rc == FM_EUSAGE ? 2 : 1;
    }
    fprintf(stderr, "fmimage: serve: stopped\n");
    return 0;
}
