/* libFuzzer: the init-image reader (fm_image_read: PNG/JPEG through
 * stb_image with the header size check first). */
#include <stdint.h>
#include <stdlib.h>

#include "fmimage.h"
#include "fuzz_memfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fm_error err = {0};
    int w = 0, h = 0;
    uint8_t *rgb = fm_image_read(fuzz_memfile(data, size), &w, &h, &err);
    if (rgb) {
        if (w < 1 || h < 1 || w > 16384 || h > 16384) abort();
        volatile uint8_t last = rgb[(size_t)w * h * 3 - 1];
        (void)last;
        free(rgb);
    } else if (!err.msg[0]) {
        abort();
    }
    return 0;
}
