"""The ``authors`` preset: what layer-params-145.cfg and its log say the authors ran (FACTS §6b).

The expected rates are written from the cfg's log, epoch by epoch, in cuda-convnet's counting,
which starts at 1 (a rate "set at epoch 25" is the rate of the 25th epoch; "killed at 91" ends
the run after 90): epsW 0.01, set to 0.001 at epoch 25, 0.0001 at 51, 0.00001 at 79; conv1's
epsW 0.00001 at 67 and 0 at 72; epsB 0.02 throughout (conv1's: the released params file ends
with it at 0, so it stops with conv1's weights at 72); colour noise 0.1 switched off at 67.
"""

import json
import math

import pytest
import torch

from alexnet import build_model
from alexnet.data.transforms import train_crops
from alexnet.errors import ConfigError
from alexnet.train.config import TrainConfig
from alexnet.train.optim import paper_sgd, set_lr
from alexnet.train.recipe import LRSchedule, Recipe, get_preset, schedule_rule
from helpers import recipe_sgd


def _expected_rates(epoch):
    """(weights, conv1's weights, biases, conv1's biases) during ``epoch`` (the log's 1-based count)."""
    weights = 0.01 if epoch < 25 else 0.001 if epoch < 51 else 1e-4 if epoch < 79 else 1e-5
    conv1 = weights if epoch < 67 else 1e-5 if epoch < 72 else 0.0
    return weights, conv1, 0.02, 0.02 if epoch < 72 else 0.0


def _rates_by_epoch(recipe, epochs):
    """Train nothing: step the schedule and the optimizer's rates as the loop does, and read
    each group's rate in every epoch."""
    model = build_model(num_classes=10, initialize=False)
    optimizer = recipe_sgd(model, recipe)
    schedule = LRSchedule(recipe)
    params = dict(model.named_parameters())

    def rate_of(name):
        return next(g["lr"] for g in optimizer.param_groups if any(p is params[name] for p in g["params"]))

    seen = []
    for epoch in range(epochs):
        seen.append((rate_of("fc6.weight"), rate_of("conv1.weight"), rate_of("fc6.bias"), rate_of("conv1.bias")))
        schedule.after_epoch(epoch, 0.5)
        set_lr(optimizer, schedule.lr, layer_mults=recipe.layer_lr_mults(epoch + 1))
    return seen


def test_the_authors_rates_epoch_by_epoch_are_their_logs():
    assert get_preset("authors").recipe.epochs == 90  # killed during the 91st
    seen = _rates_by_epoch(get_preset("authors").recipe, 90)
    for epoch, rates in enumerate(seen, start=1):
        assert rates == pytest.approx(_expected_rates(epoch), rel=1e-9, abs=1e-15), epoch


def test_a_shorter_run_places_every_epoch_of_the_schedule_in_proportion():
    recipe = get_preset("authors").recipe.replace(epochs=9)
    # after 24, 50, 78 of 90 -> 2.4, 5.0, 7.8 of 9 -> after epochs 2, 5, 8; conv1's 66, 71 -> 6.6, 7.1 -> 7, 7
    assert [recipe.at(e) for e in (24, 50, 78, 66, 71)] == [2, 5, 8, 7, 7]
    weights = [rates[0] for rates in _rates_by_epoch(recipe, 9)]
    assert weights == pytest.approx([0.01, 0.01, 1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-4, 1e-5])
    conv1 = [rates[1] for rates in _rates_by_epoch(recipe, 9)]
    assert conv1[:7] == pytest.approx(weights[:7]) and conv1[7:] == [0.0, 0.0]
    assert [recipe.colour_noise(done) for done in range(9)] == [True] * 7 + [False] * 2
    assert "after epochs 24, 50, 78 of 90 (here 2, 5, 8 of 9)" in schedule_rule(recipe)


