"""Nothing a user already has is lost (issue 28): outputs never overwrite what they did not write,
every damaged input is one line, every stop saves. Each test is one repro, with real files and,
where the repro is about them, real processes and signals."""

import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from alexnet import build_model
from alexnet.checkpoint import read_checkpoint, save_checkpoint, stats_for_checkpoint
from alexnet.cli import main
from alexnet.data import load_or_compute_stats
from alexnet.data.stats import DatasetStats
from alexnet.files import PART, FolderLock, save_torch
from alexnet.run_folder import RunFolder
from alexnet.train.loop import train
from helpers import REPO, make_folder_dataset, one_line, run_cli, tiny_config, write_image

sys.path.insert(0, str(REPO / "tests" / "caffe"))
from caffemodel_writer import random_state, write_caffemodel  # noqa: E402

pytestmark = pytest.mark.usefixtures("private_cache")
TRAIN = ["--devices", "cpu", "-j", "0", "-b", "4", "--log-every", "1", "-q"]


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


_config = tiny_config


@pytest.fixture(scope="module")
def finished(tiny, tmp_path_factory):
    """A finished one-epoch run, with its ten-crop evaluation."""
    run = tmp_path_factory.mktemp("finished") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALEXNET_CACHE", str(run.parent / "cache"))
        train(_config(tiny, run, ten_crop=True))
    return run


@pytest.fixture
def run(finished, tmp_path):
    return shutil.copytree(finished, tmp_path / "run")


def _script(body: str, cwd, env_cache):
    """A real process running ``body`` (Python), with the package from this checkout."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "ALEXNET_CACHE": str(env_cache)}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(body)], capture_output=True, text=True,
                          timeout=600, cwd=cwd, env=env)


# -- 1. train --out never deletes a user's files --------------------------------------------------------
def test_train_into_a_folder_of_the_users_files_refuses_and_deletes_nothing(tiny, tmp_path):
    out = tmp_path / "p"
    (out / "stats").mkdir(parents=True)
    (out / "stats" / "m.csv").write_text("a\n")
    (out / "summary.json").write_text("s\n")
    (out / "config.json").write_text('{"mine": 1}\n')  # a file of the user's that shares a run's name
    before = snapshot(out)
    one_line(run_cli("train", "--data", tiny, "--out", out, "--max-steps", "1", *TRAIN),
             f"--out {out}: holds files alexnet did not write")
    assert snapshot(out) == before


def test_train_into_the_root_of_the_file_system_refuses(tiny):
    one_line(run_cli("train", "--data", tiny, "--out", "/", "--max-steps", "1", *TRAIN),
             "--out /: is the root of the file system")


def test_a_start_killed_before_its_first_checkpoint_is_still_started_again(tiny, tmp_path):
    """A run folder of this package's (its config.json is an alexnet configuration) that never
    saved a checkpoint: the same command starts it again, as before."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(_config(tiny, out).as_dict()))
    (out / "classes.json").write_text("[]")
    assert run_cli("train", "--data", tiny, "--out", out, "--epochs", "1", "--no-ten-crop", *TRAIN).exit_code == 0
    assert RunFolder(out).finished()


# -- 2. outputs never overwrite their own inputs ------------------------------------------------------
def _caffemodel(path):
    return write_caffemodel(path, random_state(num_classes=10, seed=1), num_classes=10)


def test_import_caffe_never_writes_over_its_own_model_or_an_existing_file(tmp_path):
    model = _caffemodel(tmp_path / "m.caffemodel")
    before = model.read_bytes()
    one_line(run_cli("import-caffe", model, "-o", model), "would write over this command's own input")
    other = tmp_path / "notes.pt"
    other.write_text("mine")
    one_line(run_cli("import-caffe", model, "-o", other), "is a file alexnet did not write")
    one_line(run_cli("import-caffe", model, "-o", other, "--overwrite"), "is a file alexnet did not write")
    assert model.read_bytes() == before and other.read_text() == "mine"
    out = tmp_path / "net.pt"
    assert run_cli("import-caffe", model, "-o", out).exit_code == 0
    one_line(run_cli("import-caffe", model, "-o", out), "use --overwrite to replace it")
    assert run_cli("import-caffe", model, "-o", out, "--overwrite").exit_code == 0


