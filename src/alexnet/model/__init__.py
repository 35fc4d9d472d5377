"""The network: its configuration, the layer table, LRN, the two layouts and their shared
checkpoint format."""

from .build import build_model
from .config import ModelConfig
from .grouped import GroupedAlexNet
from .init import INIT_PRESETS, canonical_init
from .lrn import LocalResponseNorm
from .spec import LAYERS, NetSpec, resolve
from .towers import TowersAlexNet

__all__ = [
    "LAYERS", "INIT_PRESETS", "ModelConfig", "NetSpec", "GroupedAlexNet", "TowersAlexNet",
    "LocalResponseNorm", "build_model", "canonical_init", "resolve",
]
