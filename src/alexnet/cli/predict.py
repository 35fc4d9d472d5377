"""alexnet predict."""

from __future__ import annotations

import json

import click

from ..inference import format_predictions, predict_files
from .group import main
from .options import runtime_value


@main.command("predict")
@click.argument("checkpoint", type=click.Path())
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--ten-crop", is_flag=True, help="Average the softmax over the paper's ten patches.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@runtime_value
def predict_command(checkpoint, images, top, ten_crop, as_json, runtime):
    """The top classes, with probabilities, for each image (class names from the checkpoint;
    CHECKPOINT may be a run folder: its last checkpoint), read as the checkpoint's preprocessing
    says (an imported Caffe net's: warped to 256x256, 227 crops)."""
    predictions = predict_files(checkpoint, images, top=top, ten_crop=ten_crop, runtime=runtime)
    click.echo(json.dumps(predictions, indent=2) if as_json else format_predictions(predictions))
