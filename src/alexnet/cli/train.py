"""alexnet train."""

from __future__ import annotations

import click

from ..data.transforms import MEANS, PCA_CONVENTIONS
from ..model.dropout import DROPOUT_STYLES
from ..model.init import INIT_PRESETS
from ..progress import Reporter
from ..train.config import TrainConfig
from ..train.distributed import DEFAULT_TIMEOUT, PARALLEL
from ..train.loop import Interrupted, resume_config, train
from ..train.recipe import FC_UPDATES, PRESETS, SCHEDULES, default_preset
from ..world import World
from .group import exit_stopped, main
from .options import (devices_options, given_options, given_settings, model_options, option_names, quiet_option,
                      runtime_options)


def _presets_with(dropout_style: str) -> str:
    return ", ".join(name for name, preset in PRESETS.items() if preset.model.dropout_style == dropout_style)


@main.command("train")
@click.option("--data", type=click.Path(), default=None,
              help="A dataset folder (ROOT/train/<class>/*, ROOT/val/<class>/*) or a packed dataset from "
                   "`alexnet prepare`. Default: the built-in dataset, generated on first use.")
@click.option("--out", "-o", type=click.Path(), default=None, help="Run folder (default: runs/<preset>-<time>).")
@click.option("--resume", type=click.Path(), default=None, metavar="RUN_DIR",
              help="Continue the run in RUN_DIR from its last checkpoint, on these or other devices.")
@click.option("--overwrite", is_flag=True, help="Start again in an --out folder that already holds a run.")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=None,
              help="Training recipe: paper (§5, the paper's initialization), authors (what the authors' 2012 "
                   "configuration ran: their blocks and initialization, lr divided after epochs 24, 50, 78 of 90 "
                   "(their log's 25, 51, 79: cuda-convnet counts from 1), biases at a fixed 0.02, conv1 slowed after "
                   "66 and frozen after 71, colour noise off after 66; with --epochs N each of these epochs scales "
                   "by N/90), caffe (bvlc_alexnet's solver and "
                   "initialization), builtin (a few minutes on a CPU, the authors' initialization: see "
                   "docs/trainability.md), finetune (with --init-from: lr 0.001, biases 2x, fc8 10x, divided by 10 "
                   "every 4 of 20 epochs). Default: builtin without --data, authors with it (the paper's words' "
                   "initialization stalls on small data sets).")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs (paper: 90).")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=None, help="Batch size (paper: 128).")
@click.option("--lr", type=float, default=None, help="Initial learning rate (paper: 0.01).")
@click.option("--momentum", type=float, default=None, help="SGD momentum (paper: 0.9).")
@click.option("--wd", type=float, default=None, help="Weight decay on weights, not biases (paper: 5e-4).")
@click.option("--init", type=click.Choice(list(INIT_PRESETS)), default=None, help="Initialization preset.")
@click.option("--dropout", type=float, default=None, help="Dropout in fc6 and fc7 (paper: 0.5).")
@click.option("--dropout-style", type=click.Choice(DROPOUT_STYLES), default=None,
              help="paper: zero fc6/fc7 units with probability --dropout while training, multiply by 1-p at test "
                   f"(§4.2; the {_presets_with('paper')} presets); inverted: nn.Dropout, kept units x1/(1-p) while "
                   f"training (the {_presets_with('inverted')} presets).")
@click.option("--schedule", type=click.Choice(SCHEDULES), default=None,
              help="plateau: divide the LR by 10 when validation error stops improving (paper); step: every "
                   "--step-epochs; epochs: after each of --lr-drop-epochs (authors).")
@click.option("--step-epochs", type=click.IntRange(min=1), default=None)
@click.option("--lr-drop-epochs", callback=lambda ctx, param, value: _epoch_list(value), default=None,
              metavar="LIST", help="epochs: divide the LR after these epochs, e.g. 24,50,78 (the authors preset's).")
@click.option("--patience", type=click.IntRange(min=1), default=None,
              help="plateau: epochs without a new best validation error before dividing the LR (paper preset: 5).")
@click.option("--min-improvement", type=float, default=None,
              help="plateau: a new best must beat the best top-1 error at the current rate by this much "
                   "(a fraction: 0.001 = 0.1 points; paper preset: 0.001).")
@click.option("--min-epochs-per-lr", type=click.IntRange(min=1), default=None,
              help="plateau: never divide before this many epochs at the current rate (paper preset: 10).")
@click.option("--max-lr-drops", type=click.IntRange(min=0), default=None, help="At most this many divisions (paper: 3).")
@click.option("--seed", type=int, default=None, help="Seeds initialization, data order, augmentation and dropout.")
@click.option("--init-from", type=click.Path(), default=None, metavar="CHECKPOINT",
              help="Start from this checkpoint's weights and net (a run folder, a .pt, or alexnet import-caffe's "
                   "output), fc8 drawn afresh when the data has another class count: fine-tuning (--preset finetune "
                   "is its usual recipe).")
@click.option("--mean", type=click.Choice(MEANS), default=None,
              help="What to subtract: image: the 256x256 mean image under each crop's window (default; the paper's "
                   "words); centre: the mean image's centre window from every crop (cuda-convnet's data_mean_crop); "
                   "channel: the per-channel means (most ports); none.")
@click.option("--pca", type=click.Choice(PCA_CONVENTIONS), default=None,
              help="Colour noise: sqrt-lambda adds alpha_i*sqrt(lambda_i)*p_i (cuda-convnet, default); lambda adds "
                   "alpha_i*lambda_i*p_i with lambda on a 0-1 pixel scale, i.e. alpha_i*lambda_i/255 here (fb.resnet's "
                   "reading of the formula); none turns it off.")