def test_the_authors_preset_is_their_cfg():
    preset = get_preset("authors")
    r, m, p = preset.recipe, preset.model, preset.preprocess
    assert (r.epochs, r.batch_size, r.lr, r.momentum, r.weight_decay, r.decay_biases) == (90, 128, 0.01, 0.9, 5e-4, False)
    assert (r.schedule, r.lr_drop_epochs, r.lr_drop_factor) == ("epochs", (24, 50, 78), 0.1)
    assert r.lr * r.bias_lr_mult == pytest.approx(0.02) and r.anneal_biases is False
    assert (m.blocks, m.init, m.dropout, m.dropout_style, m.variant) == ("authors", "authors", 0.5, "paper", "two-gpu")
    assert (m.lrn, m.overlap, m.no_overlap_as) == (True, True, "authors")  # --no-overlap builds net 147
    assert (p.mean, p.pca_std, p.crop_chunk, p.divide_std) == ("centre", 0.1, 32, False)
    config = TrainConfig.from_preset("authors", epochs=3)
    assert (config.model, config.preprocess) == (m, p)


def test_a_changed_velocity_stays_continuous_in_a_group_whose_rate_alone_changes():
    """The paper's v = -ε·b carries over when conv1's rate drops to a tenth and the others do
    not (optim.set_lr, per group)."""
    model = build_model(num_classes=10, seed=0)
    optimizer = paper_sgd(model, lr=1e-3, own_rate=["conv1"])
    model(torch.randn(2, 3, 224, 224) * 50).sum().backward()
    optimizer.step()
    params = dict(model.named_parameters())
    velocity = {n: -g["lr"] * optimizer.state[params[n]]["momentum_buffer"].clone()
                for g in optimizer.param_groups for n in ("conv1.weight", "fc6.weight")
                if any(p is params[n] for p in g["params"])}
    set_lr(optimizer, 1e-3, layer_mults={"conv1": 0.1})
    for name, v in velocity.items():
        group = next(g for g in optimizer.param_groups if any(p is params[name] for p in g["params"]))
        torch.testing.assert_close(-group["lr"] * optimizer.state[params[name]]["momentum_buffer"], v)
    assert next(g["lr"] for g in optimizer.param_groups if g["layer"] == "conv1") == pytest.approx(1e-4)


def test_a_rate_of_0_stops_a_layer_at_the_next_step():
    """cuda-convnet neither updates a layer whose rate is 0 (weights.cu, Weights::update) nor
    computes its gradient (layer.cu, bpropCommon): conv1 stops where it is at once, however much
    velocity it had, while the other layers keep learning."""
    model = build_model(num_classes=10, seed=0)
    optimizer = paper_sgd(model, lr=1e-3, bias_lr_mult=2.0, anneal_biases=False,
                          own_rate=["conv1", "conv1.bias"])
    images, labels = torch.randn(2, 3, 224, 224) * 50, torch.tensor([1, 2])

    def step():
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(images), labels).backward()
        optimizer.step()

    for _ in range(2):  # build up a velocity in every layer
        step()
    set_lr(optimizer, 1e-3, layer_mults={"conv1": 0.0, "conv1.bias": 0.0})
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    for _ in range(2):
        step()
    after = dict(model.named_parameters())
    assert torch.equal(after["conv1.weight"], before["conv1.weight"])
    assert torch.equal(after["conv1.bias"], before["conv1.bias"])
    assert not torch.equal(after["fc6.weight"], before["fc6.weight"])


