"""Options shared by every command that builds a network."""

from __future__ import annotations

import functools

import click

from ..model.build import LAYOUTS
from ..model.spec import VARIANTS

DEVICES_HELP = ("Where to run: auto (default), 0,1 (towers on two GPUs), 0 or cpu (grouped on one "
                "device), cpu,cpu (towers on the CPU), 0,cpu (towers on a GPU and the CPU).")


def devices_options(func):
    """--devices and --layout."""
    @click.option("--devices", "-d", default="auto", show_default=True, metavar="LIST", help=DEVICES_HELP)
    @click.option("--layout", type=click.Choice(LAYOUTS), default=None,
                  help="Override the layout --devices implies (towers with one device puts both towers on it).")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)
    return wrapper


def model_options(func):
    """The variant and the paper's ablation switches (the class count comes from the data
    where there is data; see ``num_classes_option``)."""
    @click.option("--variant", type=click.Choice(VARIANTS), default="two-gpu", show_default=True,
                  help="two-gpu: the paper's net; one-gpu: the single-column comparison net of §3.2.")
    @click.option("--lrn/--no-lrn", default=True, show_default=True, help="Local response normalization (§3.3).")
    @click.option("--overlap/--no-overlap", default=True, show_default=True,
                  help="Overlapping 3x3/2 max-pooling (§3.4), or non-overlapping 2x2/2.")
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)
    return wrapper


num_classes_option = click.option("--num-classes", type=click.IntRange(min=1), default=1000, show_default=True,
                                  help="Classes of fc8.")
