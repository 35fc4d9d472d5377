"""alexnet filters, alexnet neighbors, alexnet plot: the paper's figures from any run."""

from __future__ import annotations

import click

from ..experiments.figures import draw_filters, draw_neighbours, plot_run_folders
from ..experiments.figures.filters import SCALE
from ..experiments.figures.plot import DEFAULT_PANELS
from ..progress import Reporter
from ..train.curves import EPOCH_METRICS, PANELS
from .group import main
from .options import quiet_option, runtime_value

OUT_HELP = "The PNG to write (its folder must exist)."
overwrite_option = click.option("--overwrite", is_flag=True, help="Replace --out when it is a figure this package drew.")


def _indices(ctx, param, value):
    """--images 3,17,42 -> [3, 17, 42]."""
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"{value!r}: give validation indices separated by commas, e.g. 3,17,42") from None


@main.command("filters")
@click.argument("checkpoint", type=click.Path())
@click.option("--out", "-o", type=click.Path(), required=True, help=OUT_HELP)
@click.option("--scale", type=click.IntRange(1, 20), default=SCALE, show_default=True,
              help="Screen pixels per weight (kernels are upscaled by nearest neighbour).")
@overwrite_option
def filters_command(checkpoint, out, scale, overwrite):
    """conv1's kernels of CHECKPOINT (a checkpoint file, or a run folder: its last checkpoint)
    as one grid in the paper's arrangement (Figure 3): tower 0's 48 kernels in the top three
    rows, tower 1's 48 below. Each kernel is stretched on its own symmetric range,
    0.5 + 0.5·w/max|w|, so a zero weight is mid-grey.

    Prints each tower's colourfulness: per kernel |w − grey(w)| / |w|, grey(w) being the mean
    of its R, G and B weights at each pixel; 0 for a grey kernel, about 0.82 for random
    weights, 1 for a pure colour contrast; the tower's score is the mean over its kernels.
    The paper saw one tower's kernels come out largely colour-agnostic and the other's
    colour-specific (§6.1). See docs/figures.md."""
    result = draw_filters(checkpoint, out, scale=scale, overwrite=overwrite)
    progress = result["progress"]
    click.echo(f"checkpoint {result['checkpoint']} (epoch {progress.get('epoch', '?')}, "
               f"step {progress.get('step', '?')}, {result['variant']})")
    towers = len(result["colourfulness"])
    for t, score in enumerate(result["colourfulness"]):
        name = f"tower {t}" if towers > 1 else "the tower"
        click.echo(f"conv1 colourfulness, {name}: {score:.3f} (mean of {len(result['kernel_colourfulness'][t])} "
                   f"kernels)")
    click.echo(f"saved {result['saved_to']}")


@main.command("neighbors")
@click.argument("checkpoint", type=click.Path())
@click.option("--out", "-o", type=click.Path(), required=True, help=OUT_HELP)
@click.option("--data", type=click.Path(), default=None,
              help="The dataset (its train split is searched, its val split gives the queries). "
                   "Default: the data the run was trained on.")
@click.option("--images", callback=_indices, default=None, metavar="I,J,...",
              help="Validation images to query, by index in the val split (default: --count drawn with --seed).")
@click.option("--count", type=click.IntRange(min=1), default=5, show_default=True,
              help="Validation images drawn at random when --images is not given.")
@click.option("-k", "k", type=click.IntRange(min=1), default=6, show_default=True,
              help="Nearest training images per query.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the choice of validation images.")
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=64, show_default=True)
@runtime_value
@overwrite_option
@quiet_option
def neighbors_command(checkpoint, out, data, images, count, k, seed, batch_size, runtime, overwrite, quiet):
    """The paper's Figure 4 for CHECKPOINT (a checkpoint file, or a run folder: its last
    checkpoint): validation images, each followed by the K training images nearest to it by
    Euclidean distance of their fc7 activations (after the ReLU, centre crop), nearest first,
    with each image's class and distance under it.

    The training set's features are computed once with a progress bar and cached beside the
    checkpoint (float16, keyed by the checkpoint's path, size and modification time and by
    the data); the search is exact, in blocks, with bounded memory. See docs/figures.md."""
    result = draw_neighbours(checkpoint, out, data=data, images=images, count=count, k=k, seed=seed,
                             batch_size=batch_size, runtime=runtime, overwrite=overwrite,
                             reporter=Reporter(enabled=not quiet))
    classes = result["classes"]
    click.echo(f"checkpoint {result['checkpoint']}, data {result['data']}")
    for row in result["rows"]:
        near = ", ".join(f"{classes[n['label']]} {n['distance']:.1f}" for n in row["neighbours"])
        click.echo(f"val #{row['query']} ({classes[row['label']]}): {near}")
    click.echo(f"fc7 features of the training set: {'reused' if result['features_reused'] else 'computed'}, "
               f"{result['features']}")
    click.echo(f"saved {result['saved_to']}")


@main.command("plot")
@click.argument("runs", nargs=-1, required=True, type=click.Path())
@click.option("--out", "-o", type=click.Path(), required=True, help=OUT_HELP)
@click.option("--label", "labels", multiple=True,
              help="A name for each run, in order (repeat it; default: the folder names). Runs given the same "
                   "label are one group: each a thin line, their mean a thick one.")
@click.option("--metric", "metrics", multiple=True, type=click.Choice([*PANELS, *EPOCH_METRICS]),
              help=f"A panel to draw (repeat for more; default: {', '.join(DEFAULT_PANELS)}). loss: validation "
                   "and training loss; error: validation and training top-1 error; top5; colourfulness: conv1's "
                   "per tower; or one metric of the epoch records.")
@click.option("--title", default="", help="A title above the panels.")
@overwrite_option
def plot_command(runs, out, labels, metrics, title, overwrite):
    """Training and validation loss and error per epoch of one or more RUNS (run folders) on
    shared axes, one colour per run, with a legend naming each (validation solid, training
    dashed). The same drawing as each run's own curves.png and alexnet ablate's curves."""
    result = plot_run_folders(runs, out, labels=labels or None, metrics=metrics or DEFAULT_PANELS, title=title,
                              overwrite=overwrite)
    for label, run in zip(result["labels"], result["runs"]):
        click.echo(f"{label}: {run}")
    for line in result["left_out"]:
        click.echo(line, err=True)
    click.echo(f"saved {result['saved_to']}")
