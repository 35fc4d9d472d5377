"""Checkpoints: layout-independent, atomic, and loaded without unpickling arbitrary objects."""

import os

import pytest
import torch

import alexnet
from alexnet import build_model
from alexnet.errors import CheckpointError
from alexnet.trained import load_model
from alexnet.checkpoint import (VERSION, all_finite, load_momentum_buffers, momentum_buffers, read_checkpoint,
                                save_checkpoint)
from alexnet.train.optim import paper_sgd

CLASSES = [f"class{i}" for i in range(10)]


def _small(layout="grouped", devices=("cpu",), seed=0):
    return build_model(layout=layout, devices=list(devices), num_classes=10, seed=seed, dropout=0.0)


def _one_step(model, optimizer):
    x = torch.rand(2, 3, 224, 224) * 255 - 120
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(x), torch.tensor([1, 2])).backward()
    optimizer.step()


def test_towers_checkpoint_loads_into_the_grouped_net_with_the_same_outputs(tmp_path):
    towers = _small("towers", ("cpu", "cpu"))
    optimizer = paper_sgd(towers)
    _one_step(towers, optimizer)
    path = save_checkpoint(tmp_path / "c.pt", model=towers, classes=CLASSES, optimizer=optimizer,
                           progress={"epoch": 1, "step": 1})
    grouped = alexnet.load_model(path)  # the package's public entry point
    assert grouped.layout == "grouped" and grouped.classes == CLASSES and not grouped.training
    towers.eval()
    x = torch.rand(2, 3, 224, 224) * 255 - 120
    torch.testing.assert_close(grouped(x), towers(x), rtol=1e-5, atol=1e-5)
    back = load_model(path, layout="towers", devices=["cpu", "cpu"])
    torch.testing.assert_close(back(x), towers(x), rtol=0, atol=0)


def test_momentum_buffers_are_canonical_and_move_between_layouts(tmp_path):
    towers = _small("towers", ("cpu", "cpu"))
    opt_t = paper_sgd(towers)
    _one_step(towers, opt_t)
    canonical = momentum_buffers(towers, opt_t)
    assert canonical["conv2.weight"].shape == (256, 48, 5, 5)
    torch.testing.assert_close(canonical["conv2.weight"][128:], opt_t.state[towers.towers[1].conv2.weight]["momentum_buffer"])
    grouped = _small()
    opt_g = paper_sgd(grouped)
    load_momentum_buffers(grouped, opt_g, canonical)
    torch.testing.assert_close(opt_g.state[grouped.conv2.weight]["momentum_buffer"], canonical["conv2.weight"])


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch EVIL_RAN",))


