/* libFuzzer: a whole PyTorch zip file through wt_open (zip directory,
 * pickle, storage spans), then every tensor's bytes read. */
#include <stdint.h>
#include <string.h>

#include "weights/source.h"
#include "fuzz_memfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fm_error err = {0};
    wt_source *s = wt_open(fuzz_memfile(data, size), &err);
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
