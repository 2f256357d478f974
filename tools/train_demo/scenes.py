"""Synthetic scenes with captions for the fmimage demo model.

A scene is one or two flat-coloured shapes on a flat background. Every scene
is drawn at 4x resolution with PIL and box-filtered down (anti-aliased edges).

Attributes
  shapes     circle, square, triangle, star
  colours    red orange yellow green cyan blue purple pink white black
  background one of the colours (never the shape's colour)
  size       small (radius ~0.15 of the image) or large (~0.29)
  position   centre, left, right, top, bottom and the four corners; a shape
             sits as far towards the named side as its size allows
  two shapes "A above B", "A below B", "A to the left of B", "A to the right of B"

Captions name the shape and colour always, and the background, size and
position only sometimes, so the model learns each attribute separately and
samples the unnamed ones ("a red circle" may be any size, anywhere, on any
background).

Held-out combinations: HELD_OUT lists (shape, colour, background) triples
that never occur in a training scene, in any shape of the scene and whatever
the caption says. The evaluator prompts for exactly these triples.
"""
import math
import random

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle", "star"]

# The palette is also what the evaluator classifies against: keep the colours
# far apart in RGB.
COLOURS = {
    "red": (220, 30, 30),
    "orange": (255, 140, 0),
    "yellow": (250, 225, 40),
    "green": (30, 160, 50),
    "cyan": (40, 205, 225),
    "blue": (35, 60, 215),
    "purple": (135, 45, 180),
    "pink": (250, 150, 200),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOUR_NAMES = list(COLOURS)

SIZES = {"small": (0.13, 0.17), "large": (0.26, 0.31)}

# Unit direction of each named position (x right, y down) from the centre.
POSITIONS = {
    "centre": (0, 0), "left": (-1, 0), "right": (1, 0), "top": (0, -1), "bottom": (0, 1),
    "top left": (-1, -1), "top right": (1, -1), "bottom left": (-1, 1), "bottom right": (1, 1),
}
POSITION_PHRASES = {
    "centre": ["in the centre", "in the middle", "in the center"],
    "left": ["on the left"], "right": ["on the right"],
    "top": ["at the top"], "bottom": ["at the bottom"],
    "top left": ["in the top left corner"], "top right": ["in the top right corner"],
    "bottom left": ["in the bottom left corner"], "bottom right": ["in the bottom right corner"],
}
RELATIONS = {  # relation word -> direction of A relative to B
    "above": (0, -1), "below": (0, 1), "to the left of": (-1, 0), "to the right of": (1, 0),
}

# (shape, colour, background): never in a training scene. 28 triples; every
# shape 7 times, every colour 2-3 times as shape colour and as background.
HELD_OUT = [
    ("circle", "red", "blue"), ("square", "orange", "purple"), ("triangle", "yellow", "black"),
    ("star", "green", "white"), ("circle", "cyan", "red"), ("square", "blue", "yellow"),
    ("triangle", "purple", "green"), ("star", "pink", "blue"), ("circle", "white", "orange"),
    ("square", "black", "pink"), ("triangle", "red", "cyan"), ("star", "orange", "black"),
    ("circle", "yellow", "purple"), ("square", "green", "red"), ("triangle", "cyan", "white"),
    ("star", "blue", "orange"), ("circle", "purple", "yellow"), ("square", "pink", "green"),
    ("triangle", "white", "blue"), ("star", "black", "cyan"), ("circle", "green", "pink"),
    ("square", "red", "white"), ("triangle", "orange", "blue"), ("star", "yellow", "red"),
    ("circle", "blue", "black"), ("square", "cyan", "orange"), ("triangle", "pink", "purple"),
    ("star", "purple", "yellow"),
]
HELD_OUT_SET = set(HELD_OUT)

IMAGE_SIZE = 64
SUPERSAMPLE = 4
MARGIN = 0.03


def shape_polygon(shape, cx, cy, r):
    """Outline of a shape of 'radius' r centred at (cx, cy), in the same units."""
    if shape == "square":
        h = r * 0.86
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    if shape == "triangle":  # pointing up; centroid-ish at the centre of its box
        h = r * 0.95
        return [(cx, cy - h * 1.05), (cx + h * 1.1, cy + h * 0.85), (cx - h * 1.1, cy + h * 0.85)]
    if shape == "star":  # five points, the first straight up
        pts = []
        for k in range(10):
            rad = r * (1.05 if k % 2 == 0 else 0.45)
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a) + r * 0.08))
        return pts
    raise ValueError(shape)


