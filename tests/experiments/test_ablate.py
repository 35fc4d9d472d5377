"""alexnet ablate: the arms build the paper's nets, all arms of a seed see the same batches, a
stopped ablation resumes without retraining, the report's figures come from the runs' own files,
and bad input is one line.

Training runs use the built-in generator at 2 training and 1 validation image per class, one
epoch of two batches of 10: the full-size nets, a few steps each.
"""

import json
import math

import pytest
import torch
from click.testing import CliRunner

from alexnet import load_model
from alexnet.cli import main
from alexnet.data.preprocess import Preprocess
from alexnet.devices import DeviceRequest
from alexnet.errors import ConfigError
from alexnet.experiments import ablate
from alexnet.experiments.ablate import results as report_module
from alexnet.experiments.ablate.arms import BASELINE, PAPER_ARMS, arm_config, for_template, get_arms
from alexnet.experiments.ablate.folder import AblationFolder
from alexnet.model.build import build_model
from alexnet.model.config import ModelConfig
from alexnet.model.lrn import LocalResponseNorm
from alexnet.checkpoint import read_checkpoint
from alexnet.train.loop import Interrupted, TrainConfig
from alexnet.train.recipe import get_preset

# FACTS §1 and §5: the paper's net has 60,965,224 parameters; the one-GPU net halves conv1-conv4
# (48-128-192-192 kernels), keeps conv5 (256) and the FC layers: 59,798,312.
PAPER_PARAMS = 60_965_224
ONE_GPU_PARAMS = 59_798_312
EXPECTED_PARAMS = {"baseline": PAPER_PARAMS, "one-gpu": ONE_GPU_PARAMS, "no-lrn": PAPER_PARAMS,
                   "no-overlap": PAPER_PARAMS}
FC8_1000, FC8_10 = 4096 * 1000 + 1000, 4096 * 10 + 10  # fc8 with ImageNet's classes, with the tiny set's
NAMES = ["baseline", "one-gpu", "no-lrn", "no-overlap"]


pytestmark = pytest.mark.usefixtures("private_cache")  # nothing touches ~/.cache/alexnet


def template(tiny, **changes):
    settings = dict(epochs=1, batch_size=10, data=str(tiny), devices="cpu", workers=0, log_every=1, ten_crop=True)
    return TrainConfig.from_preset("builtin", **{**settings, **changes})


@pytest.fixture(scope="module")
def all_arms(tiny, tmp_path_factory):
    """The three arms and the baseline, one seed, with every training batch recorded (the uint8
    batch, its labels, and the augmented crops the network saw) per run."""
    out = tmp_path_factory.mktemp("ablations") / "all"
    batches, current = {}, {}
    real_train, real_preprocess = ablate.train, Preprocess.augment

    def tracking_train(config, resume=None, reporter=None):
        current["run"] = config.out.rsplit("/", 1)[-1]
        return real_train(config, resume=resume, reporter=reporter)

    def recording_preprocess(self, images, generator, **kwargs):
        x = real_preprocess(self, images, generator, **kwargs)
        batches.setdefault(current["run"], []).append((images.clone(), x.clone()))
        return x

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALEXNET_CACHE", str(out.parent / "cache"))
        patch.setattr(ablate, "train", tracking_train)
        patch.setattr(Preprocess, "augment", recording_preprocess)
        result = ablate.run(template(tiny), out=str(out))
    return out, result, batches


# -- the arms -------------------------------------------------------------------------------------
def pooled_sizes(model):
    sizes = {}
    hooks = [getattr(model, name).register_forward_hook(
        lambda module, args, output, name=name: sizes.__setitem__(name, output.shape[-1]))
        for name in ("conv1", "pool1", "pool2", "pool5")]
    with torch.no_grad():
        model.eval()(torch.zeros(1, 3, 224, 224))
    for hook in hooks:
        hook.remove()
    return [sizes[name] for name in ("conv1", "pool1", "pool2", "pool5")]


