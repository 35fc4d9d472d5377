"""Does the paper's recipe train with the paper's input scale, and what makes it stall?

A maintainer's experiment behind docs/trainability.md. Two parts, on the built-in dataset:

1. Per-layer activation statistics at initialization (alexnet.train.diagnostics) for the
   paper's input (0-255 minus the mean image) and for the input most ports use (also divided
   by the pixel std), under the paper's and Caffe's initializations.
2. Short training runs of the same recipe that differ in one setting each, with their loss
   curves and validation errors: for each dropout form, one ablation (``alexnet.experiments.
   ablate``) of the baseline and four arms, in --runs; running the command again continues it.

    python tools/trainability.py --out docs/figures [--epochs 2] [--batch-size 32] [--dropout-styles paper,inverted]
    python tools/trainability.py --out docs/figures --replot   # redraw the figure only

Writes trainability.json (every number) and trainability.png (the loss curves) into --out,
and prints the tables docs/trainability.md quotes.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Dict

import torch

from alexnet import build_model
from alexnet.data import load_or_compute_stats, open_dataset, resolve_data_root
from alexnet.data.preprocess import Preprocess, PreprocessConfig
from alexnet.experiments import ablate
from alexnet.experiments.ablate import Arm
from alexnet.machine import cpu_model
from alexnet.progress import SILENT, Reporter
from alexnet.train.config import TrainConfig
from alexnet.analysis.activations import activation_stats, format_activation_stats
from alexnet.run_folder import RunFolder

# One change at a time from the paper's recipe (at the "builtin" preset's batch size and
# learning rate; no learning-rate drop within the default two epochs): the baseline and four
# arms. Each set runs with every dropout form of --dropout-styles: the paper's (x0.5 at test)
# and inverted (x2 in training, what the first version of this study used).
BASELINE = Arm("paper", {}, "the paper: paper init, 0-255 minus mean, lr 0.01")
ARMS = (
    Arm("divide-std", {"divide_std": True}, "inputs also divided by the pixel std (most ports)"),
    Arm("paper-bias-0", {"init": "paper-bias-0"}, "the paper's init with every bias 0"),
    Arm("caffe-init", {"init": "caffe"}, "Caffe's init: biases 0.1, fc6/fc7 std 0.005"),
    Arm("lr-0.001", {"lr": 0.001}, "the paper's init and input, lr 0.001"),
)


# The authors' own settings (layers-145.cfg, FACTS §6b), tried where the paper's words stall:
# with the paper's dropout form only (their net used it), against a rerun of the same baseline.
AUTHORS_ARMS = (
    Arm("authors-init", {"init": "authors"}, "the authors' init: conv3-conv5 weights N(0, 0.03)"),
    Arm("authors-init-bias-lr", {"init": "authors", "bias_lr_mult": 2.0, "anneal_biases": False},
        "the authors' init and biases at a fixed 0.02 (twice the weights' rate)"),
    Arm("authors-net", {"init": "authors", "bias_lr_mult": 2.0, "anneal_biases": False, "blocks": "authors"},
        "the authors' init, bias rate and blocks (conv1's LRN before its ReLU, cnorm2)"),
)
ARM_SETS = {"paper": ARMS, "authors": AUTHORS_ARMS}


def init_statistics(root: Path, images: int = 64):
    dataset = open_dataset(root, "val")
    stats = load_or_compute_stats(root, workers=0)
    step = max(1, len(dataset) // images)
    batch = torch.stack([dataset[i][0] for i in range(0, len(dataset), step)][:images])
    results = {}
    for init in ("paper", "authors", "paper-bias-0", "caffe"):
        # No dropout: the statistics describe the layers, whichever dropout form trains them.
        model = build_model(num_classes=len(dataset.classes), init=init, seed=0, dropout=0.0)
        for divide in (False, True):
            x = Preprocess(stats, PreprocessConfig(divide_std=divide)).centre(batch)
            key = f"init={init}, input={'divided by std' if divide else '0-255 minus mean'}"
            results[key] = {"input_rms": x.pow(2).mean().sqrt().item(), "layers": activation_stats(model, x)}
    return results


def template(data, epochs: int, batch_size: int, workers, style: str) -> TrainConfig:
    """The study's baseline: the builtin preset's batch and learning rate, with the paper's
    initialization and the given dropout form, on the CPU, no ten-crop evaluation."""
    return TrainConfig.from_preset("builtin", data=data, epochs=epochs, batch_size=batch_size, init="paper",
                                   dropout_style=style, devices="cpu", workers=workers, ten_crop=False, log_every=5)


def training_runs(base: TrainConfig, runs: Path, keep_checkpoints: bool = False,
                  reporter: Reporter = SILENT, arms=None) -> Dict[str, dict]:
    """The baseline and every arm of ``arms`` (default ``ARMS``) with ``base`` (one ablation of
    one seed in ``runs``); an interrupted study continues from the folder. Returns each run's
    curves and final error, keyed as trainability.json keys them ("name / style dropout")."""
    style = base.model.dropout_style
    arms = ARMS if arms is None else arms
    report = ablate.run(base, baseline=BASELINE, arms=arms, seeds=1, out=str(runs), reporter=reporter)
    by_name = {arm.name: arm for arm in (BASELINE, *arms)}
    results = {}
    for r in report["runs"]:
        run = RunFolder(runs / r["run"])
        records = run.read_metrics()
        arm = by_name[r["arm"]]
        results[f"{arm.name} / {style} dropout"] = {
            "description": arm.description, "changes": dict(arm.changes), "seconds": r["wall_seconds"],
            "steps": [{"images": m["images"], "loss": m["loss"], "error": m["error"]} for m in records
                      if m["kind"] == "step"],
            "epochs": [{k: m[k] for k in ("epoch", "images", "train_loss", "val_loss", "val_top1_error",
                                          "val_top5_error")} for m in records if m["kind"] == "epoch"],
            "final_val_top1_error": r["errors"]["centre_top1"], "dropout_style": style}
        if not keep_checkpoints:
            run.best_checkpoint.unlink(missing_ok=True)
    return results


def plot(report, path: Path):
    """Left and middle: the training loss of each run with the paper's dropout, then with the
    inverted form (clipped: the runs that blow up start far above). Right: how much of each
    layer's output depends on the image, at initialization."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, init = report.get("runs", {}), report["init"]
    chance = math.log(report["classes"])
    fig, axes = plt.subplots(1, 3, figsize=(18, 5.2), gridspec_kw={"width_ratios": [3, 3, 2]})
    top = 2 * chance
    names = [arm.name for arm in (BASELINE, *ARMS, *AUTHORS_ARMS)]
    for ax, style, title in ((axes[0], "paper", "the paper's dropout (x0.5 at test)"),
                             (axes[1], "inverted", "inverted dropout (x2 while training)")):
        clipped = []
        for name, run in runs.items():
            if run.get("dropout_style", "inverted") != style:
                continue
            arm = name.split(" / ")[0]
            steps = run["steps"]
            colour = f"C{names.index(arm) % 10}" if arm in names else "black"
            ax.plot([s["images"] for s in steps], [min(s["loss"], top) for s in steps], color=colour,
                    ls=":" if "authors set" in arm else "-", lw=1.3,
                    label=f"{arm} (val error {100 * run['final_val_top1_error']:.1f}%)")
            peak = max(s["loss"] for s in steps)
            if peak > top:
                clipped.append(f"{arm}: {peak:.0f}")
        if clipped:
            ax.text(0.98, 0.98, "highest loss, clipped:\n" + "\n".join(clipped), transform=ax.transAxes,
                    ha="right", va="top", fontsize=7)
        ax.axhline(chance, color="grey", ls="--", lw=0.8, label=f"chance, ln {report['classes']}")
        ax.set(xlabel="training images seen", ylabel="training loss (cross-entropy)", ylim=(0, top * 1.02),
               title=f"Training loss, one change at a time: {title}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    ax = axes[2]
    for key, value in init.items():
        layers = value["layers"]
        ax.plot([r["layer"] for r in layers], [r["signal"] for r in layers], marker="o",
                label=key.replace("input=", ""))
    ax.set(yscale="log", ylabel="image-dependent part (std across images / rms)",
           title="At initialization, per layer (before the ReLU)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="dataset (default: the built-in one)")
    parser.add_argument("--out", default="docs/figures", help="where trainability.json/.png go")
    parser.add_argument("--runs", default="runs/trainability", help="the training runs: one ablation per dropout form")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--dropout-styles", default="paper,inverted",
                        help="comma-separated dropout forms to run every arm with (paper, inverted)")
    parser.add_argument("--arm-set", choices=sorted(ARM_SETS), default="paper",
                        help="paper: the four arms above, with every --dropout-styles form (rewrites the JSON); "
                             "authors: the authors' settings with the paper's dropout, their runs (and the rerun "
                             "baseline's, as 'paper (authors set)') added to the existing trainability.json")
    parser.add_argument("--skip-training", action="store_true", help="only the statistics at initialization")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each run's best.pt")
    parser.add_argument("--replot", action="store_true", help="redraw trainability.png from trainability.json")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        plot(json.loads((out / "trainability.json").read_text()), out / "trainability.png")
        return
    root = resolve_data_root(args.data)
    report = {"data": str(root), "classes": len(open_dataset(root, "train").classes), "epochs": args.epochs,
              "batch_size": args.batch_size, "cpu": cpu_model(), "torch": torch.__version__,
              "threads": torch.get_num_threads()}
    report["init"] = init_statistics(root)
    for key, value in report["init"].items():
        print(f"\n{key} (input rms {value['input_rms']:.3g})\n{format_activation_stats(value['layers'])}")
    if args.arm_set == "authors":
        report = {**json.loads((out / "trainability.json").read_text()), "init": report["init"]}
        base = template(args.data, args.epochs, args.batch_size, args.workers, "paper")
        runs = training_runs(base, Path(args.runs) / "authors", args.keep_checkpoints, Reporter(), arms=AUTHORS_ARMS)
        runs = {key.replace(f"{BASELINE.name} /", f"{BASELINE.name} (authors set) /"): run for key, run in runs.items()}
        report["runs"].update(runs)
        report["authors_set"] = {"cpu": cpu_model(), "torch": torch.__version__, "threads": torch.get_num_threads()}
        _print_runs(runs)
    elif not args.skip_training:
        report["runs"] = {}
        for style in [s.strip() for s in args.dropout_styles.split(",") if s.strip()]:
            base = template(args.data, args.epochs, args.batch_size, args.workers, style)
            runs = training_runs(base, Path(args.runs) / f"{style}-dropout", args.keep_checkpoints, Reporter())
            report["runs"].update(runs)
            _print_runs(runs)
    (out / "trainability.json").write_text(json.dumps(report, indent=2))
    plot(report, out / "trainability.png")
    print(f"\nwrote {out / 'trainability.json'} and {out / 'trainability.png'}")


def _print_runs(runs: Dict[str, dict]) -> None:
    for key, run in runs.items():
        print(f"{key:<40} val top-1 error {100 * run['final_val_top1_error']:.1f}% ({run['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