@click.option("--pca-std", type=float, default=None, help="Std of the PCA colour noise's α (paper: 0.1; 0 turns it off).")
@click.option("--crop-chunk", type=click.IntRange(min=1), default=None,
              help="One crop position and flip per this many consecutive images (cuda-convnet: 32, the authors "
                   "preset's; default 1: per image).")
@click.option("--divide-std/--no-divide-std", default=None,
              help="Also divide inputs by the pixel std, as most ports do (not the paper).")
@devices_options
@model_options
@runtime_options
@click.option("--no-cudnn-benchmark", "cudnn_benchmark", is_flag=True, flag_value=False, default=True,
              help="Turn off cudnn.benchmark.")
@click.option("--log-every", type=click.IntRange(min=1), default=10, show_default=True,
              help="Steps between progress records.")
@click.option("--skip-bad", is_flag=True, help="Skip unreadable images (and report how many) instead of stopping.")
@click.option("--no-ten-crop", "ten_crop", is_flag=True, flag_value=False, default=True,
              help="Skip the final ten-crop evaluation.")
@click.option("--max-steps", type=click.IntRange(min=1), default=None,
              help="Stop (saving a checkpoint, as on Ctrl-C) after this many steps in total.")
@click.option("--collective-timeout", type=click.FloatRange(min=1), default=DEFAULT_TIMEOUT, show_default=True,
              help="Under torchrun: seconds a process waits for the others before stopping with an error "
                   "(a dead or stuck rank).")
@click.option("--parallel", type=click.Choice(PARALLEL), default=None,
              help="Under torchrun: data (default): every process a whole replica, all gradients all-reduced; "
                   "hybrid: the conv layers data-parallel, fc6-fc8 split between the processes by output units "
                   "(Krizhevsky 2014; one device per process; docs/distributed.md).")
@click.option("--fc-updates", type=click.Choice(FC_UPDATES), default=None,
              help="--parallel hybrid: batch (default): the FC layers update once per global batch, as one process "
                   "does; rank: after each process's images in turn, K updates per step (cuda-convnet2's "
                   "updatePeriod=1).")
@click.option("--scale-conv-lr/--no-scale-conv-lr", default=None,
              help="--parallel hybrid: the conv layers' rates times the number of processes K, the FC layers' as "
                   "they are (cuda-convnet2's data-model configuration; not the default: docs/distributed.md).")
@quiet_option
def train_command(data, out, resume, overwrite, preset, quiet, **options):
    """Train AlexNet with the paper's recipe (§5): SGD, momentum 0.9, weight decay 5e-4, batch 128,
    learning rate 0.01 divided by 10 when validation error stops improving, dropout 0.5.

    Without --data it trains on the built-in dataset with a short schedule that finishes in a few
    minutes on a CPU. Every run is a folder: config.json, classes.json, the dataset statistics,
    metrics.jsonl, checkpoints/last.pt and best.pt, and curves.png. Ctrl-C saves a checkpoint;
    --resume continues exactly where it stopped.

    \b
    Several replicas (data parallel, docs/distributed.md):
      torchrun --standalone --nproc-per-node 4 -m alexnet train --data DIR
    --batch-size is the global batch; each process takes its share, and rank 0 writes the run.
    Conv layers data-parallel, FC layers split between the processes (Krizhevsky 2014):
      torchrun --standalone --nproc-per-node 8 -m alexnet train --parallel hybrid --data DIR
    """
    main_process = World.from_env().is_main  # under torchrun, rank 0 speaks for all
    reporter = Reporter(enabled=not quiet and main_process, warnings=main_process)
    ctx = click.get_current_context()
    settings = given_settings(ctx, options)  # what the user set; the preset (or the run) decides the rest
    if resume:
        extra = [p for p in given_options(ctx) if p.name in ("out", "overwrite", "preset")]
        if extra:
            raise click.UsageError(f"--resume continues the run in its own folder with its own recipe; drop "
                                   f"{option_names(extra)}")
        config = resume_config(resume, **settings, **({"data": data} if data is not None else {}))
    else:
        config = TrainConfig.from_preset(preset or default_preset(data), data=data, out=out,
                                         overwrite=overwrite, **settings)
    try:
        summary = train(config, resume=resume, reporter=reporter)
    except Interrupted as stopped:
        exit_stopped(stopped, stopped.exit_code, speak=main_process)
    if main_process:
        click.echo(format_train_summary(summary))


def _epoch_list(value):
    """--lr-drop-epochs 25,51,79 -> (25, 51, 79); the recipe checks the numbers."""
    if value is None:
        return None
    try:
        return tuple(int(part) for part in value.split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"a comma-separated list of epochs (25,51,79); got {value!r}") from None


def format_train_summary(summary) -> str:
    lines = [f"run folder: {summary['run']} ({summary['epochs']} epochs, {summary['steps']} steps, "
             f"{summary['images']:,} images)"]
    chance = summary["chance_top1_error"]
    for key, label in (("final_centre_crop", "validation, centre crop"), ("final_ten_crop", "validation, ten crops")):
        if key in summary:
            r = summary[key]
            lines.append(f"{label}: top-1 error {100 * r['top1_error']:.1f}% (accuracy "
                         f"{100 * (1 - r['top1_error']):.1f}%, chance {100 * (1 - chance):.1f}%), "
                         f"top-5 error {100 * r['top5_error']:.1f}%")
    lines.append(f"curves: {summary['run']}/curves.png; metrics: {summary['run']}/metrics.jsonl; "
                 f"{summary['disk_bytes'] / 2**20:,.0f} MiB in the run folder")
    return "\n".join(lines)
