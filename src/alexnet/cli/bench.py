"""alexnet bench."""

from __future__ import annotations

import click

from ..devices import DeviceRequest
from ..experiments.bench import CHOICES, MODELS, MODES, PRECISIONS, BenchSettings, command_line, run_benchmark, save
from ..experiments.bench.tables import format_report
from ..model.lrn import LRN_IMPLS
from .group import main


class _CommaList(click.ParamType):
    """A comma-separated list: of names from ``choices``, or of positive integers."""

    def __init__(self, choices=None):
        self.choices = choices
        self.name = "list"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        items = [v.strip() for v in str(value).split(",") if v.strip()]
        if not items:
            self.fail("give at least one value", param, ctx)
        if self.choices is None:
            try:
                numbers = tuple(int(v) for v in items)
            except ValueError:
                self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)
            if min(numbers) < 1:
                self.fail(f"{value!r}: batch sizes must be positive", param, ctx)
            return numbers
        bad = [v for v in items if v not in self.choices]
        if bad:
            self.fail(f"{', '.join(bad)}: choose from {', '.join(self.choices)}", param, ctx)
        return tuple(items)


@main.command()
@click.option("--devices", "-d", default="auto", show_default=True, metavar="LIST",
              help="Where to run, by the same rules as the other commands (auto, 0, cpu, 0,1, cpu,cpu, "
                   "0,cpu). The towers model runs the towers layout there (one device: both towers on it); "
                   "the other models run on the first device. auto: the towers on cuda:0,cuda:1 when two "
                   "GPUs are visible; else that placement is listed as not run, and the towers run with "
                   "both towers on the best single device.")
@click.option("--models", type=_CommaList(MODELS), default=",".join(MODELS), show_default=True,
              help="Which configurations: towers, grouped, one-gpu (the paper's single-column net), "
                   "torchvision (torchvision.models.alexnet, the reference).")
@click.option("--modes", type=_CommaList(MODES), default=",".join(MODES), show_default=True,
              help="train: a full training step (forward, loss, backward, the paper's SGD); inference.")
@click.option("--batch-size", "-b", "batch_sizes", type=_CommaList(), default=None,
              help="Batch sizes, comma-separated.  [default: 64 on the CPU, 128,256 on GPUs; --quick: 16 on the CPU, 128 on GPUs]")
@click.option("--precision", "precisions", type=_CommaList(PRECISIONS), default=None,
              help="fp32, bf16, fp16 (autocast; fp16 on CUDA only), comma-separated.  "
                   "[default: fp32 on the CPU, fp32,bf16 on GPUs]")
@click.option("--channels-last", type=click.Choice(CHOICES), default="off", show_default=True,
              help="Model and input in channels_last memory format (both: with and without).")
@click.option("--compile", "compile_", type=click.Choice(CHOICES), default="off", show_default=True,
              help="torch.compile the model (both: with and without); warm-up then includes compiling.")
@click.option("--lrn-impl", type=click.Choice(LRN_IMPLS + ("both",)), default="fast", show_default=True,
              help="The paper's nets' LRN: fast (the default) or stock (torch's LocalResponseNorm).")
@click.option("--warmup", type=click.IntRange(min=0), default=None,
              help="Untimed steps per case first.  [default: 2 on the CPU, 10 on GPUs; --quick: 1]")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Steps per timed block.  [default: 1 on the CPU, 20 on GPUs; --quick: 1]")
@click.option("--repeats", type=click.IntRange(min=1), default=None,
              help="Timed blocks per case, interleaved across cases; figures are medians.  "
                   "[default: 8 on the CPU, 5 on GPUs; --quick: 3]")
@click.option("--lrn-bench/--no-lrn-bench", default=True, show_default=True,
              help="Time the fast LRN against the stock one at AlexNet's two LRN shapes.")
@click.option("--lrn-batch", type=click.IntRange(min=1), default=None,
              help="Batch size of the LRN section.  [default: 128; --quick: 16]")
@click.option("--profile", type=click.Choice(MODELS + ("none",)), default="grouped", show_default=True,
              help="Per-layer time breakdown (torch.profiler) of this model's training step.")
@click.option("--flush-denormal/--keep-denormal", default=True, show_default=True,
              help="Treat subnormal floats as zero on the CPU while measuring.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the weights and the synthetic batches.")
@click.option("--quick", is_flag=True, help="A short run: small batches, one step per block, three blocks.")
@click.option("--loaders/--no-loaders", default=True, show_default=True,
              help="Also measure the data loaders side by side (folder + PIL, torchvision's decoder, packed raw "
                   "and JPEG) and training fed by the real loader, to show whether the model or the loader "
                   "is the limit.")
@click.option("--data-root", type=click.Path(file_okay=False), default=None, help="The dataset for --loaders (default: the built-in one).")
@click.option("--json", "--out", "json_path", type=click.Path(dir_okay=False), default="bench.json",
              show_default=True, help="Where to save the results as JSON.")
def bench(devices, models, modes, batch_sizes, precisions, channels_last, compile_, lrn_impl, warmup, steps,
          repeats, lrn_bench, lrn_batch, profile, flush_denormal, seed, quick, loaders, data_root, json_path):
    """Measure throughput (images/s, ms/step), peak memory and cross-device traffic of the
    paper's nets and torchvision's alexnet, side by side, for inference and a full training
    step; the fast LRN against the stock one; and a per-layer profile. Prints a table and
    saves every number with its settings as JSON; `python tools/bench_targets.py JSON` checks
    the project's speed targets against it."""
    settings = BenchSettings(
        devices=DeviceRequest.parse(devices), models=models, modes=modes, batch_sizes=batch_sizes, precisions=precisions,
        channels_last=channels_last, compile=compile_, lrn_impl=lrn_impl, warmup=warmup, steps=steps,
        repeats=repeats, lrn_bench=lrn_bench, lrn_batch=lrn_batch,
        profile=None if profile == "none" else profile, flush_denormal=flush_denormal, seed=seed, quick=quick,
        loaders=loaders, data_root=data_root)
    results = run_benchmark(settings, log=lambda message: click.echo(f"[bench] {message}", err=True),
                            command=command_line())
    path = save(results, json_path)
    click.echo(format_report(results))
    click.echo(f"\nresults: {path}")
