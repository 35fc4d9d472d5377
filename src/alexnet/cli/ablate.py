"""alexnet ablate."""

from __future__ import annotations

import click

from ..experiments import ablate
from ..experiments.ablate import PAPER_ARMS
from ..experiments.ablate.arms import PAPER_NET_SETTINGS
from ..progress import Reporter
from ..train.config import TrainConfig
from ..train.loop import Interrupted
from ..train.recipe import default_preset
from .group import exit_stopped, main
from .options import (devices_options, given_options, given_settings, option_names, quiet_option, runtime_options,
                      setting_of)
from .train import train_command

#: train's options that are not ablate's: the run folder's own (the ablation has its folder and
#: --resume), and torchrun's timeout (an ablation runs in one process).
NOT_SHARED = ("out", "resume", "overwrite", "collective_timeout", "init_from")


def _flag(arm) -> str:
    return arm.name.replace("-", "_")


def arm_options(func):
    """One flag per arm of the table (--one-gpu, --no-lrn, --no-overlap)."""
    for arm in reversed(PAPER_ARMS):
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
def ablate_command(seeds, out, resume, report_dir, quiet, data, preset, **options):
    """The paper's ablations (§3.2-§3.4): the baseline (the paper's two-GPU net) and each chosen
    arm trained with everything else identical (data, recipe, schedule, steps, seed, data order,
    augmentation), then a report of their errors, the differences from the baseline beside the
    paper's, and whether each difference is larger than the seed-to-seed noise.

    No arm flag: all three. Without --data: the built-in dataset and its short schedule, which
    checks the command but is not a reproduction of the paper's numbers. Each arm and seed is an
    ordinary run folder (DIR/<arm>-seed<k>/); DIR/report.md, report.json and curves.png hold the
    report. Ctrl-C stops cleanly; --resume DIR continues.
    """
    arms = [arm.name for arm in PAPER_ARMS if options.pop(_flag(arm))]
    given = given_options(click.get_current_context())
    reporter = Reporter(enabled=not quiet)
    if report_dir:
        extra = [p for p in given if p.name not in ("report_dir", "quiet")]
        if extra:
            raise click.UsageError(f"--report only reads DIR; drop {option_names(extra)}")
        click.echo(ablate.format_ablation_report(ablate.report(report_dir)))
        return
    settings = given_settings(click.get_current_context(), options)
    try:
        if resume:
            extra = [p for p in given if p.name in ("out", "seeds", "preset", "data", *map(_flag, PAPER_ARMS))]
            if extra:
                raise click.UsageError(f"--resume continues the ablation's own settings ({resume}/ablation.json); "
                                       f"drop {option_names(extra)}")
            result = ablate.resume(resume, reporter=reporter, **settings)
        else:
            config = TrainConfig.from_preset(preset or default_preset(data), data=data, **settings)
            result = ablate.run(config, arms=arms or ablate.ARM_NAMES, seeds=seeds, out=out, reporter=reporter)
    except Interrupted as stopped:  # an ablation stopped at --max-steps is not finished: 130
        exit_stopped(stopped, stopped.exit_code or 130)
    click.echo(ablate.format_ablation_report(result))


def _share_train_options(command: click.Command) -> None:
    """train's option objects (the same ones, not copies), after --report, in train's order:
    every one this command does not have itself, but those of ``NOT_SHARED`` and the net's
    settings the arms set."""
    own = {p.name for p in command.params}
    shared = [p for p in train_command.params if p.name not in own and p.name not in NOT_SHARED
              and setting_of(p) not in PAPER_NET_SETTINGS]
    at = next(i for i, p in enumerate(command.params) if p.name == "report_dir") + 1
    command.params[at:at] = shared


_share_train_options(ablate_command)
