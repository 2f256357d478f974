/* libFuzzer: the pickle interpreter (wt_pk_parse) on a data.pkl, then every
 * tensor and metadata entry it returns. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "weights/pickle.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wt_pk_result r;
    fm_error err = {0};
    if (wt_pk_parse(data, size, &r, "fuzz.pkl", &err)) {
        if (!err.code || !err.msg[0]) abort();
        return 0;
    }
    for (int i = 0; i < r.n_tensors; i++) {
        const wt_pk_tensor *t = &r.tensors[i];
        if (!t->name || !t->storage || t->ndim < 0 || t->ndim > WT_MAX_DIMS || t->offset < 0) abort();
        if (i && strcmp(r.tensors[i - 1].name, t->name) >= 0) abort();
        for (int d = 0; d < t->ndim; d++)
            if (t->shape[d] < 0 || t->stride[d] < 0) abort();
    }
    for (int i = 0; i < r.n_meta; i++)
        if (!r.meta[i].key || !r.meta[i].value) abort();
    wt_pk_free(&r);
    return 0;
}
