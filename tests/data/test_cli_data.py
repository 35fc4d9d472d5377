"""alexnet stats and alexnet prepare through the CLI: summaries, files, one-line errors."""

import errno
import json
import os
import re

import numpy as np
import pytest
from click.testing import CliRunner

import alexnet.data.packed as packed_module
import alexnet.data.roots as roots_module
import alexnet.data.storage as storage_module
import alexnet.data.synthetic as synthetic
from alexnet.cli import main
from alexnet.data import open_dataset
from alexnet.data.images import load_image

pytestmark = pytest.mark.usefixtures("private_cache")  # nothing touches ~/.cache/alexnet


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result):
    """The one line an error prints (after any progress bar on stderr)."""
    assert result.exit_code == 2 and result.output.count("Error:") == 1, result.output
    return result.output.splitlines()[-1] + "\n"


def test_stats_prints_the_summary_and_saves_beside_the_data(folder_root):
    result = run("stats", folder_root, "--workers", "0")
    assert result.exit_code == 0, result.output
    assert "statistics of 12 training images" in result.output
    # The printed figures are the images' own, computed here with numpy: R, G, B means and the
    # RGB covariance's eigenvalues, largest first.
    images = np.stack([load_image(path).numpy() for path, _ in open_dataset(folder_root, "train").samples])
    pixels = images.astype(np.float64).transpose(1, 0, 2, 3).reshape(3, -1)
    means = re.search(r"channel mean +R (\S+) +G (\S+) +B (\S+)", result.output).groups()
    assert [float(v) for v in means] == pytest.approx(pixels.mean(axis=1).tolist(), abs=0.006)
    values = re.search(r"eigenvalues +(\S+) +(\S+) +(\S+)", result.output).groups()
    assert [float(v) for v in values] == pytest.approx(np.linalg.eigvalsh(np.cov(pixels, bias=True))[::-1].tolist(),
                                                       abs=0.06)
    assert f"saved in       {folder_root.resolve() / 'alexnet-stats'}" in result.output
    saved = json.loads((folder_root / "alexnet-stats" / "stats.json").read_text())
    assert saved["images"] == 12


def test_stats_without_data_uses_the_builtin_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "TRAIN_PER_CLASS", 1)
    monkeypatch.setattr(synthetic, "VAL_PER_CLASS", 1)
    result = run("stats", "--workers", "0")
    assert result.exit_code == 0, result.output
    assert "statistics of 10 training images" in result.output
    assert (tmp_path / "cache" / f"builtin-v{synthetic.VERSION}" / "alexnet-stats" / "stats.json").is_file()


def test_stats_skip_bad_counts(folder_root):
    (folder_root / "train" / "cat" / "img0.jpg").write_bytes(b"")
    failed = run("stats", folder_root, "--workers", "0")
    assert error_line(failed) == f"Error: {folder_root / 'train' / 'cat' / 'img0.jpg'}: empty file (0 bytes), not an image\n"
    result = run("stats", folder_root, "--workers", "0", "--skip-bad")
    assert result.exit_code == 0 and "statistics of 11 training images (1 unreadable skipped)" in result.output


def test_symlink_loops_are_one_line_and_skip_bad_goes_on(folder_root, tmp_path):
    image, folder = folder_root / "train" / "cat" / "loop.jpg", folder_root / "train" / "loop"
    os.symlink("loop.jpg", image)
    failed = run("stats", folder_root, "--workers", "0")
    assert error_line(failed).startswith(f"Error: {image}: a symlink loop") and "--skip-bad" in failed.output
    os.symlink("loop", folder)
    for command in (("stats", folder_root), ("prepare", folder_root, tmp_path / "p")):
        failed = run(*command, "--workers", "0")
        assert error_line(failed).startswith(f"Error: {folder}: a symlink loop"), command
    result = run("stats", folder_root, "--workers", "0", "--skip-bad")
    assert result.exit_code == 0, result.output
    assert "statistics of 12 training images (1 unreadable skipped)" in result.output
    assert f"  left out {folder}: a symlink loop" in result.output
    result = run("prepare", folder_root, tmp_path / "q", "--workers", "0", "--skip-bad")
    assert result.exit_code == 0, result.output
    assert "packed 12 train + 6 val images" in result.output
    assert f"skipped 1 unreadable image(s):\n  {image}: a symlink loop" in result.output
    assert f"left out 1 unreadable entry of the splits:\n  {folder}: a symlink loop" in result.output


