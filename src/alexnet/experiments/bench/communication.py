"""What each way of splitting the net moves per training step: ``--parallel data`` (every
process a whole replica, every gradient all-reduced), ``--parallel hybrid`` (the conv layers
data-parallel, fc6-fc8 split by output units: ``alexnet.train.hybrid``) and the paper's two
towers (the four exchange points of one replica, ``model.traffic()``).

    report = communication_report(batches=(128, 256), processes=(2, 4, 8))
    print("\\n".join(report["table"]))

A figure is the bytes each process (each GPU, for the towers) sends per step, fp32. Where this
machine can run K processes (``measure_up_to``, its cores by default) it is measured: K gloo
processes on 127.0.0.1 take one training step on synthetic crops, and the collectives' own
counters are read (``alexnet.train.distributed.Collectives``); elsewhere it is computed from
the layer table (``computed``), and labelled so. The two agree wherever both exist
(tests/test_hybrid.py checks it). Nothing here times anything: on a CPU the figures say what
crosses, not how fast a GPU link would carry it.
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ...model.build import build_model
from ...model.config import ModelConfig
from ...model.spec import NetSpec, resolve
from ...tables import markdown_table
from ...train import distributed, hybrid
from ...train.distributed import RING_PASSES
from ...train.optim import paper_sgd
from ...train.step import train_step
from ...world import World

FP32 = 4
LABEL = 8  # int64
#: Where a row's data-parallel and hybrid figures come from (the towers' are always the towers'
#: own counters, ``measured_towers``).
SOURCES = {"measured": "K gloo processes' counters", "computed": "the layer table"}


def _sent(op: str, tensor_bytes: float, processes: int) -> float:
    """What one process sends for one collective of a tensor this large (``RING_PASSES``)."""
    return tensor_bytes * RING_PASSES[op] * (processes - 1) / processes


def computed(spec: NetSpec, parallel: str, batch: int, processes: int) -> Dict[str, float]:
    """The bytes each of ``processes`` sends per step at global batch ``batch``, per collective,
    from the layer table: what ``Collectives`` counts when the net trains in fp32."""
    k = processes
    if parallel == "data":
        return {"gradients all-reduce": _sent("all_reduce", FP32 * spec.params, k)}
    conv = sum(layer.params for layer in spec.layers if layer.layer.kind == "conv")
    pool5 = math.prod(spec["conv5"].out_shape)
    out = {"conv grads all-reduce": _sent("all_reduce", FP32 * conv, k),
           "labels all-gather": _sent("all_gather", LABEL * batch, k),
           "pool5 all-gather": _sent("all_gather", FP32 * batch * pool5, k),
           "pool5 grad reduce-scatter": _sent("reduce_scatter", FP32 * batch * pool5, k)}
    *hidden, last = [layer for layer in spec.layers if layer.layer.kind == "fc"]
    for layer in hidden:  # fc6 and fc7: gathered as the next layer's input, their gradient scattered back
        out[f"{layer.name} all-gather"] = _sent("all_gather", FP32 * batch * layer.out_channels, k)
        out[f"{layer.name} grad reduce-scatter"] = _sent("reduce_scatter", FP32 * batch * layer.out_channels, k)
    out[f"{last.name} all-gather"] = _sent("all_gather", FP32 * batch * last.out_channels, k)  # the logits
    return out


def towers_bytes(spec: NetSpec, batch: int) -> int:
    """What each GPU of one two-tower replica sends per step: forward, the halves at the
    exchange points (``NetSpec.exchanges``); backward, each received half's gradient returns as
    large. The two directions add up to the same on either GPU."""
    forward = sum(point["values_per_direction"] * len(point["directions"]) for point in spec.exchanges())
    return FP32 * batch * forward


def crossover(spec: NetSpec, processes: int) -> int:
    """The smallest global batch at which the hybrid moves at least as many bytes per process
    as data parallelism: below it the hybrid moves fewer (its bytes grow with the batch, the
    gradients' do not)."""
    fixed = sum(computed(spec, "hybrid", 0, processes).values())
    per_image = sum(computed(spec, "hybrid", 1, processes).values()) - fixed
    data = sum(computed(spec, "data", 0, processes).values())
    return math.ceil((data - fixed) / per_image)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _measure_rank(rank: int, processes: int, port: int, parallel: str, batch: int, config: Dict, out: str) -> None:
    """One of the K processes: one training step on synthetic crops, its counters saved (rank 0)."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=processes)
    try:
        world = World(rank, processes, rank, processes)
        model = build_model(ModelConfig.from_dict(config), seed=0)
        generator = torch.Generator().manual_seed(rank)
        images = 50 * torch.randn((batch // processes, 3, 224, 224), generator=generator)  # 0-255 minus the mean
        labels = torch.randint(0, model.spec.config.num_classes, (batch // processes,), generator=generator)
        if parallel == "hybrid":
            replica = hybrid.HybridReplica(hybrid.HybridAlexNet.of(model, world), seed=0)
            hybrid.train_step(replica, images, labels, paper_sgd(replica.net))
        else:
            replica = distributed.replicate(model, world)
            train_step(replica, images, labels, paper_sgd(model))
        if rank == 0:
            torch.save({name: entry["sent"] for name, entry in replica.collectives.counts().items()}, out)
    finally:
        dist.destroy_process_group()


def measured(parallel: str, batch: int, processes: int, config: Optional[ModelConfig] = None) -> Dict[str, float]:
    """The bytes each process sent in one training step of ``processes`` gloo processes on this
    machine, per collective, as their counters read them."""
    with tempfile.TemporaryDirectory() as folder:
        out = str(Path(folder) / "counts.pt")
        args = (processes, _free_port(), parallel, batch, (config or ModelConfig()).as_dict(), out)
        mp.start_processes(_measure_rank, args=args, nprocs=processes, join=True, start_method="spawn")
        return torch.load(out, weights_only=True)


def measured_towers(spec: NetSpec, batch: int) -> int:
    """``towers_bytes`` read from the towers' own counters: one forward of the towers layout on
    the CPU (both towers there) counts each exchange once; the backward returns as much."""
    model = build_model(spec.config, layout="towers", devices=["cpu", "cpu"], seed=0).eval()
    with torch.no_grad():
        model(torch.zeros((batch, 3, 224, 224)))
    return sum(counts["bytes"] for point, counts in model.traffic().items() if point != "input")


def communication_report(batches: Sequence[int] = (128, 256), processes: Sequence[int] = (2, 4, 8),
                         measure_up_to: Optional[int] = None, config: Optional[ModelConfig] = None,
                         log: Callable[[str], None] = lambda message: None) -> Dict:
    """For each global batch and number of processes K: the bytes each process sends per step
    under data parallelism and the hybrid, and each GPU of one two-tower replica; measured with K
    gloo processes where K <= ``measure_up_to`` (this machine's cores by default), computed from
    the layer table elsewhere. Also, per K, the global batch from which the hybrid stops moving
    fewer bytes (``crossover``). ``table``: the figures as markdown lines."""
    config = config or ModelConfig()
    spec = resolve(config)
    limit = os.cpu_count() or 1 if measure_up_to is None else measure_up_to
    rows = []
    for batch in batches:
        towers = measured_towers(spec, batch) if limit >= 1 else towers_bytes(spec, batch)
        for k in processes:
            source = "measured" if k <= limit else "computed"
            log(f"batch {batch}, {k} processes: {source}")
            figures = {mode: (measured(mode, batch, k, config) if source == "measured" else computed(spec, mode, batch, k))
                       for mode in ("data", "hybrid")}
            rows.append({"batch": batch, "processes": k, "source": source, "towers_per_gpu": towers,
                         **{mode: sum(per.values()) for mode, per in figures.items()},
                         "per_collective": figures, "computed": {mode: sum(computed(spec, mode, batch, k).values())
                                                                 for mode in ("data", "hybrid")}})
    crossovers = {k: crossover(spec, k) for k in processes}
    return {"config": config.as_dict(), "measure_up_to": limit, "rows": rows, "crossover": crossovers,
            "table": _table(rows, crossovers)}


def _table(rows, crossovers) -> list:
    def mb(value):
        return f"{value / 1e6:,.1f}"

    lines = markdown_table(
        ["global batch", "processes K", "data-parallel (MB)", "hybrid (MB)", "hybrid / data",
         "two towers, each GPU (MB)", "data-parallel and hybrid"],
        [[r["batch"], r["processes"], mb(r["data"]), mb(r["hybrid"]), f"{r['hybrid'] / r['data']:.3f}",
          mb(r["towers_per_gpu"]), f"{r['source']} ({SOURCES[r['source']]})"] for r in rows])
    lines.append("")
    lines += [f"- K = {k}: the hybrid moves fewer bytes than data parallelism below a global batch of "
              f"{batch:,} images" for k, batch in crossovers.items()]
    return lines
