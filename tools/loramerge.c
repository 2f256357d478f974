/* loramerge: the float32 weights fmimage merges from a checkpoint and
 * adapters, written out for comparison with a reference merge
 * (tools/ref/lora_fullsize_ref.py, make check-fullsize).
 *
 *   loramerge MODEL.safetensors OUT.safetensors ADAPTER[:TE[:UNET]]...
 *
 * OUT holds every tensor the merge changed (float32, the checkpoint's
 * names) as wt_merged_open makes them: the float32 merge that --precision
 * bf16 rounds from and fp32's run-time low-rank path equals. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "diffusion/detect.h"
#include "tools/lib/st_write.h"
#include "weights/lora.h"

#define MAX_ADAPTERS 8

static int usage(void)
{
    fprintf(stderr, "usage: loramerge MODEL.safetensors OUT.safetensors ADAPTER[:TE[:UNET]]...\n");
    return 2;
}

/* "PATH[:TE[:UNET]]": UNET defaults to TE, TE to 1. */
static void parse_use(char *arg, float *te, float *unet)
{
    char *c = strrchr(arg, ':'), *d;
    *te = *unet = 1.0f;
    if (!c || strchr(c, '/')) return;
    *c = 0;
    d = strrchr(arg, ':');
    if (d && !strchr(d, '/')) {
        *d = 0;
        *te = strtof(d + 1, NULL);
        *unet = strtof(c + 1, NULL);
    } else {
        *te = *unet = strtof(c + 1, NULL);
    }
}

int main(int argc, char **argv)
{
    if (argc < 4 || argc - 3 > MAX_ADAPTERS) return usage();
    fm_error err = {0};
    wt_source *base = wt_open(argv[1], &err), *merged = NULL;
    wt_model_config cfg;
    wt_lora *l[MAX_ADAPTERS] = {0};
    wt_lora_use uses[MAX_ADAPTERS];
    int n = argc - 3, rc = !base || df_detect_config(base, &cfg, &err);
    for (int i = 0; !rc && i < n; i++) {
        float te, unet;
        parse_use(argv[3 + i], &te, &unet);
        rc = !(l[i] = wt_lora_open(argv[3 + i], base, &cfg, &err));
        if (!rc) uses[i] = (wt_lora_use){l[i], te, unet};
    }
    if (!rc) rc = !(merged = wt_merged_open(base, uses, n, NULL, &err));
    tl_st_entry *e = rc ? NULL : calloc((size_t)wt_count(merged), sizeof *e);
    int ne = 0;
    for (int i = 0; e && i < wt_count(merged); i++) {
        const wt_tensor *t = wt_at(merged, i);
        if (!wt_merged_is(merged, t)) continue;
        e[ne] = (tl_st_entry){t->name, t->dtype, t->ndim, {0}, t->data};
        memcpy(e[ne].shape, t->shape, sizeof t->shape);
        ne++;
    }
    if (!rc && !e) rc = 1, snprintf(err.msg, sizeof err.msg, "out of memory");
    if (!rc) rc = tl_st_write(argv[2], e, ne, NULL, 0, &err);
    if (rc) fprintf(stderr, "loramerge: %s\n", err.msg[0] ? err.msg : "failed");
    else printf("%d tensors merged\n", ne);
    free(e);
    wt_close(merged);
    for (int i = 0; i < n; i++) wt_lora_close(l[i]);
    wt_close(base);
    return rc ? 1 : 0;
}
