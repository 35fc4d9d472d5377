"""The built-in dataset: ten classes of drawn shapes and textures, generated from a seed.

Every command without ``--data`` trains and evaluates on it, through the same folder reader as
ImageNet: it is written once as JPEG files in the ``train/<class>/`` and ``val/<class>/``
layout into the cache folder. Each class is one visual concept with its own hue family (a
colour cue a convnet picks up in minutes) under random position, size, rotation, background,
lighting, noise, JPEG quality and image shape (shorter side 256-320, aspect up to 1.5), so
the net has to look past all of that. The object stays inside the central 224×224 of the
256×256 preprocessed image, so every training crop still shows most of it.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import uuid
from pathlib import Path
from typing import Optional, Tuple, Union

import numpy as np
from PIL import Image

from ..files import cache_dir, write_json
from ..progress import SILENT, Reporter
from .images import IMAGE_SIZE
from .loader import cpu_cores

#: Bump when the images change: the cache folder's name carries it, so the change regenerates.
#: Version 2 (2026-12-02): 100 validation images a class instead of 50 (the first 50 are
#: version 1's; the training images are unchanged), so that the binomial noise of the
#: measured accuracy is about 1 point instead of 1.8 (docs/training.md).
VERSION = 2
SEED = 0
TRAIN_PER_CLASS = 250
VAL_PER_CLASS = 100
MARKER = "builtin.json"

#: class name -> what is drawn. Hues are spread around the colour wheel, one per class.
CLASSES = ("bar", "checkerboard", "circle", "cross", "dots", "ring", "square", "star", "stripes", "triangle")
TEXTURES = ("checkerboard", "dots", "stripes")
#: Each class's hue lies within ±HUE_JITTER turns of its own (the classes are 0.1 apart),
#: except in a fraction ANY_HUE of the images, where it is any hue.
HUE_JITTER = 0.05
ANY_HUE = 0.2


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """h in turns, s and v in [0, 1] -> RGB in [0, 255]."""
    i, f = int(h * 6) % 6, (h * 6) % 1
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return 255 * np.array([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i], dtype=np.float32)


def _box(u, v, half_u, half_v):
    """Signed distance to an axis-aligned rectangle (negative inside)."""
    qu, qv = np.abs(u) - half_u, np.abs(v) - half_v
    return np.hypot(np.maximum(qu, 0), np.maximum(qv, 0)) + np.minimum(np.maximum(qu, qv), 0)


def _polygon(u, v, sides: int, apothem: float):
    """Distance-like function of a regular convex polygon (exact inside and along the edges)."""
    angles = 2 * np.pi * (np.arange(sides) + 0.25) / sides
    return np.max([u * float(np.cos(a)) + v * float(np.sin(a)) for a in angles], axis=0) - apothem


def _star(u, v, outer: float, inner: float, points: int = 5):
    angle = np.arctan2(v, u) + np.pi / 2
    wedge = np.abs(((angle * points / (2 * np.pi)) % 1) - 0.5) * 2  # 1 at a tip, 0 between tips
    return np.hypot(u, v) - (inner + (outer - inner) * wedge ** 1.5)


def _shape_distance(name: str, u, v, r: float, rng):
    """Signed distance (in units of the image's shorter side) to the class's shape."""
    if name == "circle":
        return np.hypot(u, v) - r
    if name == "ring":
        return np.abs(np.hypot(u, v) - 0.72 * r) - 0.24 * r
    if name == "square":
        return _box(u, v, 0.8 * r, 0.8 * r)
    if name == "triangle":
        return _polygon(u, v, 3, 0.5 * r * 1.15)
    if name == "cross":
        return np.minimum(_box(u, v, r, 0.28 * r), _box(u, v, 0.28 * r, r))
    if name == "bar":
        return _box(u, v, 1.05 * r, 0.22 * r)
    if name == "star":
        return _star(u, v, 1.1 * r, 0.45 * r)
    # textures fill a disc or a rounded square
    return np.hypot(u, v) - r if rng.random() < 0.5 else _box(u, v, 0.8 * r, 0.8 * r) - 0.1 * r


def _texture(name: str, u, v, period: float):
    """1 where the texture shows its first colour, 0 for the second (soft edges)."""
    if name == "stripes":
        wave = np.sin(2 * np.pi * u / period)
    elif name == "checkerboard":
        wave = np.sin(2 * np.pi * u / period) * np.sin(2 * np.pi * v / period)
    else:  # dots on a square lattice
        du, dv = (u / period) % 1 - 0.5, (v / period) % 1 - 0.5
        wave = 0.32 - np.hypot(du, dv)
    return np.clip(0.5 + wave * 4, 0, 1)


def draw(name: str, rng: np.random.Generator) -> Image.Image:
    """One image of class ``name``."""
    short = int(rng.integers(IMAGE_SIZE, 320 + 1))
    long = int(short * rng.uniform(1.0, 1.5))
    width, height = (long, short) if rng.random() < 0.5 else (short, long)
    # unit coordinates: the central short×short square spans [-0.5, 0.5]
    x = ((np.arange(width, dtype=np.float32) - width / 2) / short)[None, :]  # (1, W)
    y = ((np.arange(height, dtype=np.float32) - height / 2) / short)[:, None]  # (H, 1)

    # background: a low-saturation colour, a gradient and soft blotches
    base = _hsv_to_rgb(rng.random(), rng.uniform(0, 0.35), rng.uniform(0.25, 0.9))
    direction = rng.uniform(0, 2 * np.pi)
    dx, dy = float(np.cos(direction)), float(np.sin(direction))
    blotches = Image.fromarray(rng.normal(0, rng.uniform(0, 18), (6, 6)).astype(np.float32))
    shade = (x * dx + y * dy) * rng.uniform(-80, 80) + np.asarray(blotches.resize((width, height), Image.BICUBIC))
    image = base + shade[..., None]  # (H, W, 3)

    # the object: the class's hue, random placement, size, rotation; drawn in its bounding box
    cx, cy = rng.uniform(-0.12, 0.12), rng.uniform(-0.12, 0.12)
    r = rng.uniform(0.17, 0.28) if name not in TEXTURES else rng.uniform(0.22, 0.33)
    reach = 1.25 * r + 2 / short  # every shape fits in this radius
    rows = slice(max(0, int((cy - reach) * short + height / 2)), int((cy + reach) * short + height / 2) + 1)
    cols = slice(max(0, int((cx - reach) * short + width / 2)), int((cx + reach) * short + width / 2) + 1)
    x, y = x[:, cols] - cx, y[rows] - cy
    theta = rng.uniform(0, 2 * np.pi)
    cos, sin = float(np.cos(theta)), float(np.sin(theta))
    u, v = x * cos + y * sin, y * cos - x * sin  # (h, w): rotated coordinates around the centre
    hue = (CLASSES.index(name) / len(CLASSES) + rng.uniform(-HUE_JITTER, HUE_JITTER)) % 1
    if rng.random() < ANY_HUE:  # colour is a strong cue, but only the shape always tells
        hue = rng.random()
    color = _hsv_to_rgb(hue, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    light = (1 + (u * dx + v * dy) * (0.25 / r))[..., None]  # (h, w, 1)
    if name in TEXTURES:
        dark = rng.random() < 0.5
        second = color * rng.uniform(0.15, 0.4) if dark else 255 - (255 - color) * rng.uniform(0, 0.3)
        pattern = _texture(name, u, v, rng.uniform(0.05, 0.1))[..., None]
        fill = (second + pattern * (color - second)) * light
    else:
        fill = color * light
    coverage = np.clip(0.5 - _shape_distance(name, u, v, r, rng) * short, 0, 1)[..., None]  # 1-pixel soft edge
    window = image[rows, cols]
    window += coverage * (fill - window)

    # lighting and sensor noise
    noise = (rng.random(image.shape, dtype=np.float32) - 0.5) * rng.uniform(6, 24)  # uniform: cheap
    image = image * rng.uniform(0.75, 1.2) + (rng.uniform(-20, 20) + noise)
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))


def _write_one(job: Tuple[str, str, int, int, int]) -> None:
    folder, name, split_id, index, seed = job
    rng = np.random.default_rng([seed, split_id, CLASSES.index(name), index])
    quality = int(rng.integers(75, 96))
    draw(name, rng).save(os.path.join(folder, name, f"{name}_{index:05d}.jpg"), quality=quality)


def generate_builtin(root: Union[str, Path], *, seed: int = SEED, train_per_class: int = TRAIN_PER_CLASS,
                     val_per_class: int = VAL_PER_CLASS, workers: Optional[int] = None,
                     reporter: Reporter = SILENT) -> Path:
    """Write the built-in dataset to ``root`` (a new folder), atomically: everything goes into
    a temporary folder beside it, renamed to ``root`` when complete. A ``root`` that is
    already complete is left alone. Returns ``root``."""
    root = Path(root)
    if (root / MARKER).is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    work = root.parent / f".{root.name}.partial-{uuid.uuid4().hex}"
    work.mkdir()
    try:
        jobs = []
        for split_id, (split, per_class) in enumerate((("train", train_per_class), ("val", val_per_class))):
            for name in CLASSES:
                (work / split / name).mkdir(parents=True)
                jobs += [(str(work / split), name, split_id, index, seed) for index in range(per_class)]
        workers = cpu_cores() if workers is None else workers
        with reporter.bar(len(jobs), "generating the built-in dataset", unit="img") as bar:
            if workers > 1:
                with multiprocessing.Pool(workers) as pool:
                    for _ in pool.imap_unordered(_write_one, jobs, chunksize=16):
                        bar.update()
            else:
                for job in jobs:
                    _write_one(job)
                    bar.update()
        write_json(work / MARKER, {"version": VERSION, "seed": seed, "classes": list(CLASSES),
                                   "train_per_class": train_per_class, "val_per_class": val_per_class})
        try:
            os.rename(work, root)
        except OSError:  # another process finished first (or an incomplete leftover is in the way)
            if not (root / MARKER).is_file():
                shutil.rmtree(root, ignore_errors=True)
                os.rename(work, root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return root


def builtin_root(reporter: Reporter = SILENT) -> Path:
    """The built-in dataset's root in the cache folder, generated on first use (~30 s on 2 cores)."""
    return generate_builtin(cache_dir() / f"builtin-v{VERSION}", seed=SEED, train_per_class=TRAIN_PER_CLASS,
                            val_per_class=VAL_PER_CLASS, reporter=reporter)
