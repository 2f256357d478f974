/* libFuzzer: the safetensors header parser and loader (wt_st_open), then
 * every accessor on whatever it accepts. */
#include <stdint.h>
#include <string.h>

#include "weights/safetensors.h"
#include "fuzz_memfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wt_safetensors st;
    fm_error err = {0};
    if (wt_st_open(&st, fuzz_memfile(data, size), &err)) {
        if (!err.code || !err.msg[0] || strchr(err.msg, '\n')) abort();
        return 0;
    }
    for (int i = 0; i < st.n_tensors; i++) {
        const wt_st_tensor *t = &st.tensors[i];
        if (wt_st_find(&st, t->name) != t) abort();
        if (t->nbytes && t->nbytes <= (1u << 16)) {
            float *f = wt_st_to_f32(t, &err);
            core_free(f);
        }
    }
    for (int i = 0; i < st.n_meta; i++) (void)wt_st_meta_get(&st, st.meta[i].key);
    wt_st_close(&st);
    return 0;
}