@pytest.mark.parametrize("arm", [BASELINE, *PAPER_ARMS], ids=lambda arm: arm.name)
def test_each_arm_builds_the_intended_network(arm, tmp_path):
    config = arm_config(template("unused"), arm, seed=0, run_dir=tmp_path)
    model = build_model(config.model, num_classes=1000, initialize=False,
                        fuse_relu_lrn_pool=False)  # the hooks on pool1, pool2 see the modules run
    assert sum(p.numel() for p in model.parameters()) == EXPECTED_PARAMS[arm.name]
    lrns = [m for m in model.modules() if isinstance(m, (LocalResponseNorm, torch.nn.LocalResponseNorm))]
    assert len(lrns) == (0 if arm.name == "no-lrn" else 2)
    assert pooled_sizes(model) == [55, 27, 13, 6]
    pool = (2, 2) if arm.name == "no-overlap" else (3, 3)
    assert {m.kernel_size for m in model.modules() if isinstance(m, torch.nn.MaxPool2d)} == {pool[0]}
    assert config.recipe.seed == 0 and config.out == str(tmp_path)


def test_the_no_overlap_arm_can_be_the_authors_net_147_and_the_report_says_so(tiny, tmp_path, monkeypatch):
    """``--no-overlap-as authors``: the arm trains layers-147.cfg's net (55-28-13-6 after the
    pools; ceil rounding, conv2 padding 1, conv5 padding 0) and its description names it."""
    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    result = run_cli("--no-overlap", "--no-overlap-as", "authors", "--data", tiny, "--epochs", "1", "-b", "10",
                     "--no-ten-crop", "--devices", "cpu", "-j", "0", "-q", "-o", tmp_path / "ab")
    assert result.exit_code == 0, result.output
    assert "the layers of the authors' net 147" in result.output
    assert "the layers of the authors' net 147" in (tmp_path / "ab" / "report.md").read_text()
    config = json.loads((tmp_path / "ab" / "no-overlap-seed0" / "config.json").read_text())
    model = build_model(ModelConfig.from_dict(config["model"]), initialize=False, fuse_relu_lrn_pool=False)
    assert pooled_sizes(model) == [55, 28, 13, 6]
    paper_reading = for_template(PAPER_ARMS, template("unused"))[2]
    assert "the paper's reading" in paper_reading.description and "147" not in paper_reading.description


def test_the_one_gpu_arm_runs_on_one_device_and_the_baseline_on_two():
    towers = template("unused", devices="cpu,cpu")
    baseline = arm_config(towers, BASELINE, 0, "b")
    one_gpu = arm_config(towers, get_arms(["one-gpu"])[0], 0, "o")
    assert baseline.runtime.devices.resolve(towers=2).describe() == "towers on cpu, cpu"
    assert one_gpu.runtime.devices.resolve(towers=1).describe() == "grouped on cpu"
    assert DeviceRequest.parse("0,1").first_device() == DeviceRequest.parse("0")
    assert DeviceRequest.parse("auto", "towers").first_device() == DeviceRequest.parse("auto")


def test_unknown_arms_and_seeds_are_refused():
    with pytest.raises(ConfigError, match="unknown arm 'no-dropout'; the arms are one-gpu, no-lrn, no-overlap"):
        ablate.run(template("unused"), arms=["no-dropout"])
    with pytest.raises(ConfigError, match="--seeds must be at least 1; got 0"):
        ablate.run(template("unused"), arms=["no-lrn"], seeds=0)


# -- a whole ablation -------------------------------------------------------------------------------
def test_all_arms_of_a_seed_see_the_same_images_in_the_same_order_with_the_same_augmentation(all_arms):
    _, _, batches = all_arms
    assert sorted(batches) == sorted(f"{name}-seed0" for name in NAMES)
    reference = batches["baseline-seed0"]
    assert len(reference) == 2  # 20 training images, batch 10, one epoch
    for name, seen in batches.items():
        assert len(seen) == len(reference), name
        for (images, x), (ref_images, ref_x) in zip(seen, reference):
            assert images.dtype == torch.uint8 and torch.equal(images, ref_images), name
            assert torch.equal(x, ref_x), name  # the same crops, flips and colour noise


