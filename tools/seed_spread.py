"""How much the built-in run's result moves between seeds, for one or more candidate recipes.

A maintainer's experiment behind the README's main-job figure and docs/training.md: the
built-in recipe (what `alexnet train` runs without --data), trained with several seeds, each
run exactly as the main job runs it (the grouped net on the CPU, the final ten-crop
evaluation included). Every arm changes the recipe in named fields only.

    python tools/seed_spread.py --seeds 5 --out docs/figures/seed-spread.json
    python tools/seed_spread.py --arms builtin,paper-dropout --seeds 5 --out ...

Results go into the JSON after every run; running the same command again skips the runs
already in it, so an interrupted study continues. Prints the table docs/training.md quotes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from alexnet.devices import DeviceRequest
from alexnet.experiments.bench.measure import cpu_model
from alexnet.files import write_json
from alexnet.train.loop import TrainConfig, train
from alexnet.train.recipe import get_recipe
from alexnet.machine import software_versions

#: Candidate recipes: the built-in preset with these fields changed.
ARMS = {
    "builtin": {},
    "paper-dropout": {"dropout_style": "paper"},
}


def run_one(arm: str, seed: int, workers) -> dict:
    recipe = get_recipe("builtin").replace(seed=seed, **ARMS[arm])
    with tempfile.TemporaryDirectory() as tmp:
        start = time.time()
        summary = train(TrainConfig(recipe=recipe, out=str(Path(tmp) / "run"), devices=DeviceRequest.parse("cpu"),
                                    workers=workers))
        seconds = time.time() - start
    return {"arm": arm, "seed": seed, "changes": ARMS[arm], "seconds": seconds,
            "centre_top1_error": summary["final_centre_crop"]["top1_error"],
            "ten_crop_top1_error": summary["final_ten_crop"]["top1_error"],
            "ten_crop_top5_error": summary["final_ten_crop"]["top5_error"]}


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
        lines.append(f"| {arm} {ARMS.get(arm, '')} | {len(s['seeds'])} | {s['centre_mean']:.1f} ± "
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
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        parser.error(f"--arms: unknown {', '.join(unknown)}; choose from {', '.join(ARMS)}")
    out = Path(args.out)
    report = json.loads(out.read_text()) if out.exists() else {"runs": []}
    report.update(machine={"cpu": cpu_model(), "cores": torch.get_num_threads(), **software_versions()})
    done = {(r["arm"], r["seed"]) for r in report["runs"]}
    for seed in range(args.seeds):  # seed-major: an interrupted study still compares the arms
        for arm in arms:
            if (arm, seed) in done:
                continue
            run = run_one(arm, seed, args.workers)
            report["runs"].append(run)
            report["summary"] = summarize(report["runs"])
            write_json(out, report)
            print(f"{arm:<14} seed {seed}: accuracy {100 * (1 - run['centre_top1_error']):.1f}% "
                  f"(ten crops {100 * (1 - run['ten_crop_top1_error']):.1f}%), {run['seconds']:.0f} s", flush=True)
    print(table(summarize(report["runs"])))


if __name__ == "__main__":
    main()
