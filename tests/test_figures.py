"""The paper's figures from a run: conv1's colourfulness per tower (and its record in every epoch),
the filter grid's layout, the fc7 features and the exact neighbour search, the feature cache,
alexnet filters / neighbors / plot and their one-line errors.

Expected values come from direct computations (numpy formulas, torch.cdist, the net's own layers
stepped by hand), never from the code under test. One tiny run (the built-in generator at 2
training and 1 validation image per class, one epoch of 5 batches of 4) serves every test that
needs a trained checkpoint.
"""

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from PIL import Image

from alexnet import Runtime, build_model, load_model
from alexnet.cli import main
from alexnet.data import open_dataset
from alexnet.errors import ConfigError
from alexnet.experiments.figures import filters as filters_module
from alexnet.experiments.figures import neighbours as neighbours_module
from alexnet.experiments.figures import plot as plot_module
from alexnet.experiments.figures.filters import filter_grid
from alexnet.experiments.figures.neighbours import cached_features, draw_neighbours, nearest_neighbours
from alexnet.inference import dataset_features
from alexnet.runtime import Runtime
from alexnet.trained import open_trained
from alexnet.analysis.activations import relu_activations
from alexnet.analysis.colourfulness import colourfulness, tower_colourfulness, tower_kernels
from alexnet.checkpoint import read_checkpoint
from alexnet.train import curves as curves_module
from alexnet.train.curves import plot_curves
from alexnet.data.preprocess import Preprocess
from alexnet.checkpoint import saved_preprocess, stats_from_checkpoint
from alexnet.train.loop import TrainConfig, train

PNG = b"\x89PNG\r\n\x1a\n"


def direct_colourfulness(kernel: np.ndarray) -> float:
    """|w - grey(w)| / |w| for one (3, k, k) kernel, written out in numpy."""
    w = kernel.astype(np.float64)
    grey = (w[0] + w[1] + w[2]) / 3.0
    chroma = np.stack([w[c] - grey for c in range(3)])
    return float(np.sqrt((chroma ** 2).sum()) / np.sqrt((w ** 2).sum()))


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    """One epoch on the tiny dataset: the run folder."""
    out = tmp_path_factory.mktemp("runs") / "tiny-run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALEXNET_CACHE", str(tmp_path_factory.mktemp("cache")))
        train(TrainConfig.from_preset("builtin", epochs=1, batch_size=4, data=str(tiny), out=str(out), devices="cpu",
                                      workers=0, log_every=1, ten_crop=False))
    return out


pytestmark = pytest.mark.usefixtures("private_cache")  # nothing touches ~/.cache/alexnet


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result) -> str:
    """The one line an error prints; the command exits with status 2."""
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len([line for line in lines if line.startswith("Error:")]) == 1, result.output
    assert lines[-1].startswith("Error:"), result.output
    return lines[-1]


# -- colourfulness --------------------------------------------------------------------------------
def test_grey_kernels_score_zero_and_coloured_ones_high():
    plane = torch.randn(4, 1, 11, 11)
    grey = plane.expand(4, 3, 11, 11)
    assert colourfulness(grey).abs().max() < 1e-6
    red_only = torch.zeros(4, 3, 11, 11)
    red_only[:, 0] = plane[:, 0]
    # one channel: the chroma is (2/3, -1/3, -1/3) of it, so |c|/|w| = sqrt(6/9)
    torch.testing.assert_close(colourfulness(red_only), torch.full((4,), math.sqrt(2 / 3)))
    red_minus_green = torch.zeros(4, 3, 11, 11)
    red_minus_green[:, 0], red_minus_green[:, 1] = plane[:, 0], -plane[:, 0]
    torch.testing.assert_close(colourfulness(red_minus_green), torch.ones(4))
    assert float(colourfulness(torch.zeros(1, 3, 11, 11))) == 0.0


def test_colourfulness_matches_the_formula_and_ignores_the_scale():
    kernels = torch.randn(6, 3, 11, 11)
    kernels[1] = kernels[1] * 0.01 + kernels[1].mean(dim=0, keepdim=True)  # nearly grey
    expected = torch.tensor([direct_colourfulness(k.numpy()) for k in kernels])
    torch.testing.assert_close(colourfulness(kernels), expected, rtol=1e-5, atol=1e-6)
    assert float(colourfulness(kernels)[1]) < 0.05
    for scale in (1e-4, 3.7, -2.0):
        torch.testing.assert_close(colourfulness(scale * kernels), colourfulness(kernels), rtol=1e-5, atol=1e-6)


