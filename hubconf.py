"""torch.hub entry points: the paper's AlexNet (two towers or grouped), or a trained checkpoint.

    model = torch.hub.load("path/to/this/repo", "alexnet", source="local")                 # the paper's net
    model = torch.hub.load(REPO, "alexnet", weights="runs/x", layout="towers", devices=["cuda:0", "cuda:1"])
    model = torch.hub.load(REPO, "alexnet", lrn=False, num_classes=10, seed=0)          # any model setting
    torch.hub.list("OWNER/REPO"); torch.hub.help("OWNER/REPO", "alexnet")   # from GitHub

Each entry point is a thin wrapper over the package's own ``alexnet.build_model`` and
``alexnet.load_model``; nothing is downloaded (``weights`` is a path).
"""

import sys as _sys
from pathlib import Path as _Path

# What torch.hub checks can be imported before it loads this file.
dependencies = ["torch", "torchvision", "numpy", "PIL", "click"]

# The package from this checkout (src/ layout), ahead of any other installed copy.
_SRC = str(_Path(__file__).resolve().parent / "src")
if _SRC not in _sys.path:
    _sys.path.insert(0, _SRC)

# Private names: torch.hub.list lists every public callable of this file as an entry point.
from alexnet import build_model as _build_model, load_model as _load_model  # noqa: E402
from alexnet.errors import ConfigError as _ConfigError  # noqa: E402


def alexnet(weights=None, layout="grouped", devices=None, **settings):
    """AlexNet as the paper describes it (Krizhevsky, Sutskever & Hinton, NIPS 2012).

    weights:  None for a new net (initialized as its ``init`` setting says; ``seed=`` makes it
              reproducible), or the path of a checkpoint or run folder of this package (an
              ``alexnet import-caffe`` output included): that net, with its weights.
    layout:   "grouped" (one device, groups=2) or "towers" (tower k on devices[k]).
    devices:  e.g. ["cuda:0", "cuda:1"] for the towers; default: the CPU.
    settings: ``alexnet.ModelConfig``'s fields for a new net (variant, blocks, lrn, overlap,
              num_classes, dropout, dropout_style, init, ...) and ``seed``; a checkpoint brings its own.

    Input: (N, 3, 224|227, same) crops on the 0-255 scale minus the mean; output: logits.
    """
    if weights is not None:
        if settings:
            raise _ConfigError(f"weights={weights!r} brings its own net; drop {', '.join(sorted(settings))}")
        return _load_model(weights, layout=layout, devices=devices)
    return _build_model(layout=layout, devices=devices, **settings)


def alexnet_authors(weights=None, layout="grouped", devices=None, **settings):
    """The authors' own net of the paper's numbers (layers-145.cfg): their blocks (conv1's LRN
    before its ReLU, the spatial normalization cnorm2) and initialization (conv3-5 N(0, 0.03)).
    Arguments as ``alexnet``."""
    if weights is not None:
        return alexnet(weights, layout, devices, **settings)
    return alexnet(None, layout, devices, **{"blocks": "authors", "init": "authors", **settings})
