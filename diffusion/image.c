/* Init images for img2img: PNG or JPEG through stb_image (v2.30, vendored in
 * third_party/), with the size checked from the header before anything is
 * decoded and the few inputs that still cost stb undefined behaviour or a
 * huge allocation refused first (found by tests/fuzz/fuzz_image). */
#include "core/core.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#define STBI_NO_STDIO
/* stb's asserts would abort the process, and the library never does. Each
 * one states an invariant of stb's own decoders for what we ask of them
 * (PNG and JPEG, 8 bits, req_comp 3), not a property of the input:
 * req_comp in 1..4 and every (img_n, req_comp) conversion (we pass 3, PNG
 * and JPEG give 1..4 channels); bits per channel 8 or 16 (what the two
 * loaders set); a PNG's output channels img_n or img_n + 1, and 2 or 4 when
 * a tRNS colour key adds alpha (only grey and RGB may have one: stb refuses
 * "tRNS with alpha"); bit depth 1 in the last branch (IHDR accepts 1, 2, 4,
 * 8, 16 only); zlib code lengths <= 16 (the code-length alphabet is 0..15);
 * a JPEG Huffman symbol's code matching its length (stbi__build_huffman
 * refuses over-full code lengths, and the symbol index is range-checked
 * just before); the iPhone CgBI path runs only after
 * stbi_set_unpremultiply_on_load / stbi_convert_iphone_png_to_rgb, which we
 * never call. So they compile to nothing (sizeof: never evaluated, no
 * unused-variable warnings); tests/test_api.c checks that the library holds
 * no call to __assert_fail, abort or exit. */
#define STBI_ASSERT(x) ((void)sizeof(x))
/* stb's own limit stays at its default (2^24) so that stbi_info reports a
 * huge size and the message below can name it; MAX_SIDE is checked before
 * anything is decoded. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#include "third_party/stb_image.h"
#pragma GCC diagnostic pop

#define MAX_SIDE 16384
#define MAX_FILE (256u << 20)

static unsigned char *read_file(const char *path, size_t *len, fm_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        core_fail(err, FM_EINPUT, "%s: %s", path, strerror(errno));
        return NULL;
    }
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= MAX_FILE) {
                core_fail(err, FM_EINPUT, "%s: larger than %u MiB", path, MAX_FILE >> 20);
                break;
            }
            cap = cap ? cap * 2 : 1 << 16;
            unsigned char *p = realloc(buf, cap);
            if (!p) { core_fail(err, FM_EINPUT, "%s: out of memory", path); break; }
            buf = p;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) {
            if (ferror(f)) core_fail(err, FM_EINPUT, "%s: %s", path, strerror(errno));
            else { fclose(f); *len = n; return buf; }
            break;
        }
    }
    fclose(f);
    free(buf);
    return NULL;
}

/* Offset just past the SOI marker, or 0 if d is not a JPEG. stb takes any
 * number of 0xFF before the SOI's D8. */
static size_t jpeg_soi_end(const uint8_t *d, size_t n)
{
    size_t i = 0;
    while (i + 1 < n && d[i] == 0xFF && d[i + 1] == 0xFF) i++;
    return i + 1 < n && d[i] == 0xFF && d[i + 1] == 0xD8 ? i + 2 : 0;
}

static int is_jpeg(const uint8_t *d, size_t n) { return jpeg_soi_end(d, n) != 0; }

/* Does the JPEG end before its end-of-image marker? stb 2.30 decodes a cut
 * file as if the rest were zeros (grey blocks); PIL, and so A1111, refuses
 * it ("image file is truncated"). The walk follows stb's reader: bytes
 * between segments that are not a marker are skipped, and entropy-coded data
 * after an SOS runs to the next marker that is not a stuffed 0xFF00 or a
 * restart; a progressive file has several scans. An EXIF thumbnail (a whole
 * JPEG inside APP1) is skipped with its segment, so its EOI does not count. */
static int jpeg_truncated(const uint8_t *d, size_t n)
{
    size_t i = jpeg_soi_end(d, n);
    while (i + 1 < n) {
        if (d[i] != 0xFF) { i++; continue; }
        while (i + 1 < n && d[i + 1] == 0xFF) i++; /* fill bytes */
        if (i + 1 >= n) break;
        uint8_t m = d[i + 1];
        i += 2;
        if (m == 0xD9) return 0;
        if (m == 0x00 || m == 0x01 || (m >= 0xD0 && m <= 0xD8)) continue;
        if (i + 2 > n) break;
        i += (size_t)d[i] << 8 | d[i + 1];
        if (m == 0xDA)
            while (i + 1 < n && !(d[i] == 0xFF && d[i + 1] != 0x00 && !(d[i + 1] >= 0xD0 && d[i + 1] <= 0xD7)))
                i++;
    }
    return 1;
}

/* stb reads a zero-length IDAT into a buffer it has not allocated yet (NULL
 * plus 0: undefined behaviour). Such chunks carry nothing: drop them.
 * Returns the new length. */
static size_t png_drop_empty_idat(uint8_t *d, size_t n)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n < 8 || memcmp(d, sig, 8)) return n;
    for (size_t i = 8; i + 8 <= n;) {
        size_t len = (size_t)d[i] << 24 | (size_t)d[i + 1] << 16 | (size_t)d[i + 2] << 8 | d[i + 3];
        if (len == 0 && !memcmp(d + i + 4, "IDAT", 4)) {
            size_t cut = n - i < 12 ? n - i : 12; /* the CRC may be cut off */
            memmove(d + i, d + i + cut, n - i - cut);
            n -= cut;
            continue;
        }
        if (i + 12 > n) break;
        if (len > n - i - 12) break;
        i += 12 + len;
    }
    return n;
}

