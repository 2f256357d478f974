/* libFuzzer: the safetensors header parser and loader (fm_st_open), then
 * every accessor on whatever it accepts. */
#include <stdint.h>
#include <string.h>

#include "weights/safetensors.h"
#include "fuzz_memfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fm_safetensors st;
    fm_error err = {0};
    if (fm_st_open(&st, fuzz_memfile(data, size), &err)) {
        if (!err.code || !err.msg[0] || strchr(err.msg, '\n')) abort();
        return 0;
    }
    for (int i = 0; i < st.n_tensors; i++) {
        const fm_st_tensor *t = &st.tensors[i];
        if (fm_st_find(&st, t->name) != t) abort();
        if (t->nbytes && t->nbytes <= (1u << 16)) {
            float *f = fm_st_to_f32(t, &err);
            fm_free(f);
        }
    }
    for (int i = 0; i < st.n_meta; i++) (void)fm_st_meta_get(&st, st.meta[i].key);
    fm_st_close(&st);
    return 0;
}
