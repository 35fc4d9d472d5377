"""The training loop, resume, evaluation and the train/eval/predict commands, on a tiny dataset."""

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from alexnet import build_model, inference
from alexnet.cli import main
from alexnet.data import generate_builtin, load_or_compute_stats, open_dataset
from alexnet.errors import ConfigError, TrainingError
from alexnet.train import loop as loop_module
from alexnet import load_model
from alexnet.data.images import load_image
from alexnet.checkpoint import read_checkpoint, stats_from_checkpoint
from alexnet.data.preprocess import Preprocess
from alexnet.train.loop import Interrupted, TrainRuntime, resume_config, train
from helpers import TINY_RUNTIME, tiny_config
from alexnet.train.optim import paper_sgd
from alexnet.train.step import train_step

pytestmark = pytest.mark.usefixtures("private_cache")  # nothing touches ~/.cache/alexnet
RUNTIME = TINY_RUNTIME


def _config(tiny, out, **changes):
    """The built-in recipe, 2 epochs of batch 4 on the tiny set, on the CPU; ``changes`` by name."""
    return tiny_config(tiny, out, **{"epochs": 2, **changes})


@pytest.fixture(scope="module")
def one_epoch(tiny, tmp_path_factory):
    """One epoch of the tiny run, trained once for the tests below; each takes its own copy."""
    run = tmp_path_factory.mktemp("one-epoch") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALEXNET_CACHE", str(run.parent / "cache"))
        train(_config(tiny, run, epochs=1))
    return run


def _copy(run, tmp_path):
    """A run folder of one's own (the checkpoint's path inside it is its own, too)."""
    return shutil.copytree(run, tmp_path / "run")


def _runtime(**changes):
    """A resumed session's own runtime: the tests' usual one, with ``changes``."""
    return TrainRuntime(**{**RUNTIME, **changes})


def _weights(run):
    return read_checkpoint(run)["model"]


def _fixed_batch(tiny, n=8):
    dataset = open_dataset(tiny, "train")
    stats = load_or_compute_stats(tiny, workers=0)
    images = torch.stack([dataset[i][0] for i in range(n)])
    labels = torch.tensor([dataset[i][1] for i in range(n)])
    return Preprocess(stats).centre(images), labels


def test_steps_lower_the_loss_on_a_fixed_batch_and_layouts_stay_equal(tiny):
    x, labels = _fixed_batch(tiny)
    models = {layout: build_model(layout=layout, devices=["cpu"] if layout == "grouped" else ["cpu", "cpu"],
                                  num_classes=10, seed=3, dropout=0.0) for layout in ("grouped", "towers")}
    losses = {}
    for layout, model in models.items():
        optimizer = paper_sgd(model, lr=0.001)
        losses[layout] = [train_step(model, x, labels, optimizer).loss.item() for _ in range(6)]
    for layout, curve in losses.items():
        assert curve[-1] < curve[0], (layout, curve)
    assert losses["towers"] == pytest.approx(losses["grouped"], rel=1e-3)
    grouped, towers = models["grouped"].state_dict(), models["towers"].state_dict()
    for key in grouped:
        torch.testing.assert_close(towers[key], grouped[key], rtol=1e-3, atol=1e-5, msg=key)


def test_a_run_folder_holds_everything(tiny, tmp_path):
    summary = train(_config(tiny, tmp_path / "run", ten_crop=True))
    run = tmp_path / "run"
    for name in ("config.json", "classes.json", "metrics.jsonl", "curves.png", "summary.json",
                 "checkpoints/last.pt", "checkpoints/best.pt", "stats/stats.json", "stats/mean_image.npy"):
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())
    assert config["recipe"]["batch_size"] == 4 and config["resolved"]["placement"] == {"layout": "grouped", "devices": ["cpu"]}
    assert json.loads((run / "classes.json").read_text())[:3] == ["bar", "checkerboard", "circle"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(1, 11))
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2]
    assert records[-1]["kind"] == "final"
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["steps"] == 10 and "final_ten_crop" in summary
    # best.pt is for evaluation: the weights without the momentum buffers; last.pt resumes.
    assert read_checkpoint(run / "checkpoints" / "best.pt")["optimizer"] is None
    assert set(read_checkpoint(run)["optimizer"]["momentum"]) == set(read_checkpoint(run)["model"])
    files = {str(f.relative_to(run)) for f in run.rglob("*") if f.is_file()}
    assert files == {"config.json", "classes.json", "metrics.jsonl", "curves.png", "summary.json",
                     "checkpoints/last.pt", "checkpoints/best.pt", "stats/stats.json", "stats/mean_image.npy",
                     ".alexnet.lock"}  # the one writer's lock, empty once the run ended
    assert (run / ".alexnet.lock").read_text() == ""
    # Everything but summary.json, which records the size and is written after it, and the lock.
    assert summary["disk_bytes"] == sum((run / name).stat().st_size for name in files - {"summary.json", ".alexnet.lock"})