/* The size a PNG's IHDR declares (stb's info call refuses huge PNGs with
 * nothing but "too large"); 0 if this is not a PNG header. */
static int png_header_size(const uint8_t *d, size_t n, long long *w, long long *h)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n < 24 || memcmp(d, sig, 8) || memcmp(d + 12, "IHDR", 4)) return 0;
    *w = (long long)d[16] << 24 | d[17] << 16 | d[18] << 8 | d[19];
    *h = (long long)d[20] << 24 | d[21] << 16 | d[22] << 8 | d[23];
    return 1;
}

/* stb grows its IDAT buffer to what a chunk header claims before reading
 * it, so a 200-byte PNG claiming a 2 GB chunk costs a 2 GB allocation. A
 * chunk whose length runs past the end of the file is refused first (stb
 * would fail on it with "outofdata" anyway). 1 if this is such a PNG. */
static int png_chunk_past_end(const uint8_t *d, size_t n)
{
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (n < 8 || memcmp(d, sig, 8)) return 0;
    for (size_t i = 8; i + 8 <= n;) {
        size_t len = (size_t)d[i] << 24 | (size_t)d[i + 1] << 16 | (size_t)d[i + 2] << 8 | d[i + 3];
        if (len > n - i - 8) return 1;
        if (!memcmp(d + i + 4, "IEND", 4)) return 0;
        i += 12 + len;
    }
    return 0;
}

/* The file decoded to req_comp channels; *file_comp gets the file's own. */
static uint8_t *image_read(const char *path, int *width, int *height, int req_comp, int *file_comp, fm_error *err)
{
    size_t len;
    unsigned char *data = read_file(path, &len, err);
    if (!data) return NULL;
    int w, h, comp;
    uint8_t *rgb = NULL;
    long long pw, ph;
    len = png_drop_empty_idat(data, len);
    if (png_chunk_past_end(data, len)) {
        core_fail(err, FM_EINPUT, "%s: truncated PNG (a chunk runs past the end of the file)", path);
    } else if (len > 0x7fffffff || !stbi_info_from_memory(data, (int)len, &w, &h, &comp)) {
        if (png_header_size(data, len, &pw, &ph) && (pw > MAX_SIDE || ph > MAX_SIDE))
            core_fail(err, FM_EINPUT, "%s: %lldx%lld pixels (at most %d a side)", path, pw, ph, MAX_SIDE);
        else
            core_fail(err, FM_EINPUT, "%s: not a PNG or JPEG image", path);
    } else if (w <= 0 || h <= 0 || w > MAX_SIDE || h > MAX_SIDE) {
        core_fail(err, FM_EINPUT, "%s: %dx%d pixels (at most %d a side)", path, w, h, MAX_SIDE);
    } else if (is_jpeg(data, len) && jpeg_truncated(data, len)) {
        core_fail(err, FM_EINPUT, "%s: truncated JPEG (it ends before its end-of-image marker)", path);
    } else if (is_jpeg(data, len) && len * 8 < (size_t)((w + 7) / 8) * (size_t)((h + 7) / 8)) {
        /* Every 8x8 block costs at least one bit (its DC Huffman code);
         * stb would decode a few hundred bytes into 16384x16384 of zeros. */
        core_fail(err, FM_EINPUT, "%s: truncated JPEG (%dx%d pixels in %zu bytes)", path, w, h, len);
    } else {
        rgb = stbi_load_from_memory(data, (int)len, &w, &h, &comp, req_comp);
        /* stb tries every format in turn: after a JPEG fails, its reason is
         * the PNG reader's "bad png sig". */
        if (!rgb)
            core_fail(err, FM_EINPUT, "%s: cannot decode: %s", path,
                    is_jpeg(data, len) ? "corrupt or truncated JPEG" : stbi_failure_reason());
        else { *width = w; *height = h; *file_comp = comp; }
    }
    free(data);
    return rgb;
}

uint8_t *fm_image_read(const char *path, int *width, int *height, fm_error *err)
{
    core_error_clear(err);
    if (!path || !width || !height) {
        core_fail(err, FM_EUSAGE, "fm_image_read: no path or no size outputs");
        return NULL;
    }
    int comp;
    return image_read(path, width, height, 3, &comp, err);
}

/* A1111's create_binary_mask (processing.py): the alpha of an RGBA image
 * that is not all opaque, rounded at 128; else PIL's convert("L"), whose
 * luminance is (19595 R + 38470 G + 7471 B + 0x8000) >> 16. */
uint8_t *fm_mask_read(const char *path, int *width, int *height, fm_error *err)
{
    core_error_clear(err);
    if (!path || !width || !height) {
        core_fail(err, FM_EUSAGE, "fm_mask_read: no path or no size outputs");
        return NULL;
    }
    int comp = 0;
    uint8_t *rgba = image_read(path, width, height, 4, &comp, err);
    if (!rgba) return NULL;
    size_t n = (size_t)*width * *height;
    int use_alpha = 0;
    for (size_t i = 0; comp == 4 && i < n && !use_alpha; i++) use_alpha = rgba[i * 4 + 3] != 255;
    /* in place: byte i is written after bytes 4i..4i+3 were read */
    for (size_t i = 0; i < n; i++) {
        const uint8_t *q = rgba + i * 4;
        rgba[i] = use_alpha ? (q[3] > 128 ? 255 : 0)
                            : (uint8_t)((q[0] * 19595u + q[1] * 38470u + q[2] * 7471u + 0x8000u) >> 16);
    }
    return rgba;
}
