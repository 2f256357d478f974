#!/usr/bin/python3
"""Reference data for fmimage's inpainting steps (tests/test_inpaint.c).

Each step is done as A1111 (AUTOMATIC1111/stable-diffusion-webui@0cb7262c,
modules/processing.py StableDiffusionProcessingImg2Img.init, apply_overlay,
uncrop; modules/masking.py; modules/images.resize_image) does it: the lines
below are A1111's calls into PIL and OpenCV, which do all the arithmetic
(Debian bookworm: Pillow 9.4.0, OpenCV 4.6.0; A1111 pins Pillow 9.5.0).
Writes tests/data/inpaint/pure.safetensors (every tensor uint8 values as
float32). Run: /usr/bin/python3 tools/ref/inpaint_ref.py
"""
import os
import numpy as np
import cv2
from PIL import Image, ImageFilter, ImageOps
from safetensors.numpy import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data", "inpaint", "pure.safetensors")
rng = np.random.default_rng(18)


def smooth_rgb(w, h):
    """A picture with edges and gradients (a pure-noise image tests little)."""
    y, x = np.mgrid[0:h, 0:w]
    r = (x * 255 // max(w - 1, 1))
    g = (y * 255 // max(h - 1, 1))
    b = ((x // 5 + y // 4) % 2) * 200 + 20
    img = np.stack([r, g, b], -1).astype(np.int32) + rng.integers(-20, 21, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def blob_mask(w, h):
    y, x = np.mgrid[0:h, 0:w]
    m = ((x - w * 0.6) ** 2 / (w * 0.2) ** 2 + (y - h * 0.4) ** 2 / (h * 0.25) ** 2) < 1
    return (m * 255).astype(np.uint8)


# images.resize_image (no upscaler: Lanczos), modes 0, 1, 2
def resize_image(resize_mode, im, width, height):
    def resize(im, w, h):
        return im.resize((w, h), resample=Image.LANCZOS)
    if resize_mode == 0:
        return resize(im, width, height)
    ratio = width / height
    src_ratio = im.width / im.height
    if resize_mode == 1:
        src_w = width if ratio > src_ratio else im.width * height // im.height
        src_h = height if ratio <= src_ratio else im.height * width // im.width
        resized = resize(im, src_w, src_h)
        res = Image.new("RGB", (width, height))
        res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
        return res
    src_w = width if ratio < src_ratio else im.width * height // im.height
    src_h = height if ratio >= src_ratio else im.height * width // im.width
    resized = resize(im, src_w, src_h)
    res = Image.new("RGB", (width, height))
    res.paste(resized, box=(width // 2 - src_w // 2, height // 2 - src_h // 2))
    if ratio < src_ratio:
        fill_height = height // 2 - src_h // 2
        if fill_height > 0:
            res.paste(resized.resize((width, fill_height), box=(0, 0, width, 0)), box=(0, 0))
            res.paste(resized.resize((width, fill_height), box=(0, resized.height, width, resized.height)), box=(0, fill_height + src_h))
    elif ratio > src_ratio:
        fill_width = width // 2 - src_w // 2
        if fill_width > 0:
            res.paste(resized.resize((fill_width, height), box=(0, 0, 0, height)), box=(0, 0))
            res.paste(resized.resize((fill_width, height), box=(resized.width, 0, resized.width, height)), box=(fill_width + src_w, 0))
    return res


def mask_blur(np_mask, blur):  # processing.py, mask_blur_x == mask_blur_y
    kernel_size = 2 * int(2.5 * blur + 0.5) + 1
    np_mask = cv2.GaussianBlur(np_mask, (kernel_size, 1), blur)
    np_mask = cv2.GaussianBlur(np_mask, (1, kernel_size), blur)
    return np_mask


def get_crop_region_v2(mask, pad=0):
    if box := mask.getbbox():
        x1, y1, x2, y2 = box
        return (max(x1 - pad, 0), max(y1 - pad, 0), min(x2 + pad, mask.size[0]), min(y2 + pad, mask.size[1])) if pad else box


def expand_crop_region(crop_region, processing_width, processing_height, image_width, image_height):
    x1, y1, x2, y2 = crop_region
    ratio_crop_region = (x2 - x1) / (y2 - y1)
    ratio_processing = processing_width / processing_height
    if ratio_crop_region > ratio_processing:
        desired_height = (x2 - x1) / ratio_processing
        desired_height_diff = int(desired_height - (y2 - y1))
        y1 -= desired_height_diff // 2
        y2 += desired_height_diff - desired_height_diff // 2
        if y2 >= image_height:
            diff = y2 - image_height
            y2 -= diff
            y1 -= diff
        if y1 < 0:
            y2 -= y1
            y1 -= y1
        if y2 >= image_height:
            y2 = image_height
    else:
        desired_width = (y2 - y1) * ratio_processing
        desired_width_diff = int(desired_width - (x2 - x1))
        x1 -= desired_width_diff // 2
        x2 += desired_width_diff - desired_width_diff // 2
        if x2 >= image_width:
            diff = x2 - image_width
            x2 -= diff
            x1 -= diff
        if x1 < 0:
            x2 -= x1
            x1 -= x1
        if x2 >= image_width:
            x2 = image_width
    return x1, y1, x2, y2


def fill(image, mask):  # masking.fill
    image_mod = Image.new('RGBA', (image.width, image.height))
    image_masked = Image.new('RGBa', (image.width, image.height))
    image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask.convert('L')))
    image_masked = image_masked.convert('RGBa')
    for radius, repeats in [(256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)]:
        blurred = image_masked.filter(ImageFilter.GaussianBlur(radius)).convert('RGBA')
        for _ in range(repeats):
            image_mod.alpha_composite(blurred)
    return image_mod.convert("RGB")


def overlay(image, mask_for_overlay):  # init(): the overlay image
    image_masked = Image.new('RGBa', (image.width, image.height))
    image_masked.paste(image.convert("RGBA").convert("RGBa"), mask=ImageOps.invert(mask_for_overlay.convert('L')))
    return image_masked.convert('RGBA')


def f32(a):
    return np.ascontiguousarray(np.asarray(a, dtype=np.uint8).astype(np.float32))


t = {}
W, H = 37, 29
img = smooth_rgb(W, H)
mask = blob_mask(W, H)
t["image"] = f32(img)
t["mask"] = f32(mask)
pim, pmask = Image.fromarray(img), Image.fromarray(mask)
for (w, h) in [(24, 40), (80, 64), (37, 29), (1, 1), (5, 61)]:
    t[f"lanczos_rgb_{w}x{h}"] = f32(pim.resize((w, h), resample=Image.LANCZOS))
    t[f"lanczos_l_{w}x{h}"] = f32(pmask.resize((w, h), resample=Image.LANCZOS))
for (w, h) in [(9, 7), (10, 8), (64, 48)]:
    # the latent mask: init_mask.convert('RGB').resize(latent size) (PIL's default: bicubic), channel 0
    t[f"bicubic_l_{w}x{h}"] = f32(np.array(pmask.convert('RGB').resize((w, h)))[:, :, 0])
for mode in (0, 1, 2):
    for (w, h) in [(48, 32), (32, 48), (40, 40)]:
        t[f"resize_image{mode}_{w}x{h}"] = f32(resize_image(mode, pim, w, h))
for blur in (1, 4, 11):
    t[f"blur{blur}"] = f32(mask_blur(mask.copy(), blur))
small = np.array([[0, 255, 0, 255, 255], [255, 0, 0, 0, 255], [0, 0, 255, 0, 0]], dtype=np.uint8)
t["small"] = f32(small)
t["small_blur4"] = f32(mask_blur(small.copy(), 4))
t["one_blur4"] = f32(mask_blur(np.array([[255]], dtype=np.uint8), 4))
# crop regions: (pad, proc_w, proc_h) -> crop and expanded box
boxes = []
blurred = Image.fromarray(mask_blur(mask.copy(), 4))
for m in (pmask, blurred):
    for pad in (0, 3, 32):
        for (pw, ph) in [(64, 64), (96, 32), (32, 96)]:
            c = get_crop_region_v2(m, pad)
            e = expand_crop_region(c, pw, ph, m.width, m.height)
            boxes.append([pad, pw, ph, *c, *e])
t["crop_boxes"] = np.array(boxes, dtype=np.float32)
mo = np.clip(np.array(blurred).astype(np.float32) * 2, 0, 255).astype(np.uint8)
t["overlay_mask"] = f32(mo)
ov = overlay(pim, Image.fromarray(mo))
t["overlay"] = f32(ov)
gen = Image.fromarray(smooth_rgb(W, H)[::-1].copy())  # a "generated" image
t["generated"] = f32(gen)
comp = gen.convert('RGBA')
comp.alpha_composite(ov)
t["composite"] = f32(comp.convert('RGB'))
t["fill"] = f32(fill(pim, blurred))
t["fill_hard"] = f32(fill(pim, pmask))
for r in (2, 4, 16):
    t[f"gauss{r}"] = f32(np.array(Image.frombytes('RGBa', ov.size, ov.tobytes()).filter(ImageFilter.GaussianBlur(r))))
save_file(t, OUT)
print("wrote", OUT, len(t), "tensors")