def test_each_run_is_an_ordinary_run_folder_that_keeps_only_its_weights(all_arms, tiny):
    out, _, _ = all_arms
    for name in NAMES:
        run = out / f"{name}-seed0"
        assert (run / "summary.json").exists() and (run / "metrics.jsonl").exists(), name
        assert not (run / "checkpoints" / "last.pt").exists(), name
        payload = read_checkpoint(run / "checkpoints" / "best.pt")
        assert payload["optimizer"] is None
        config = payload["model_config"]
        assert (config["variant"], config["lrn"], config["overlap"]) == (
            "one-gpu" if name == "one-gpu" else "two-gpu", name != "no-lrn", name != "no-overlap")
        assert sum(t.numel() for t in payload["model"].values()) == EXPECTED_PARAMS[name] - FC8_1000 + FC8_10
    model = load_model(out / "no-lrn-seed0" / "checkpoints" / "best.pt")
    assert not any(isinstance(m, LocalResponseNorm) for m in model.modules())
    result = CliRunner().invoke(main, ["eval", str(out / "one-gpu-seed0" / "checkpoints" / "best.pt"),
                                       "--devices", "cpu", "-j", "0", "--no-ten-crop", "-q"])
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "ablation.json").read_text())
    assert [arm["name"] for arm in settings["arms"]] == ["one-gpu", "no-lrn", "no-overlap"] and settings["seeds"] == [0]
    assert settings["arms"][1]["changes"] == {"lrn": False} and settings["baseline"]["changes"] == {}
    assert settings["experiment"]["data"] == str(tiny.resolve())


def test_the_report_of_a_real_ablation_is_the_runs_own_figures(all_arms):
    out, result, _ = all_arms
    summaries = {name: json.loads((out / f"{name}-seed0" / "summary.json").read_text()) for name in NAMES}
    arms = {a["arm"]: a for a in result["arms"]}
    for name in NAMES:
        assert arms[name]["errors"]["ten_top1"]["values"] == [100 * summaries[name]["final_ten_crop"]["top1_error"]]
        assert arms[name]["errors"]["best_top5"]["values"] == [100 * summaries[name]["best"]["val_top5_error"]]
    saved = {d["arm"]: d for d in json.loads((out / "report.json").read_text())["differences"]}
    for d in result["differences"]:
        expected = 100 * (summaries[d["arm"]]["final_centre_crop"]["top1_error"]
                          - summaries["baseline"]["final_centre_crop"]["top1_error"])
        assert d["centre_top1"]["values"] == [pytest.approx(expected)]
        assert saved[d["arm"]]["centre_top1"]["values"] == [pytest.approx(expected)]  # what report.json says
        assert d["centre_top1"]["beyond_noise"] is None  # one seed: nothing to judge against
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "report.md").read_text()
    assert "With one seed per arm there is no measure of how far a result moves from seed to seed" in text
    assert ("The one-gpu arm ran grouped on cpu, fp32; the baseline ran grouped on cpu, fp32: with both towers on "
            "one device") in text


def test_the_report_says_where_the_one_gpu_comparison_ran(tmp_path):
    top1 = {"baseline": [0.30], "one-gpu": [0.32]}
    towers = {"baseline": {"layout": "towers", "devices": ["cuda:0", "cuda:1"]},
              "one-gpu": {"layout": "grouped", "devices": ["cuda:0"]}}
    folder = fake_ablation(tmp_path / "ab", ["one-gpu"], top1, top1, placements=towers)
    text = ablate.format_ablation_report(ablate.report(str(folder.path)))
    assert ("The one-gpu arm ran grouped on cuda:0, fp32; the baseline ran its two towers on two GPUs "
            "(towers on cuda:0, cuda:1, fp32): the paper's comparison") in text
    assert "| one-gpu | +2.0 | — | one seed: cannot tell |" in text