def fill_the_disk(monkeypatch, module):
    """``module.write_all`` writes half its data, then reports a full disk, as os.write does."""
    write_all = module.write_all

    def filling(handle, data):
        view = memoryview(data).cast("B")
        write_all(handle, view[:len(view) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(module, "write_all", filling)


def test_a_full_disk_is_one_line_and_keeps_what_was_there(folder_root, tmp_path, monkeypatch):
    assert run("stats", folder_root, "--workers", "0").exit_code == 0
    folder = folder_root.resolve() / "alexnet-stats"
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    os.unlink(folder_root / "train" / "eel" / "img3.jpg")  # the statistics are computed again
    fill_the_disk(monkeypatch, storage_module)
    line = error_line(run("stats", folder_root, "--workers", "0"))
    assert line.startswith(f"Error: {folder}") and "no space left" in line.lower()
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before  # the old ones, whole
    fill_the_disk(monkeypatch, packed_module)
    line = error_line(run("prepare", folder_root, tmp_path / "p", "--workers", "0"))
    assert line == (f"Error: {tmp_path / 'p' / 'train.u8'}: cannot write (no space left on its device); free space "
                    f"and re-run prepare (it continues where it stopped), or pack into another folder\n")


@pytest.mark.parametrize("code, reason", [(errno.EROFS, "read-only"), (errno.EACCES, "permission denied")])
def test_statistics_where_nothing_may_be_written_are_one_line(folder_root, private_cache, monkeypatch, code, reason):
    # Tests run as root, for whom chmod changes nothing: the data folder is made to look
    # read-only, and the cache folder to fail as a read-only one would.
    monkeypatch.setattr(roots_module, "is_writable_dir", lambda folder: False)
    mkdir = os.mkdir

    def read_only(path, *args, **kwargs):
        if str(path).startswith(str(private_cache)):
            raise OSError(code, os.strerror(code), str(path))
        return mkdir(path, *args, **kwargs)
    monkeypatch.setattr(os, "mkdir", read_only)
    line = error_line(run("stats", folder_root, "--workers", "0"))
    assert line.startswith(f"Error: {private_cache}") and reason in line.lower()
    assert "ALEXNET_CACHE" in line or "writable" in line


def test_prepare_then_refuse_to_overwrite(folder_root, tmp_path):
    result = run("prepare", folder_root, tmp_path / "p", "--workers", "0")
    assert result.exit_code == 0, result.output
    assert f"packed 12 train + 6 val images (raw, 3 classes) into {tmp_path / 'p'}" in result.output
    assert (tmp_path / "p" / "packed.json").is_file()
    again = run("prepare", folder_root, tmp_path / "p", "--workers", "0")
    assert error_line(again) == (f"Error: {tmp_path / 'p'}: already a finished packed dataset; "
                            f"pass --overwrite to replace it\n")
    jpeg = run("prepare", folder_root, tmp_path / "p", "--format", "jpeg", "--quality", "80", "--overwrite",
               "--workers", "0")
    assert jpeg.exit_code == 0 and "(jpeg, 3 classes)" in jpeg.output
    stats = run("stats", tmp_path / "p", "--workers", "0")
    assert stats.exit_code == 0 and "statistics of 12 training images" in stats.output


def test_prepare_skip_bad_reports_the_files(folder_root, tmp_path):
    bad = folder_root / "val" / "eel" / "img1.jpg"
    bad.write_text("plain text")
    failed = run("prepare", folder_root, tmp_path / "p", "--workers", "0")
    assert error_line(failed) == f"Error: {bad}: not an image file (PIL cannot identify its format)\n"
    half = run("stats", tmp_path / "p")
    assert "half-written packed dataset" in error_line(half) and half.output.count("\n") == 1
    result = run("prepare", folder_root, tmp_path / "q", "--workers", "0", "--skip-bad")
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable image(s):" in result.output and str(bad) in result.output


def test_bad_paths_are_one_line(tmp_path, folder_root):
    for args, message in [
        (("stats", tmp_path / "none"), f"Error: {tmp_path / 'none'}: no such file or folder\n"),
        (("prepare", tmp_path / "none", tmp_path / "p"), f"Error: {tmp_path / 'none'}: no such folder\n"),
        (("prepare", tmp_path / "tiny", tmp_path / "tiny" / "train" / "packed"),
         f"Error: {tmp_path / 'tiny' / 'train' / 'packed'}: inside the source dataset {tmp_path / 'tiny'}; "
         f"choose a destination outside it\n"),
    ]:
        assert run(*args).output == message and error_line(run(*args)) == message


def test_help_explains():
    for command in ("stats", "prepare"):
        result = run(command, "--help")
        assert result.exit_code == 0
    assert "built-in dataset" in run("stats", "--help").output
    assert "--overwrite" in run("prepare", "--help").output