def test_eval_json_out_never_replaces_a_file_it_did_not_write(run, tmp_path):
    mine = tmp_path / "mine.json"
    mine.write_text('{"my": "notes"}')
    one_line(run_cli("eval", run, "--json-out", mine, "--no-ten-crop", "-q", "-j", "0", "--devices", "cpu"),
             "is a file alexnet did not write")
    one_line(run_cli("eval", run, "--json-out", run / "checkpoints" / "last.pt", "-q", "--devices", "cpu"),
             "own input")
    assert mine.read_text() == '{"my": "notes"}'


def test_a_figure_never_replaces_a_file_it_did_not_draw(run, tmp_path):
    picture = tmp_path / "holiday.png"
    write_image(picture, fmt="PNG")
    before = picture.read_bytes()
    one_line(run_cli("filters", run, "-o", picture, "--overwrite"), "is a file alexnet did not write")
    drawn = tmp_path / "filters.png"
    assert run_cli("filters", run, "-o", drawn).exit_code == 0
    one_line(run_cli("filters", run, "-o", drawn), "use --overwrite")
    assert run_cli("filters", run, "-o", drawn, "--overwrite").exit_code == 0
    assert picture.read_bytes() == before


# -- 3. a checkpoint missing a layer, or holding NaN ------------------------------------------------------
def _stats():
    rgb = torch.tensor([120.0, 110.0, 100.0])
    return stats_for_checkpoint(DatasetStats.from_arrays(rgb.view(3, 1, 1).expand(3, 256, 256).numpy(), rgb.numpy(),
                                                         torch.eye(3).numpy(), count=1))


def test_init_from_a_checkpoint_without_a_layer_is_refused(tiny, tmp_path):
    path = tmp_path / "partial.pt"
    save_checkpoint(path, model=build_model(num_classes=10, seed=0), classes=[str(i) for i in range(10)],
                    stats=_stats())
    payload = torch.load(path, weights_only=True)
    del payload["model"]["conv3.weight"]
    torch.save(payload, path)
    one_line(run_cli("train", "--data", tiny, "--out", tmp_path / "ft", "--init-from", path, "--epochs", "1", *TRAIN),
             "holds no conv3.weight")
    assert not (tmp_path / "ft").exists()


def test_nan_weights_are_refused_by_every_reader_naming_the_layer(tiny, tmp_path):
    path = tmp_path / "nan.pt"
    model = build_model(num_classes=10, seed=0)
    with torch.no_grad():
        model.fc7.weight[3, 5] = float("nan")
    save_checkpoint(path, model=model, classes=[str(i) for i in range(10)], stats=_stats())
    image = write_image(tmp_path / "x.jpg")
    for command in (["predict", path, image], ["eval", path, "--data", tiny, "--devices", "cpu"],
                    ["train", "--data", tiny, "--out", tmp_path / "ft", "--init-from", path, *TRAIN]):
        one_line(run_cli(*command), f"{path}: fc7.weight holds values that are not finite")


def test_a_caffemodel_with_nan_weights_is_not_imported(tmp_path):
    state = random_state(num_classes=10, seed=1)
    state["conv2.weight"][0, 0, 0, 0] = np.nan
    model = write_caffemodel(tmp_path / "nan.caffemodel", state, num_classes=10)
    one_line(run_cli("import-caffe", model, "-o", tmp_path / "net.pt"), "conv2.weight holds values that are not finite")
    assert not (tmp_path / "net.pt").exists()


# -- 4. every stop saves, with the exit code that says why ------------------------------------------------
STOP_DURING = """
    import os, signal, sys
    import alexnet.train.session as session
    from alexnet.cli import main
    real = session.evaluate
    def evaluate(*args, **kwargs):
        if {when}:
            os.kill(os.getpid(), signal.SIGTERM)  # arrives while the validation runs
        return real(*args, **kwargs)
    session.evaluate = evaluate
    sys.argv = ["alexnet", "train", {args}]
    main()
"""


def _stop_during(tiny, out, when, *extra):
    args = ", ".join(repr(str(a)) for a in ["--data", tiny, "--out", out, "--preset", "builtin", "--epochs", "1",
                                            *TRAIN, *extra])
    return _script(STOP_DURING.format(when=when, args=args), out.parent, out.parent / "cache")


