/* mask: the 8-bit image steps of A1111's img2img inpainting (issue 18),
 * each computed as the library A1111 calls computes it, so the results are
 * equal byte for byte: PIL's resize (Resample.c, fixed point), OpenCV's
 * bit-exact 8-bit GaussianBlur (the mask blur), PIL's box-blur Gaussian,
 * paste with a mask and alpha_composite (masking.fill, apply_overlay), and
 * masking.py's crop region. Images are interleaved 8-bit, `ch` channels.
 * Not installed; tests/test_inpaint.c compares each with
 * tools/ref/inpaint_ref.py. */
#ifndef FM_DF_MASK_H
#define FM_DF_MASK_H

#include <stdint.h>

typedef enum { DF_FILTER_LANCZOS, DF_FILTER_BICUBIC } df_filter;

/* PIL Image.resize(out_w, out_h, filter) of an 8-bit image with ch
 * channels (1 = "L", 3 = "RGB"). 0, or -1 when out of memory. */
int df_pil_resize(uint8_t *out, int out_w, int out_h, const uint8_t *in, int in_w, int in_h, int ch,
                  df_filter filter);

/* A1111's images.resize_image for resize_mode 0 (just resize), 1 (crop and
 * resize) and 2 (resize and fill), Lanczos (no upscaler). The result has
 * ch channels; the uncovered border of mode 1 is black (A1111 pastes onto
 * Image.new). 0 or -1 (memory). */
int df_resize_image(int mode, uint8_t *out, int w, int h, const uint8_t *in, int in_w, int in_h, int ch);

/* A1111's mask blur: cv2.GaussianBlur(mask, (k, 1), blur) then
 * (1, k), k = 2 * int(2.5 * blur + 0.5) + 1, in place. 0 or -1. */
int df_mask_blur(uint8_t *mask, int w, int h, int blur);

/* masking.get_crop_region_v2: the box (x1, y1, x2, y2) of the non-zero
 * pixels grown by pad and clipped; 0 when the mask is all zero. */
int df_mask_crop_region(const uint8_t *mask, int w, int h, int pad, int box[4]);

/* masking.expand_crop_region: box grown to the processing size's ratio. */
void df_expand_crop_region(int box[4], int proc_w, int proc_h, int image_w, int image_h);

/* The overlay A1111 pastes back: RGBA (not premultiplied) of rgb where
 * the overlay mask is black: Image.new('RGBa').paste(rgb, mask=invert(m))
 * then .convert('RGBA'). */
void df_overlay_make(uint8_t *rgba, const uint8_t *rgb, const uint8_t *overlay_mask, int w, int h);

/* PIL Image.alpha_composite: dst (RGBA, w x h) = src over dst. */
void df_alpha_composite(uint8_t *dst, const uint8_t *src, int w, int h);

/* masking.fill(image, mask): the masked area of rgb filled with blurred
 * colours from around it, in place. 0 or -1 (memory). */
int df_mask_fill(uint8_t *rgb, const uint8_t *mask, int w, int h);

/* PIL ImageFilter.GaussianBlur(radius) of an RGBA image, in place. */
int df_pil_gaussian_blur4(uint8_t *rgba, int w, int h, float radius);

#endif
