"""The network: the layer table, LRN, the two layouts and their shared checkpoint format."""

from .build import LAYOUTS, as_device, build_model
from .grouped import GroupedAlexNet
from .init import INIT_PRESETS, canonical_init
from .lrn import LocalResponseNorm
from .spec import LAYERS, NetSpec, resolve
from .towers import TowersAlexNet

__all__ = [
    "LAYERS", "LAYOUTS", "INIT_PRESETS", "NetSpec", "GroupedAlexNet", "TowersAlexNet",
    "LocalResponseNorm", "as_device", "build_model", "canonical_init", "resolve",
]
