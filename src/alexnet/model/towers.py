"""The two-tower layout: tower k on ``devices[k]``, as the paper trained it on two GTX 580s.

Each tower holds half of every conv layer and of fc6 and fc7 (§3.2, Figure 2). The towers
exchange data at exactly four points, and only through :class:`Exchange`:

    conv3  reads both towers' pool2 maps    each tower receives the other's (N, 128, 13, 13)
    fc6    reads both towers' pool5 maps    each tower receives the other's (N, 128, 6, 6)
    fc7    reads both towers' fc6 halves    each tower receives the other's (N, 2048)
    fc8    reads both towers' fc7 halves    tower 1 sends its (N, 2048) to tower 0

fc8 is one unsplit layer on tower 0 with the softmax, as in the authors' cuda-convnet code,
so the logits come out on ``devices[0]``. Apart from these, the only copies are the input
batch handed to each tower (:attr:`TowersAlexNet.handoff`).

``state_dict()`` and ``load_state_dict()`` speak the canonical (grouped) format, so a
checkpoint from two GPUs loads into the grouped net on a laptop and back.
"""

from __future__ import annotations

from typing import Dict, List, Sequence

import torch
from torch import nn

from ..errors import ConfigError
from .column import Column, prepare_input
from .spec import NetSpec, op_module
from .state import canonical_shapes, merge_towers, split_towers
from ..ops.tracing import compiling


class Transfer(nn.Module):
    """Sends tensors to a device and counts what it sends.

    ``values`` and ``bytes`` count every hand-over from one tower to another (what would
    cross between two GPUs); ``copied_bytes`` counts those that actually changed device
    (zero when both towers share one). Counting reads only shapes, never tensor data, so it
    does not synchronise with the device.
    """

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.reset()

    def reset(self) -> None:
        self.sends = 0
        self.values = 0
        self.bytes = 0
        self.copied_bytes = 0

    def send(self, x: torch.Tensor, device: torch.device) -> torch.Tensor:
        if not compiling():
            size = x.numel() * x.element_size()
            self.sends += 1
            self.values += x.numel()
            self.bytes += size
            if x.device != device:
                self.copied_bytes += size
        # non_blocking only into a GPU: a copy into host memory must finish before the CPU reads it.
        return x.to(device, non_blocking=device.type == "cuda")

    def counts(self) -> Dict[str, int]:
        return {"sends": self.sends, "values": self.values, "bytes": self.bytes,
                "copied_bytes": self.copied_bytes}


class Exchange(Transfer):
    """An exchange point: tower i's half goes to every receiving tower k != i, and each
    receiver concatenates the halves in tower order (tower 0's channels first), which is
    the grouped net's channel order."""

    def __init__(self, name: str, receivers: Sequence[torch.device]):
        super().__init__(name)
        self.receivers = tuple(receivers)

    def forward(self, halves: List[torch.Tensor]) -> List[torch.Tensor]:
        return [
            torch.cat([h if i == k else self.send(h, device) for i, h in enumerate(halves)], dim=1)
            for k, device in enumerate(self.receivers)
        ]


class HaloExchange(Transfer):
    """Caffe's LRN across the towers (``spec.CAFFE_BLOCKS``): each tower receives the ``halo``
    maps at the edge of its neighbours' halves (tower 0 the first maps of tower 1, tower 1 the
    last maps of tower 0), normalizes its own maps with them, and keeps its own. So the towers
    compute what one LRN over all the layer's maps computes."""

    def __init__(self, name: str, receivers: Sequence[torch.device], halo: int):
        super().__init__(name)
        self.receivers, self.halo = tuple(receivers), halo

    def extend(self, halves: List[torch.Tensor]) -> List[torch.Tensor]:
        """Each tower's maps with its neighbours' edge maps on either side, in channel order."""
        last = len(halves) - 1
        return [torch.cat([*([self.send(halves[k - 1][:, -self.halo:], device)] if k > 0 else []), h,
                           *([self.send(halves[k + 1][:, :self.halo], device)] if k < last else [])], dim=1)
                for k, (h, device) in enumerate(zip(halves, self.receivers))]

    def trim(self, extended: List[torch.Tensor]) -> List[torch.Tensor]:
        """Each tower's own maps again."""
        last = len(extended) - 1
        return [x[:, (self.halo if k > 0 else 0):x.shape[1] - (self.halo if k < last else 0)]
                for k, x in enumerate(extended)]


