"""The package's version, and the software a run or a benchmark used, recorded beside its numbers."""

from __future__ import annotations

import platform
from typing import Dict

import torch
import torchvision

__version__ = "0.1.0"


def software_versions() -> Dict[str, str]:
    """alexnet, torch, torchvision and Python versions, and the platform."""
    return {"alexnet": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "platform": platform.platform()}
