"""Dropout as the paper defines it (§4.2), beside the inverted dropout of ``nn.Dropout``.

The paper: "setting to zero the output of each hidden neuron with probability 0.5 ... At test
time, we use all the neurons but multiply their outputs by 0.5". ``nn.Dropout`` is the
inverted form: it multiplies the kept units by 1/(1-p) during training and does nothing at
test time. The two compute the same function only if the next layer's weights are halved, so
with the paper's N(0, 0.01) initialization, learning rate and weight decay they train
differently: fc7 and fc8 see inputs twice as large (FACTS §6). The authors' code masks
without scaling, as the paper does: the 2012 code's ``hs`` layer (``keep=0.5`` in
layers-145.cfg) and cuda-convnet2's ``Dropout2Layer``; cuda-convnet2's ``DropoutLayer`` is the
inverted form.

Both forms draw their masks with the same calls on torch's global RNG (``torch.native_dropout``
is the kernel behind ``nn.Dropout`` on GPUs, and on the CPU it draws the same Bernoulli mask),
so with one seed a paper-form and an inverted-form run see the same masks and differ only in
the scale.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ConfigError

#: "paper": zero units with probability p while training, multiply by 1-p at test (§4.2).
#: "inverted": multiply kept units by 1/(1-p) while training, nothing at test (nn.Dropout;
#: Caffe's dropout layer, and every checkpoint written before this choice existed).
DROPOUT_STYLES = ("paper", "inverted")


class PaperDropout(nn.Module):
    """§4.2 dropout. Training: ``x * mask``, mask ~ Bernoulli(1-p), no scaling.
    Evaluation: ``x * (1-p)``. Any device, any dtype (autocast included), and torch.compile:
    the only branches are on ``self.training`` and the constant ``p``."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"dropout must be in [0, 1); got {p!r}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0:
            return x
        if not self.training:
            return x * (1.0 - self.p)  # "multiply their outputs by 0.5"
        # The mask nn.Dropout would draw here (same RNG calls on every device); its scaled
        # output is discarded. The mask carries no gradient, so draw it from a detached input.
        _, keep = torch.native_dropout(x.detach(), self.p, True)  # bool, True = kept
        return x * keep  # zeroed with probability p, the rest unscaled

    def extra_repr(self) -> str:
        return f"p={self.p}, train: x*mask, eval: x*{1.0 - self.p:g}"


def dropout_layer(p: float, style: str) -> nn.Module:
    """The dropout after fc6 and fc7 in the given style (see ``DROPOUT_STYLES``)."""
    if style == "paper":
        return PaperDropout(p)
    if style == "inverted":
        return nn.Dropout(p)
    raise ConfigError(f"dropout_style must be one of {', '.join(DROPOUT_STYLES)}; got {style!r}")