def test_a_stopped_ablation_resumes_without_retraining_finished_runs(all_arms, tiny, tmp_path, monkeypatch):
    out = tmp_path / "cut"
    real_train = ablate.train
    calls = []

    def stop_the_second_run(config, resume=None, reporter=None):
        calls.append((config.out.rsplit("/", 1)[-1], resume))
        if len(calls) == 2:
            config = config.replace(max_steps=1)  # as Ctrl-C after its first step
        return real_train(config, resume=resume, reporter=reporter)

    monkeypatch.setattr(ablate, "train", stop_the_second_run)
    with pytest.raises(Interrupted, match=f"no-lrn-seed0: stopped .*continue it with: alexnet ablate --resume {out}"):
        ablate.run(template(tiny), arms=["no-lrn"], out=str(out))
    baseline = out / "baseline-seed0"
    assert (baseline / "summary.json").exists() and not (baseline / "checkpoints" / "last.pt").exists()
    assert (out / "no-lrn-seed0" / "checkpoints" / "last.pt").exists()
    assert not (out / "no-lrn-seed0" / "summary.json").exists()
    kept = {name: ((baseline / name).read_bytes(), (baseline / name).stat().st_mtime_ns)
            for name in ("summary.json", "metrics.jsonl", "checkpoints/best.pt")}

    calls.clear()
    ablate.resume(str(out))
    assert calls == [("no-lrn-seed0", str(out / "no-lrn-seed0"))]  # resumed from its checkpoint, nothing else
    for name, (data, mtime) in kept.items():
        assert (baseline / name).read_bytes() == data and (baseline / name).stat().st_mtime_ns == mtime, name
    records = [json.loads(line) for line in (out / "no-lrn-seed0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "step"] == [1, 2]
    # Resumed on the same device, the run is the uninterrupted one bit for bit.
    resumed = read_checkpoint(out / "no-lrn-seed0" / "checkpoints" / "best.pt")["model"]
    whole = read_checkpoint(all_arms[0] / "no-lrn-seed0" / "checkpoints" / "best.pt")["model"]
    assert all(torch.equal(resumed[k], whole[k]) for k in whole)

    calls.clear()
    result = ablate.run(template(tiny), arms=["no-lrn"], out=str(out))  # the same command again
    assert calls == [] and result["not_finished"] == []
    with pytest.raises(ConfigError, match=r"holds an ablation with other settings \(recipe.lr: 0.01 there, 0.02 here\)"):
        ablate.run(template(tiny, lr=0.02), arms=["no-lrn"], out=str(out))


# -- the report, from runs with known figures -----------------------------------------------------
def fake_ablation(path, arms, top1, top5, data=None, missing=(), placements=None):
    """An ablation folder whose runs hold the given final ten-crop errors (arm -> per seed)."""
    seeds = len(top1["baseline"])
    folder = AblationFolder.start(path, get_arms(arms), list(range(seeds)),
                                  TrainConfig.from_preset("builtin", data=data, devices="cpu"))
    folder.settings.update(classes=10, train_images=2500)
    for name in ["baseline", *arms]:
        for seed in range(seeds):
            run = path / f"{name}-seed{seed}"
            run.mkdir(parents=True)
            (run / "config.json").write_text(json.dumps({
                "variant": "one-gpu" if name == "one-gpu" else "two-gpu", "lrn": name != "no-lrn",
                "overlap": name != "no-overlap", "classes": 10, "amp_dtype": "fp32",
                "placement": (placements or {}).get(name, {"layout": "grouped", "devices": ["cpu"]})}))
            e1, e5 = top1[name][seed], top5[name][seed]
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
                {"kind": "step", "step": 1, "images": 10, "images_per_second": 5.0},
                {"kind": "step", "step": 2, "images": 30, "images_per_second": 10.0},
                {"kind": "epoch", "epoch": 1, "val_top1_error": e1 + 0.1, "val_top5_error": e5 + 0.1},
                {"kind": "epoch", "epoch": 2, "val_top1_error": e1, "val_top5_error": e5}]))
            if (name, seed) in missing:
                continue
            (run / "summary.json").write_text(json.dumps({
                "epochs": 2, "final_centre_crop": {"top1_error": e1 + 0.01, "top5_error": e5 + 0.01},
                "final_ten_crop": {"top1_error": e1, "top5_error": e5},
                "best": {"val_top1_error": e1, "val_top5_error": e5, "epoch": 2}}))
            folder.settings["timing"][run.name] = {"seconds": 60.0 * (seed + 1), "sessions": 1, "untimed_sessions": 0}
    folder.save()
    return folder


THREE_SEEDS_TOP1 = {"baseline": [0.30, 0.34, 0.32], "no-lrn": [0.33, 0.35, 0.38], "no-overlap": [0.32, 0.362, 0.338]}
THREE_SEEDS_TOP5 = {"baseline": [0.10, 0.12, 0.11], "no-lrn": [0.10, 0.12, 0.11], "no-overlap": [0.12, 0.14, 0.13]}