def test_sigterm_in_the_last_epochs_validation_saves_and_exits_143_and_resume_finishes(tiny, tmp_path, finished):
    out = tmp_path / "run"
    done = _stop_during(tiny, out, "not kwargs.get('ten_crop')")
    assert done.returncode == 143, done.stderr
    assert "stopped (SIGTERM)" in done.stderr and f"--resume {out}" in done.stderr
    saved = read_checkpoint(out)["progress"]
    assert (saved["epoch"], saved["step"], saved["batch"]) == (0, 5, 5)  # the epoch's steps, not its validation
    assert not RunFolder(out).finished()
    assert run_cli("train", "--resume", out, "-q").exit_code == 0
    again, whole = json.loads((out / "summary.json").read_text()), json.loads((finished / "summary.json").read_text())
    for key in ("final_centre_crop", "final_ten_crop", "steps", "epochs"):
        assert again[key] == whole[key], key
    for key, value in read_checkpoint(finished)["model"].items():
        assert torch.equal(value, read_checkpoint(out)["model"][key]), key


def test_sigterm_in_the_final_ten_crop_evaluation_exits_143_and_loses_nothing(tiny, tmp_path):
    out = tmp_path / "run"
    done = _stop_during(tiny, out, "kwargs.get('ten_crop')")
    assert done.returncode == 143, done.stderr
    assert read_checkpoint(out)["progress"]["epoch"] == 1 and not (out / "summary.json").exists()
    assert run_cli("train", "--resume", out, "-q").exit_code == 0
    assert "final_ten_crop" in json.loads((out / "summary.json").read_text())


def test_a_second_ctrl_c_stops_at_once_with_130(tiny, tmp_path):
    body = f"""
        import os, signal, sys
        import alexnet.train.loop as loop
        from alexnet.cli import main
        real, calls = loop.train_step, []
        def train_step(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGINT)  # the first: finish the step and save...
                os.kill(os.getpid(), signal.SIGINT)  # ...the second: stop now
            return real(*args, **kwargs)
        loop.train_step = train_step
        sys.argv = ["alexnet", "train", "--data", {str(tiny)!r}, "--out", {str(tmp_path / 'run')!r}, "--epochs", "1",
                    "--devices", "cpu", "-j", "0", "-b", "4", "-q"]
        main()
    """
    done = _script(body, tmp_path, tmp_path / "cache")
    assert done.returncode == 130, done.stderr
    assert "Traceback" not in done.stderr


# -- 5. the system's refusals inside torch's writer are one line -----------------------------------------
def test_import_caffe_under_a_file_size_limit_is_one_line_and_leaves_nothing(tmp_path):
    model = _caffemodel(tmp_path / "m.caffemodel")
    body = f"""
        import resource, sys
        from alexnet.cli import main
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        sys.argv = ["alexnet", "import-caffe", {str(model)!r}, "-o", {str(tmp_path / 'net.pt')!r}]
        main()
    """
    done = _script(body, tmp_path, tmp_path / "cache")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (f"Error: {tmp_path / 'net.pt'}: writing failed: the file is too large for its file "
                                   f"system; free some space, or write elsewhere")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.caffemodel"]


def test_a_training_checkpoint_under_a_file_size_limit_is_one_line(tiny, tmp_path):
    body = f"""
        import resource, sys
        from alexnet.cli import main
        resource.setrlimit(resource.RLIMIT_FSIZE, (150 << 20, 150 << 20))  # the stats, not a 456 MB checkpoint
        sys.argv = ["alexnet", "train", "--data", {str(tiny)!r}, "--out", {str(tmp_path / 'run')!r}, "--epochs", "1",
                    "--devices", "cpu", "-j", "0", "-b", "4", "-q", "--no-ten-crop"]
        main()
    """
    done = _script(body, tmp_path, tmp_path / "cache")
    assert done.returncode == 2, done.stderr
    assert "last.pt: writing failed: the file is too large for its file system" in done.stderr.strip()
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# -- 6. bounded workers everywhere -------------------------------------------------------------------------
def test_worker_counts_are_bounded_on_every_command(tiny, run, tmp_path):
    one_line(run_cli("eval", run, "-j", "99999"), "--workers must be between 0 and")
    one_line(run_cli("prepare", tiny, tmp_path / "packed", "--workers", "100000"), "--workers must be between 0 and")
    one_line(run_cli("stats", tiny, "--workers", "100000"), "--workers must be between 0 and")
    assert not (tmp_path / "packed").exists()


