"""What a run is, decided by the library: a resumed run keeps its recipe and net, a run started
from a checkpoint trains that checkpoint's net, whoever calls (the CLI or Python); checkpoints
written before each setting was stored once still load and resume; an epoch resumed in its
middle reports its whole."""

import json
import shutil

import pytest
import torch

from alexnet.checkpoint import read_checkpoint
from alexnet.errors import ConfigError
from alexnet.run_folder import RunFolder
from alexnet.train.loop import Interrupted, TrainConfig, TrainRuntime, resume_config, train
from helpers import tiny_config

pytestmark = pytest.mark.usefixtures("private_cache")
_config = tiny_config


@pytest.fixture(scope="module")
def stopped(tiny, tmp_path_factory):
    """A run stopped after 2 of its epoch's 5 steps."""
    run = tmp_path_factory.mktemp("stopped") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALEXNET_CACHE", str(run.parent / "cache"))
        with pytest.raises(Interrupted):
            train(_config(tiny, run, max_steps=2))
    return run


def _copy(run, tmp_path, name="run"):
    return shutil.copytree(run, tmp_path / name)


def _files(run):
    return {p.relative_to(run): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("change, option", [({"lr": 0.5}, "--lr"), ({"weight_decay": 0.0}, "--wd"),
                                            ({"lrn": False}, "--lrn"), ({"mean": "channel"}, "--mean")])
def test_resume_config_refuses_what_the_run_is_naming_the_option(stopped, change, option):
    with pytest.raises(ConfigError, match=f"--resume continues the run's own recipe and net; drop {option}"):
        resume_config(str(stopped), **change)


def test_resume_config_takes_the_runtime_more_epochs_and_a_moved_dataset(stopped, tiny):
    config = resume_config(str(stopped), epochs=3, devices="cpu,cpu", workers=0, data=str(tiny))
    saved = TrainConfig.from_dict(RunFolder(stopped).read_config())
    assert config.recipe.epochs == 3 and str(config.runtime.devices) == "cpu,cpu"
    assert config.runtime.max_steps is None  # the last session's stop was that session's
    assert config.differences(saved) == {"epochs": (3, 1)}


def test_a_python_caller_cannot_resume_with_another_learning_rate(stopped, tiny, tmp_path):
    """train(config, resume=...) with a config that is not the run's: one line, nothing touched."""
    run = _copy(stopped, tmp_path)
    before = _files(run)
    with pytest.raises(ConfigError, match=r"the run has lr=0\.01, this configuration 0\.5"):
        train(_config(tiny, run, lr=0.5), resume=str(run))
    assert _files(run) == before


def test_train_with_only_a_run_folder_continues_it(stopped, tmp_path):
    run = _copy(stopped, tmp_path)
    summary = train(resume=str(run))
    assert summary["steps"] == 5 and summary["epochs"] == 1


@pytest.mark.parametrize("changes", [dict(init_from="x.pt", lrn=False), dict(init_from="x.pt", variant="one-gpu")])
def test_init_from_trains_the_checkpoints_net_from_python_too(changes):
    net = next(k for k in changes if k != "init_from")
    with pytest.raises(ConfigError, match=f"--init-from trains the checkpoint's own net; drop --{net}"):
        TrainConfig.from_preset("finetune", **changes)
    with pytest.raises(ConfigError, match="drop --"):
        TrainConfig.from_preset("finetune", init_from="x.pt").replace(**{net: changes[net]})
    # The class count and the initialization are the data's and the run's own.
    TrainConfig.from_preset("finetune", init_from="x.pt", num_classes=3, init="caffe")


def _as_version_2(path):
    """Rewrite a checkpoint as version 2 wrote it: the net and the preprocessing at the top level
    and, again, inside the run's config."""
    payload = torch.load(path, weights_only=True)
    config = json.loads(payload["config"])
    config.update(model=payload["model_config"], preprocess=payload["preprocess"])
    payload.update(version=2, config=json.dumps(config))
    torch.save(payload, path)


def test_a_version_2_checkpoint_reads_and_resumes_as_today(stopped, tmp_path):
    """Run folders written before each setting was stored once: the same payload, the same
    resumed run, bit for bit."""
    today, older = _copy(stopped, tmp_path, "today"), _copy(stopped, tmp_path, "older")
    _as_version_2(older / "checkpoints" / "last.pt")
    new, old = read_checkpoint(today), read_checkpoint(older)
    assert old["config"] == new["config"]
    assert old["model_config"] == new["model_config"] and old["preprocess"] == new["preprocess"]
    assert json.loads(torch.load(today / "checkpoints" / "last.pt", weights_only=True)["config"]).keys().isdisjoint(
        {"model", "preprocess"})  # stored once: at the top level
    train(resume=str(today))
    train(resume=str(older))
    for key, value in read_checkpoint(today)["model"].items():
        assert torch.equal(value, read_checkpoint(older)["model"][key]), key


def test_an_epoch_resumed_in_its_middle_reports_its_whole(stopped, tiny, tmp_path):
    """The epoch's training loss and error cover all its steps, not only those after the resume."""
    whole = tmp_path / "whole"
    train(_config(tiny, whole))
    resumed = _copy(stopped, tmp_path)
    train(resume=str(resumed))
    epoch = [r for r in RunFolder(whole).read_metrics() if r["kind"] == "epoch"][0]
    again = [r for r in RunFolder(resumed).read_metrics() if r["kind"] == "epoch"][0]
    steps = [r for r in RunFolder(whole).read_metrics() if r["kind"] == "step"]
    mean_loss = sum(r["loss"] for r in steps) / len(steps)  # every step is a batch of 4
    assert epoch["train_loss"] == pytest.approx(mean_loss, rel=1e-12)
    assert again["train_loss"] == pytest.approx(epoch["train_loss"], rel=1e-12)
    assert again["train_error"] == pytest.approx(epoch["train_error"], rel=1e-12)


def test_a_runtime_value_is_checked_where_it_is_made():
    with pytest.raises(ConfigError, match="--collective-timeout must be a finite number"):
        TrainRuntime(collective_timeout=float("nan"))
    with pytest.raises(ConfigError, match="--workers must be between 0 and"):
        TrainRuntime(workers=99999)