def draw_shape(draw, shape, cx, cy, r, rgb, scale):
    cx, cy, r = cx * scale, cy * scale, r * scale
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=rgb)
    else:
        draw.polygon(shape_polygon(shape, cx, cy, r), fill=rgb)


def render(scene, size=IMAGE_SIZE):
    """scene -> uint8 HxWx3 array."""
    big = size * SUPERSAMPLE
    img = Image.new("RGB", (big, big), scene["bg_rgb"])
    draw = ImageDraw.Draw(img)
    for obj in scene["objects"]:
        draw_shape(draw, obj["shape"], obj["x"], obj["y"], obj["r"], obj["rgb"], big)
    return np.asarray(img.resize((size, size), Image.BOX))


def shape_mask(shape, cx, cy, r, size=IMAGE_SIZE):
    """Float mask (0..1) of one shape: used by the evaluator's template match."""
    big = size * SUPERSAMPLE
    img = Image.new("L", (big, big), 0)
    draw_shape(ImageDraw.Draw(img), shape, cx, cy, r, 255, big)
    return np.asarray(img.resize((size, size), Image.BOX)).astype(np.float32) / 255.0


def jitter_rgb(rng, rgb, amount=8):
    return tuple(int(min(255, max(0, c + rng.randint(-amount, amount)))) for c in rgb)


def place(rng, direction, r):
    """Centre of a shape of radius r pushed towards `direction`, with jitter."""
    reach = 0.5 - r - MARGIN
    x = 0.5 + direction[0] * reach + rng.uniform(-0.03, 0.03)
    y = 0.5 + direction[1] * reach + rng.uniform(-0.03, 0.03)
    lo, hi = r * 0.9, 1 - r * 0.9
    return min(hi, max(lo, x)), min(hi, max(lo, y))


def allowed(objects, bg):
    return all((o["shape"], o["colour"], bg) not in HELD_OUT_SET for o in objects)


def one_shape_scene(rng, shape=None, colour=None, bg=None, size=None, position=None):
    shape = shape or rng.choice(SHAPES)
    colour = colour or rng.choice(COLOUR_NAMES)
    bg = bg or rng.choice([c for c in COLOUR_NAMES if c != colour])
    size = size or rng.choice(list(SIZES))
    position = position or rng.choice(list(POSITIONS))
    r = rng.uniform(*SIZES[size])
    x, y = place(rng, POSITIONS[position], r)
    obj = dict(shape=shape, colour=colour, rgb=jitter_rgb(rng, COLOURS[colour]), x=x, y=y, r=r,
               size=size, position=position)
    return dict(objects=[obj], bg=bg, bg_rgb=jitter_rgb(rng, COLOURS[bg]), relation=None)


def two_shape_scene(rng):
    relation = rng.choice(list(RELATIONS))
    dx, dy = RELATIONS[relation]
    c1 = rng.choice(COLOUR_NAMES)
    c2 = rng.choice(COLOUR_NAMES)
    bg = rng.choice([c for c in COLOUR_NAMES if c not in (c1, c2)])
    objs = []
    for colour, sign in ((c1, 1), (c2, -1)):
        r = rng.uniform(0.14, 0.19)
        d = 0.5 - r - MARGIN
        # A and B sit on opposite sides along the relation axis; the other axis jitters.
        along = 0.5 + sign * d
        across = 0.5 + rng.uniform(-0.12, 0.12)
        x, y = (along, across) if dx else (across, along)
        if dx < 0 or dy < 0:  # A goes left/up
            x, y = (1 - x, y) if dx else (x, 1 - y)
        objs.append(dict(shape=rng.choice(SHAPES), colour=colour, rgb=jitter_rgb(rng, COLOURS[colour]),
                         x=x, y=y, r=r, size=None, position=None))
    return dict(objects=objs, bg=bg, bg_rgb=jitter_rgb(rng, COLOURS[bg]), relation=relation)