def test_differences_their_spread_and_the_verdict_come_from_the_runs(tmp_path):
    folder = fake_ablation(tmp_path / "ab", ["no-lrn", "no-overlap"], THREE_SEEDS_TOP1, THREE_SEEDS_TOP5)
    result = ablate.report(str(folder.path))
    diffs = {d["arm"]: d for d in result["differences"]}
    # no-lrn: 3, 1 and 6 points; mean 3.33, std 2.52; t(2) = 4.303: 3.33 ± 6.25 includes zero.
    lrn = diffs["no-lrn"]["ten_top1"]
    assert lrn["values"] == pytest.approx([3.0, 1.0, 6.0])
    assert lrn["mean"] == pytest.approx(10 / 3) and lrn["std"] == pytest.approx(2.5166, abs=1e-4)
    assert lrn["interval"] == pytest.approx([10 / 3 - 6.2524, 10 / 3 + 6.2524], abs=1e-3)
    assert lrn["beyond_noise"] is False
    # no-overlap: 2.0, 2.2 and 1.8 points; 2.0 ± 4.303 · 0.2 / √3 = 2.0 ± 0.497 excludes zero.
    overlap = diffs["no-overlap"]["ten_top1"]
    assert overlap["mean"] == pytest.approx(2.0) and overlap["std"] == pytest.approx(0.2)
    assert overlap["interval"] == pytest.approx([1.5031, 2.4969], abs=1e-3) and overlap["beyond_noise"] is True
    assert diffs["no-lrn"]["ten_top5"]["values"] == pytest.approx([0.0, 0.0, 0.0])
    assert diffs["no-lrn"]["ten_top5"]["beyond_noise"] is False
    assert diffs["no-lrn"]["centre_top1"]["values"] == pytest.approx([3.0, 1.0, 6.0])
    arms = {a["arm"]: a for a in result["arms"]}
    assert arms["baseline"]["errors"]["ten_top1"]["mean"] == pytest.approx(32.0)
    assert arms["baseline"]["errors"]["ten_top1"]["std"] == pytest.approx(2.0)
    assert arms["baseline"]["wall_seconds"] == pytest.approx(120.0)  # 60, 120, 180 s
    assert arms["baseline"]["images_per_second"] == pytest.approx(7.5)  # 30 images in 2 s + 2 s
    assert arms["baseline"]["params"] == PAPER_PARAMS - FC8_1000 + FC8_10
    assert arms["baseline"]["params_1000_classes"] == PAPER_PARAMS

    text = (folder.path / "report.md").read_text()
    # Seeds to tell at std 2.5166: 3.33 points need t(N-1)·2.5166/√N < 3.33, first at N = 5 (2.776 · 1.125 =
    # 3.12; N = 4: 3.182 · 1.258 = 4.00); 3 points first at N = 6 (2.571 · 1.027 = 2.64). At std 0.2: N = 2.
    assert (lrn["seeds_to_tell_mean"], lrn["seeds_to_tell_call"]) == (5, 6)
    assert "| no-lrn | +3.3 ± 2.5 | -2.9 to +9.6 | no | 5 / 6 | +0.0 ± 0.0 | +0.0 to +0.0 | no | +1.4 / +1.2 |" in text
    assert "| no-overlap | +2.0 ± 0.2 | +1.5 to +2.5 | **yes** | 2 / 2 |" in text
    assert ("At the paired differences' measured spread (2.5 points, std over 3 seeds), a difference of this "
            "size (+3.3) would need 5 seeds; one of 3 points, 6") in text
    assert "moves between seeds by 2.0 points (std; 30.0% to 34.0% over 3 seeds)" in text
    assert "not ImageNet" in text and "not a reproduction of the paper's numbers" in text
    assert "includes zero: within the seed noise" in text and "excludes zero: the arm is worse" in text
    assert "| baseline | 3 of 3 | 32.0 ± 2.0 |" in text
    assert json.loads((folder.path / "report.json").read_text())["differences"][1]["ten_top1"]["beyond_noise"] is True
    assert (folder.path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_unfinished_run_is_left_out_and_fewer_than_three_seeds_show_each_value(tmp_path):
    folder = fake_ablation(tmp_path / "ab", ["no-lrn"], THREE_SEEDS_TOP1, THREE_SEEDS_TOP5, data=str(tmp_path),
                           missing=[("no-lrn", 2)])
    result = ablate.report(str(folder.path))
    lrn = result["differences"][0]["ten_top1"]
    assert lrn["seeds"] == [0, 1] and lrn["values"] == pytest.approx([3.0, 1.0])
    # two seeds: t(1) = 12.706; 2.0 ± 12.706 · 1.414 / √2 = 2.0 ± 12.706
    assert lrn["interval"] == pytest.approx([2.0 - 12.706, 2.0 + 12.706], abs=1e-3)
    assert result["not_finished"] == ["no-lrn-seed2"]
    text = (folder.path / "report.md").read_text()
    assert "| no-lrn | +3.0, +1.0 |" in text
    assert "| no-lrn | 2 of 3 | 33.0, 35.0 |" in text
    assert "1 run not finished (no-lrn-seed2)" in text and f"alexnet ablate --resume {folder.path}" in text
    assert "not ImageNet" not in text  # a dataset of one's own is not flagged as the built-in one


@pytest.mark.parametrize("std,effect", [(2.0, 3.0), (1.0, 3.0), (5.6, 3.0), (2.5, 1.0), (0.5, 4.0), (3.0, -2.0)])
def test_seeds_to_tell_is_the_fewest_whose_interval_would_exclude_zero(std, effect):
    """Built from samples with exactly that mean and std: at the seeds it names, the interval
    paired_difference computes excludes zero; one seed fewer, it does not."""
    def sample(n):  # n paired differences (points) with mean ``effect`` and sample std ``std``
        a = std * math.sqrt((n - 1) / 2)
        values = [effect + a, effect - a] + [effect] * (n - 2)
        return report_module.paired_difference({i: 0.0 for i in range(n)}, {i: v / 100 for i, v in enumerate(values)})
    n = report_module.seeds_to_tell(std, effect)
    assert sample(n)["std"] == pytest.approx(std) and sample(n)["beyond_noise"] is True
    if n > 2:
        assert sample(n - 1)["beyond_noise"] is False


def _student_t_cdf(t: float, df: int, steps: int = 20000) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom, integrating its density
    (Simpson's rule): an independent computation of what the table in results.py holds."""
    c = math.gamma((df + 1) / 2) / (math.sqrt(df * math.pi) * math.gamma(df / 2))
    density = lambda x: c * (1 + x * x / df) ** (-(df + 1) / 2)  # noqa: E731
    h = t / steps
    area = density(0) + density(t) + sum((4 if i % 2 else 2) * density(i * h) for i in range(1, steps))
    return 0.5 + area * h / 3


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 10, 15, 20, 30, 45, 60, 120])
def test_t_quantiles_are_the_975_point_of_students_t(df):
    # The table's three decimals put the CDF within 0.5e-3 · density of 0.975; past 30
    # degrees of freedom the interpolation is within 0.01 of the quantile.
    q = report_module.t95(df)
    assert _student_t_cdf(q, df) == pytest.approx(0.975, abs=1e-4 if df <= 30 else 6e-4)


