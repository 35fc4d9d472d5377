"""alexnet bench."""

from __future__ import annotations

import sys

import click

from ..devices import DeviceRequest
from ..experiments.bench import DEFAULTS, MODELS, MODES, Bench, run_benchmark
from ..experiments.bench.tables import format_bench_report
from ..files import write_json
from ..model.lrn import LRN_IMPLS
from ..runtime import Runtime
from .group import main


def _words(ctx, param, value):
    """A comma-separated option -> a tuple of its words, each once (the library checks them)."""
    if value is None or isinstance(value, tuple):
        return value
    return tuple(dict.fromkeys(v.strip() for v in value.split(",") if v.strip()))


def _sizes(ctx, param, value):
    try:
        return None if value is None else tuple(int(w) for w in _words(ctx, param, value))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of integers") from None


def _switch(ctx, param, value):
    """off, on or both -> the runtime values swept (False, True)."""
    words = _words(ctx, param, value)
    if not set(words) <= {"off", "on", "both"}:
        raise click.BadParameter(f"{value!r}: give off, on or both")
    return tuple(flag for word, flag in (("off", False), ("on", True)) if word in words or "both" in words)


def _impls(ctx, param, value):
    words = _words(ctx, param, value)
    return LRN_IMPLS if "both" in words else words


def _sweep(help_text, default, callback=_words, metavar="LIST"):
    return dict(default=default, show_default=True, callback=callback, metavar=metavar, help=help_text)


def _defaults(name: str) -> str:
    """The bench's defaults for ``name`` (``DEFAULTS``), for its help."""
    def spell(value):
        return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
    cpu, cpu_quick, gpu, gpu_quick = map(spell, DEFAULTS[name])
    quick = cpu_quick if cpu_quick == gpu_quick else f"{cpu_quick} on the CPU, {gpu_quick} on GPUs"
    plain = cpu if cpu == gpu else f"{cpu} on the CPU, {gpu} on GPUs"
    return f"  [default: {plain}; --quick: {quick}]"


@main.command()
@click.option("--devices", "-d", default="auto", show_default=True, metavar="LIST",
              help="Where to run, by the same rules as the other commands (auto, 0, cpu, 0,1, cpu,cpu, "
                   "0,cpu). The towers model runs the towers layout there (one device: both towers on it); "
                   "the other models run on the first device. auto: the towers on cuda:0,cuda:1 when two "
                   "GPUs are visible; else that placement is listed as not run, and the towers run with "
                   "both towers on the best single device.")
@click.option("--models", **_sweep("The nets: towers, grouped, one-gpu (the paper's single-column net), "
                                   "torchvision (torchvision.models.alexnet, the reference).", ",".join(MODELS)))
@click.option("--modes", **_sweep("train: a full training step (forward, loss, backward, the paper's SGD); "
                                  "inference.", ",".join(MODES)))
@click.option("--batch-size", "-b", "batch_sizes", callback=_sizes, metavar="LIST",
              help="Batch sizes." + _defaults("batch_sizes"))
@click.option("--amp", "--precision", "amp", **_sweep(
    "Precisions swept, as every command's --amp: fp32, bf16, fp16 (CUDA only), auto (bf16 on GPUs that support "
    "it, else fp32).", "fp32,auto"))
@click.option("--channels-last", **_sweep("The channels_last memory format for the net and its input: off, on or "
                                          "both.", "off", _switch, "off|on|both"))
@click.option("--lrn-impl", **_sweep("The paper's nets' LRN: fast, stock (torch's LocalResponseNorm) or both.", "fast",
                                     _impls, "fast|stock|both"))
@click.option("--compile", "compile_", **_sweep("torch.compile the net: off, on or both; the warm-up then includes "
                                                "compiling.", "off", _switch, "off|on|both"))
@click.option("--workers", "-j", type=int, default=None,
              help="Data-loading processes of the end-to-end training (default: one per core, up to 8).")
@click.option("--warmup", type=int, default=None, help="Untimed steps per case first." + _defaults("warmup"))
@click.option("--steps", type=int, default=None, help="Steps per timed block." + _defaults("steps"))
@click.option("--repeats", type=int, default=None, help="Timed blocks per case, interleaved across cases; figures "
                                                       "are medians." + _defaults("repeats"))
@click.option("--lrn-bench/--no-lrn-bench", default=True, show_default=True,
              help="Time the fast LRN against the stock one at AlexNet's two LRN shapes.")
@click.option("--lrn-batch", type=int, default=None, help="Batch size of the LRN section." + _defaults("lrn_batch"))
@click.option("--profile", type=click.Choice(MODELS + ("none",)), default="grouped", show_default=True,
              help="Per-layer time breakdown (torch.profiler) of this net's training step.")
@click.option("--flush-denormal/--keep-denormal", default=True, show_default=True,
              help="Treat subnormal floats as zero on the CPU while measuring.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the weights and the synthetic batches.")
@click.option("--quick", is_flag=True, help="A short run: small batches, one step per block, three blocks.")
@click.option("--loaders/--no-loaders", default=True, show_default=True,
              help="Also measure the data loaders side by side (folder + PIL, torchvision's decoder, packed raw "
                   "and JPEG) and training fed by the real loader: is the net or the loader the limit?")
@click.option("--data-root", type=click.Path(file_okay=False), default=None,
              help="The dataset for --loaders (default: the built-in one).")
@click.option("--json", "--out", "json_path", type=click.Path(dir_okay=False), default="bench.json",
              show_default=True, help="Where to save the results as JSON.")
def bench(devices, amp, channels_last, lrn_impl, compile_, workers, profile, json_path, **own):
    """Measure throughput (images/s, ms/step), peak memory and cross-device traffic of the
    paper's nets and torchvision's alexnet, side by side, for inference and a full training
    step, over every combination of the runtime options given as lists; the fast LRN against
    the stock one; a per-layer profile; the data loaders. Prints the tables and saves every
    number with its settings as JSON; `python tools/bench_targets.py JSON` checks the
    project's speed targets against it."""
    settings = Bench(runtime=Runtime(devices=DeviceRequest.parse(devices), workers=workers),
                     sweep={"lrn_impl": lrn_impl, "channels_last": channels_last, "compile": compile_, "amp": amp},
                     profile=None if profile == "none" else profile, **own)
    results = run_benchmark(settings, log=lambda message: click.echo(f"[bench] {message}", err=True),
                            command=["alexnet", *sys.argv[1:]])
    path = write_json(json_path, results)
    click.echo(format_bench_report(results))
    click.echo(f"\nresults: {path}")