def random_scene(rng, two_shape_prob=0.25):
    """A training scene (never a held-out combination)."""
    while True:
        scene = two_shape_scene(rng) if rng.random() < two_shape_prob else one_shape_scene(rng)
        if allowed(scene["objects"], scene["bg"]):
            return scene


def noun_phrase(obj, with_size):
    words = []
    if with_size and obj["size"]:
        words.append(obj["size"])
    words += [obj["colour"], obj["shape"]]
    return article(words[0]) + " " + " ".join(words)


def article(word):
    return "an" if word[0] in "aeiou" else "a"


def caption(rng, scene, full=False):
    """A caption for a scene; `full` names every attribute in the base template."""
    bg = scene["bg"]
    with_bg = full or rng.random() < 0.8
    if scene["relation"]:
        a, b = scene["objects"]
        text = f"{noun_phrase(a, False)} {scene['relation']} {noun_phrase(b, False)}"
    else:
        obj = scene["objects"][0]
        with_size = full or rng.random() < 0.5
        with_pos = full or rng.random() < 0.5
        text = noun_phrase(obj, with_size)
        if with_pos:
            text += " " + rng.choice(POSITION_PHRASES[obj["position"]])
    if with_bg:
        if not full and rng.random() < 0.2:
            return f"{article(bg)} {bg} background with {text}"
        text += f" on {article(bg)} {bg} background"
    return text


def full_caption(shape, colour, bg, size=None, position=None):
    first = size or colour
    text = article(first) + " " + (size + " " if size else "") + f"{colour} {shape}"
    if position:
        text += " " + POSITION_PHRASES[position][0]
    return text + f" on {article(bg)} {bg} background"


def vocabulary():
    words = set("a an on background with".split())
    words |= set(SHAPES) | set(COLOUR_NAMES) | set(SIZES)
    for phrases in POSITION_PHRASES.values():
        for p in phrases:
            words |= set(p.split())
    for rel in RELATIONS:
        words |= set(rel.split())
    return sorted(words)


def heldout_prompts():
    """The evaluation prompts: every held-out triple in five phrasings (140)."""
    out = []
    for shape, colour, bg in HELD_OUT:
        out.append(dict(shape=shape, colour=colour, bg=bg, prompt=full_caption(shape, colour, bg)))
        out.append(dict(shape=shape, colour=colour, bg=bg, prompt=full_caption(shape, colour, bg, "large")))
        out.append(dict(shape=shape, colour=colour, bg=bg, prompt=full_caption(shape, colour, bg, "small")))
        out.append(dict(shape=shape, colour=colour, bg=bg,
                        prompt=full_caption(shape, colour, bg, "large", "centre")))
        out.append(dict(shape=shape, colour=colour, bg=bg, prompt=f"{article(colour)} {colour} {shape} on the left on a {bg} background"))
    return out


def batch(rng, n, size=IMAGE_SIZE):
    """n random training scenes: (uint8 [n,size,size,3], list of captions)."""
    imgs, caps = [], []
    for _ in range(n):
        s = random_scene(rng)
        imgs.append(render(s, size))
        caps.append(caption(rng, s))
    return np.stack(imgs), caps


if __name__ == "__main__":
    rng = random.Random(0)
    imgs, caps = batch(rng, 16)
    for c in caps:
        print(c)
    grid = imgs.reshape(4, 4, 64, 64, 3).transpose(0, 2, 1, 3, 4).reshape(256, 256, 3)
    Image.fromarray(grid).resize((512, 512), Image.NEAREST).save("/tmp/scenes.png")
    print(len(HELD_OUT), "held out;", vocabulary())
