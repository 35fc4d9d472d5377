"""A small real ten-class dataset in ImageNet's folder layout: scikit-learn's handwritten
digits (UCI's optical digits, 1,797 scans of 8×8), written as ROOT/train/<digit>/*.png and
ROOT/val/<digit>/*.png. It is the case behind the stall check (docs/trainability.md): a
new user's first `alexnet train --data ROOT` on a data set a thousand times smaller than
ImageNet.

    pip install scikit-learn     # for this tool only; the package does not need it
    python tools/digits_folders.py /tmp/digits
    alexnet train --data /tmp/digits --epochs 3 --devices cpu,cpu -q

The images are shuffled with a fixed seed; the first --train go to train/, the next --val to
val/ (default 1,408 and 300). Each is upscaled to 64×64 (bilinear) in grey on all three
channels; the training pipeline then resizes it to 256 like any photograph.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def write_digits(root: Path, train: int, val: int, seed: int = 0) -> None:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("this tool needs scikit-learn: pip install scikit-learn")
    digits = load_digits()
    if train + val > len(digits.images):
        sys.exit(f"--train {train} + --val {val} is more than the {len(digits.images)} images there are")
    order = np.random.default_rng(seed).permutation(len(digits.images))
    if root.exists() and any(root.iterdir()):
        sys.exit(f"{root}: exists and is not empty")
    for split, chosen in (("train", order[:train]), ("val", order[train:train + val])):
        for index in chosen:
            label = int(digits.target[index])
            folder = root / split / str(label)
            folder.mkdir(parents=True, exist_ok=True)
            grey = (digits.images[index] * (255 / 16)).astype(np.uint8)
            image = Image.fromarray(grey).resize((64, 64), Image.BILINEAR).convert("RGB")
            image.save(folder / f"{index:04d}.png")
    print(f"{root}: {train} training and {val} validation images in 10 classes")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--train", type=int, default=1408)
    parser.add_argument("--val", type=int, default=300)
    args = parser.parse_args()
    write_digits(args.root, args.train, args.val)


if __name__ == "__main__":
    main()
