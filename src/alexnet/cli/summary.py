"""alexnet summary."""

from __future__ import annotations

import json

import click

from ..model.spec import resolve
from ..model.summary import format_summary, summarize
from ..train.recipe import PRESETS, get_preset
from .group import main
from .options import devices_options, model_options, num_classes_option


@main.command()
@devices_options
@model_options
@num_classes_option
@click.option("--preset", type=click.Choice(list(PRESETS)), default=None,
              help="The net a training preset builds (authors: the authors' blocks and initialization); "
                   "the options above change it.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON, for scripts.")
def summary(devices, preset, as_json, **model_settings):
    """Print the layer table: per layer and per tower the output shape, parameters,
    multiply-adds, device and what follows the layer, the totals, and the cross-device
    exchange points."""
    base = get_preset(preset).model if preset else None
    spec = resolve(base, **{name: value for name, value in model_settings.items() if value is not None})
    placement = devices.resolve(towers=spec.towers)
    result = summarize(spec, placement.layout, placement.devices)
    click.echo(json.dumps(result, indent=2) if as_json else format_summary(result))