# -- 7. damaged inputs --------------------------------------------------------------------------------------
@pytest.mark.parametrize("damage,fragment", [
    (lambda p: p["classes"].pop(), "fc8 has 10 outputs but the checkpoint names 9 classes"),
    (lambda p: p["stats"].update(mean_image=torch.zeros(3, 8, 8)), "its statistics' mean_image is (3, 8, 8)"),
    (lambda p: p.update(config="{not json"), "its config is not JSON"),
    (lambda p: p["model_config"].update(variant="three-gpu"), "its net: variant must be one of"),
])
def test_a_damaged_checkpoint_is_one_line_naming_the_file(run, tmp_path, damage, fragment):
    path = run / "checkpoints" / "best.pt"
    payload = torch.load(path, weights_only=True)
    damage(payload)
    torch.save(payload, path)
    line = one_line(run_cli("predict", path, write_image(tmp_path / "x.jpg")), str(path), fragment)
    assert "--variant" not in line and "weights_only" not in line


def _varint(n):
    n &= (1 << 64) - 1  # negative int64s as protobuf writes them: ten bytes
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _field(number, wire, payload):
    return _varint(number << 3 | wire) + (_varint(len(payload)) + payload if wire == 2 else payload)


def _blob_bytes(dims, values):
    """A BlobProto written by hand from caffe.proto: shape (7) = BlobShape, dim (1, packed int64);
    data (5, packed float)."""
    shape = _field(1, 2, b"".join(_varint(d) for d in dims))
    return _field(7, 2, shape) + _field(5, 2, struct.pack(f"<{len(values)}f", *values))


@pytest.mark.parametrize("dims,fragment", [((1, 3, -16, -16), "every dimension must be at least 1"),
                                           ((1 << 32, 1 << 32, 3, 1), "needs 55,340,232,221,128,654,848")])
def test_a_mean_file_with_impossible_dimensions_is_one_line(run, tmp_path, dims, fragment):
    mean = tmp_path / "mean.binaryproto"
    mean.write_bytes(_blob_bytes(dims, [1.0] * 768))
    model = _caffemodel(tmp_path / "m.caffemodel")
    one_line(run_cli("import-caffe", model, "-o", tmp_path / "net.pt", "--mean", mean), str(mean), fragment)
    assert not (tmp_path / "net.pt").exists()


def test_a_caffemodel_blob_with_negative_dimensions_is_one_line(tmp_path):
    layer = _field(1, 2, b"conv1") + _field(2, 2, b"Convolution") + _field(7, 2, _blob_bytes((-96, 3, 11, 11), [0.0]))
    path = tmp_path / "bad.caffemodel"
    path.write_bytes(_field(1, 2, b"AlexNet") + _field(100, 2, layer))
    one_line(run_cli("import-caffe", path, "-o", tmp_path / "net.pt"), str(path), "every dimension must be at least 1")


def test_an_onnx_file_given_as_the_mean_is_one_line(tmp_path):
    onnx = pytest.importorskip("onnx")
    fake = tmp_path / "net.onnx"
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])), str(fake))
    one_line(run_cli("import-caffe", _caffemodel(tmp_path / "m.caffemodel"), "-o", tmp_path / "net.pt", "--mean", fake),
             str(fake), "not a Caffe .binaryproto")


def test_packed_labels_of_an_odd_byte_count_are_one_line(folder_root, tmp_path):
    packed = tmp_path / "packed"
    assert run_cli("prepare", folder_root, packed, "--workers", "0").exit_code == 0
    labels = packed / "train.labels.npy"
    labels.write_bytes(labels.read_bytes()[:-3])
    one_line(run_cli("stats", packed, "--workers", "0"), f"{labels}: unreadable (not a whole .npy array")


@pytest.mark.parametrize("line", [b'{"kind": "epoch", "epoch": 1, "val_top1_error": 0.5, "note": "\xff\xfe"}',
                                  b'{"kind": "epoch", "epoch": "one", "val_top1_error": "abc"}'])