def test_crops_and_flips_are_drawn_per_chunk_and_replicas_see_the_same_draws():
    torch.manual_seed(0)
    image = torch.randint(0, 256, (1, 3, 256, 256), dtype=torch.uint8)
    images = image.expand(10, -1, -1, -1).contiguous()

    class Stats:  # no mean subtraction is needed to compare windows
        mean_image = torch.zeros(3, 256, 256)
        mean = torch.zeros(3)

    def crops(chunk, slice_of=None, part=slice(None)):
        generator = torch.Generator().manual_seed(3)
        return train_crops(images[part], Stats, generator, mean="none", pca="none", chunk=chunk, slice_of=slice_of)

    chunked = crops(4)
    for chunk in (chunked[0:4], chunked[4:8], chunked[8:10]):
        assert all(torch.equal(chunk[0], c) for c in chunk)
    assert not torch.equal(chunked[0], chunked[4]) or not torch.equal(chunked[4], chunked[8])
    per_image = crops(1)
    assert len({per_image[i].sum().item() for i in range(10)}) > 5
    torch.testing.assert_close(crops(4, slice_of=(6, 10), part=slice(6, 10)), chunked[6:10])
    # and the run's preprocessing passes its crop_chunk on
    from alexnet.data.preprocess import Preprocess, PreprocessConfig
    run = Preprocess(Stats, PreprocessConfig(mean="none", pca="none", crop_chunk=4))
    torch.testing.assert_close(run.augment(images, torch.Generator().manual_seed(3)), chunked)


@pytest.mark.parametrize("changes,message", [
    ({"schedule": "epochs"}, "needs the epochs to divide after"),
    ({"lr_drop_epochs": (51, 25)}, "must be increasing"),
    ({"layer_lr": ((67, "conv9", 0.1),)}, "layer_lr rules are"),
    ({"layer_lr": ((67, "conv1", -1.0),)}, "layer_lr rules are"),
])
def test_impossible_schedules_are_one_line(changes, message):
    with pytest.raises(ConfigError, match=message):
        get_preset("paper").recipe.replace(**changes)


def test_the_recipe_reads_back_from_json_lists():
    recipe = get_preset("authors").recipe
    again = Recipe.from_dict({k: (list(map(list, v)) if k == "layer_lr" else list(v) if isinstance(v, tuple) else v)
                              for k, v in recipe.as_dict().items()})
    assert again == recipe
    assert math.isclose(again.layer_lr_mults(72)["conv1"], 0.0)


@pytest.mark.parametrize("devices", ["cpu", "cpu,cpu"], ids=["grouped", "towers"])
def test_a_short_authors_run_trains_with_their_schedule_scaled(tiny, tmp_path, monkeypatch, devices):
    """`alexnet train --preset authors --epochs 3` on both layouts: every epoch of the 90-epoch
    schedule at 3/90 of it (drops after 1, 2, 3; conv1 frozen and the colour noise off after 2)."""
    from alexnet.data.preprocess import Preprocess
    from alexnet.train.loop import train
    from alexnet.run_folder import RunFolder

    monkeypatch.setenv("ALEXNET_CACHE", str(tmp_path / "cache"))
    seen = []
    real = Preprocess.augment

    def spy(self, images, generator, slice_of=None, colour=True):
        seen.append(colour)
        return real(self, images, generator, slice_of, colour)

    monkeypatch.setattr(Preprocess, "augment", spy)
    config = TrainConfig.from_preset("authors", epochs=3, batch_size=5, data=str(tiny), out=str(tmp_path / "run"),
                                     devices=devices, workers=0, ten_crop=False)
    train(config)
    epochs = [m for m in RunFolder(tmp_path / "run").read_metrics() if m["kind"] == "epoch"]
    assert [m["rates"] for m in epochs] == [  # the rates each epoch record leaves for the next epoch
        pytest.approx({"weights": 1e-3, "biases": 0.02, "conv1": 1e-3, "conv1.bias": 0.02}),
        pytest.approx({"weights": 1e-4, "biases": 0.02, "conv1": 0.0, "conv1.bias": 0.0}),
        pytest.approx({"weights": 1e-5, "biases": 0.02, "conv1": 0.0, "conv1.bias": 0.0}),
    ]
    assert seen == [True] * 8 + [False] * 4  # 20 images, batch 5: 4 steps an epoch
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["model"]["blocks"] == "authors" and saved["preprocess"]["crop_chunk"] == 32
