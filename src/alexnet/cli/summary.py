"""alexnet summary."""

from __future__ import annotations

import json

import click

from ..model.spec import resolve
from ..model.summary import format_summary, summarize
from . import main
from .options import devices_options, model_options, num_classes_option


@main.command()
@devices_options
@model_options
@num_classes_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON, for scripts.")
def summary(devices, as_json, **model_settings):
    """Print the layer table: per layer and per tower the output shape, parameters,
    multiply-adds and device, the totals, and the cross-device exchange points."""
    spec = resolve(**model_settings)
    placement = devices.resolve(towers=spec.towers)
    result = summarize(spec, placement.layout, placement.devices)
    click.echo(json.dumps(result, indent=2) if as_json else format_summary(result))
