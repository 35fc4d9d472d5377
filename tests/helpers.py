"""Helpers shared by the tests (``from helpers import ...``): tiny image sets, GPU markers,
and the tools/ scripts as modules. Fixtures live in conftest.py."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from alexnet.cli import main
from alexnet.train.config import TrainConfig
from alexnet.train.optim import paper_sgd

REPO = Path(__file__).resolve().parents[1]


def recipe_sgd(model, recipe):
    """The paper's SGD for ``recipe``'s groups and rates at its start, as a run's set-up makes it
    (train.session.build)."""
    return paper_sgd(model, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay,
                     decay_biases=recipe.decay_biases, bias_lr_mult=recipe.bias_lr_mult,
                     anneal_biases=recipe.anneal_biases, layer_mults=recipe.layer_lr_mults(0),
                     own_rate=sorted({layer for _, layer, _ in recipe.layer_lr}))


def cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def needs_gpus(n: int):
    return pytest.mark.skipif(cuda_count() < n, reason=f"needs {n} CUDA device(s); {cuda_count()} visible")


def load_tool(name: str):
    """A script in tools/ (not a package) as a module, loaded once."""
    if name not in sys.modules:
        path = REPO / "tools" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules[name]


def smooth_image(width, height, seed):
    """Smooth random RGB content (survives JPEG well) as a uint8 (H, W, 3) array."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC))


def write_image(path, width=300, height=260, seed=0, fmt="JPEG", mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(smooth_image(width, height, seed))
    if mode != "RGB":
        image = image.convert(mode)
    image.save(path, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path


#: (width, height) of the tiny set's images: landscape, portrait, square, already 256.
SIZES = [(300, 260), (260, 340), (256, 256), (410, 290)]


def make_folder_dataset(root, classes=("cat", "dog", "eel"), train=4, val=2):
    """root/train/<class>/img<i>.jpg and root/val/..., every image different, some PNG."""
    seed = 0
    for split, count in (("train", train), ("val", val)):
        for name in classes:
            for i in range(count):
                width, height = SIZES[(seed + i) % len(SIZES)]
                fmt = "PNG" if seed % 5 == 4 else "JPEG"
                write_image(root / split / name / f"img{i}.{'png' if fmt == 'PNG' else 'jpg'}", width, height, seed, fmt)
                seed += 1
    return root


def spatial_norm_by_loops(a, size=5, scale=1e-3, power=0.75):
    """The authors' cnorm2 (layers-145.cfg: type=rnorm, size 5, scale 0.001, pow 0.75; FACTS
    §6b), position by position: b = a / (1 + (scale/size²)·Σ a²) ** pow over the size x size
    window from -size//2 to +size//2 around (i, j) in the same map, cut off at the edges."""
    n, c, h, w = a.shape
    out = torch.empty_like(a)
    half = size // 2
    for i in range(h):
        for j in range(w):
            window = a[:, :, max(0, i - half):min(h, i - half + size), max(0, j - half):min(w, j - half + size)]
            out[:, :, i, j] = a[:, :, i, j] * (1 + scale / size**2 * window.pow(2).sum(dim=(2, 3))) ** -power
    return out


#: How the tiny runs of the training tests run: on the CPU in this process, a metrics line per
#: step, no ten-crop evaluation.
TINY_RUNTIME = dict(devices="cpu", workers=0, log_every=1, ten_crop=False)


def tiny_config(tiny, out, **changes):
    """The built-in recipe, one epoch of batch 4 on the tiny set ``tiny``, into ``out``, run as
    ``TINY_RUNTIME`` says; ``changes`` by name (any setting of ``TrainConfig``)."""
    return TrainConfig.from_preset("builtin", **{"epochs": 1, "batch_size": 4, "data": str(tiny), "out": str(out),
                                                 **TINY_RUNTIME, **changes})


def run_cli(*args):
    """``alexnet ARGS...`` in this process (click's runner): its result, output and exit code."""
    return CliRunner().invoke(main, [str(a) for a in args])


def one_line(result, *fragments):
    """``result`` is a refusal: exit 2 and one line, "Error: ..." holding every fragment."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]