def test_loading_never_unpickles_arbitrary_objects(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    torch.save({"format": "alexnet-checkpoint", "version": 1, "payload": _Evil()}, path)
    with pytest.raises(CheckpointError, match=r"evil.pt: holds objects other than tensors, numbers and strings "
                                              r"\(posix.system\); not loaded, for safety") as info:
        read_checkpoint(path)
    assert "weights_only" not in str(info.value)  # no advice to load it unsafely
    assert not (tmp_path / "EVIL_RAN").exists()


@pytest.mark.parametrize("make,message", [
    (lambda p: None, "no such checkpoint file or run folder"),
    (lambda p: p.write_bytes(b""), "not a readable alexnet checkpoint"),
    (lambda p: p.write_bytes(os.urandom(200)), "not a readable alexnet checkpoint"),
    (lambda p: torch.save({"weights": torch.zeros(2)}, p), "not an alexnet checkpoint"),
])
def test_bad_checkpoints_get_one_line(tmp_path, make, message):
    path = tmp_path / "c.pt"
    make(path)
    with pytest.raises(CheckpointError, match=message) as info:
        load_model(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_the_finite_check_agrees_with_isfinite_for_every_bad_value_anywhere(dtype):
    """``all_finite`` (two extremes) against ``torch.isfinite`` flag by flag: a NaN, +inf or
    -inf first, inside or last, in a tensor small or large enough to be reduced in parallel."""
    for size in (1, 5, 4099, 3_000_017):
        clean = torch.randn(size).to(dtype)
        assert all_finite(clean) and bool(torch.isfinite(clean).all())
        for bad in (float("nan"), float("inf"), -float("inf")):
            for where in {0, size // 2, size - 1}:
                spoiled = clean.clone()
                spoiled[where] = bad
                assert not bool(torch.isfinite(spoiled).all())
                assert not all_finite(spoiled), (size, bad, where)
    assert all_finite(torch.empty(0, 4, dtype=dtype))


def test_an_infinite_weight_is_refused_naming_the_layer(tmp_path):
    path = tmp_path / "inf.pt"
    save_checkpoint(path, model=_small(), classes=CLASSES)
    payload = torch.load(path, weights_only=True)
    payload["model"]["conv2.weight"][7, 0, 1, 1] = -float("inf")
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="conv2.weight holds values that are not finite"):
        read_checkpoint(path)


def test_a_run_folder_without_a_checkpoint_is_named(tmp_path):
    with pytest.raises(CheckpointError, match="a folder without checkpoints/last.pt or best.pt"):
        read_checkpoint(tmp_path)


def test_a_run_folder_means_its_last_checkpoint_else_its_best(tmp_path):
    from alexnet.checkpoint import resolve_checkpoint_path

    (tmp_path / "checkpoints").mkdir()
    best, last = tmp_path / "checkpoints" / "best.pt", tmp_path / "checkpoints" / "last.pt"
    best.touch()
    assert resolve_checkpoint_path(tmp_path) == best  # a finished ablation run keeps best.pt only
    last.touch()
    assert resolve_checkpoint_path(tmp_path) == last


def test_a_checkpoint_of_another_class_count_or_variant_is_refused(tmp_path):
    from alexnet.checkpoint import load_weights

    path = save_checkpoint(tmp_path / "c.pt", model=_small(), classes=CLASSES)
    payload = read_checkpoint(path)
    with pytest.raises(CheckpointError, match="num_classes=10 but the model has num_classes=1000"):
        load_weights(build_model(devices=["meta"], initialize=False), payload)
    with pytest.raises(CheckpointError, match="variant='two-gpu' but the model has variant='one-gpu'"):
        load_weights(build_model(variant="one-gpu", devices=["meta"], initialize=False, num_classes=10), payload)


def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = save_checkpoint(tmp_path / "c.pt", model=_small(), classes=CLASSES)
    before = path.read_bytes()

    def broken(obj, f, *args, **kwargs):
        f.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model=_small(seed=1), classes=CLASSES)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def _with_dropout(style, seed=0):
    return build_model(devices=["cpu"], num_classes=10, seed=seed, dropout=0.5, dropout_style=style)


def test_the_dropout_style_is_recorded_and_rebuilt(tmp_path):
    from alexnet.model.dropout import PaperDropout

    for style, kind in (("paper", PaperDropout), ("inverted", torch.nn.Dropout)):
        path = save_checkpoint(tmp_path / f"{style}.pt", model=_with_dropout(style), classes=CLASSES)
        assert read_checkpoint(path)["model_config"]["dropout_style"] == style
        model = load_model(path, layout="towers", devices=["cpu", "cpu"])
        assert model.spec.config.dropout_style == style and type(model.towers[0].drop6) is kind


def test_a_checkpoint_written_before_the_style_was_recorded_rebuilds_with_inverted_dropout(tmp_path):
    """Every checkpoint without the key was trained with nn.Dropout; evaluating it with the paper's
    test-time halving would scale fc7's and fc8's inputs wrongly."""
    trained = _with_dropout("inverted")
    path = save_checkpoint(tmp_path / "old.pt", model=trained, classes=CLASSES)
    payload = torch.load(path, weights_only=True)
    # As version 1 wrote it before the key existed: the net's shape settings only, no preprocessing.
    payload["version"] = 1
    payload["model_config"] = {k: payload["model_config"][k] for k in ("variant", "lrn", "overlap", "num_classes",
                                                                       "dropout")}
    del payload["preprocess"]
    torch.save(payload, path)
    model = load_model(path)
    assert model.spec.config.dropout_style == "inverted" and type(model.drop6) is torch.nn.Dropout
    assert read_checkpoint(path)["version"] == VERSION and read_checkpoint(path)["preprocess"] == {}
    trained.eval()
    x = torch.rand(2, 3, 224, 224) * 255 - 120
    with torch.no_grad():
        torch.testing.assert_close(model(x), trained(x), rtol=1e-6, atol=1e-6)
        # The paper form at test time would be a different function of the same weights.
        paper = _with_dropout("paper")
        paper.load_state_dict(trained.state_dict())
        assert not torch.allclose(paper.eval()(x), trained(x))
