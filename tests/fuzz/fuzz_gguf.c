/* libFuzzer: the GGUF reader (wt_gguf_open_mem: header, metadata of every
 * type, tensor infos, alignment, the sd.cpp name mapping), then every
 * accessor and the dequantisation of small tensors on whatever it accepts. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "weights/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fm_error err = {0};
    wt_source *s = wt_gguf_open_mem(data, size, "fuzz.gguf", &err);
    if (!s) {
        if (!err.code || !err.msg[0] || strchr(err.msg, '\n')) abort();
        return 0;
    }
    for (int i = 0; i < wt_count(s); i++) {
        const wt_tensor *t = wt_at(s, i);
        if (wt_find(s, t->name) != t) abort();
        if (i && strcmp(wt_at(s, i - 1)->name, t->name) >= 0) abort();
        if (t->data < (const void *)data || (const uint8_t *)t->data + t->nbytes > data + size) abort();
        if (wt_is_float(t->dtype) && t->nbytes && t->nbytes <= (1u << 16)) {
            float *f = malloc(sizeof(float) * (size_t)wt_numel(t));
            if (f) wt_convert_f32(f, t);
            free(f);
        }
    }
    (void)wt_meta(s, "general.alignment");
    (void)wt_meta(s, "general.architecture");
    wt_close(s);
    return 0;
}
