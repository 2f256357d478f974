/* libFuzzer: a diffusers folder (weights/diffusers.c). The first byte picks
 * the file the rest of the input replaces in a private copy of
 * tests/data/diffusers/sd1 (0: the unet's shard index, 1: unet/config.json,
 * 2: model_index.json, 3: vae/config.json, 4: text_encoder/config.json,
 * 5: scheduler/scheduler_config.json); then the folder is opened, every
 * tensor and the config metadata read, and the file put back. Run from the
 * repository root. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "weights/source.h"

static const char *const files[] = {
    "unet/diffusion_pytorch_model.safetensors.index.json", "unet/config.json", "model_index.json",
    "vae/config.json", "text_encoder/config.json", "scheduler/scheduler_config.json",
};
#define N_FILES (sizeof files / sizeof files[0])

static char dir[64];
static char *orig[N_FILES];
static size_t orig_n[N_FILES];

static void put(const char *rel, const void *data, size_t n)
{
    char p[256];
    snprintf(p, sizeof p, "%s/%s", dir, rel);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(data, 1, n, f) != n) abort();
    fclose(f);
}

static void init(void)
{
    snprintf(dir, sizeof dir, "/tmp/fuzz-diffusers-XXXXXX");
    if (!mkdtemp(dir)) abort();
    char cmd[200];
    snprintf(cmd, sizeof cmd, "cp -r tests/data/diffusers/sd1/. '%s'", dir);
    if (system(cmd)) abort();
    for (size_t i = 0; i < N_FILES; i++) {
        char p[256];
        snprintf(p, sizeof p, "%s/%s", dir, files[i]);
        FILE *f = fopen(p, "rb");
        if (!f) abort();
        fseek(f, 0, SEEK_END);
        orig_n[i] = (size_t)ftell(f);
        rewind(f);
        orig[i] = malloc(orig_n[i] + 1);
        if (!orig[i] || fread(orig[i], 1, orig_n[i], f) != orig_n[i]) abort();
        fclose(f);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) init();
    if (size < 1) return 0;
    size_t which = data[0] % N_FILES;
    put(files[which], data + 1, size - 1);
    fm_error err = {0};
    wt_source *s = wt_open(dir, &err);
    if (!s) {
        if (!err.code || !err.msg[0] || strchr(err.msg, '\n')) abort();
    } else {
        for (int i = 0; i < wt_count(s); i++) {
            const wt_tensor *t = wt_at(s, i);
            if (wt_find(s, t->name) != t) abort();
            if (i && strcmp(wt_at(s, i - 1)->name, t->name) >= 0) abort();
        }
        const char *cfg = wt_meta(s, "fmimage.config");
        if (!cfg) abort();
        wt_close(s);
    }
    put(files[which], orig[which], orig_n[which]);
    return 0;
}
