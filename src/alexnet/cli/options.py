"""Options shared by the commands that build a network. ``--devices`` and ``--layout`` are
parsed here, at the edge, into one ``alexnet.devices.DeviceRequest``; the commands that run a
trained net get every runtime option as one ``alexnet.runtime.Runtime`` (``runtime_value``)."""

from __future__ import annotations

import functools
from typing import Dict, Iterable, List

import click
from click.core import ParameterSource

from ..devices import LAYOUTS, DeviceRequest
from ..model.config import BLOCKS, FORMS, VARIANTS, ModelConfig
from ..model.lrn import LRN_IMPLS
from ..precision import AMP_CHOICES
from ..runtime import Runtime
from ..train.config import OPTION_NAMES

#: The paper's net: where the model options' defaults come from.
PAPER_NET = ModelConfig()

#: Options spelled otherwise than the settings they set (``alexnet.train.config.OPTION_NAMES``);
#: every other option of train and ablate is named after its field.
RENAMED = {option: setting for setting, option in OPTION_NAMES.items()}

DEVICES_HELP = ("Where to run: auto (default), 0,1 (towers on two GPUs), 0 or cpu (grouped on one "
                "device), cpu,cpu (towers on the CPU), 0,cpu (towers on a GPU and the CPU). Under torchrun, "
                "auto gives local rank r GPUs 2r,2r+1; or one list per process: 0,1;2,3.")


def _apply(func, options):
    for option in reversed(options):
        func = option(func)
    return func


def devices_options(func):
    """--devices and --layout, handed to the command as one DeviceRequest named ``devices``."""
    @functools.wraps(func)
    def parse(*args, devices, layout, **kwargs):
        return func(*args, devices=DeviceRequest.parse(devices, layout), **kwargs)

    return _apply(parse, [
        click.option("--devices", "-d", default="auto", show_default=True, metavar="LIST", help=DEVICES_HELP),
        click.option("--layout", type=click.Choice(LAYOUTS), default=None,
                     help="Override the layout --devices implies (towers with one device puts both towers on it)."),
    ])


def model_options(func):
    """The variant and the paper's ablation switches (the class count comes from the data
    where there is data; see ``num_classes_option``)."""
    return _apply(func, [
        click.option("--variant", type=click.Choice(VARIANTS), default=PAPER_NET.variant, show_default=True,
                     help="two-gpu: the paper's net; one-gpu: the single-column comparison net of §3.2."),
        click.option("--lrn/--no-lrn", default=PAPER_NET.lrn, show_default=True,
                     help="Local response normalization (§3.3)."),
        click.option("--overlap/--no-overlap", default=PAPER_NET.overlap, show_default=True,
                     help="Overlapping 3x3/2 max-pooling (§3.4), or non-overlapping 2x2/2."),
        click.option("--blocks", type=click.Choice(BLOCKS), default=None,
                     help="paper: conv -> ReLU -> LRN -> max-pool as §3.5 says (default); authors: as the "
                          "authors' layers-145.cfg ran it, conv1's LRN before its ReLU and a spatial "
                          "normalization (cnorm2) after conv2's LRN (the authors preset's); caffe, caffenet: "
                          "Caffe's ports (LRN with k=1 across the towers; caffenet pools before it)."),
        click.option("--no-overlap-as", type=click.Choice(FORMS), default=None,
                     help="How --no-overlap is built: paper keeps the 3x3 net's padding (55-27-13-6, default); "
                          "authors builds the layers of their net 147: ceil rounding, conv2 padding 1, conv5 padding 0 "
                          "(55-28-26-13-11-6; the authors preset's)."),
    ])


def runtime_options(func):
    """How to run, whatever the recipe: precision, memory format, workers, LRN implementation,
    compilation (``alexnet.runtime.Runtime``; with --devices and --layout, all of it)."""
    return _apply(func, [
        click.option("--amp", type=click.Choice(AMP_CHOICES), default="auto", show_default=True,
                     help="Precision: auto is bf16 on GPUs that support it (LRN stays fp32), fp32 on the CPU."),
        click.option("--channels-last", is_flag=True, help="channels_last memory format (faster on recent GPUs)."),
        click.option("--workers", "-j", type=click.IntRange(min=0), default=None,
                     help="Data-loading processes (default: one per core, up to 8)."),
        click.option("--lrn-impl", type=click.Choice(LRN_IMPLS), default="fast", show_default=True,
                     help="LRN implementation: both compute the same values."),
        click.option("--compile", is_flag=True, help="Run the net through torch.compile (slow to start)."),
    ])


def runtime_value(func):
    """Every runtime option (--devices, --layout, --amp, --channels-last, --workers, --lrn-impl,
    --compile), handed to the command as one ``Runtime`` named ``runtime``: the commands that run
    a trained net take the same options, and each means the same in all of them."""
    names = Runtime.names()

    @functools.wraps(func)
    def build(*args, **kwargs):
        settings = {name: kwargs.pop(name) for name in names if name in kwargs}
        return func(*args, runtime=Runtime(**settings), **kwargs)

    return devices_options(runtime_options(build))


num_classes_option = click.option("--num-classes", type=click.IntRange(min=1), default=PAPER_NET.num_classes,
                                  show_default=True,
                                  help="Classes of fc8.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bars or progress lines; warnings (a run still at chance) are still shown.")


def as_settings(options: Dict[str, object]) -> Dict[str, object]:
    """The command's options as settings by field name (``RENAMED``), those not given (None)
    left out: ready for ``TrainConfig.replace``."""
    return {RENAMED.get(name, name): value for name, value in options.items() if value is not None}


def given_settings(ctx: click.Context, options: Dict[str, object]) -> Dict[str, object]:
    """The settings the user set (``as_settings`` of the options given), for the library to
    apply on top of a preset or a run's own configuration, and to refuse where they may not."""
    given = {setting_of(p) for p in given_options(ctx)}
    return {name: value for name, value in as_settings(options).items() if name in given}


def given_options(ctx: click.Context) -> List[click.Parameter]:
    """The parameters the user set (on the command line or through the environment)."""
    return [p for p in ctx.command.params
            if ctx.get_parameter_source(p.name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)]


def option_names(params: Iterable[click.Parameter]) -> str:
    """The options as the user spells them: "--lr, --wd"."""
    return ", ".join(p.opts[0] for p in params)


def setting_of(param: click.Parameter) -> str:
    """The setting a parameter sets (``--devices``/``--layout`` both set devices)."""
    name = RENAMED.get(param.name, param.name)
    return "devices" if name == "layout" else name
