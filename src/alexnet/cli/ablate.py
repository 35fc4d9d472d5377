"""alexnet ablate."""

from __future__ import annotations

import click
from click.core import ParameterSource

from ..experiments import ablate
from ..experiments.ablate import ARMS
from ..progress import Reporter
from ..train.loop import Interrupted, TrainConfig
from ..train.recipe import get_recipe
from . import main
from .options import devices_options, quiet_option, runtime_options
from .train import RECIPE_OPTIONS, train_command

#: train's options that mean the same here, shared (the same click objects, not copies).
SHARED_TRAIN_OPTIONS = ("data", "preset", *RECIPE_OPTIONS, "no_cudnn_benchmark", "log_every", "skip_bad",
                        "no_ten_crop")
#: Options that say how the runs run; the only ones --resume takes.
RUNTIME_OPTIONS = ("devices", "layout", "amp", "channels_last", "workers", "lrn_impl", "no_cudnn_benchmark",
                   "log_every", "skip_bad")


def _flag(arm) -> str:
    return arm.name.replace("-", "_")


def arm_options(func):
    """One flag per arm of the table (--one-gpu, --no-lrn, --no-overlap)."""
    for arm in reversed(ARMS):
        delta = "+{:.1f} / +{:.1f}".format(*arm.paper_delta)
        func = click.option(f"--{arm.name}", _flag(arm), is_flag=True,
                            help=f"Arm: {arm.description} ({arm.section}; the paper: {delta} points of top-1 / "
                                 f"top-5 error).")(func)
    return func


@main.command("ablate")
@arm_options
@click.option("--seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train every arm, the baseline included, with this many seeds (the recipe's seed and the "
                   "next ones).")
@click.option("--out", "-o", type=click.Path(), default=None,
              help="The ablation's folder (default: runs/ablate-<time>). Running the same command again with the "
                   "same --out continues it.")
@click.option("--resume", type=click.Path(), default=None, metavar="DIR",
              help="Continue the ablation in DIR with its own settings (ablation.json): finished runs are kept, "
                   "an interrupted one resumes from its checkpoint.")
@click.option("--report", "report_dir", type=click.Path(), default=None, metavar="DIR",
              help="Rebuild the report and curves of the ablation in DIR from its runs, without training.")
@devices_options
@runtime_options
@quiet_option
def ablate_command(seeds, out, resume, report_dir, devices, amp, channels_last, workers, lrn_impl, quiet, data,
                   preset, no_cudnn_benchmark, log_every, skip_bad, no_ten_crop, **options):
    """The paper's ablations (§3.2-§3.4): the baseline (the paper's two-GPU net) and each chosen
    arm trained with everything else identical (data, recipe, schedule, steps, seed, data order,
    augmentation), then a report of their errors, the differences from the baseline beside the
    paper's, and whether each difference is larger than the seed-to-seed noise.

    No arm flag: all three. Without --data: the built-in dataset and its short schedule, which
    checks the command but is not a reproduction of the paper's numbers. Each arm and seed is an
    ordinary run folder (DIR/<arm>-seed<k>/); DIR/report.md, report.json and curves.png hold the
    report. Ctrl-C stops cleanly; --resume DIR continues.
    """
    ctx = click.get_current_context()
    arms = [arm.name for arm in ARMS if options.pop(_flag(arm))]
    given = [p for p in ctx.command.params
             if ctx.get_parameter_source(p.name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)]
    reporter = Reporter(enabled=not quiet)
    if report_dir:
        extra = [p.opts[0] for p in given if p.name not in ("report_dir", "quiet")]
        if extra:
            raise click.UsageError(f"--report only reads DIR; drop {', '.join(extra)}")
        result = ablate.report(report_dir)
        click.echo(ablate.format_report(result))
        return
    runtime = dict(devices=devices, amp=amp, channels_last=channels_last, workers=workers, lrn_impl=lrn_impl,
                   cudnn_benchmark=not no_cudnn_benchmark, log_every=log_every, skip_bad=skip_bad)
    try:
        if resume:
            extra = [p.opts[0] for p in given if p.name not in ("resume", "quiet", *RUNTIME_OPTIONS)]
            if extra:
                raise click.UsageError(f"--resume continues the ablation's own settings ({resume}/ablation.json); "
                                       f"drop {', '.join(extra)} (only how the runs run may change: --devices, "
                                       f"--amp, --workers, ...)")
            names = {p.name for p in given}
            changed = {k: v for k, v in runtime.items()
                       if k in names or (k == "devices" and "layout" in names)
                       or (k == "cudnn_benchmark" and "no_cudnn_benchmark" in names)}
            result = ablate.resume(resume, reporter=reporter, **changed)
        else:
            changes = {RECIPE_OPTIONS[k]: v for k, v in options.items() if v is not None}
            recipe = get_recipe(preset or ("paper" if data else "builtin")).replace(**changes)
            config = TrainConfig(recipe=recipe, data=data, ten_crop=not no_ten_crop, **runtime)
            result = ablate.run(config, arms=arms or ablate.ARM_NAMES, seeds=seeds, out=out, reporter=reporter)
    except Interrupted as stopped:
        click.echo(str(stopped), err=True)
        raise SystemExit(130)
    click.echo(ablate.format_report(result))


def _share_train_options(command: click.Command) -> None:
    """train's option objects, after --report, in train's order."""
    by_name = {p.name: p for p in train_command.params}
    at = next(i for i, p in enumerate(command.params) if p.name == "report_dir") + 1
    command.params[at:at] = [by_name[name] for name in SHARED_TRAIN_OPTIONS]


_share_train_options(ablate_command)