def test_resume_after_an_interruption_reproduces_the_run_exactly(tiny, tmp_path):
    train(_config(tiny, tmp_path / "whole"))
    with pytest.raises(Interrupted, match="--resume"):
        train(_config(tiny, tmp_path / "cut", max_steps=7))  # mid-way through epoch 2
    progress = read_checkpoint(tmp_path / "cut")["progress"]
    assert {k: progress[k] for k in ("epoch", "batch", "step", "images")} == {"epoch": 1, "batch": 2, "step": 7,
                                                                               "images": 28}
    train(resume_config(str(tmp_path / "cut"), runtime=_runtime()), resume=str(tmp_path / "cut"))
    whole, cut = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    for key in whole:
        assert torch.equal(whole[key], cut[key]), key
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
             if json.loads(line)["kind"] == "step"]
    assert steps == list(range(1, 11))  # nothing recorded twice


def test_resume_on_another_layout_continues_closely(tiny, tmp_path):
    no_dropout = {"dropout": 0.0}
    train(_config(tiny, tmp_path / "whole", **no_dropout))
    with pytest.raises(Interrupted):
        train(_config(tiny, tmp_path / "cut", max_steps=7, **no_dropout))
    train(resume_config(str(tmp_path / "cut"), runtime=_runtime(devices="cpu,cpu")), resume=str(tmp_path / "cut"))
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["resolved"]["placement"]["layout"] == "towers"
    whole, cut = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    for key in whole:
        torch.testing.assert_close(cut[key], whole[key], rtol=1e-3, atol=1e-4, msg=key)


def test_a_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny, one_epoch, tmp_path, monkeypatch):
    _copy(one_epoch, tmp_path)
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    before = last.read_bytes()
    real_step = loop_module.train_step

    def poisoned(*args, **kwargs):
        loss, logits = real_step(*args, **kwargs)
        return loss * float("nan"), logits

    monkeypatch.setattr(loop_module, "train_step", poisoned)
    with pytest.raises(TrainingError, match=r"the loss became nan by step 6 \(epoch 2\); stopped without saving"):
        train(resume_config(str(tmp_path / "run"), runtime=_runtime(), epochs=2), resume=str(tmp_path / "run"))
    assert last.read_bytes() == before


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_train_refuses_a_folder_that_holds_a_run(tiny, one_epoch, tmp_path):
    _copy(one_epoch, tmp_path)
    config_before = (tmp_path / "run" / "config.json").read_bytes()
    result = run_cli("train", "--data", tiny, "--out", tmp_path / "run", "-b", "4", "--devices", "cpu", "-q")
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: --out {tmp_path / 'run'} already holds a run; use --resume {tmp_path / 'run'} to continue it "
        f"or --overwrite to start again"]
    assert (tmp_path / "run" / "config.json").read_bytes() == config_before


@pytest.mark.parametrize("args,message", [
    (["--epochs"], "Option '--epochs' requires an argument."),
    (["-b", "0"], "0 is not in the range x>=1"),
    (["--lr", "-0.1"], "--lr must be positive; got -0.1"),
    (["--devices", "0,1"], "cuda:0 requested but"),
    (["--amp", "fp16", "--devices", "cpu"], "--amp fp16: fp16 autocast runs on CUDA devices only"),
    (["--data", "/nonexistent/data"], "/nonexistent/data: no such file or folder"),
])
def test_impossible_train_options_get_one_line(tiny, tmp_path, args, message):
    result = run_cli("train", "--data", tiny, "--out", tmp_path / "new", "-q", *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], result.output
    assert not (tmp_path / "new").exists()  # nothing is written before the options and the data are checked


