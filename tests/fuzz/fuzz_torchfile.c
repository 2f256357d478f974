/* libFuzzer: a whole PyTorch zip file through the torch reader
 * (wt_torch_open_mem: zip directory, pickle, storage spans; wt_open maps a
 * file and runs the same parse), then every tensor's bytes read. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "weights/pickle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!size) return 0;
    fm_error err = {0};
    wt_source *s = wt_torch_open_mem(data, size, "fuzz.pt", &err);
    if (!s) {
        if (!err.code || !err.msg[0] || strchr(err.msg, '\n')) abort();
        return 0;
    }
    for (int i = 0; i < wt_count(s); i++) {
        const wt_tensor *t = wt_at(s, i);
        if (wt_find(s, t->name) != t) abort();
        volatile uint8_t x = 0;
        for (size_t b = 0; b < t->nbytes && b < (1u << 16); b++) x ^= ((const uint8_t *)t->data)[b];
        (void)x;
        (void)wt_meta(s, t->name);
    }
    wt_close(s);
    return 0;
}