# -- the command ----------------------------------------------------------------------------------
def run_cli(*args):
    return CliRunner().invoke(main, ["ablate", *[str(a) for a in args]])


def one_error_line(result, message):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output


@pytest.mark.parametrize("args,message", [
    (["--no-dropout"], "No such option '--no-dropout'"),
    (["--seeds", "0"], "Invalid value for '--seeds': 0 is not in the range x>=1"),
    (["--devices", "0,1"], "cuda:0 requested but"),
    (["--lr", "-1"], "--lr must be positive; got -1.0"),
])
def test_bad_input_is_one_line_and_writes_nothing(tiny, tmp_path, args, message):
    one_error_line(run_cli("--data", tiny, "-o", tmp_path / "new", "-q", *args), message)
    assert not (tmp_path / "new").exists()


def test_an_out_folder_holding_something_else_is_refused(tiny, tmp_path):
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    one_error_line(run_cli("--data", tiny, "-o", tmp_path / "other", "--devices", "cpu", "-q"),
                   f"--out {tmp_path / 'other'}: holds files alexnet did not write")
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == ["notes.txt"]


def test_resume_and_report_take_only_what_they_can_use(tmp_path):
    folder = fake_ablation(tmp_path / "ab", ["no-lrn"], THREE_SEEDS_TOP1, THREE_SEEDS_TOP5)
    one_error_line(run_cli("--resume", tmp_path / "nowhere"), f"--resume {tmp_path / 'nowhere'}: no such folder")
    one_error_line(run_cli("--resume", folder.path, "--no-overlap", "--lr", "0.1"),
                   "--resume continues the ablation's own settings")
    one_error_line(run_cli("--report", folder.path, "--seeds", "2"), "--report only reads DIR; drop --seeds")
    one_error_line(run_cli("--report", tmp_path), f"--report {tmp_path}: not an ablation folder")
    result = run_cli("--report", folder.path)
    assert result.exit_code == 0, result.output
    assert result.output == (folder.path / "report.md").read_text() + "\n"


