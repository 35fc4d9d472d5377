"""alexnet stats and alexnet prepare: the dataset statistics and the packed format."""

from __future__ import annotations

from pathlib import Path

import click

from ..data import packed
from ..data.roots import open_dataset, resolve_data_root, save_stats_for
from ..data.loader import check_workers
from ..data.stats import compute_stats
from ..progress import Reporter
from .group import main

WORKERS_HELP = "Reader processes (0: read in this process). Default: {}."
SKIP_BAD_HELP = "Skip unreadable images (corrupt, truncated, empty, not images) and count them, instead of stopping at the first."


@main.command()
@click.argument("data", required=False, type=click.Path(path_type=Path))
@click.option("--workers", type=click.IntRange(min=0), default=None, help=WORKERS_HELP.format("all cores but one, at most 8"))
@click.option("--skip-bad", is_flag=True, help=SKIP_BAD_HELP)
def stats(data, workers, skip_bad):
    """Compute the training split's statistics in one pass and save them beside the data.

    DATA is a folder dataset (DATA/train/<class>/*, DATA/val/<class>/*) or a packed one from
    `alexnet prepare`; without it, the built-in dataset. Saves the 256x256x3 mean image, the
    per-channel means and the 3x3 RGB covariance with its eigenvectors and eigenvalues (the
    paper's colour noise) in DATA/alexnet-stats/, or in the cache if DATA is read-only.
    """
    reporter = Reporter()
    check_workers(workers)
    root = resolve_data_root(data, reporter)
    dataset = open_dataset(root, "train", skip_bad=skip_bad)
    result = compute_stats(dataset, workers=workers, reporter=reporter)
    save_stats_for(root, result)
    click.echo(result.describe())
    for message in getattr(dataset, "skipped_entries", []):  # --skip-bad: split entries left out
        click.echo(f"  left out {message}")


@main.command()
@click.argument("src", type=click.Path(path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(packed.FORMATS), default="raw", show_default=True,
              help="raw: uint8 pixels read through a memory map (fastest; 196,608 bytes an image); "
                   "jpeg: re-encoded 256x256 JPEGs with an offset index (5-15x smaller, slower to read).")
@click.option("--quality", type=click.IntRange(1, 100), default=packed.DEFAULT_QUALITY, show_default=True,
              help="JPEG quality for --format jpeg (4:4:4, no chroma subsampling).")
@click.option("--workers", type=click.IntRange(min=0), default=None, help=WORKERS_HELP.format("every core"))
@click.option("--skip-bad", is_flag=True, help=SKIP_BAD_HELP)
@click.option("--overwrite", is_flag=True, help="Replace a finished packed dataset in DST, or restart an unfinished one.")
def prepare(src, dst, fmt, quality, workers, skip_bad, overwrite):
    """Pack the folder dataset SRC into DST in the paper's preprocessed form.

    Every train and val image is resized (shorter side 256) and centre-cropped to 256x256
    once; labels, class names and the training statistics are written in the same pass.
    Interrupted (Ctrl-C), it continues where it stopped when run again with the same
    arguments; DST counts as finished only once DST/packed.json is written, last.
    """
    meta = packed.prepare(src, dst, format=fmt, quality=quality, workers=workers, skip_bad=skip_bad,
                          overwrite=overwrite, reporter=Reporter())
    click.echo(packed.describe(dst, meta))
