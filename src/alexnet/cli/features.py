"""alexnet features."""

from __future__ import annotations

import click

from ..data.folders import SPLITS
from ..inference import FEATURE_LAYERS, write_features
from ..progress import Reporter
from .group import main
from .options import quiet_option, runtime_value

LAYER_HELP = "; ".join(f"{layer}: {what}" for layer, what in FEATURE_LAYERS.items())


@main.command("features")
@click.argument("checkpoint", type=click.Path())
@click.argument("data", type=click.Path())
@click.option("--out", "-o", type=click.Path(dir_okay=False), required=True, help="The .npz file to write.")
@click.option("--layer", "layers", multiple=True, type=click.Choice(list(FEATURE_LAYERS)), default=["fc7"],
              show_default=True, help=f"The layer (repeat for several, one pass). {LAYER_HELP}.")
@click.option("--ten-crop", is_flag=True, help="The mean of each layer over the paper's ten patches (default: the "
                                               "centre crop).")
@click.option("--split", type=click.Choice(SPLITS), default="val", show_default=True,
              help="Where DATA is a dataset (train/ and val/, or packed): the split to read.")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists (never an input).")
@runtime_value
@quiet_option
def features_command(checkpoint, data, out, layers, ten_crop, split, batch_size, overwrite, runtime, quiet):
    """A layer's activations for every image of DATA, as CHECKPOINT's net computes them (a
    checkpoint, a run folder, or a Caffe .caffemodel: the features DeCAF-style transfer learning
    uses). DATA: a folder of images, a folder of class folders (<class>/<image>), or a dataset
    (folder or packed; --split). Each image is read and cropped as the checkpoint's preprocessing
    says (an imported Caffe net's: warped to 256x256, its mean, 227 crops).

    Writes one .npz (atomically; an existing file only with --overwrite): a float32 (N, D) array
    per layer, named after it; paths; labels and classes where the folders give them; net_classes
    (fc8's columns); dropout_scale (what fc8 multiplies fc7 by at test: 0.5 for the paper's
    dropout, 1 for the inverted one); crops; checkpoint. See docs/export.md."""
    done = write_features(checkpoint, data, out, layers=layers, ten_crop=ten_crop, split=split,
                          batch_size=batch_size, runtime=runtime, overwrite=overwrite,
                          reporter=Reporter(enabled=not quiet))
    shapes = ", ".join(f"{layer} {'x'.join(map(str, shape))}" for layer, shape in done["shapes"].items())
    labelled = "with labels" if done["labelled"] else "no labels (a flat folder)"
    click.echo(f"{done['out']}: {done['images']} images, {shapes}, {labelled}")
