/* PNG output: 8-bit RGB, the A1111 infotext in an uncompressed iTXt chunk
 * "parameters", and nothing time-dependent, so one job always gives the same
 * bytes. */
#include "core/core.h"

#include <errno.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct png_err_ctx {
    jmp_buf jb;
    char msg[200];
};

static void on_png_error(png_structp png, png_const_charp msg)
{
    struct png_err_ctx *ctx = png_get_error_ptr(png);
    snprintf(ctx->msg, sizeof ctx->msg, "%s", msg);
    longjmp(ctx->jb, 1);
}

static void on_png_warning(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

/* The png_* calls live in their own function so nothing the longjmp skips
 * over needs to survive it (volatile rules for setjmp). */
static int write_png_stream(FILE *f, const uint8_t *rgb, int width, int height,
                            const char *parameters, struct png_err_ctx *ctx)
{
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, ctx, on_png_error, on_png_warning);
    if (!png) { snprintf(ctx->msg, sizeof ctx->msg, "out of memory"); return -1; }
    png_infop info = png_create_info_struct(png);
    if (!info || setjmp(ctx->jb)) {
        if (!ctx->msg[0]) snprintf(ctx->msg, sizeof ctx->msg, "out of memory");
        png_destroy_write_struct(&png, &info);
        return -1;
    }
    png_init_io(png, f);
    png_set_IHDR(png, info, (png_uint_32)width, (png_uint_32)height, 8, PNG_COLOR_TYPE_RGB,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_text text;
    memset(&text, 0, sizeof text);
    if (parameters) {
        text.compression = PNG_ITXT_COMPRESSION_NONE;
        text.key = "parameters";
        text.text = (char *)parameters;
        text.itxt_length = strlen(parameters);
        text.lang = "";
        text.lang_key = "";
        png_set_text(png, info, &text, 1);
    }
    png_write_info(png, info);
    for (int y = 0; y < height; y++)
        png_write_row(png, rgb + (size_t)y * width * 3);
    png_write_end(png, info);
    png_destroy_write_struct(&png, &info);
    return 0;
}

int fm_png_write(const char *path, const uint8_t *rgb, int width, int height,
                 const char *parameters, fm_error *err)
{
    core_error_clear(err);
    if (!path || !rgb) return core_fail(err, FM_EUSAGE, "fm_png_write: no path or no image");
    if (width <= 0 || height <= 0)
        return core_fail(err, FM_EINPUT, "%s: empty image", path);
    FILE *f = fopen(path, "wb");
    if (!f)
        return core_fail(err, FM_EINPUT, "%s: %s", path, strerror(errno));
    struct png_err_ctx ctx = {.msg = ""};
    int rc = write_png_stream(f, rgb, width, height, parameters, &ctx);
    int write_errno = ferror(f) ? errno : 0;
    if (fflush(f) != 0 && !write_errno) write_errno = errno ? errno : EIO;
    if (fsync(fileno(f)) != 0 && !write_errno && errno != EINVAL) write_errno = errno;
    if (fclose(f) != 0 && !write_errno) write_errno = errno ? errno : EIO;
    if (rc)
        return core_fail(err, FM_EINPUT, "%s: %s", path, write_errno ? strerror(write_errno) : ctx.msg);
    if (write_errno)
        return core_fail(err, FM_EINPUT, "%s: %s", path, strerror(write_errno));
    return 0;
}
