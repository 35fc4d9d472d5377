"""alexnet export."""

from __future__ import annotations

import click

from ..export import export_onnx
from ..model.dropout import DROPOUT_STYLES
from .group import main
from .options import given_settings, model_options


@main.command("export")
@click.argument("checkpoint", type=click.Path())
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="The .onnx file to write.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists (never the file exported).")
@model_options
@click.option("--dropout", type=float, default=None, help="A bare state dict's dropout in fc6 and fc7 (default 0.5).")
@click.option("--dropout-style", type=click.Choice(DROPOUT_STYLES), default=None,
              help="A bare state dict's dropout: paper (x(1-p) at test, the default) or inverted (nn.Dropout).")
def export_command(checkpoint, out, overwrite, **net_options):
    """Export a trained net (a checkpoint, a run folder, or an imported Caffe net) as one ONNX
    graph: conv1 reads the 224 crop with its zero padding, real LRN nodes (per tower for the
    paper's net, across all maps for Caffe's), the paper's dropout as its x(1-p), a dynamic
    batch, and the input contract (crop size, RGB, 0-255, the mean, class names) in its
    metadata. Runs in ONNX Runtime and OpenCV's DNN module (4.x). Needs pip install -e '.[export]'.

    CHECKPOINT may also be a bare state dict (torch.save(model.state_dict(), ...)): name its net
    with --variant, --blocks, --no-lrn, --no-overlap, --no-overlap-as, --dropout, --dropout-style
    (the class count is fc8's); a checkpoint says which net it is and takes none of them."""
    settings = given_settings(click.get_current_context(), net_options)
    done = export_onnx(checkpoint, out, settings=settings or None, overwrite=overwrite)
    classes = f"{len(done['classes'])} classes" if "classes" in done else f"{done['num_classes']} classes, unnamed"
    click.echo(f"{done['out']}: {classes}; input {done['input']}")