def test_a_metrics_line_that_is_not_ours_is_named_and_left_out_by_plot_and_resume(run, tmp_path, line):
    with open(run / "metrics.jsonl", "ab") as handle:
        handle.write(line + b"\n")
    result = CliRunner().invoke(main, ["plot", str(run), "-o", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    number = (run / "metrics.jsonl").read_bytes().count(b"\n")
    assert f"{run / 'metrics.jsonl'}: line {number} left out" in result.output
    assert run_cli("train", "--resume", run, "--epochs", "2", "-q").exit_code == 0
    assert line not in (run / "metrics.jsonl").read_bytes()


def test_prepare_into_a_symlink_loop_is_one_line(folder_root, tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    one_line(run_cli("prepare", folder_root, tmp_path / "a"), "a symbolic link loops back on itself")


def test_data_behind_a_symlink_loop_is_said_as_such(tmp_path):
    (tmp_path / "a").symlink_to(tmp_path / "b")
    (tmp_path / "b").symlink_to(tmp_path / "a")
    one_line(run_cli("stats", tmp_path / "a"), f"{tmp_path / 'a'}: a symbolic link that loops back on itself")


@pytest.mark.parametrize("args,fragment", [(["--seed", str(2 ** 64)], "--seed must be between 0 and"),
                                           (["--collective-timeout", "nan"], "--collective-timeout must be a finite"),
                                           (["--collective-timeout", "inf"], "--collective-timeout must be a finite")])
def test_numbers_out_of_range_are_one_line(tiny, tmp_path, args, fragment):
    one_line(run_cli("train", "--data", tiny, "--out", tmp_path / "x", *args, *TRAIN), fragment)
    assert not (tmp_path / "x").exists()


# -- 8. a bad image met while training saves the steps before it ---------------------------------------------
def test_a_bad_image_met_while_training_saves_and_resume_skips_it(tmp_path):
    data = make_folder_dataset(tmp_path / "data", train=6, val=2)
    load_or_compute_stats(data, workers=0)  # the statistics pass read it whole...
    bad = sorted((data / "train" / "dog").iterdir())[0]
    bad.write_bytes(bad.read_bytes()[:200])  # ...then the file was damaged
    out = tmp_path / "run"
    result = run_cli("train", "--data", data, "--out", out, "--epochs", "1", "--no-ten-crop", *TRAIN)
    line = one_line(result, str(bad), "checkpoint saved at step", f"--resume {out} --skip-bad")
    step = int(line.split("checkpoint saved at step ")[1].split(";")[0])
    assert read_checkpoint(out)["progress"]["step"] == step
    assert run_cli("train", "--resume", out, "--skip-bad", "-q").exit_code == 0
    assert RunFolder(out).finished()


# -- 9. resume of a finished run keeps what it measured ------------------------------------------------------
def test_resume_of_a_finished_run_rewrites_nothing(run):
    before = snapshot(run)
    result = run_cli("train", "--resume", run)
    assert result.exit_code == 0 and "the run finished its 1 epochs; nothing to do" in result.output
    assert snapshot(run) == before


# -- 10. one prepare at a time --------------------------------------------------------------------------------
def test_a_second_prepare_into_the_same_folder_is_refused(folder_root, tmp_path):
    dst = tmp_path / "packed"
    dst.mkdir()
    with FolderLock(dst, "packed dataset"):  # another prepare writing there, as far as the lock can tell
        one_line(run_cli("prepare", folder_root, dst, "--workers", "0", "--overwrite"),
                 "another process is writing this packed dataset")
    assert [p.name for p in dst.iterdir()] == [".alexnet.lock"]


# -- 12. a killed writer's partial file goes the next time it writes the path ----------------------------------
def test_a_dead_writers_partial_file_is_removed_by_the_next_write_of_the_path(tmp_path):
    stale = tmp_path / f".net.pt.999999999-abc{PART}"  # no process has this id
    stale.write_bytes(b"x" * 1000)
    alive = tmp_path / f".net.pt.{os.getpid()}-live{PART}"
    other = tmp_path / f".other.pt.999999999-abc{PART}"
    alive.write_bytes(b"y")
    other.write_bytes(b"z")
    save_torch(tmp_path / "net.pt", {"w": torch.zeros(3)})
    assert not stale.exists() and other.exists()
    assert torch.load(tmp_path / "net.pt", weights_only=True)["w"].shape == (3,)
