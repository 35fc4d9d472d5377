"""tools/seed_spread.py and tools/trainability.py: arm sets run by the ablation machinery, their
JSON built from the runs' own files. Tiny runs: the built-in generator at 2 training images
and 1 validation image per class, one epoch of two batches of 10."""

import json

import pytest

from alexnet.experiments import ablate
from alexnet.train.config import TrainConfig
from helpers import load_tool

pytestmark = pytest.mark.usefixtures("private_cache")  # nothing touches ~/.cache/alexnet

seed_spread = load_tool("seed_spread")
trainability = load_tool("trainability")


def tiny_base(tiny, **changes):
    return TrainConfig.from_preset("builtin", **{"epochs": 1, "batch_size": 10, "data": str(tiny), "devices": "cpu",
                                                 "workers": 0, "log_every": 1, **changes})


def summary(folder):
    return json.loads((folder / "summary.json").read_text())


@pytest.mark.slow
def test_seed_spread_runs_each_candidate_as_an_ablation_and_reports_its_runs(tiny, tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    arm = seed_spread.ARMS["paper-dropout"]
    rows = seed_spread.run_arm(arm, tiny_base(tiny), 2, runs)
    assert [(r["arm"], r["seed"]) for r in rows] == [("paper-dropout", 0), ("paper-dropout", 1)]
    for row in rows:
        folder = runs / "paper-dropout" / f"paper-dropout-seed{row['seed']}"
        own = summary(folder)
        assert row["centre_top1_error"] == own["final_centre_crop"]["top1_error"]
        assert (row["ten_crop_top1_error"], row["ten_crop_top5_error"]) == (
            own["final_ten_crop"]["top1_error"], own["final_ten_crop"]["top5_error"])
        config = json.loads((folder / "config.json").read_text())
        assert (config["model"]["dropout_style"], config["recipe"]["seed"]) == ("paper", row["seed"])
        assert not (folder / "checkpoints" / "best.pt").exists()  # its figures are in the JSON
    # One seed more trains that seed only.
    trained = []
    real_train = ablate.train
    monkeypatch.setattr(ablate, "train", lambda config, **kw: trained.append(config.recipe.seed) or real_train(config, **kw))
    rows = seed_spread.run_arm(arm, tiny_base(tiny), 3, runs)
    assert trained == [2] and [r["seed"] for r in rows] == [0, 1, 2]
    table = seed_spread.table(seed_spread.summarize(rows))
    accuracy = [100 * (1 - r["centre_top1_error"]) for r in rows]
    assert f"| paper-dropout {{'dropout_style': 'paper'}} | 3 | {sum(accuracy) / 3:.1f} ± " in table


@pytest.mark.slow
def test_trainability_runs_every_arm_with_one_change(tiny, tmp_path):
    base = trainability.template(str(tiny), 1, 10, 0, "inverted").replace(log_every=1)
    results = trainability.training_runs(base, tmp_path / "runs")
    assert sorted(results) == sorted(f"{name} / inverted dropout"
                                     for name in ("paper", "divide-std", "paper-bias-0", "caffe-init", "lr-0.001"))
    configs = {name: json.loads((tmp_path / "runs" / f"{name}-seed0" / "config.json").read_text())
               for name in ("paper", "divide-std", "paper-bias-0", "caffe-init", "lr-0.001")}
    assert configs["paper"]["model"]["init"] == "paper" and configs["paper"]["recipe"]["lr"] == 0.01
    assert configs["divide-std"]["preprocess"]["divide_std"] is True
    assert configs["paper-bias-0"]["model"]["init"] == "paper-bias-0"
    assert configs["caffe-init"]["model"]["init"] == "caffe"
    assert configs["lr-0.001"]["recipe"]["lr"] == 0.001
    paper = results["paper / inverted dropout"]
    records = [json.loads(line) for line in (tmp_path / "runs" / "paper-seed0" / "metrics.jsonl").read_text().splitlines()]
    assert paper["steps"] == [{"images": r["images"], "loss": r["loss"], "error": r["error"]}
                              for r in records if r["kind"] == "step"]
    assert paper["final_val_top1_error"] == summary(tmp_path / "runs" / "paper-seed0")["final_centre_crop"]["top1_error"]
