"""tools/seed_spread.py and tools/trainability.py: arm sets run by the ablation machinery, their
JSON built from the runs' own files. Tiny runs: the built-in generator at 2 training images
and 1 validation image per class, one epoch of two batches of 10."""

import json

import pytest

from alexnet.experiments import ablate
from alexnet.experiments.ablate.arms import arm_config
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
    arm = seed_spread.ARMS["caffe-init"]
    rows = seed_spread.run_arm(arm, tiny_base(tiny), 1, runs)
    assert [(r["arm"], r["seed"]) for r in rows] == [("caffe-init", 0)]
    for row in rows:
        folder = runs / "caffe-init" / f"caffe-init-seed{row['seed']}"
        own = summary(folder)
        assert row["centre_top1_error"] == own["final_centre_crop"]["top1_error"]
        assert (row["ten_crop_top1_error"], row["ten_crop_top5_error"]) == (
            own["final_ten_crop"]["top1_error"], own["final_ten_crop"]["top5_error"])
        config = json.loads((folder / "config.json").read_text())
        assert (config["model"]["init"], config["model"]["dropout_style"], config["recipe"]["seed"]) == (
            "caffe", "inverted", row["seed"])
        assert not (folder / "checkpoints" / "best.pt").exists()  # its figures are in the JSON
    # One seed more trains that seed only.
    trained = []
    real_train = ablate.train
    monkeypatch.setattr(ablate, "train", lambda config, **kw: trained.append(config.recipe.seed) or real_train(config, **kw))
    rows = seed_spread.run_arm(arm, tiny_base(tiny), 2, runs)
    assert trained == [1] and [r["seed"] for r in rows] == [0, 1]
    assert rows[1]["centre_top1_error"] == summary(runs / "caffe-init" / "caffe-init-seed1")[
        "final_centre_crop"]["top1_error"]
    table = seed_spread.table(seed_spread.summarize(rows))
    accuracy = [100 * (1 - r["centre_top1_error"]) for r in rows]
    assert f"| caffe-init {{'init': 'caffe', 'dropout_style': 'inverted'}} | 2 | {sum(accuracy) / 2:.1f} ± " in table


def test_each_trainability_arm_changes_one_setting_of_the_papers_recipe(tmp_path):
    base = trainability.template(None, 2, 32, 0, "paper")
    assert (base.model.init, base.model.dropout_style, base.recipe.lr, base.recipe.batch_size) == (
        "paper", "paper", 0.01, 32)
    configs = {arm.name: arm_config(base, arm, 0, tmp_path / arm.name) for arm in trainability.ARMS}
    assert configs["divide-std"].preprocess.divide_std is True
    assert configs["paper-bias-0"].model.init == "paper-bias-0"
    assert configs["caffe-init"].model.init == "caffe"
    assert configs["lr-0.001"].recipe.lr == 0.001
    for name, config in configs.items():  # everything else is the baseline's
        others = [part for part in ("model", "preprocess", "recipe") if getattr(config, part) != getattr(base, part)]
        assert len(others) == 1, (name, others)


@pytest.mark.slow
def test_trainability_reports_each_run_from_its_own_files(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(trainability, "ARMS", trainability.ARMS[:1])  # the baseline and divide-std
    base = trainability.template(str(tiny), 1, 10, 0, "inverted").replace(log_every=1)
    results = trainability.training_runs(base, tmp_path / "runs")
    assert sorted(results) == ["divide-std / inverted dropout", "paper / inverted dropout"]
    config = json.loads((tmp_path / "runs" / "divide-std-seed0" / "config.json").read_text())
    assert config["preprocess"]["divide_std"] is True and results["divide-std / inverted dropout"]["changes"] == {
        "divide_std": True}
    paper = results["paper / inverted dropout"]
    records = [json.loads(line) for line in (tmp_path / "runs" / "paper-seed0" / "metrics.jsonl").read_text().splitlines()]
    assert paper["steps"] == [{"images": r["images"], "loss": r["loss"], "error": r["error"]}
                              for r in records if r["kind"] == "step"]
    assert paper["final_val_top1_error"] == summary(tmp_path / "runs" / "paper-seed0")["final_centre_crop"]["top1_error"]


def test_the_readme_states_the_committed_seed_spread_of_the_recipe_the_main_job_runs():
    """The README's main-job figures are docs/figures/seed-spread.json's, and that JSON measured
    the built-in recipe, net and dataset version the main job runs now: a change to any of
    them fails here until the seed spread is run again."""
    from pathlib import Path

    from alexnet.data import synthetic
    from alexnet.train.recipe import get_preset

    root = Path(__file__).resolve().parents[2]
    spread = json.loads((root / "docs" / "figures" / "seed-spread.json").read_text())
    runs = [r for r in spread["runs"] if r["arm"] == "builtin"]
    assert sorted(r["seed"] for r in runs) == list(range(len(runs))) and len(runs) >= 5
    preset = get_preset("builtin")
    # fc_updates and scale_conv_lr (issue 30) act only under --parallel hybrid, which the main
    # job (one process) does not run; the spread was measured before they existed.
    ignore = ("seed", "description", "fc_updates", "scale_conv_lr")
    for r in runs:
        assert {k: v for k, v in r["recipe"].items() if k not in ignore} == {
            k: v for k, v in json.loads(json.dumps(preset.recipe.as_dict())).items() if k not in ignore}
        assert r["model"] == {**json.loads(json.dumps(preset.model.as_dict())), "num_classes": 10}
        assert r["data"] == f"builtin-v{synthetic.VERSION}"
        assert r["val_images"] == synthetic.VAL_PER_CLASS * len(synthetic.CLASSES)
    accuracy = [100 * (1 - r["centre_top1_error"]) for r in runs]
    mean = sum(accuracy) / len(accuracy)
    std = (sum((a - mean) ** 2 for a in accuracy) / (len(accuracy) - 1)) ** 0.5
    readme = " ".join((root / "README.md").read_text().split())
    assert (f"**{mean:.1f}% on average, std {std:.1f} points, from {min(accuracy):.1f}% to "
            f"{max(accuracy):.1f}%**") in readme
    assert f"each run {min(r['seconds'] for r in runs):.0f} to {max(r['seconds'] for r in runs):.0f} s" in readme