def test_the_towers_scores_are_the_means_over_their_own_48_kernels():
    grouped = build_model(num_classes=10, seed=5)
    # make the towers differ, so swapping them would show: tower 1's kernels grey
    with torch.no_grad():
        grouped.conv1.weight[48:] = grouped.conv1.weight[48:].mean(dim=1, keepdim=True)
    weight = grouped.state_dict()["conv1.weight"].numpy()
    expected = [np.mean([direct_colourfulness(k) for k in weight[:48]]), 0.0]
    towers = build_model(layout="towers", devices=["cpu", "cpu"], num_classes=10, initialize=False)
    towers.load_state_dict(grouped.state_dict())
    assert torch.equal(tower_kernels(towers)[0], towers.towers[0].conv1.weight.detach())
    assert torch.equal(tower_kernels(towers)[1], towers.towers[1].conv1.weight.detach())
    for source in (grouped, towers, grouped.state_dict()):
        assert tower_colourfulness(source) == pytest.approx(expected, abs=1e-5)
    one = build_model(variant="one-gpu", num_classes=10, seed=5)
    w1 = one.state_dict()["conv1.weight"].numpy()
    assert tower_colourfulness(one) == pytest.approx([np.mean([direct_colourfulness(k) for k in w1])], abs=1e-5)


def test_every_epoch_record_holds_the_towers_colourfulness_of_the_saved_weights(trained):
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 1
    weight = read_checkpoint(trained)["model"]["conv1.weight"].numpy()  # last.pt: saved after the record
    expected = [np.mean([direct_colourfulness(k) for k in weight[:48]]),
                np.mean([direct_colourfulness(k) for k in weight[48:]])]
    assert epochs[0]["conv1_colourfulness"] == pytest.approx(expected, abs=1e-5)


