"""alexnet import-caffe."""

from __future__ import annotations

import click

from ..caffe import import_caffemodel
from .group import main


@main.command("import-caffe")
@click.argument("model", type=click.Path(dir_okay=False))
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True,
              help="The checkpoint to write (a .pt file that eval, predict, filters, neighbors and load_model read).")
@click.option("--mean", "mean", type=click.Path(dir_okay=False), default=None, metavar="MEAN.binaryproto",
              help="Caffe's mean image (ilsvrc_2012_mean.binaryproto, 1x3x256x256, B, G, R) to subtract under each "
                   "crop's window. Default: Caffe's per-channel means (B, G, R = 104.0, 116.7, 122.7).")
@click.option("--overwrite", is_flag=True, help="Replace OUT when it is a checkpoint already (never the model file).")
def import_caffe(model, out, mean, overwrite):
    """Import Caffe's trained AlexNet (bvlc_alexnet.caffemodel, bvlc_reference_caffenet.caffemodel,
    or a fine-tuned copy) as a weights-only checkpoint, in the two towers.

    MODEL is a binary .caffemodel in either of Caffe's layer formats (training snapshots with their
    data and loss layers too). Caffe's net is not the paper's: its LRN has k = 1 and runs across
    the towers, CaffeNet pools before it normalizes, and its input is BGR; the checkpoint records
    that net (--blocks caffe or caffenet), flips conv1 to RGB, and holds Caffe's ImageNet mean.
    eval and predict then preprocess as Caffe evaluated: the image warped to 256x256 (the
    aspect ratio not kept), 227 crops, Caffe's mean (--mean: its mean image). The files are
    downloaded by you; nothing is fetched. A file that is not that network, or a mean file
    that is not Caffe's mean image, is one line naming it, and nothing is written.
    """
    done = import_caffemodel(model, out, mean=mean, overwrite=overwrite)
    skipped = f"; skipped {', '.join(done['skipped'])}" if done["skipped"] else ""
    subtracted = "the channel means" if done["mean"] == "channel" else f"the mean image of {done['mean']}"
    click.echo(f"{done['out']}: Caffe's {'CaffeNet' if done['blocks'] == 'caffenet' else 'bvlc_alexnet'} "
               f"({done['format']} layers, {done['num_classes']} classes, --blocks {done['blocks']}; "
               f"input warped to 256x256, 227 crops, {subtracted}){skipped}")
