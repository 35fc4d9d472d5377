"""A trained net and how it runs: a checkpoint, a run folder or a Caffe file opened once, for one
runtime, into the model, its preprocessing, its classes and where it runs.

    net = open_trained("runs/builtin-...", Runtime(devices="cpu,cpu", amp="fp32"))
    net.model, net.preprocess, net.classes, net.placement
    probs = net.probabilities(net.preprocess.ten(images))       # (B, classes), ten crops averaged

``alexnet eval``, ``predict``, ``features``, ``neighbors`` and ``export``, ``load_model`` and the
torch.hub entry points all start here, so a runtime option (``--amp``, ``--channels-last``,
``--lrn-impl``, ``--compile``) means the same in each.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from .analysis.activations import layer_outputs
from .caffe.importer import open_caffemodel
from .checkpoint import load_weights, read_checkpoint, saved_model, saved_preprocess, stats_from_checkpoint
from .data.preprocess import Preprocess
from .errors import CheckpointError
from .devices import DeviceRequest, Placement, as_device
from .model.build import build_model
from .model.spec import resolve
from .precision import autocast_context
from .runtime import Runtime

#: What a Caffe file is called: ``open_trained`` imports it in memory (``alexnet import-caffe``
#: writes the same checkpoint to a file).
CAFFEMODEL = ".caffemodel"


@dataclass
class TrainedNet:
    """A trained net, ready to run: the model in eval mode on its placement, in the runtime's
    memory format (compiled where asked), and the input as the net was trained to read it."""

    model: nn.Module
    stats_preprocess: Optional[Preprocess]  # None: the checkpoint holds no dataset statistics
    classes: List[str]  # in label order
    placement: Placement
    amp_dtype: Optional[torch.dtype]  # autocast's dtype (None: fp32)
    runtime: Runtime
    checkpoint: Dict  # the checkpoint's metadata: path, config, progress, metrics, statistics (no weights)

    @property
    def path(self) -> str:
        return self.checkpoint["path"]

    @property
    def preprocess(self) -> Preprocess:
        """How a batch of 256x256 images becomes the net's input, as it was trained: the
        training set's statistics (on the net's first device) and the preprocessing settings."""
        if self.stats_preprocess is None:
            raise CheckpointError(f"{self.path}: holds no dataset statistics (mean image) to preprocess with")
        return self.stats_preprocess

    @property
    def device(self) -> torch.device:
        """Where inputs go and logits come out."""
        return self.placement.primary

    def _input(self, crops: torch.Tensor) -> torch.Tensor:
        """Crops as the runtime runs them: channels-last where it says, on the net's first device."""
        if self.runtime.channels_last:
            crops = crops.contiguous(memory_format=torch.channels_last)
        return crops.to(self.device)

    def logits(self, crops: torch.Tensor) -> torch.Tensor:
        """(N, 3, crop, crop) preprocessed crops -> (N, classes) logits in fp32."""
        with autocast_context(self.placement.devices, self.amp_dtype):
            return self.model(self._input(crops)).float()

    def layer_outputs(self, crops: torch.Tensor, layers: Sequence[str]) -> Dict[str, torch.Tensor]:
        """(N, 3, crop, crop) preprocessed crops -> each of ``layers``' raw output
        (``analysis.activations.layer_outputs``), run as ``logits`` runs (precision, format)."""
        with autocast_context(self.placement.devices, self.amp_dtype):
            return layer_outputs(self.model, self._input(crops), layers)

    def probabilities(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, K, 3, crop, crop) crops -> (B, classes): the mean of the K crops' softmax
        probabilities (§4.1's ten patches; K = 1 for the centre crop)."""
        b, k = crops.shape[:2]
        return F.softmax(self.logits(crops.flatten(0, 1)), dim=1).view(b, k, -1).mean(dim=1)


def open_trained(source: Union[str, Path, Dict], runtime: Runtime = Runtime()) -> TrainedNet:
    """The trained net at ``source`` (a checkpoint file, a run folder: its last checkpoint, a
    Caffe ``.caffemodel``, or a checkpoint already read with ``read_checkpoint``) on
    ``runtime``'s devices, in its precision and memory format."""
    payload = source if isinstance(source, dict) else read_trained(source)
    placement = runtime.placement(resolve(saved_model(payload)).towers)
    amp_dtype = runtime.amp_dtype(placement)
    model = build_model(saved_model(payload), layout=placement.layout, devices=placement.devices, initialize=False,
                        lrn_impl=runtime.lrn_impl)
    load_weights(model, payload)
    model.eval()
    preprocess = (Preprocess(stats_from_checkpoint(payload).to(placement.primary), saved_preprocess(payload),
                             runtime.channels_last) if payload.get("stats") else None)
    metadata = {k: v for k, v in payload.items() if k not in ("model", "optimizer")}
    return TrainedNet(runtime.apply(model), preprocess, list(payload["classes"]), placement, amp_dtype, runtime,
                      metadata)


def read_trained(source: Union[str, Path]) -> Dict:
    """A checkpoint's contents (``read_checkpoint``), or a Caffe file imported in memory."""
    path = Path(source)
    if path.suffix == CAFFEMODEL and path.is_file():
        return open_caffemodel(path)
    return read_checkpoint(path)


def load_model(checkpoint_or_run_dir: Union[str, Path], layout: str = "grouped",
               devices: Optional[Sequence] = None, lrn_impl: str = "fast") -> nn.Module:
    """A trained model, in eval mode, on any layout and devices (default: grouped on the CPU).

    The returned module also carries ``.classes`` (the class names, in label order) and
    ``.checkpoint`` (the checkpoint's metadata: configuration, statistics, progress, metrics).
    ``open_trained`` gives the preprocessing and the runtime's precision with it.
    """
    request = DeviceRequest(tuple(as_device(d) for d in (devices or ["cpu"])), layout)
    net = open_trained(checkpoint_or_run_dir, Runtime(devices=request, lrn_impl=lrn_impl, amp="fp32"))
    net.model.classes, net.model.checkpoint = net.classes, net.checkpoint
    return net.model
