"""alexnet eval."""

from __future__ import annotations

import click

from ..progress import Reporter
from ..inference import evaluate_checkpoint, format_results, save_evaluation
from .group import main
from .options import quiet_option, runtime_value


@main.command("eval")
@click.argument("checkpoint", type=click.Path())
@click.option("--data", type=click.Path(), default=None,
              help="Dataset to evaluate on (its val split). Default: the data the run was trained on.")
@click.option("--split", type=click.Choice(["val", "train"]), default="val", show_default=True)
@click.option("--batch-size", "-b", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--ten-crop/--no-ten-crop", default=True, show_default=True,
              help="Also evaluate with the paper's ten patches (softmax averaged).")
@click.option("--json-out", type=click.Path(), default=None,
              help="Where to save the results (default: eval.json in the run folder, or CHECKPOINT.eval.json).")
@click.option("--overwrite", is_flag=True, help="Replace --json-out when it holds an earlier evaluation.")
@runtime_value
@quiet_option
def eval_command(checkpoint, data, split, batch_size, ten_crop, json_out, overwrite, runtime, quiet):
    """Top-1 and top-5 error of CHECKPOINT (a checkpoint file, a run folder: its last checkpoint,
    or a Caffe .caffemodel, imported as import-caffe does) with the centre crop and the paper's ten-crop protocol, beside the paper's
    figures. The images are read as the checkpoint's preprocessing says: an imported Caffe net's
    (import-caffe) warps each to 256x256 and takes 227 crops, so --data must then be a folder
    dataset (a packed one holds the paper's shorter-side images)."""
    results = evaluate_checkpoint(checkpoint, data=data, split=split, batch_size=batch_size, ten_crop=ten_crop,
                                  runtime=runtime, out=json_out, overwrite=overwrite, save=False,
                                  reporter=Reporter(enabled=not quiet))
    progress = results["progress"]
    click.echo(f"checkpoint {results['checkpoint']} (epoch {progress.get('epoch', '?')}, "
               f"step {progress.get('step', '?')})")
    rows = {f"{results['dataset']} ({results['split']}, {len(results['classes'])} classes), {r['protocol']}": r
            for r in results["results"]}
    click.echo(format_results(rows))
    save_evaluation(results)  # after the figures are shown: a folder that refuses them loses nothing
    click.echo(f"saved {results['saved_to']}")
