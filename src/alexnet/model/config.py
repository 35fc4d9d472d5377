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
#: The two readings of each block: the paper's words (§3.3, §3.5) and the authors' 2012
#: configuration (layers-145.cfg), as the layer table states them (``spec.Layer``).
FORMS = ("paper", "authors")
#: The blocks the layer table states: the two readings above, and Caffe's two ports (its LRN
#: with k = 1 across the towers; CaffeNet pools before it normalizes).
BLOCKS = FORMS + ("caffe", "caffenet")


@dataclass(frozen=True)
class ModelConfig(Settings):
    """Which AlexNet: the architecture and the options that change what it computes.

    variant:  "two-gpu" (the paper's net, §3.5) or "one-gpu" (the single-column comparison
              net of §3.2: 48-128-192-192-256 kernels, FC 4096-4096-num_classes).
    blocks:   "paper": each block as §3.5 says (conv1, conv2: conv -> ReLU -> LRN -> max-pool);
              "authors": as the authors' layers-145.cfg ran it (conv1's LRN before its ReLU;
              conv2's LRN followed by the spatial normalization cnorm2); "caffe": Caffe's
              bvlc_alexnet (its LRN has k = 1 and crosses the towers; pooling rounds up);
              "caffenet": Caffe's CaffeNet (the same, max-pooling before the LRN).
    lrn, overlap: the ablations of §3.3 and §3.4 (LRN off, and in the authors' blocks cnorm2
              too, as their net 148; 2x2/2 pooling instead of 3x3/2).
    no_overlap_as: how ``overlap=False`` is built: "paper" keeps the 3x3 net's padding and
              sizes (55 -> 27 -> 13 -> 6); "authors" builds their net 147's layers (ceil rounding, conv2
              padding 1, conv5 padding 0: 55 -> 28 -> 26 -> 13 -> 11 -> 6).
    num_classes: fc8's outputs (training takes it from the data).
    dropout:  the probability of zeroing a unit of fc6 and fc7 while training (§4.2: 0.5).
    dropout_style: "paper": no scaling while training, outputs times 1-dropout at test (§4.2);
              "inverted": kept units times 1/(1-dropout) while training, nothing at test
              (nn.Dropout, Caffe).
    init:     the initialization preset the net starts from (``alexnet.model.init``).
    """

    variant: str = "two-gpu"
    blocks: str = "paper"
    lrn: bool = True
    overlap: bool = True
    no_overlap_as: str = "paper"
    num_classes: int = 1000
    dropout: float = 0.5
    dropout_style: str = "paper"
    init: str = "paper"

    what = "model setting"

    def checks(self):
        """Each setting's rule, said as the options name it."""
        return [
            (self.variant in VARIANTS, f"--variant must be one of {', '.join(VARIANTS)}; got {self.variant!r}"),
            (self.blocks in BLOCKS, f"--blocks must be one of {', '.join(BLOCKS)}; got {self.blocks!r}"),
            (isinstance(self.lrn, bool), f"lrn must be True or False; got {self.lrn!r}"),
            (isinstance(self.overlap, bool), f"overlap must be True or False; got {self.overlap!r}"),
            (self.no_overlap_as in FORMS,
             f"--no-overlap-as must be one of {', '.join(FORMS)}; got {self.no_overlap_as!r}"),
            (isinstance(self.num_classes, int) and not isinstance(self.num_classes, bool) and self.num_classes >= 1,
             f"--num-classes must be a positive integer; got {self.num_classes!r}"),
            (isinstance(self.dropout, (int, float)) and 0.0 <= float(self.dropout) < 1.0,
             f"--dropout must be in [0, 1); got {self.dropout!r}"),
            (self.dropout_style in DROPOUT_STYLES,
             f"--dropout-style must be one of {', '.join(DROPOUT_STYLES)}; got {self.dropout_style!r}"),
            (self.init in INIT_PRESETS, f"--init must be one of {', '.join(INIT_PRESETS)}; got {self.init!r}"),
        ]