class TowersAlexNet(nn.Module):
    """AlexNet with tower k on ``devices[k]``. Input (N, 3, 224|227, same) on any device."""

    layout = "towers"

    def __init__(self, spec: NetSpec, devices: Sequence, **options):
        """``devices``: one per tower, as ``alexnet.devices.Placement.of`` checks them;
        ``options``: how each tower runs its layers (``Column``'s lrn_impl, fuse_relu_lrn_pool)."""
        super().__init__()
        *split, last = spec.layers
        if any(not layer.layer.split for layer in split) or last.layer.split:
            raise ConfigError("the towers layout expects every layer but the last (fc8) to be split")
        self.spec = spec
        self.split_layers = tuple(split)
        self.towers = nn.ModuleList(
            Column(spec, share=1, layers=split, device=device, **options) for device in devices
        )
        home = self.towers[0].device
        self.fc8 = nn.Linear(last.in_channels, last.out_channels, device=home)
        # Every layer that reads both towers is an exchange point: conv3, fc6, fc7 and fc8.
        receivers = [tower.device for tower in self.towers]
        self.exchange = nn.ModuleDict(
            (layer.name, Exchange(layer.name, receivers if layer.layer.split else receivers[:1]))
            for layer in spec.layers
            if layer.layer.reads == "both"
        )
        # Caffe's LRN reads over the towers' boundary: one more exchange per such LRN.
        for point in spec.exchanges():
            if point.get("halo"):
                self.exchange[point["layer"]] = HaloExchange(point["layer"], receivers, point["halo"])
        self.handoff = Transfer("input")
        self.register_state_dict_post_hook(_to_canonical_hook)
        self.register_load_state_dict_pre_hook(_from_canonical_hook)

    @property
    def devices(self):
        return tuple(tower.device for tower in self.towers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (N, 3, 227, 227); channels-last when every tower is on the CPU (see Column.block)
        x = prepare_input(x, channels_last=x.device.type == "cpu" and all(d.type == "cpu" for d in self.devices),
                          spec=self.spec)
        h = [self.handoff.send(x, tower.device) for tower in self.towers]  # the image, on each tower
        # Layer by layer, tower 0 then tower 1: kernels on two GPUs are queued without waiting,
        # so both devices work at once.
        for layer in self.split_layers:
            if layer.name in self.exchange:  # conv3, fc6, fc7: each tower gets the other's half
                h = self.exchange[layer.name](h)
            if "clrn" in layer.ops:  # Caffe's LRN: the towers swap their edge maps for it
                h = self._across(layer, h)
            else:
                h = [tower.block(layer, hk) for tower, hk in zip(self.towers, h)]
            # per tower: conv1 (N,48,27,27) conv2 (N,128,13,13) conv3/4 (N,192,13,13)
            # conv5 (N,128,6,6) fc6/fc7 (N,2048)
        (x,) = self.exchange["fc8"](h)  # tower 1's fc7 half joins tower 0's: (N, 4096) on devices[0]
        return self.fc8(x)  # (N, num_classes)

    def _across(self, layer, h: List[torch.Tensor]) -> List[torch.Tensor]:
        """A block whose LRN crosses the towers: the ops before it on each tower, the edge maps
        exchanged, the LRN, each tower's own maps again, the ops after it."""
        at = layer.ops.index("clrn")
        halo = self.exchange[op_module(layer.name, "clrn")]
        h = [tower.apply_ops(layer, tower.apply_layer(layer, hk), layer.ops[:at]) for tower, hk in zip(self.towers, h)]
        h = halo.trim([tower.apply_ops(layer, hk, ("clrn",)) for tower, hk in zip(self.towers, halo.extend(h))])
        return [tower.apply_ops(layer, hk, layer.ops[at + 1:]) for tower, hk in zip(self.towers, h)]

    # -- the canonical format ---------------------------------------------------------------
    def to_canonical(self, tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Towers-layout parameter names -> canonical names (halves joined on devices[0])."""
        return merge_towers(tensors, self.spec, device=self.devices[0])

    def from_canonical(self, tensors: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Canonical parameter names -> towers-layout names (views of the canonical tensors)."""
        return split_towers(tensors, self.spec)

    # -- traffic counters -------------------------------------------------------------------
    def traffic(self) -> Dict[str, Dict[str, int]]:
        """What each transfer point sent since the last reset: the input hand-off and the
        four exchange points."""
        counts = {"input": self.handoff.counts()}
        counts.update((name, ex.counts()) for name, ex in self.exchange.items())
        return counts

    def reset_traffic(self) -> None:
        self.handoff.reset()
        for ex in self.exchange.values():
            ex.reset()


def _strip(state, prefix):
    return {k[len(prefix):]: state.pop(k) for k in [k for k in state if k.startswith(prefix)]}


def _to_canonical_hook(module: TowersAlexNet, state, prefix, local_metadata) -> None:
    local = _strip(state, prefix)
    for key, value in module.to_canonical(local).items():
        state[prefix + key] = value


def _from_canonical_hook(module: TowersAlexNet, state, prefix, local_metadata, strict,
                         missing_keys, unexpected_keys, error_msgs) -> None:
    local = _strip(state, prefix)
    # Check canonical shapes here, so a mismatch is reported with the checkpoint's own names.
    for key, shape in canonical_shapes(module.spec).items():
        if key in local and tuple(local[key].shape) != shape:
            error_msgs.append(
                f"size mismatch for {key}: copying a param with shape {tuple(local[key].shape)} "
                f"from checkpoint, the shape in current model is {shape}."
            )
            del local[key]
    for key, value in module.from_canonical(local).items():
        state[prefix + key] = value
