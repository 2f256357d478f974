/* libFuzzer: model detection (df_detect_config) and the --info description,
 * on every header wt_st_open accepts.
 *
 * The input is the JSON header alone: the harness frames it (u64 length,
 * JSON) and follows it with a 64 MiB zero data section that costs nothing
 * (a sparse memfd), so the seeds are the few-KB headers of the tiny test
 * models instead of multi-MB files, and mutations act on names and shapes. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "diffusion/detect.h"
#include "weights/safetensors.h"

#define DATA_BYTES (64u << 20)

static const char *header_file(const uint8_t *json, size_t len)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz-detect", MFD_CLOEXEC);
        if (fd < 0) abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    uint8_t n[8];
    for (int i = 0; i < 8; i++) n[i] = (uint8_t)((uint64_t)len >> (8 * i));
    if (ftruncate(fd, 0) || pwrite(fd, n, 8, 0) != 8 ||
        (len && pwrite(fd, json, len, 8) != (ssize_t)len) || ftruncate(fd, 8 + (off_t)len + DATA_BYTES))
        abort();
    return path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    wt_safetensors st;
    fm_error err = {0};
    if (wt_st_open(&st, header_file(data, size), &err)) return 0;
    wt_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    if (df_detect_config(&st.src, &cfg, &err) == 0) {
        char *s = df_config_describe(&cfg, &st.src);
        free(s);
    } else if (!err.code || !err.msg[0]) {
        abort();
    }
    wt_st_close(&st);
    return 0;
}
