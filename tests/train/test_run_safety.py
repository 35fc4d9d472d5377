"""A run folder nothing corrupts (issue 19): one writer at a time, every refusal of the machine
in one line with what was already done kept, a failed start that leaves nothing behind,
paths that hold from another directory, and the signals' exit codes. The failures are
simulated without root: a second writer holds the folder's lock, writes raise ENOSPC, and
processes get real signals."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import alexnet.files as files_module
from alexnet.data import generate_builtin
from alexnet.errors import BusyError, CheckpointError, ConfigError, StorageError
from alexnet.files import FolderLock
from alexnet.train import session as session_module
from alexnet.checkpoint import read_checkpoint
from alexnet.train.config import TrainConfig
from helpers import one_line, run_cli, tiny_config
from alexnet.train.loop import train
from alexnet.run_folder import RunFolder

pytestmark = pytest.mark.usefixtures("private_cache")  # nothing touches ~/.cache/alexnet
#: A new run's options for the tiny set (with --data the preset is the paper's: give --epochs).
TRAIN = ["--devices", "cpu", "-j", "0", "-b", "4", "--log-every", "1", "--no-ten-crop", "-q"]


config = tiny_config


@pytest.fixture(scope="module")
def one_epoch(tiny, tmp_path_factory):
    run = tmp_path_factory.mktemp("safety") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALEXNET_CACHE", str(run.parent / "cache"))
        train(config(tiny, run))
    return run


@pytest.fixture
def run(one_epoch, tmp_path):
    """A finished one-epoch run folder of the test's own."""
    return shutil.copytree(one_epoch, tmp_path / "run")


def snapshot(folder: Path):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()
            and p.name != FolderLock.NAME}


# -- one writer ---------------------------------------------------------------------------------
def test_a_second_writer_is_refused_before_it_touches_anything(run, tiny):
    before = snapshot(run)
    with FolderLock(run):  # another process writing the run, as far as the lock can tell
        for args in (["--data", tiny, "--out", run, "--overwrite", *TRAIN], ["--resume", run, "--epochs", "2", "-q"]):
            line = one_line(run_cli("train", *args), "another process is writing this run", f"process {os.getpid()}")
            assert str(run) in line
        with pytest.raises(BusyError):
            RunFolder(run).acquire()
    assert snapshot(run) == before
    RunFolder(run).acquire().release()  # free again once the holder let go


@pytest.mark.slow
def test_two_processes_on_one_folder_the_second_is_refused_and_the_first_run_is_its_own(tiny, tmp_path):
    out = tmp_path / "c"
    command = [sys.executable, "-m", "alexnet", "train", "--data", str(tiny), "--out", str(out), "--epochs", "3",
               *TRAIN]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while not (out / "metrics.jsonl").exists() and time.time() < deadline and first.poll() is None:
            time.sleep(0.2)
        second = subprocess.run([*command[:-len(TRAIN)], "-b", "2", "--overwrite", "--max-steps", "3",
                                 *TRAIN[:4], "-q"], capture_output=True, text=True, timeout=120)
        assert first.wait(timeout=240) == 0, first.stdout.read()
    finally:
        if first.poll() is None:
            first.kill()
    assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert "another process is writing this run" in second.stderr
    records = RunFolder(out).read_metrics()
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert steps == list(range(1, 16))  # 20 images, batch 4, 3 epochs: every step once
    config_json = json.loads((out / "config.json").read_text())
    assert config_json["recipe"]["batch_size"] == 4 and read_checkpoint(out)["progress"]["step"] == 15


# -- a start that fails ---------------------------------------------------------------------------
def test_a_start_refused_before_training_leaves_no_folder(tiny, tmp_path):
    one_line(run_cli("train", "--data", tiny, "--out", tmp_path / "big", *TRAIN, "-b", "1000"),
             "--batch-size 1000 is larger than the training set (20 images")
    assert not (tmp_path / "big").exists()


