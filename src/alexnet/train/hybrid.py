"""``--parallel hybrid``: the conv layers data-parallel, fc6-fc8 split between the processes by
output units, as Krizhevsky scaled the net past two GPUs in 2014 ("One weird trick for
parallelizing convolutional neural networks", arXiv:1404.5997; cuda-convnet2's
``layers-imagenet-4gpu-data-model.cfg``).

    torchrun --standalone --nproc-per-node 4 -m alexnet train --parallel hybrid --data DIR

The conv layers hold about 4% of the parameters and do most of the work; the FC layers hold the
rest. So each of the K processes runs conv1-pool5 on its B/K share of the global batch and
all-reduces only the conv layers' gradients (DistributedDataParallel), while each FC layer's
output units are cut into K blocks, one per process, over the whole global batch:

    rank r:  its B/K images -> conv1 .. pool5 (a whole replica)         (B/K, 9216)
             pool5 of every rank, all-gathered                          (B, 9216)
             fc6 rows r of K -> ReLU -> dropout                         (B, 4096/K)
             fc6 of every rank, all-gathered -> fc7 rows r of K -> ...  (B, 4096/K)
             fc7 of every rank, all-gathered -> fc8 rows r of K         (B, C/K)
             fc8 of every rank, all-gathered: the logits                (B, C), softmax on every rank

Backward reverses it: each gathered input's gradient is reduce-scattered back to the processes
that computed it (pool5's to the rank whose images they are), and the conv layers' gradients
are averaged by DDP. With one FC update per global batch (``fc_updates="batch"``) K processes
compute the update one process computes at batch B. ``fc_updates="rank"`` is the 2014 schedule
(cuda-convnet2's ``updatePeriod=1``): the FC layers take each rank's images in turn and update
after each, K FC updates per step; ``scale_conv_lr`` multiplies the conv layers' rates by K, as
cuda-convnet2's data-model configuration does (epsW 0.04 in the conv layers at 4 GPUs, 0.01 in
the FC layers). Every collective is torch.distributed's, and each is counted (``Collectives``).

The dropout masks of fc6 and fc7 are drawn for the whole (B, 4096) layer from a stream seeded
by the recipe's seed and the step, the same on every rank, each rank applying its columns: the
masks do not depend on K, and a resumed run draws what it would have drawn.

Checkpoints hold the canonical state dict: ``state_dict()`` gathers the FC blocks (every rank
takes part: ``join_save``). In evaluation (``eval()``, also a gather) every rank holds the whole
FC layers and evaluates its share of the validation images on its own, as the data-parallel
mode does.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..checkpoint import checkpoint_payload
from ..devices import Placement
from ..errors import ConfigError, TrainingError
from ..model.column import Column, prepare_input
from ..model.dropout import dropout_layer
from ..model.lrn import LocalResponseNorm
from ..model.spec import NetSpec, op_module, resolve
from ..model.state import PARAM_KINDS
from ..model.towers import _from_canonical_hook, _to_canonical_hook
from ..precision import autocast_context, precision_name
from ..world import World
from . import distributed
from .distributed import Collectives
from .step import Step

#: The conv layers' parameters are the trunk's, named ``trunk.conv1.weight`` here.
TRUNK = "trunk."

# torch 2.14 renamed these two (``*_single``) and warns on the old names; torch 2.11, on the
# project's GPU machines, has only the old ones. Same arguments, same collective.
_all_gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


class Link:
    """This process's collectives with the others, each counted under its name: rows are
    images (each rank's block of the global batch), columns are output units (each rank's
    block of an FC layer)."""

    def __init__(self, world: World, collectives: Optional[Collectives] = None):
        self.world = world
        self.collectives = collectives or Collectives(world)

    def gather_rows(self, part: torch.Tensor, name: Optional[str] = None) -> torch.Tensor:
        """(n, ...) on each rank -> (K·n, ...), rank 0's rows first."""
        if not self.world.distributed:
            return part
        whole = part.new_empty((self.world.size * part.shape[0], *part.shape[1:]))
        _all_gather(whole, part.contiguous())
        if name:
            self.collectives.add(name, "all_gather", whole)
        return whole

    def scatter_rows(self, whole: torch.Tensor, name: str) -> torch.Tensor:
        """(K·n, ...) on each rank -> this rank's (n, ...), summed over the ranks."""
        if not self.world.distributed:
            return whole
        part = whole.new_empty((whole.shape[0] // self.world.size, *whole.shape[1:]))
        self.collectives.add(name, "reduce_scatter", whole)
        _reduce_scatter(part, whole.contiguous())
        return part

    def gather_columns(self, part: torch.Tensor, name: Optional[str] = None) -> torch.Tensor:
        """(n, w/K) on each rank -> (n, w), rank 0's columns first (the canonical order)."""
        k, (n, width) = self.world.size, part.shape
        return self.gather_rows(part, name).view(k, n, width).permute(1, 0, 2).reshape(n, k * width)

    def scatter_columns(self, whole: torch.Tensor, name: str) -> torch.Tensor:
        """(n, w) on each rank -> this rank's (n, w/K), summed over the ranks."""
        k, (n, width) = self.world.size, whole.shape
        by_rank = whole.view(n, k, width // k).permute(1, 0, 2).reshape(k * n, width // k)
        return self.scatter_rows(by_rank, name)


class _GatherColumns(torch.autograd.Function):
    """An FC layer's output blocks gathered as the next layer's input; backward, the input's
    gradient reduce-scattered to the ranks whose blocks they are."""

    @staticmethod
    def forward(ctx, part, link: Link, layer: str):
        ctx.link, ctx.layer = link, layer
        return link.gather_columns(part, f"{layer} all-gather")

    @staticmethod
    def backward(ctx, grad):
        return ctx.link.scatter_columns(grad, f"{ctx.layer} grad reduce-scatter"), None, None


class ConvTrunk(Column):
    """conv1 to pool5 of the net on one device, the grouped way: each process's replica of the
    conv layers."""

    def __init__(self, spec: NetSpec, device=None, **options):
        super().__init__(spec, share=spec.towers, layers=[l for l in spec.layers if l.layer.kind == "conv"],
                         device=device, **options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = prepare_input(x, channels_last=x.device.type == "cpu", spec=self.spec)  # (N, 3, 227, 227)
        for layer in self.layers:
            x = self.block(layer, x)
        return x  # pool5: (N, 256, 6, 6)


class HybridAlexNet(nn.Module):
    """One process's part of the hybrid net: the whole conv trunk, and rows ``rank``·w/K to
    (``rank``+1)·w/K of fc6, fc7 and fc8 (``fc_layers``). ``state_dict()`` and
    ``load_state_dict()`` speak the canonical format (the blocks joined: a collective). Runs
    forward in evaluation only, with the FC layers joined (``eval()``); training goes through
    ``train_step``."""

    layout = "hybrid"

    def __init__(self, spec: NetSpec, world: World, device=None, **options):
        super().__init__()
        self.spec, self.world, self.link = spec, world, Link(world)
        self.fc_layers = tuple(layer for layer in spec.layers if layer.layer.kind == "fc")
        check_widths(spec, world.size)
        self.trunk = ConvTrunk(spec, device, **options)
        for layer in self.fc_layers:
            self.add_module(layer.name, nn.Linear(layer.in_channels, layer.out_channels // world.size,
                                                  device=self.trunk.device))
            for op in layer.ops:
                if op == "dropout":  # its evaluation form (the paper's: outputs times 1-p)
                    self.add_module(op_module(layer.name, op), dropout_layer(spec.config.dropout,
                                                                             spec.config.dropout_style))
                elif op != "relu":
                    raise ConfigError(f"--parallel hybrid runs ReLU and dropout after an FC layer; {layer.name} "
                                      f"has {op}")
        self._joined: Optional[Dict[str, torch.Tensor]] = None
        self.register_state_dict_post_hook(_to_canonical_hook)
        self.register_load_state_dict_pre_hook(_from_canonical_hook)

    @classmethod
    def of(cls, net: nn.Module, world: World) -> "HybridAlexNet":
        """``net`` (the grouped net, as built and initialized for one process) cut for this rank:
        the same weights, whatever the number of processes."""
        impls = [m.impl for m in net.modules() if isinstance(m, LocalResponseNorm)]
        hybrid = cls(net.spec, world, net.devices[0], lrn_impl=impls[0] if impls else "fast",
                     fuse_relu_lrn_pool=net.fuse_relu_lrn_pool)
        hybrid.load_state_dict(net.state_dict())
        return hybrid

    @property
    def devices(self):
        return (self.trunk.device,)

    def columns(self, width: int) -> slice:
        """This rank's block of a layer ``width`` units wide."""
        block = width // self.world.size
        return slice(self.world.rank * block, (self.world.rank + 1) * block)

    def fc_parameters(self) -> List[nn.Parameter]:
        return [p for layer in self.fc_layers for p in getattr(self, layer.name).parameters()]

    # -- evaluation: every rank with the whole FC layers ------------------------------------
    def train(self, mode: bool = True) -> "HybridAlexNet":
        """Into evaluation, every rank gathers the FC layers whole (every rank must call it, as
        ``alexnet.inference.evaluate`` does); back to training, they are dropped."""
        super().train(mode)
        self._joined = None if mode else {
            name: self.link.gather_rows(getattr(self, layer.name).get_parameter(kind).detach())
            for layer in self.fc_layers for kind in PARAM_KINDS for name in [f"{layer.name}.{kind}"]}
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._joined is None:
            raise TrainingError("a hybrid net runs forward in evaluation (eval()); it trains through "
                                "alexnet.train.hybrid.train_step")
        h = self.trunk(x).flatten(1)  # (N, 9216), channel-major as in the grouped net
        for layer in self.fc_layers:
            h = F.linear(h, self._joined[f"{layer.name}.weight"], self._joined[f"{layer.name}.bias"])
            for op in layer.ops:
                h = F.relu(h) if op == "relu" else getattr(self, op_module(layer.name, op))(h)
        return h  # (N, num_classes)

    # -- the canonical format ---------------------------------------------------------------
    def to_canonical(self, tensors: Dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
        """This rank's names -> canonical names, the FC blocks gathered from every rank (a
        collective when ``tensors`` holds FC tensors)."""
        out = OrderedDict((k[len(TRUNK):], v) for k, v in tensors.items() if k.startswith(TRUNK))
        for layer in self.fc_layers:
            for kind in PARAM_KINDS:
                name = f"{layer.name}.{kind}"
                if name in tensors:
                    out[name] = self.link.gather_rows(tensors[name].detach().contiguous())
        return out

    def from_canonical(self, tensors: Dict[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
        """Canonical names -> this rank's: the conv layers whole, this rank's rows of the FC
        layers (views)."""
        fc = {layer.name for layer in self.fc_layers}
        return OrderedDict((key, value[self.columns(value.shape[0])]) if key.split(".")[0] in fc
                           else (TRUNK + key, value) for key, value in tensors.items())

    def traffic(self) -> Dict[str, Dict]:
        """What each collective of the training steps moved since the last reset: the FC layers'
        gathers and scatters, and (once a ``HybridReplica`` trains the net) the conv layers'
        all-reduce, counted by its DDP hook into the same table."""
        return self.link.collectives.counts()

    def reset_traffic(self) -> None:
        self.link.collectives.reset()


class HybridReplica:
    """What ``train_step`` trains: the net, its conv trunk inside DDP (the conv layers'
    gradients averaged, counted with the FC layers' collectives), the FC update schedule and
    the dropout stream's position (``step``)."""

    def __init__(self, net: HybridAlexNet, seed: int, fc_updates: str = "batch", step: int = 0):
        self.net, self.seed, self.fc_updates, self.step = net, seed, fc_updates, step
        self.collectives = net.link.collectives
        self.collectives.first_step = step
        self.trunk = (distributed.counted_ddp(net.trunk, self.collectives, "conv grads all-reduce")
                      if net.world.distributed else net.trunk)
        self.generator = torch.Generator(device=net.devices[0])

    @property
    def devices(self):
        return self.net.devices

    def masks(self, batch: int) -> Dict[str, torch.Tensor]:
        """This step's dropout masks (``dropout_masks``)."""
        return dropout_masks(self.net.spec, batch, self.generator, self.seed, self.step)

    def fc_forward(self, x: torch.Tensor, masks: Dict[str, torch.Tensor], rows: slice) -> torch.Tensor:
        """fc6-fc8 on the images ``rows`` of the global batch (their pool5, gathered): this
        rank's block of fc8's outputs (n, C/K)."""
        net, h = self.net, x
        for i, layer in enumerate(net.fc_layers):
            if i:  # fc7 and fc8 read every unit of the layer before
                h = _GatherColumns.apply(h, net.link, net.fc_layers[i - 1].name)
            h = getattr(net, layer.name)(h)
            for op in layer.ops:
                if op == "relu":
                    h = F.relu(h)
                elif layer.name in masks:
                    h = h * masks[layer.name][rows, net.columns(layer.out_channels)].to(h.dtype)
        return h


def dropout_masks(spec: NetSpec, batch: int, generator: torch.Generator, seed: int, step: int) -> Dict[str, torch.Tensor]:
    """Each dropout layer's (batch, width) multiplier for step ``step`` of a run seeded ``seed``:
    kept units 1 (the paper's form) or 1/(1-p) (inverted), dropped units 0. Drawn whole from
    ``generator`` (on the net's device) reseeded for the step, so every rank draws the same masks
    whatever the number of processes, and a resumed run the ones it would have drawn."""
    config = spec.config
    if config.dropout == 0:
        return {}
    generator.manual_seed(distributed.derived_seed("alexnet-hybrid-dropout", seed, step))
    keep, masks = 1.0 - config.dropout, {}
    for layer in spec.layers:
        if "dropout" in layer.ops:
            mask = torch.empty((batch, layer.out_channels), device=generator.device).bernoulli_(keep, generator=generator)
            masks[layer.name] = mask if config.dropout_style == "paper" else mask / keep
    return masks


def train_step(replica: HybridReplica, images: torch.Tensor, labels: torch.Tensor,
               optimizer: torch.optim.Optimizer, amp_dtype: Optional[torch.dtype] = None,
               scaler: Optional["torch.amp.GradScaler"] = None) -> Step:
    """One step of the hybrid net on this rank's ``images`` (b, 3, 224, 224) and ``labels``,
    its block of the global batch (the loop's step, as ``alexnet.train.step.train_step``):
    conv forward, the FC layers over the whole batch (in K rounds, one per rank's images, each
    followed by an FC update, with ``fc_updates="rank"``), conv backward and update. Returns
    this rank's loss (the mean over its images) and logits."""
    if scaler is not None:
        raise ConfigError("--parallel hybrid does not run with fp16's loss scaling; use --amp bf16 or fp32")
    net, link, b = replica.net, replica.net.link, images.shape[0]
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(net.devices, amp_dtype):
        pool5 = replica.trunk(images)  # (b, 256, 6, 6): this rank's images
    features = link.gather_rows(pool5.detach().flatten(1), "pool5 all-gather").requires_grad_()  # (B, 9216)
    every_label = link.gather_rows(labels, "labels all-gather")  # (B,)
    masks = replica.masks(features.shape[0])
    rounds = net.world.size if replica.fc_updates == "rank" else 1
    n = features.shape[0] // rounds
    mine = slice(net.world.rank * b, (net.world.rank + 1) * b)
    for j in range(rounds):
        rows = slice(j * n, (j + 1) * n)
        with autocast_context(net.devices, amp_dtype):
            out = replica.fc_forward(features[rows], masks, rows)  # (n, C/K)
        logits = link.gather_columns(out.detach(), "fc8 all-gather")  # (n, C), the loss in fp32 at least
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32)).requires_grad_()
        loss = F.cross_entropy(logits, every_label[rows])  # the mean over the round's images
        (grad,) = torch.autograd.grad(loss, logits)
        out.backward(grad[:, net.columns(logits.shape[1])].to(out.dtype))
        if rows.start <= mine.start < rows.stop:  # the round that holds this rank's images
            own = logits.detach()[mine.start - rows.start:mine.stop - rows.start]
        if rounds > 1:  # the FC layers update now; the conv layers have no gradient yet
            optimizer.step()
            for param in net.fc_parameters():
                param.grad = None
    # Each rank's conv layers learn from the mean loss over its own images (n/b rescales the
    # round's mean to it), which DDP averages over the ranks: the global batch's mean.
    grad = link.scatter_rows(features.grad, "pool5 grad reduce-scatter") * (n / b)
    pool5.backward(grad.view_as(pool5).to(pool5.dtype))
    optimizer.step()
    replica.step += 1
    return Step(F.cross_entropy(own, labels).detach(), own)


# -- the session's hooks: the rules, the net, the optimizer, the replica, saving, the counts ---
def check_widths(spec: NetSpec, processes: int, layers=("fc6", "fc7", "fc8")) -> None:
    """Every FC layer of ``layers`` splits evenly between the processes, or one line."""
    for layer in spec.layers:
        if layer.name in layers and layer.out_channels % processes:
            what = " (the data's classes)" if layer.name == "fc8" else ""
            raise ConfigError(f"--parallel hybrid splits {layer.name}'s {layer.out_channels} output units{what} "
                              f"between the processes, and {processes} does not divide {layer.out_channels}: "
                              f"start a number of processes that divides it")


def check_plan(config, world: World) -> None:
    """The rules of ``--parallel`` and of the hybrid schedule's recipe settings, one line each,
    before anything is written (fc8's width, the data's classes, is checked again at build)."""
    runtime, recipe = config.runtime, config.recipe
    if runtime.parallel != "hybrid":
        if recipe.fc_updates != "batch" or recipe.scale_conv_lr:
            raise ConfigError("--fc-updates rank and --scale-conv-lr are the hybrid schedule's: they need "
                              "--parallel hybrid under torchrun (a resumed run keeps its recipe)")
        return
    if not world.distributed:
        raise ConfigError("--parallel hybrid splits fc6-fc8 between processes: start it with torchrun "
                          "--nproc-per-node K, K >= 2 (docs/distributed.md), or train with --parallel data")
    if runtime.compile:
        raise ConfigError("--parallel hybrid does not run under --compile (its collectives sit inside the step)")
    if runtime.amp == "fp16":
        raise ConfigError("--parallel hybrid does not run with fp16's loss scaling; use --amp bf16 or fp32")
    check_widths(resolve(config.model), world.size, layers=("fc6", "fc7"))  # fc8's width comes with the data


def place(config, world: World, towers: int) -> Placement:
    """This process's devices: for ``--parallel data`` its share of ``--devices`` as the net
    needs them (``DeviceRequest.for_local_rank``); for hybrid one device, the grouped layout
    (two GPUs or ``--layout towers`` per process is one line)."""
    devices = config.runtime.devices
    if config.runtime.parallel != "hybrid":
        return devices.for_local_rank(world.local_rank, world.local_size, towers).resolve(towers)
    request = devices.for_local_rank(world.local_rank, world.local_size, 1)  # GPU r for local rank r
    if request.layout == "towers" or (request.devices is not None and len(request.devices) > 1):
        raise ConfigError(f"--parallel hybrid runs each process's conv layers on one device (the grouped layout); "
                          f"--devices {request}{' --layout towers' if request.layout == 'towers' else ''} gives a "
                          f"process the towers layout: give one device per process (auto, cpu, or '0;1;2;3')")
    return request.resolve(1)


def placed(model: nn.Module, config, world: World) -> nn.Module:
    """The net this process trains: ``model`` itself, or for hybrid its part of it."""
    return HybridAlexNet.of(model, world) if config.runtime.parallel == "hybrid" else model


def scale_conv_rates(optimizer: torch.optim.Optimizer, model: nn.Module, recipe, world: World) -> None:
    """``recipe.scale_conv_lr``: the conv layers learn at K times their rates (K processes),
    as cuda-convnet2's data-model configuration does; each optimizer group's conv parameters
    move to a twin group ("conv weights", "conv biases") whose multiplier is K times its own."""
    if not recipe.scale_conv_lr:
        return
    conv = {id(p) for p in model.trunk.parameters()}
    for i, group in enumerate(list(optimizer.param_groups)):
        mine = [p for p in group["params"] if id(p) in conv]
        if len(mine) == len(group["params"]):  # a layer's own group (conv1): all of it
            group.update(lr_mult=group["lr_mult"] * world.size, lr=group["lr"] * world.size)
        elif mine:
            group["params"] = [p for p in group["params"] if id(p) not in conv]
            label = f"conv {'biases' if i == 1 else 'weights'}"
            optimizer.add_param_group({**group, "params": mine, "layer": group["layer"] or label,
                                       "lr_mult": group["lr_mult"] * world.size, "lr": group["lr"] * world.size})


def replicate(session) -> object:
    """What the step trains (``Session.replica``): the hybrid net's ``HybridReplica``, or the
    data-parallel replica (``distributed.replicate``); counting from the session's first step."""
    model, step = session.state.model, session.state.progress.step
    if isinstance(model, HybridAlexNet):
        return HybridReplica(model, session.config.recipe.seed, session.config.recipe.fc_updates, step)
    return distributed.replicate(model, session.plan.world, step)


def join_save(model: nn.Module, optimizer: Optional[torch.optim.Optimizer]) -> None:
    """A rank that does not write takes part in rank 0's ``save_checkpoint``: the hybrid net's
    FC blocks (and their momentum) are gathered in the order ``checkpoint_payload`` gathers
    them, and what this rank gathered is dropped."""
    if isinstance(model, HybridAlexNet):
        checkpoint_payload(model=model, classes=[], optimizer=optimizer)


def communication(session) -> Dict:
    """summary.json's "communication": per collective, the bytes this process sent per step of
    this session (``RING_PASSES``), the tensors it handed over and the calls; rank 0's figures
    (every rank's are the same)."""
    replica, world = session.replica, session.plan.world
    collectives = getattr(replica, "collectives", None)
    steps = session.state.progress.step - collectives.first_step if collectives is not None else 0
    table = collectives.counts() if steps > 0 else {}

    def per_step(key):
        return {name: round(entry[key] / steps) for name, entry in table.items()}

    sent = per_step("sent")
    return {"parallel": session.config.runtime.parallel, "processes": world.size, "steps": steps,
            "precision": precision_name(session.plan.amp_dtype), "bytes_per_step": sent,
            "total_bytes_per_step": sum(sent.values()), "tensor_bytes_per_step": per_step("bytes"),
            "calls_per_step": {name: entry["calls"] / steps for name, entry in table.items()},
            "counted": "bytes each process sends per step with the ring algorithm: (K-1)/K of each tensor "
                       "all-gathered or reduce-scattered, 2(K-1)/K of each all-reduced (DDP's gradient "
                       "buckets); the tensors' sizes are counted as the collectives are called"}
