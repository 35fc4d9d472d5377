"""The software a run or a benchmark used, recorded beside its numbers."""

from __future__ import annotations

import platform
from typing import Dict

import torch


def software_versions() -> Dict[str, str]:
    """alexnet, torch, torchvision and Python versions, and the platform."""
    import torchvision

    from . import __version__

    return {"alexnet": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "platform": platform.platform()}