def test_a_start_that_fails_after_making_its_folder_removes_it(tiny, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise StorageError("stats: writing failed: no space left on its device")
    monkeypatch.setattr(session_module, "start_fresh", broken)
    with pytest.raises(StorageError):
        train(config(tiny, tmp_path / "new"))
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("kept")
    with pytest.raises(ConfigError, match="holds files alexnet did not write"):  # refused before anything
        train(config(tiny, tmp_path / "mine"))
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


def test_a_run_whose_first_checkpoint_failed_starts_again_with_the_same_command(tiny, tmp_path, monkeypatch):
    real_save = session_module.Session.save

    def full_disk(self, *args, **kwargs):
        raise StorageError(f"{self.run.last_checkpoint}: writing failed: no space left on its device")
    monkeypatch.setattr(session_module.Session, "save", full_disk)
    args = ("train", "--data", tiny, "--out", tmp_path / "run", "--epochs", "1", *TRAIN)
    one_line(run_cli(*args), "last.pt: writing failed: no space left")
    assert (tmp_path / "run" / "config.json").exists()  # the start got that far
    monkeypatch.setattr(session_module.Session, "save", real_save)
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert read_checkpoint(tmp_path / "run")["progress"]["step"] == 5


def test_half_written_files_of_a_killed_writer_go_at_the_next_start_and_are_never_counted(run):
    stale = run / "checkpoints" / ".last.pt.0123abcd.part"
    stale.write_bytes(b"x" * 1000)
    size = RunFolder(run).disk_bytes()
    assert size == sum(p.stat().st_size for p in run.rglob("*") if p.is_file()) - 1000
    RunFolder(run).acquire().release()
    assert not stale.exists() and RunFolder(run).disk_bytes() == size


# -- the machine's refusals -----------------------------------------------------------------------
def test_a_full_disk_during_a_checkpoint_is_one_line_and_the_last_one_still_loads(run, tiny, monkeypatch):
    before = (run / "checkpoints" / "last.pt").read_bytes()
    real_save = torch.save

    def fills_the_disk(obj, sink, *args, **kwargs):
        sink.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", fills_the_disk)
    line = one_line(run_cli("train", "--resume", run, "--epochs", "2", *TRAIN[:4], "-q"),
                    "no space left on its device")
    assert "last.pt" in line
    monkeypatch.setattr(torch, "save", real_save)
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    assert read_checkpoint(run)["progress"]["epoch"] == 1
    assert not list(run.rglob("*.part"))


def test_torchs_writer_under_a_file_size_limit_says_so(tmp_path):
    """torch's zip writer turns the system's refusal into "unexpected pos"; save_torch keeps it:
    a real process under ``ulimit -f``, writing a real file."""
    script = textwrap.dedent(f"""
        import resource, torch
        from alexnet.errors import StorageError
        from alexnet.files import save_torch
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        try:
            save_torch({str(tmp_path / "x.pt")!r}, {{"w": torch.zeros(1_000_000)}})
        except StorageError as error:
            print(error)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == f"{tmp_path / 'x.pt'}: writing failed: the file is too large for its file system; " \
                                    f"free some space, or write elsewhere", result.stderr
    assert list(tmp_path.iterdir()) == []  # no half-written file left


@pytest.mark.parametrize("code,advice", [(errno.EROFS, "read-only"), (errno.EACCES, "permission denied"),
                                         (errno.EISDIR, "it is a folder, where a file belongs")])
def test_each_refusal_names_the_path_and_what_to_do(tmp_path, code, advice):
    def refused(tmp):
        raise OSError(code, os.strerror(code), tmp)
    with pytest.raises(StorageError, match=advice) as info:
        files_module.write_atomically(tmp_path / "f.json", refused)
    assert "\n" not in str(info.value)


def test_eval_shows_its_figures_before_a_folder_refuses_them(run, monkeypatch):
    def refused(path, data):
        raise StorageError(f"{path}: writing failed: the file system is read-only: write elsewhere")
    monkeypatch.setattr("alexnet.inference.write_json", refused)
    result = run_cli("eval", run, "--devices", "cpu", "-j", "0", "--no-ten-crop", "-q")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert any("centre crop" in line and "%" in line for line in lines[:-1]), result.output  # the figures came first
    assert lines[-1] == f"Error: {run / 'eval.json'}: writing failed: the file system is read-only: write elsewhere"


def test_eval_into_a_folder_is_refused_before_evaluating(run, tmp_path):
    one_line(run_cli("eval", run, "--json-out", tmp_path, "--devices", "cpu"),
             f"--json-out {tmp_path}: is a folder; give a file name")


# -- paths ----------------------------------------------------------------------------------------
def test_a_relative_data_path_trains_resumes_and_evaluates_from_another_directory(tiny, tmp_path, monkeypatch):
    monkeypatch.chdir(tiny.parent)
    result = run_cli("train", "--data", tiny.name, "--out", tmp_path / "run", "--epochs", "1", *TRAIN)
    assert result.exit_code == 0, result.output
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())
    assert recorded["data"] == str(tiny) and recorded["resolved"]["data_root"] == str(tiny)
    monkeypatch.chdir(tmp_path)
    assert run_cli("eval", tmp_path / "run", "--devices", "cpu", "-j", "0", "--no-ten-crop", "-q").exit_code == 0
    result = run_cli("train", "--resume", tmp_path / "run", "--epochs", "2", "-q")
    assert result.exit_code == 0, result.output
    assert read_checkpoint(tmp_path / "run")["progress"]["epoch"] == 2


def test_resume_takes_a_dataset_that_moved_and_refuses_another_one(run, tiny, tmp_path):
    moved = shutil.copytree(tiny, tmp_path / "moved")
    result = run_cli("train", "--resume", run, "--epochs", "2", "--data", moved, "-q")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "config.json").read_text())["resolved"]["data_root"] == str(moved)
    smaller = generate_builtin(tmp_path / "smaller", train_per_class=1, val_per_class=1, workers=0)
    one_line(run_cli("train", "--resume", run, "--epochs", "3", "--data", smaller, "-q"),
             "trained on 20 train images, but", "has 10: not the dataset it trained on")


def test_another_class_name_is_said_as_such(run, tiny, tmp_path):
    renamed = shutil.copytree(tiny, tmp_path / "renamed")
    for split in ("train", "val"):
        (renamed / split / "bar").rename(renamed / split / "aaa")
    line = one_line(run_cli("eval", run, "--data", renamed, "--devices", "cpu", "-q"), "trained on 10 classes, but")
    assert "10 of other names (class 0: 'aaa', the run's 'bar')" in line


# -- resume and signals ---------------------------------------------------------------------------
def test_resume_keeps_how_the_run_logs_and_evaluates_unless_told_otherwise(tiny, tmp_path):
    out = tmp_path / "run"
    args = ("train", "--data", tiny, "--out", out, "--devices", "cpu", "-j", "0", "-b", "4", "--epochs", "2", "-q")
    assert run_cli(*args, "--log-every", "2", "--no-ten-crop", "--max-steps", "3").exit_code == 0
    assert run_cli("train", "--resume", out, "-q").exit_code == 0
    runtime = json.loads((out / "config.json").read_text())["runtime"]
    assert (runtime["log_every"], runtime["ten_crop"], runtime["max_steps"]) == (2, False, None)
    assert "final_ten_crop" not in json.loads((out / "summary.json").read_text())
    steps = [r["step"] for r in RunFolder(out).read_metrics() if r["kind"] == "step"]
    assert steps == [2, 3, 4, 5, 6, 8, 10]  # every 2nd step, and each epoch's last and the one stopped at


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_with_its_own_code(tiny, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "alexnet", "train", "--data", str(tiny), "--out", str(out),
                             "--epochs", "20", *TRAIN], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not (
                (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().count("\n") >= 2):
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM == 143, stderr
    assert "stopped (SIGTERM)" in stderr and f"--resume {out}" in stderr
    assert read_checkpoint(out)["progress"]["step"] >= 2


def test_a_resume_hint_is_pasted_as_it_is_printed(tmp_path):
    from alexnet.run_folder import quote
    assert quote(tmp_path / "-dash run") == f"'{tmp_path / '-dash run'}'"


# -- values and files that are not what they claim ----------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--lr", "inf"], "--lr must be a finite number; got inf"),
    (["--momentum", "nan"], "--momentum must be a finite number"),
    (["-j", "100000"], "--workers must be between 0 and"),
])
def test_impossible_values_are_one_line(tiny, tmp_path, args, message):
    one_line(run_cli("train", "--data", tiny, "--out", tmp_path / "x", "--devices", "cpu", *args, "-q"), message)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("damage,message", [
    (lambda p: p.pop("model"), "'model' is missing"),
    (lambda p: p.update(version="2"), "format version '2'"),
    (lambda p: p.update(classes="abc"), "'classes' is missing or not a list"),
])
def test_a_damaged_checkpoint_is_one_line(run, damage, message):
    path = run / "checkpoints" / "last.pt"
    payload = torch.load(path, weights_only=True)
    damage(payload)
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message) as info:
        read_checkpoint(path)
    assert "damaged alexnet checkpoint" in str(info.value)


def test_a_metrics_line_that_is_not_a_record_is_left_out(run, tmp_path):
    with open(run / "metrics.jsonl", "a") as handle:
        handle.write("[1, 2]\n")
    records = RunFolder(run).read_metrics()
    assert records and all(isinstance(r, dict) for r in records)
    result = run_cli("plot", run, "-o", tmp_path / "p.png")
    assert result.exit_code == 0, result.output


def test_an_unknown_key_in_a_saved_config_is_one_line(run):
    saved = json.loads((run / "config.json").read_text())
    saved["model"]["depth"] = 9
    (run / "config.json").write_text(json.dumps(saved))
    one_line(run_cli("train", "--resume", run, "-q"), "unknown model setting 'depth'")
    with pytest.raises(ConfigError, match="unknown model setting 'depth'"):
        TrainConfig.from_dict(saved)
