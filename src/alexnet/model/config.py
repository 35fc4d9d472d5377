"""``ModelConfig``: every setting that decides which network is built, in one frozen dataclass.

    ModelConfig()                                  # the paper's net (§3.5), 1000 classes
    ModelConfig(variant="one-gpu")                 # the one-GPU comparison net of §3.2
    ModelConfig(lrn=False, num_classes=10)         # an ablation, on a 10-class dataset
    config.replace(dropout_style="inverted")       # a changed copy, checked

``build_model(config)`` builds it in any layout, a checkpoint stores ``config.as_dict()`` and
everything that reads a checkpoint rebuilds the net with ``ModelConfig.from_dict``. A new model
setting is a new field here (with its rule in ``checks``) and the code that uses it.
How and where the net runs (layout, devices, LRN implementation, precision) is not part of it:
those never change the function the net computes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import Settings
from .dropout import DROPOUT_STYLES
from .init import INIT_PRESETS

VARIANTS = ("two-gpu", "one-gpu")


@dataclass(frozen=True)
class ModelConfig(Settings):
    """Which AlexNet: the architecture and the options that change what it computes.

    variant:  "two-gpu" (the paper's net, §3.5) or "one-gpu" (the single-column comparison
              net of §3.2: 48-128-192-192-256 kernels, FC 4096-4096-num_classes).
    lrn, overlap: the ablations of §3.3 and §3.4 (LRN off; 2x2/2 pooling instead of 3x3/2).
    num_classes: fc8's outputs (training takes it from the data).
    dropout:  the probability of zeroing a unit of fc6 and fc7 while training (§4.2: 0.5).
    dropout_style: "paper": no scaling while training, outputs times 1-dropout at test (§4.2);
              "inverted": kept units times 1/(1-dropout) while training, nothing at test
              (nn.Dropout, Caffe).
    init:     the initialization preset the net starts from (``alexnet.model.init``).
    """

    variant: str = "two-gpu"
    lrn: bool = True
    overlap: bool = True
    num_classes: int = 1000
    dropout: float = 0.5
    dropout_style: str = "paper"
    init: str = "paper"

    what = "model setting"

    def checks(self):
        """Each setting's rule, said as the options name it."""
        return [
            (self.variant in VARIANTS, f"--variant must be one of {', '.join(VARIANTS)}; got {self.variant!r}"),
            (isinstance(self.lrn, bool), f"lrn must be True or False; got {self.lrn!r}"),
            (isinstance(self.overlap, bool), f"overlap must be True or False; got {self.overlap!r}"),
            (isinstance(self.num_classes, int) and not isinstance(self.num_classes, bool) and self.num_classes >= 1,
             f"--num-classes must be a positive integer; got {self.num_classes!r}"),
            (isinstance(self.dropout, (int, float)) and 0.0 <= float(self.dropout) < 1.0,
             f"--dropout must be in [0, 1); got {self.dropout!r}"),
            (self.dropout_style in DROPOUT_STYLES,
             f"--dropout-style must be one of {', '.join(DROPOUT_STYLES)}; got {self.dropout_style!r}"),
            (self.init in INIT_PRESETS, f"--init must be one of {', '.join(INIT_PRESETS)}; got {self.init!r}"),
        ]
