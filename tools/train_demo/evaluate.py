"""Prompt adherence of the demo model on the held-out combinations.

  /usr/bin/python3 tools/train_demo/evaluate.py [--model PATH] [--images DIR]
        [--grid PNG] [--from-pngs DIR]

Generates one image per prompt of scenes.heldout_prompts() (140 prompts: the
28 held-out shape/colour/background triples, five phrasings each; never seen
in training) with the PyTorch forward of the shipped weights and the model's
default sampler settings, then classifies each image:

  background colour  median of the 2-pixel border -> nearest palette colour
  shape colour       median of the pixels far (> 80 in RGB) from the
                     background, 1-pixel eroded -> nearest palette colour
  shape class        fill ratio (area / bounding box) and the best IoU of the
                     mask against each shape drawn into the same bounding box

An image adheres when all three match the prompt. --from-pngs DIR classifies
DIR/NNN.png instead (e.g. the C pipeline's outputs for the same prompts and
seeds, seed = prompt index).
"""
import argparse
import os
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import scenes  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PALETTE = np.array([scenes.COLOURS[c] for c in scenes.COLOUR_NAMES], dtype=np.float32)


def nearest_colour(rgb):
    return scenes.COLOUR_NAMES[int(np.argmin(((PALETTE - rgb) ** 2).sum(1)))]


def unit_extent(shape):
    """Bounding box of a shape of radius 1 centred at 0: (x0, y0, x1, y1)."""
    if shape == "circle":
        return -1.0, -1.0, 1.0, 1.0
    p = np.array(scenes.shape_polygon(shape, 0.0, 0.0, 1.0))
    return p[:, 0].min(), p[:, 1].min(), p[:, 0].max(), p[:, 1].max()


EXTENTS = {s: unit_extent(s) for s in scenes.SHAPES}


def erode(mask):
    m = mask.copy()
    m[1:] &= mask[:-1]
    m[:-1] &= mask[1:]
    m[:, 1:] &= mask[:, :-1]
    m[:, :-1] &= mask[:, 1:]
    return m


def classify(img):
    """uint8 HxWx3 -> dict(bg, colour, shape, fill, iou, area, cx, cy)."""
    a = img.astype(np.float32)
    n = a.shape[0]
    border = np.concatenate([a[:2].reshape(-1, 3), a[-2:].reshape(-1, 3),
                             a[:, :2].reshape(-1, 3), a[:, -2:].reshape(-1, 3)])
    bg_rgb = np.median(border, axis=0)
    out = dict(bg=nearest_colour(bg_rgb), colour=None, shape=None, fill=0.0, iou=0.0, area=0)
    mask = np.sqrt(((a - bg_rgb) ** 2).sum(-1)) > 80
    area = int(mask.sum())
    out["area"] = area
    if area < 10:
        return out
    core = erode(mask)
    px = a[core] if core.sum() >= 4 else a[mask]
    out["colour"] = nearest_colour(np.median(px, axis=0))
    ys, xs = np.nonzero(mask)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    out["fill"] = area / float((x1 - x0) * (y1 - y0))
    out["cx"], out["cy"] = xs.mean() / n, ys.mean() / n
    best = (-1.0, None)
    for shape, (ux0, uy0, ux1, uy1) in EXTENTS.items():
        # radius and centre that put this shape exactly into the mask's box
        r = ((x1 - x0) / (ux1 - ux0) + (y1 - y0) / (uy1 - uy0)) / 2 / n
        cx = x0 / n - ux0 * r
        cy = y0 / n - uy0 * r
        tmpl = scenes.shape_mask(shape, cx, cy, r, n) > 0.5
        iou = (tmpl & mask).sum() / float((tmpl | mask).sum())
        if iou > best[0]:
            best = (iou, shape)
    out["iou"], out["shape"] = best
    return out


def score(items, results):
    ok = dict(bg=0, colour=0, shape=0, all=0)
    for it, r in zip(items, results):
        good = dict(bg=r["bg"] == it["bg"], colour=r["colour"] == it["colour"], shape=r["shape"] == it["shape"])
        for k, v in good.items():
            ok[k] += v
        ok["all"] += all(good.values())
        r["ok"] = all(good.values())
    return {k: v / len(items) for k, v in ok.items()}


def grid(images, cols, path, scale=2):
    n = len(images)
    rows = (n + cols - 1) // cols
    h, w = images[0].shape[:2]
    g = np.full((rows * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        g[r * (h + 2) + 1:r * (h + 2) + 1 + h, c * (w + 2) + 1:c * (w + 2) + 1 + w] = im
    Image.fromarray(g).resize((g.shape[1] * scale, g.shape[0] * scale), Image.NEAREST).save(path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=os.path.join(ROOT, "assets", "demo", "fmimage-demo.safetensors"))
    p.add_argument("--images", help="write every image as DIR/NNN.png")
    p.add_argument("--grid", help="write a grid of all images")
    p.add_argument("--from-pngs", help="classify DIR/NNN.png instead of generating")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--every", type=int, default=1, help="only every Nth prompt (quick checks)")
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--list", action="store_true", help="print the prompts (index = seed) and exit")
    args = p.parse_args()
    items = scenes.heldout_prompts()
    items = items[::args.every]
    if args.limit:
        items = items[:args.limit]
    if args.list:
        for i, it in enumerate(items):
            print(f"{i}\t{it['prompt']}")
        return
    images, per_image = [], None
    if args.from_pngs:
        images = [np.asarray(Image.open(os.path.join(args.from_pngs, f"{i:03d}.png")).convert("RGB"))
                  for i in range(len(items))]
    else:
        import torch
        import sampling
        torch.set_num_threads(args.threads)
        pipe = sampling.Pipeline(args.model)
        d = pipe.cfg.get("defaults", {})
        t0 = time.time()
        for i in range(0, len(items), args.batch):
            chunk = items[i:i + args.batch]
            x, _, _ = pipe.sample([it["prompt"] for it in chunk], list(range(i, i + len(chunk))),
                                  steps=d.get("steps", 20), cfg=d.get("cfg", 5.0),
                                  sampler=d.get("sampler", "dpmpp_2m"), scheduler=d.get("scheduler", "karras"))
            images += list(pipe.decode(x)[0])
        per_image = (time.time() - t0) / len(items)
        if args.images:
            os.makedirs(args.images, exist_ok=True)
            for i, im in enumerate(images):
                Image.fromarray(im).save(os.path.join(args.images, f"{i:03d}.png"))
    results = [classify(im) for im in images]
    rates = score(items, results)
    for i, (it, r) in enumerate(zip(items, results)):
        if not r["ok"]:
            print(f"  miss {i:3d} '{it['prompt']}': got bg={r['bg']} colour={r['colour']} shape={r['shape']} "
                  f"(fill {r['fill']:.2f}, iou {r['iou']:.2f}, area {r['area']})")
    print(f"held-out prompts: {len(items)}")
    print(f"background colour {rates['bg']:.1%}, shape colour {rates['colour']:.1%}, "
          f"shape class {rates['shape']:.1%}")
    print(f"ADHERENCE {rates['all']:.1%}")
    if per_image is not None:
        print(f"PyTorch generation time per image: {per_image:.3f} s (batch {args.batch}, {args.threads} threads)")
    if args.grid:
        grid(images, 10, args.grid)


if __name__ == "__main__":
    main()