def test_resume_of_a_folder_that_is_not_there_is_one_line(tmp_path):
    result = run_cli("train", "--resume", tmp_path / "nowhere", "-q")
    assert result.exit_code == 2 and result.output.strip() == f"Error: --resume {tmp_path / 'nowhere'}: no such run folder"


@pytest.mark.parametrize("option", [["--out", "x"], ["--preset", "paper"], ["--overwrite"]])
def test_resume_refuses_options_of_a_new_run(tiny, tmp_path, option):
    result = run_cli("train", "--resume", tmp_path, *option, "-q")
    assert result.exit_code == 2 and f"drop {option[0]}" in result.output


def test_eval_and_predict_commands(tiny, one_epoch, tmp_path):
    _copy(one_epoch, tmp_path)
    result = run_cli("eval", tmp_path / "run", "--devices", "cpu", "-b", "5", "-j", "0", "-q")
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "run" / "eval.json").read_text())
    assert [r["protocol"] for r in saved["results"]] == ["centre crop", "ten-crop"]
    for r in saved["results"]:  # the printed table is the saved numbers
        assert f"{100 * r['top1_error']:.2f}% {100 * r['top5_error']:>11.2f}%" in result.output
    assert f"checkpoint {tmp_path / 'run' / 'checkpoints' / 'last.pt'} (epoch 1, step 5)" in result.output
    image = next((tiny / "val" / "star").iterdir())
    result = run_cli("predict", tmp_path / "run" / "checkpoints" / "last.pt", image, "--devices", "cpu", "--json")
    assert result.exit_code == 0, result.output
    (prediction,) = json.loads(result.output)
    assert len(prediction["predictions"]) == 5
    # The same probabilities computed directly: the trained model on the image's centre crop.
    model = load_model(tmp_path / "run")
    pixels = load_image(image).unsqueeze(0)
    probs = torch.softmax(model(Preprocess(stats_from_checkpoint(read_checkpoint(tmp_path / "run"))).centre(pixels)), 1)[0]
    top = probs.topk(5)
    assert [p["class"] for p in prediction["predictions"]] == [model.classes[i] for i in top.indices.tolist()]
    assert [p["probability"] for p in prediction["predictions"]] == pytest.approx(top.values.tolist(), rel=1e-5)


def test_eval_refuses_a_dataset_with_other_classes(tiny, one_epoch, tmp_path, monkeypatch):
    _copy(one_epoch, tmp_path)
    other = generate_builtin(tmp_path / "other", train_per_class=1, val_per_class=1, workers=0)
    for folder in ("train", "val"):
        for extra in sorted((other / folder).iterdir())[5:]:
            for f in extra.iterdir():
                f.unlink()
            extra.rmdir()

    def no_net(*args, **kwargs):
        raise AssertionError("built the net before checking the data (seconds for the paper's)")
    monkeypatch.setattr(inference, "open_trained", no_net)
    result = run_cli("eval", tmp_path / "run", "--data", other, "--devices", "cpu", "-q")
    assert result.exit_code == 2
    assert "trained on 10 classes, but" in result.output and "has 5" in result.output
    result = run_cli("eval", tmp_path / "missing.pt", "--devices", "cpu")
    assert result.output.strip() == f"Error: {tmp_path / 'missing.pt'}: no such checkpoint file or run folder"


def test_bad_log_every(tiny, tmp_path):
    with pytest.raises(ConfigError, match="--log-every"):
        train(_config(tiny, tmp_path / "run", log_every=0))


def test_max_steps_at_an_epoch_end_lets_the_epoch_finish(tiny, tmp_path):
    # 5 steps per epoch (20 images, batch 4): max_steps=5 stops after epoch 1's validation,
    # max_steps=10 (the whole run) finishes it, summary and all.
    with pytest.raises(Interrupted, match=r"at step 5, epoch 2 batch 0"):
        train(_config(tiny, tmp_path / "half", max_steps=5))
    records = [json.loads(line) for line in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1]
    summary = train(_config(tiny, tmp_path / "whole", max_steps=10))
    assert summary["steps"] == 10 and summary["epochs"] == 2
    assert (tmp_path / "whole" / "summary.json").exists()
