"""alexnet import-caffe."""

from __future__ import annotations

import click

from ..train.caffe_import import import_caffemodel
from . import main


@main.command("import-caffe")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True,
              help="The checkpoint to write (a .pt file that eval, predict, filters, neighbors and load_model read).")
def import_caffe(model, out):
    """Import Caffe's trained AlexNet (bvlc_alexnet.caffemodel, bvlc_reference_caffenet.caffemodel,
    or a fine-tuned copy) as a weights-only checkpoint, in the two towers.

    MODEL is a binary .caffemodel in either of Caffe's layer formats (training snapshots with their
    data and loss layers too). Caffe's net is not the paper's: its LRN has k = 1 and runs across
    the towers, CaffeNet pools before it normalizes, and its input is BGR; the checkpoint records
    that net (--blocks caffe or caffenet), flips conv1 to RGB, and holds Caffe's ImageNet mean.
    The file is downloaded by you; nothing is fetched. A file that is not that network is one
    line naming the layer, and nothing is written.
    """
    done = import_caffemodel(model, out)
    skipped = f"; skipped {', '.join(done['skipped'])}" if done["skipped"] else ""
    click.echo(f"{done['out']}: Caffe's {'CaffeNet' if done['blocks'] == 'caffenet' else 'bvlc_alexnet'} "
               f"({done['format']} layers, {done['num_classes']} classes, --blocks {done['blocks']}){skipped}")
