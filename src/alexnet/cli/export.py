"""alexnet export."""

from __future__ import annotations

import click

from ..export import export_onnx
from .group import main


@main.command("export")
@click.argument("checkpoint", type=click.Path())
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="The .onnx file to write.")
def export_command(checkpoint, out):
    """Export a trained net (a checkpoint, a run folder, or an imported Caffe net) as one ONNX
    graph: real LRN nodes (per tower for the paper's net, across all maps for Caffe's), the
    paper's dropout folded in, a dynamic batch, and the input contract (crop size, RGB, 0-255,
    the mean, class names) in its metadata. Needs pip install -e '.[export]'."""
    done = export_onnx(checkpoint, out)
    click.echo(f"{done['out']}: {len(done['classes'])} classes; input {done['input']}")