def test_the_command_passes_train_options_through(tiny, tmp_path, monkeypatch):
    seen = {}
    monkeypatch.setattr(ablate, "run", lambda config, **kwargs: seen.update(config=config, **kwargs) or REPORT)
    monkeypatch.setattr(ablate, "resume", lambda out, **kwargs: seen.update(resume=out, **kwargs) or REPORT)
    monkeypatch.setattr(ablate, "format_ablation_report", lambda report: "the report")
    result = run_cli("--no-lrn", "--seeds", "2", "--data", tiny, "--epochs", "1", "-b", "10", "--seed", "5",
                     "--no-ten-crop", "--devices", "cpu,cpu", "-j", "0", "-o", tmp_path / "ab")
    assert result.exit_code == 0 and result.output == "the report\n", result.output
    config = seen["config"]
    assert (config.recipe.name, config.recipe.epochs, config.recipe.batch_size, config.recipe.seed) == ("authors", 1, 10, 5)  # --data: the authors preset, as train
    runtime = config.runtime
    assert (config.data, runtime.ten_crop, runtime.workers, str(runtime.devices)) == (str(tiny), False, 0, "cpu,cpu")
    assert (seen["arms"], seen["seeds"], seen["out"]) == (["no-lrn"], 2, str(tmp_path / "ab"))
    seen.clear()
    result = run_cli("--resume", tmp_path / "ab", "--devices", "cpu", "-j", "0")
    assert result.exit_code == 0, result.output
    assert seen["resume"] == str(tmp_path / "ab")
    assert {k: v for k, v in seen.items() if k not in ("resume", "reporter")} == {
        "devices": DeviceRequest.parse("cpu"), "workers": 0}


REPORT = {}


def test_an_ablation_folder_of_version_1_reads_in_this_shape(tmp_path):
    """ablation.json as version 1 wrote it: the paper's arms by name, a flat recipe holding the
    initialization, the dropout and the preprocessing, ten_crop in the experiment, a flat runtime."""
    folder = tmp_path / "old"
    folder.mkdir()
    recipe = {**get_preset("builtin").recipe.as_dict(), "init": "caffe", "dropout": 0.5, "dropout_style": "inverted",
              "mean": "image", "pca": "sqrt-lambda", "pca_std": 0.1, "input_divide_std": False}
    (folder / "ablation.json").write_text(json.dumps({
        "format": "alexnet-ablation", "version": 1, "arms": ["no-lrn"], "seeds": [0, 1],
        "experiment": {"data": None, "recipe": recipe, "ten_crop": False},
        "runtime": {"devices": "cpu,cpu", "layout": None, "lrn_impl": "stock", "amp": "auto", "workers": 0},
        "timing": {}}))
    opened = AblationFolder.open(folder)
    assert [arm.name for arm in opened.arms] == ["baseline", "no-lrn"]
    assert opened.arms[1].changes == {"lrn": False}
    template = opened.template()
    assert (template.model.init, template.model.dropout_style, template.recipe.name) == ("caffe", "inverted", "builtin")
    assert (str(template.runtime.devices), template.runtime.lrn_impl, template.runtime.ten_crop) == ("cpu,cpu", "stock",
                                                                                                    False)


def test_more_seeds_continue_an_ablation_and_fewer_are_refused(tmp_path):
    folder = fake_ablation(tmp_path / "ab", ["no-lrn"], THREE_SEEDS_TOP1, THREE_SEEDS_TOP5)
    config = TrainConfig.from_preset("builtin", devices="cpu")
    grown = AblationFolder.start(folder.path, get_arms(["no-lrn"]), [0, 1, 2, 3, 4], config)
    assert grown.seeds == [0, 1, 2, 3, 4]
    assert [grown.state(arm, 3) for arm in grown.arms] == ["new", "new"]  # the new seeds are still to train
    with pytest.raises(ConfigError, match=r"other settings \(seeds: \[0, 1, 2\] there, \[0, 1\] here\)"):
        AblationFolder.start(folder.path, get_arms(["no-lrn"]), [0, 1], config)