# -- the filter grid ------------------------------------------------------------------------------
def test_the_filter_grid_puts_each_towers_kernels_in_their_place():
    towers = [torch.randn(48, 3, 11, 11), torch.randn(48, 3, 11, 11)]
    towers[1][17] = 0.0
    towers[1][17, 0, 2, 3] = 5.0  # tower 1's kernel 17: one red weight at row 2, column 3
    grid, _ = filter_grid(towers, columns=16, scale=3, gap=1, tower_gap=5)
    cell, step, tower_height = 33, 34, 3 * 34 - 1  # 11 x 3 pixels, plus a gap of 1; 3 rows per tower
    assert grid.shape == (2 * tower_height + 5, 16 * step - 1, 3)
    # tower 1's kernel 17: row 1, column 1 of the lower block
    y, x = tower_height + 5 + 1 * step, 1 * step
    block = grid[y:y + cell, x:x + cell]
    expected = np.full((cell, cell, 3), 0.5, dtype=np.float32)
    expected[6:9, 9:12] = [1.0, 0.5, 0.5]
    np.testing.assert_allclose(block, expected)
    # every kernel, stretched on its own symmetric range and upscaled, at row i // 16, column i % 16
    for t in range(2):
        for i in (0, 15, 16, 47):
            w = towers[t][i].numpy().astype(np.float64)
            colours = (0.5 + 0.5 * w / np.abs(w).max()).transpose(1, 2, 0)
            y, x = t * (tower_height + 5) + (i // 16) * step, (i % 16) * step
            np.testing.assert_allclose(grid[y:y + cell, x:x + cell], np.kron(colours, np.ones((3, 3, 1))),
                                       atol=1e-6)
    # the gaps are white: between kernels and between the towers
    assert (grid[:, cell] == 1.0).all()
    assert (grid[tower_height:tower_height + 5] == 1.0).all()


def test_a_one_tower_grid_has_three_rows():
    grid, layout = filter_grid([torch.randn(48, 3, 11, 11)], columns=16, scale=2, gap=1, tower_gap=5)
    assert grid.shape == (3 * 23 - 1, 16 * 23 - 1, 3) and layout.towers == 1


# -- fc7 and the search ---------------------------------------------------------------------------
def test_fc7_after_the_relu_is_the_same_in_both_layouts_and_matches_the_layers_stepped_by_hand():
    grouped = build_model(num_classes=10, seed=2).eval()
    towers = build_model(layout="towers", devices=["cpu", "cpu"], num_classes=10, initialize=False).eval()
    towers.load_state_dict(grouped.state_dict())
    x = torch.randn(3, 3, 224, 224) * 50
    with torch.no_grad():
        h = F.pad(x, (0, 3, 0, 3))  # 224 acts as 227 with zero padding (cuda-convnet)
        for layer in grouped.layers[:6]:  # conv1 ... fc6, each block whole (fc6's dropout included)
            h = grouped.block(layer, h)
        expected = F.relu(grouped.fc7(h))
        got_grouped = relu_activations(grouped, x)
        got_towers = relu_activations(towers, x)
    assert got_grouped.shape == (3, 4096)
    torch.testing.assert_close(got_grouped, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got_towers, expected, rtol=1e-3, atol=1e-3)
    assert (expected == 0).any() and (expected > 0).any()  # after the ReLU, not before


@pytest.mark.parametrize("n_queries, n_database, chunk", [(7, 50, 3), (7, 50, 1000), (20, 9, 4)])
def test_the_chunked_search_matches_brute_force(n_queries, n_database, chunk):
    generator = torch.Generator().manual_seed(n_queries + n_database)
    queries = torch.randn(n_queries, 16, generator=generator)
    database = torch.randn(n_database, 16, generator=generator)
    k = 5
    distances, indices = nearest_neighbours(queries, database, k, chunk=chunk)
    full = torch.cdist(queries.double(), database.double())
    order = full.argsort(dim=1)[:, :k]
    assert torch.equal(indices, order)
    torch.testing.assert_close(distances.double(), full.gather(1, order), rtol=1e-4, atol=1e-4)
    # k larger than the database: every row, nearest first
    distances, indices = nearest_neighbours(queries, database, n_database + 3, chunk=chunk)
    assert torch.equal(indices, full.argsort(dim=1))


def test_the_feature_cache_is_reused_and_recomputed_when_the_checkpoint_changes(trained, tiny, tmp_path,
                                                                                monkeypatch):
    net = open_trained(trained, Runtime(devices="cpu", workers=0))  # the run's dropout style: it scales fc6 at test
    dataset = open_dataset(tiny, "train")
    checkpoint = tmp_path / "stand-in.pt"  # the key reads the file's path, size and mtime only
    checkpoint.write_bytes(b"weights, version 1")
    calls = []
    real = neighbours_module.dataset_features

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(neighbours_module, "dataset_features", counting)
    first = cached_features(net, checkpoint, dataset, tiny, "train")
    assert not first["reused"] and len(calls) == 1
    assert first["path"].parent == tmp_path.resolve() and first["path"].name.startswith("stand-in.pt.fc7-train-")
    with torch.no_grad():
        direct = relu_activations(net.model, net.preprocess.centre(torch.stack([dataset[i][0] for i in range(20)])))
    torch.testing.assert_close(first["features"].float(), direct, rtol=2e-3, atol=2e-3)  # stored as float16
    assert first["labels"].tolist() == [dataset[i][1] for i in range(20)] and first["features"].shape == (20, 4096)

    second = cached_features(net, checkpoint, dataset, tiny, "train")
    assert second["reused"] and len(calls) == 1
    assert torch.equal(second["features"], first["features"])

    checkpoint.write_bytes(b"weights, version 2!")  # a new save: another size and mtime
    third = cached_features(net, checkpoint, dataset, tiny, "train")
    assert not third["reused"] and len(calls) == 2
    os.utime(checkpoint, ns=(checkpoint.stat().st_atime_ns, checkpoint.stat().st_mtime_ns + 10 ** 9))
    assert not cached_features(net, checkpoint, dataset, tiny, "train")["reused"]
    assert len(calls) == 3
    first["path"].write_bytes(b"not a tensor file")  # a damaged cache is computed again
    assert not cached_features(net, checkpoint, dataset, tiny, "train")["reused"]
    assert len(calls) == 4


def test_fc7_features_of_chosen_images_keep_their_order(trained, tiny):
    net = open_trained(trained, Runtime(devices="cpu", workers=0))  # the run's dropout style: it scales fc6 at test
    dataset = open_dataset(tiny, "val")
    got = dataset_features(net, dataset, ["fc7"], indices=[7, 2])
    images = torch.stack([dataset[7][0], dataset[2][0]])
    with torch.no_grad():
        expected = relu_activations(net.model, net.preprocess.centre(images))
    torch.testing.assert_close(got["fc7"], expected)
    assert got["labels"].tolist() == [dataset[7][1], dataset[2][1]]


# -- the commands ---------------------------------------------------------------------------------
def test_filters_draws_the_grid_and_prints_the_towers_scores(trained, tmp_path):
    out = tmp_path / "filters.png"
    result = run("filters", trained, "-o", out)
    assert result.exit_code == 0, result.output
    weight = read_checkpoint(trained)["model"]["conv1.weight"].numpy()
    for t, rows in enumerate((weight[:48], weight[48:])):
        score = np.mean([direct_colourfulness(k) for k in rows])
        assert f"conv1 colourfulness, tower {t}: {score:.3f}" in result.output
    assert out.read_bytes()[:8] == PNG
    assert f"saved {out}" in result.output
    # a checkpoint file works as well as its run folder
    best = trained / "checkpoints" / "best.pt"
    assert run("filters", best, "-o", tmp_path / "best.png").exit_code == 0


def test_neighbours_are_the_nearest_training_images_by_brute_force(trained, tiny, tmp_path):
    result = draw_neighbours(trained, tmp_path / "n.png", images=[3, 8], k=4, runtime=Runtime(devices="cpu", workers=0))
    payload = read_checkpoint(trained)
    model = load_model(trained, devices=["cpu"])  # the run's dropout style: it scales fc6 at test
    preprocess = Preprocess(stats_from_checkpoint(payload), saved_preprocess(payload))
    train_set, val_set = open_dataset(tiny, "train"), open_dataset(tiny, "val")
    with torch.no_grad():
        database = relu_activations(model, preprocess.centre(torch.stack([train_set[i][0] for i in range(20)])))
        queries = relu_activations(model, preprocess.centre(torch.stack([val_set[3][0], val_set[8][0]])))
    distances = torch.cdist(queries.double(), database.double())
    assert [row["query"] for row in result["rows"]] == [3, 8]
    for row, q in enumerate((3, 8)):
        got = result["rows"][row]
        assert got["label"] == val_set[q][1]
        indices = [n["index"] for n in got["neighbours"]]
        # the training set's features are kept as float16: compare distances, not a tie's order
        assert [n["distance"] for n in got["neighbours"]] == pytest.approx(
            distances[row].sort().values[:4].tolist(), rel=2e-3)
        assert [n["distance"] for n in got["neighbours"]] == pytest.approx(distances[row, indices].tolist(), rel=2e-3)
        assert [n["label"] for n in got["neighbours"]] == [train_set[i][1] for i in indices]
    assert (tmp_path / "n.png").read_bytes()[:8] == PNG


def test_neighbors_prints_each_row_and_reuses_the_cached_features(trained, tmp_path):
    out = tmp_path / "neighbours.png"
    first = run("neighbors", trained, "-o", out, "--images", "3,8", "-k", "4", "-j", "0", "-q", "-d", "cpu")
    assert first.exit_code == 0, first.output
    assert out.read_bytes()[:8] == PNG and f"saved {out}" in first.output
    classes = read_checkpoint(trained)["classes"]
    rows = [line for line in first.output.splitlines() if line.startswith("val #")]
    assert [line.split(" ")[1] for line in rows] == ["#3", "#8"]
    assert all(len(line.split(": ", 1)[1].split(", ")) == 4 for line in rows)
    assert all(line.split(": ", 1)[1].split(" ")[0] in classes for line in rows)
    again = run("neighbors", trained, "-o", out, "--images", "3", "-j", "0", "-q", "-d", "cpu", "--overwrite")
    assert again.exit_code == 0, again.output
    assert "fc7 features of the training set: reused" in again.output


def test_plot_draws_two_runs_on_shared_axes(trained, tmp_path):
    other = tmp_path / "other-run"
    other.mkdir()
    records = [{"kind": "epoch", "epoch": e, "images": 20 * e, "train_loss": 2.0 / e, "train_error": 0.9 / e,
                "val_loss": 2.1 / e, "val_top1_error": 0.8 / e, "val_top5_error": 0.4 / e,
                "conv1_colourfulness": [0.8, 0.7]} for e in (1, 2, 3)]
    (other / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "curves.png"
    result = run("plot", trained, other, "-o", out, "--label", "tiny", "--label", "made-up")
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG
    assert f"tiny: {trained}" in result.output and f"made-up: {other}" in result.output
    result = run("plot", trained, other, "-o", out, "--metric", "colourfulness", "--metric", "top5", "--overwrite")
    assert result.exit_code == 0 and "other-run: " in result.output and "tiny-run: " in result.output
    assert "--label given 1 times for 2 run folders" in error_line(run("plot", trained, other, "-o", out,
                                                                       "--label", "x", "--overwrite"))


def test_a_runs_own_curves_draw_its_records_with_the_colourfulness_panel(trained, tmp_path, monkeypatch):
    """The lines drawn are the run's own epoch records: the validation error in per cent on the
    error panel, and each tower's conv1 colourfulness on a panel of its own."""
    records = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    drawn = {}
    real_save = curves_module.save_png

    def keep(figure, path):
        drawn["figure"] = figure
        return real_save(figure, path)

    monkeypatch.setattr(curves_module, "save_png", keep)
    out = plot_curves(records, tmp_path / "own.png", title="tiny")
    assert out.read_bytes()[:8] == PNG
    lines = {(ax.get_title(), line.get_label()): list(line.get_ydata())
             for ax in drawn["figure"].axes for line in ax.get_lines()}
    assert lines[("error", "validation top-1, centre crop")] == pytest.approx([100 * r["val_top1_error"] for r in epochs])
    for tower in (0, 1):
        assert lines[("conv1 colourfulness per tower", f"tower {tower}")] == pytest.approx(
            [r["conv1_colourfulness"][tower] for r in epochs])


# -- one-line errors ------------------------------------------------------------------------------
@pytest.fixture
def other_classes(tmp_path):
    """A folder dataset with two classes the run never saw."""
    root = tmp_path / "other-data"
    for split in ("train", "val"):
        for name in ("apple", "pear"):
            (root / split / name).mkdir(parents=True)
            Image.new("RGB", (32, 32), (200, 30, 30)).save(root / split / name / "a.jpg")
    return root


@pytest.mark.parametrize("command", ["filters", "neighbors"])
def test_a_missing_file_or_a_file_that_is_not_a_checkpoint_is_one_line(command, tmp_path):
    missing = tmp_path / "nothing.pt"
    line = error_line(run(command, missing, "-o", tmp_path / "f.png"))
    assert str(missing) in line and "no such" in line
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    line = error_line(run(command, text, "-o", tmp_path / "f.png"))
    assert str(text) in line and "not" in line and "checkpoint" in line
    folder = tmp_path / "empty-folder"
    folder.mkdir()
    assert str(folder) in error_line(run(command, folder, "-o", tmp_path / "f.png"))


@pytest.mark.parametrize("command", ["filters", "neighbors", "plot"])
def test_an_output_that_cannot_be_written_is_one_line_before_any_work(command, trained, tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("read the run before checking the output")

    for module, name in ((filters_module, "read_trained"), (neighbours_module, "read_trained"),
                         (neighbours_module, "open_trained"), (plot_module, "check_run_folder")):
        monkeypatch.setattr(module, name, no_work)
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for out in (tmp_path / "no-such-folder" / "f.png", a_file / "f.png", tmp_path):
        line = error_line(run(command, trained, "-o", out))
        assert str(out) in line
    assert ".png" in error_line(run(command, trained, "-o", tmp_path / "f.jpg"))


@pytest.fixture
def no_net_built(monkeypatch):
    """Refusals of the data or of --images come before the net is built (seconds for the paper's)."""
    def no_net(*args, **kwargs):
        raise AssertionError("built the net before checking the data and --images")

    monkeypatch.setattr(neighbours_module, "open_trained", no_net)


def test_neighbors_with_data_of_other_classes_is_one_line(trained, other_classes, tmp_path, no_net_built):
    line = error_line(run("neighbors", trained, "--data", other_classes, "-o", tmp_path / "n.png"))
    assert str(trained) in line and "10 classes" in line and str(other_classes) in line


def test_neighbors_with_an_index_past_the_validation_split_is_one_line(trained, tmp_path, no_net_built):
    line = error_line(run("neighbors", trained, "--images", "3,10", "-o", tmp_path / "n.png", "-j", "0", "-q"))
    assert "--images 10" in line and "10 images" in line


def test_plot_of_something_that_is_not_a_run_is_one_line(trained, tmp_path):
    missing = tmp_path / "no-run"
    assert str(missing) in error_line(run("plot", trained, missing, "-o", tmp_path / "p.png"))
    a_file = tmp_path / "metrics.txt"
    a_file.write_text("")
    assert str(a_file) in error_line(run("plot", a_file, "-o", tmp_path / "p.png"))
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "metrics.jsonl" in error_line(run("plot", empty, "-o", tmp_path / "p.png"))
    (empty / "metrics.jsonl").write_text(json.dumps({"kind": "step", "step": 1}) + "\n")
    assert "no finished epoch" in error_line(run("plot", empty, "-o", tmp_path / "p.png"))


def test_search_arguments_are_checked():
    with pytest.raises(ConfigError, match="share D"):
        nearest_neighbours(torch.zeros(2, 3), torch.zeros(4, 5), 1)
    with pytest.raises(ConfigError, match="chunk"):
        nearest_neighbours(torch.zeros(2, 3), torch.zeros(4, 3), 1, chunk=0)
