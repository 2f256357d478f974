/* The server's image bytes in memory: a PNG encoded from RGB, and a
 * request's image decoded, through the library's path-taking writer and
 * readers on a memfd, so no file appears anywhere. Its own file so the
 * ComfyUI fuzz harness links it without the worker. */
#include "internal.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "core/core.h"

/* Bytes written through a path go to a memfd: the library's writers and
 * readers take paths, and no file appears anywhere. */
static int mem_path(char *path, size_t n, int *fd)
{
    *fd = memfd_create("fmimage-serve", MFD_CLOEXEC);
    if (*fd < 0) return -1;
    snprintf(path, n, "/proc/self/fd/%d", *fd);
    return 0;
}

static uint8_t *mem_read(int fd, size_t *n)
{
    struct stat sb;
    if (fstat(fd, &sb)) return NULL;
    uint8_t *b = malloc((size_t)sb.st_size + 1);
    if (!b || pread(fd, b, (size_t)sb.st_size, 0) != sb.st_size) { free(b); return NULL; }
    *n = (size_t)sb.st_size;
    return b;
}

uint8_t *srv_png_encode(const uint8_t *rgb, int w, int h, const char *parameters, size_t *n, fm_error *err)
{
    char path[64];
    int fd;
    uint8_t *png = NULL;
    if (mem_path(path, sizeof path, &fd)) {
        core_fail(err, FM_EINPUT, "cannot write the PNG: %s", strerror(errno));
        return NULL;
    }
    if (!fm_png_write(path, rgb, w, h, parameters, err) && !(png = mem_read(fd, n)))
        core_fail(err, FM_EINPUT, "cannot read the PNG back");
    close(fd);
    return png;
}

/* A request's image bytes (PNG, JPEG, ...) read by the library's reader
 * through a memfd: fm_image_read for init_images, fm_mask_read (A1111's
 * mask conversion) for the mask. Errors name the field, not the memfd. */
uint8_t *srv_image_decode(const char *field, const uint8_t *bytes, size_t len, int as_mask, int *w, int *h,
                          fm_error *err)
{
    char path[64];
    int fd;
    if (mem_path(path, sizeof path, &fd)) { core_fail(err, FM_EINPUT, "%s: %s", field, strerror(errno)); return NULL; }
    uint8_t *img = NULL;
    if (write(fd, bytes, len) == (ssize_t)len)
        img = as_mask ? fm_mask_read(path, w, h, err) : fm_image_read(path, w, h, err);
    else core_fail(err, FM_EINPUT, "%s: %s", field, strerror(errno));
    close(fd);
    if (!img && err) {
        const char *why = strstr(err->msg, ": ");
        char m[sizeof err->msg];
        snprintf(m, sizeof m, "%s%s", field, why ? why : ": not an image");
        snprintf(err->msg, sizeof err->msg, "%s", m);
    }
    return img;
}
