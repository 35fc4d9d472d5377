"""How much the built-in run's result moves between seeds, for one or more candidate recipes.

A maintainer's experiment behind the README's main-job figure and docs/training.md: the
built-in recipe (what `alexnet train` runs without --data), trained with several seeds, each
run exactly as the main job runs it (the grouped net on the CPU, the final ten-crop
evaluation included). Each candidate is an arm: the built-in preset with named settings
changed, trained by ``alexnet.experiments.ablate`` as its own baseline-only ablation (one
folder per candidate under --runs, so a candidate gains seeds without the others).

    python tools/seed_spread.py --seeds 5 --out docs/figures/seed-spread.json
    python tools/seed_spread.py --arms builtin,caffe-init --seeds 5 --out ...

Seed-major (seed 0 of every arm, then seed 1, ...), so an interrupted study still compares
the arms. Running the same command again continues: finished runs are kept, an interrupted
one resumes (the ablation folders under --runs); a larger --seeds adds seeds. The JSON is rewritten from
the runs after each candidate (keeping the entries of candidates not run this time), and the
table docs/training.md quotes is printed. The runs' checkpoints are deleted once their figures
are in the JSON (--keep-checkpoints keeps them).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

from alexnet.experiments import ablate
from alexnet.experiments.ablate import Arm
from alexnet.files import write_json
from alexnet.machine import cpu_model, software_versions
from alexnet.progress import SILENT, Reporter
from alexnet.train.config import TrainConfig
from alexnet.run_folder import RunFolder

#: Candidate recipes: the built-in preset with these settings changed. Until 2026-12-02 the
#: built-in recipe was Caffe's initialization with inverted dropout ("caffe-init"); the
#: trainability study's finding (docs/trainability.md) made it the authors' initialization with
#: the paper's dropout, after the seeds below compared them. Later that day it became 5 epochs
#: (÷10 after 3) on the dataset's version 2 (1,000 validation images); the figures of the
#: candidates before that are in docs/figures/seed-spread-v1.json.
ARMS = {
    "builtin": Arm("builtin", {}, "the built-in recipe, as alexnet train runs it without --data"),
    "builtin-3-epochs": Arm("builtin-3-epochs", {"epochs": 3, "step_epochs": 2},
                            "the built-in schedule before the 5-epoch one: 3 epochs, ÷10 after 2"),
    "caffe-init": Arm("caffe-init", {"init": "caffe", "dropout_style": "inverted"},
                      "the built-in recipe before 2026-12-02: Caffe's initialization, inverted dropout"),
    "caffe-init-paper-dropout": Arm("caffe-init-paper-dropout", {"init": "caffe", "dropout_style": "paper"},
                                    "Caffe's initialization with the paper's dropout"),
}


def run_arm(arm: Arm, base: TrainConfig, seeds: int, runs: Path, keep_checkpoints: bool = False,
            reporter: Reporter = SILENT) -> list:
    """The candidate's seeds (one baseline-only ablation of ``base`` with the arm's changes, in
    ``runs/<arm>``), as the JSON's runs."""
    baseline = Arm(arm.name, {}, arm.description)
    report = ablate.run(base.replace(**arm.changes), arms=[], seeds=seeds, out=str(runs / arm.name),
                        baseline=baseline, reporter=reporter)
    out = []
    for r in report["runs"]:
        if r["state"] != "finished":
            continue
        errors = r["errors"]
        # The recipe and the data as the run recorded them, so the JSON says what it measured.
        recorded = RunFolder(runs / arm.name / r["run"]).read_config()
        out.append({"arm": arm.name, "seed": r["seed"], "changes": dict(arm.changes), "seconds": r["wall_seconds"],
                    "centre_top1_error": errors["centre_top1"], "ten_crop_top1_error": errors["ten_top1"],
                    "ten_crop_top5_error": errors["ten_top5"],
                    "recipe": {k: v for k, v in recorded["recipe"].items() if k != "seed"}, "model": recorded["model"],
                    "data": Path(recorded["resolved"]["data_root"]).name,
                    "val_images": recorded["resolved"]["val_images"]})
        if not keep_checkpoints:
            (runs / arm.name / r["run"] / "checkpoints" / "best.pt").unlink(missing_ok=True)
    return out


def already(folder: Path) -> int:
    """How many seeds the arm's ablation folder holds (0 before it exists): it only grows."""
    settings = folder / "ablation.json"
    return len(json.loads(settings.read_text())["seeds"]) if settings.exists() else 0


def summarize(runs: list) -> dict:
    out = {}
    for arm in dict.fromkeys(r["arm"] for r in runs):
        mine = [r for r in runs if r["arm"] == arm]
        accuracy = [100 * (1 - r["centre_top1_error"]) for r in mine]
        ten = [100 * (1 - r["ten_crop_top1_error"]) for r in mine]
        out[arm] = {"seeds": [r["seed"] for r in mine], "centre_accuracy": accuracy, "ten_crop_accuracy": ten,
                    "centre_mean": statistics.mean(accuracy), "centre_min": min(accuracy),
                    "centre_max": max(accuracy),
                    "centre_std": statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0,
                    "ten_crop_mean": statistics.mean(ten),
                    "seconds_min": min(r["seconds"] for r in mine), "seconds_max": max(r["seconds"] for r in mine)}
    return out


def table(summary: dict) -> str:
    lines = ["| recipe | seeds | centre-crop accuracy, mean ± std [min–max] | per seed | ten-crop mean | "
             "seconds per run |", "|---|---|---|---|---|---|"]
    for arm, s in summary.items():
        changes = ARMS[arm].changes if arm in ARMS else ""
        lines.append(f"| {arm} {changes} | {len(s['seeds'])} | {s['centre_mean']:.1f} ± "
                     f"{s['centre_std']:.1f} [{s['centre_min']:.1f}–{s['centre_max']:.1f}] | "
                     f"{', '.join(f'{a:.1f}' for a in s['centre_accuracy'])} | {s['ten_crop_mean']:.1f} | "
                     f"{s['seconds_min']:.0f}–{s['seconds_max']:.0f} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, from {', '.join(ARMS)}")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 for every arm")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--out", default="docs/figures/seed-spread.json")
    parser.add_argument("--runs", default="runs/seed-spread", help="the ablation folders, one per arm")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep each run's best.pt")
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"--arms: unknown {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    # The main job exactly: the built-in preset, the grouped net on the CPU, the ten-crop evaluation.
    base = TrainConfig.from_preset("builtin", devices="cpu", workers=args.workers)
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {"runs": []}
    report["machine"] = {"cpu": cpu_model(), "cores": torch.get_num_threads(), **software_versions()}
    for seeds in range(1, args.seeds + 1):  # seed-major: an interrupted study still compares the arms
        for arm in arms:
            seeds_so_far = max(seeds, already(Path(args.runs) / arm))
            runs = run_arm(ARMS[arm], base, seeds_so_far, Path(args.runs), args.keep_checkpoints, Reporter())
            report["runs"] = [r for r in report["runs"] if r["arm"] != arm] + runs
            report["summary"] = summarize(report["runs"])
            write_json(out, report)
    print(table(summarize(report["runs"])))


if __name__ == "__main__":
    main()
