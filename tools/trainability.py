"""Does the paper's recipe train with the paper's input scale, and what makes it stall?

A maintainer's experiment behind docs/trainability.md. Two parts, on the built-in dataset:

1. Per-layer activation statistics at initialization (alexnet.train.diagnostics) for the
   paper's input (0-255 minus the mean image) and for the input most ports use (also divided
   by the pixel std), under the paper's and Caffe's initializations.
2. Short training runs of the same recipe that differ in one setting each, with their loss
   curves and validation errors.

    python tools/trainability.py --out docs/figures [--epochs 2] [--batch-size 32]

Writes trainability.json (every number) and trainability.png (the loss curves) into --out,
and prints the tables docs/trainability.md quotes.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import torch

from alexnet import build_model
from alexnet.data import load_or_compute_stats, open_dataset, resolve_data_root
from alexnet.train.diagnostics import activation_stats, format_activation_stats
from alexnet.train.evaluate import Preprocess
from alexnet.train.loop import TrainConfig, train
from alexnet.train.recipe import get_recipe
from alexnet.train.runs import RunFolder

# One change at a time from the paper's recipe (the "builtin" preset's schedule and batch).
RUNS = [
    ("paper", "the paper: paper init, 0-255 minus mean, lr 0.01", {}),
    ("divide-std", "inputs also divided by the pixel std (most ports)", {"input_divide_std": True}),
    ("caffe-init", "Caffe's init: biases 0.1, fc6/fc7 std 0.005", {"init": "caffe"}),
    ("lr-0.001", "the paper's init and input, lr 0.001", {"lr": 0.001}),
]


def init_statistics(root: Path, images: int = 64):
    dataset = open_dataset(root, "val")
    stats = load_or_compute_stats(root, workers=0, progress=False)
    step = max(1, len(dataset) // images)
    batch = torch.stack([dataset[i][0] for i in range(0, len(dataset), step)][:images])
    results = {}
    for init in ("paper", "caffe"):
        model = build_model(num_classes=len(dataset.classes), init=init, seed=0)
        for divide in (False, True):
            x = Preprocess(stats, divide_std=divide).centre(batch)
            key = f"init={init}, input={'divided by std' if divide else '0-255 minus mean'}"
            results[key] = {"input_rms": x.pow(2).mean().sqrt().item(), "layers": activation_stats(model, x)}
    return results


def training_runs(data, epochs: int, batch_size: int, workers, out_dir: Path):
    results = {}
    for name, description, changes in RUNS:
        recipe = get_recipe("builtin").replace(epochs=epochs, batch_size=batch_size, **changes)
        config = TrainConfig(recipe=recipe, data=data, out=str(out_dir / name), devices="cpu", workers=workers,
                             ten_crop=False, log_every=5, overwrite=True)
        start = time.time()
        summary = train(config)
        records = RunFolder(out_dir / name).read_metrics()
        results[name] = {
            "description": description, "changes": changes, "seconds": time.time() - start,
            "steps": [{"images": r["images"], "loss": r["loss"], "error": r["error"]}
                      for r in records if r["kind"] == "step"],
            "epochs": [{k: r[k] for k in ("epoch", "images", "train_loss", "val_loss", "val_top1_error",
                                         "val_top5_error")} for r in records if r["kind"] == "epoch"],
            "final_val_top1_error": summary["final_centre_crop"]["top1_error"],
        }
        print(f"{name:<12} val top-1 error {100 * results[name]['final_val_top1_error']:.1f}% "
              f"({results[name]['seconds']:.0f} s)", flush=True)
    return results


def plot(results, classes: int, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, run in results.items():
        ax.plot([s["images"] for s in run["steps"]], [s["loss"] for s in run["steps"]],
                label=f"{name}: {run['description']}")
    ax.axhline(math.log(classes), color="grey", ls=":", label=f"chance, ln {classes}")
    ax.set(xlabel="training images seen", ylabel="training loss (cross-entropy)",
           title="The paper's recipe on the built-in dataset, one change at a time", ylim=(0, None))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="dataset (default: the built-in one)")
    parser.add_argument("--out", default="docs/figures", help="where trainability.json/.png go")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--skip-training", action="store_true", help="only the statistics at initialization")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = resolve_data_root(args.data)
    report = {"data": str(root), "epochs": args.epochs, "batch_size": args.batch_size,
              "torch": torch.__version__, "threads": torch.get_num_threads()}
    report["init"] = init_statistics(root)
    for key, value in report["init"].items():
        print(f"\n{key} (input rms {value['input_rms']:.3g})\n{format_activation_stats(value['layers'])}")
    if not args.skip_training:
        with tempfile.TemporaryDirectory() as tmp:
            report["runs"] = training_runs(args.data, args.epochs, args.batch_size, args.workers, Path(tmp))
        plot(report["runs"], len(open_dataset(root, "train").classes), out / "trainability.png")
    (out / "trainability.json").write_text(json.dumps(report, indent=2))
    print(f"\nwrote {out / 'trainability.json'}" + ("" if args.skip_training else f" and {out / 'trainability.png'}"))


if __name__ == "__main__":
    main()
