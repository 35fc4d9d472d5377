"""The optimizer and schedule against the paper's update rule and §5's schedule."""

import pytest
import torch
from torch import nn

from alexnet.errors import ConfigError
from alexnet.train.optim import current_lr, paper_sgd, set_lr
from alexnet.train.config import TrainConfig
from alexnet.train.recipe import PRESETS, LRSchedule, get_preset
from helpers import recipe_sgd


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 2)


def _loss(model, x):
    return (model.fc(x) ** 2).sum()


def test_sgd_follows_the_papers_update_across_a_learning_rate_drop():
    """§5: v <- 0.9 v - 0.0005 ε w - ε ∂L/∂w; w <- w + v, no decay on biases, ε divided by 10
    at step 5. Computed directly beside torch's SGD with set_lr."""
    torch.manual_seed(0)
    model = Tiny()
    w, b = model.fc.weight.detach().clone(), model.fc.bias.detach().clone()
    vw, vb = torch.zeros_like(w), torch.zeros_like(b)
    optimizer = paper_sgd(model, lr=0.01, momentum=0.9, weight_decay=5e-4)
    xs = [torch.randn(4, 3) for _ in range(10)]
    eps = 0.01
    for step, x in enumerate(xs):
        if step == 5:
            eps = 0.001
            set_lr(optimizer, eps)
        # direct: gradients of the same loss at the current direct weights
        wd, bd = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
        ((x @ wd.T + bd) ** 2).sum().backward()
        vw = 0.9 * vw - 0.0005 * eps * w - eps * wd.grad
        vb = 0.9 * vb - eps * bd.grad
        w, b = w + vw, b + vb
        optimizer.zero_grad()
        _loss(model, x).backward()
        optimizer.step()
    torch.testing.assert_close(model.fc.weight.detach(), w, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(model.fc.bias.detach(), b, rtol=1e-5, atol=1e-7)
    assert current_lr(optimizer) == pytest.approx(0.001)


class PaperNamed(nn.Module):
    """A tiny net whose layers carry the paper's names, so the recipes' per-layer rules (the
    authors' conv1, fine-tuning's fc8) find their layers: conv1 -> fc6 -> fc8."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3)
        self.fc6 = nn.Linear(4 * 3 * 3, 5)
        self.fc8 = nn.Linear(5, 3)

    def forward(self, x):
        return self.fc8(torch.relu(self.fc6(torch.relu(self.conv1(x)).flatten(1))))


#: Each preset's rate at its start, per parameter: (weights, biases, {parameter: its own rate}).
#: paper: §5's one rate for every layer; caffe: bvlc_alexnet's biases at lr_mult 2; authors:
#: layer-params-145.cfg's epsW 0.01 and epsB 0.02 (FACTS §6b), conv1 with them until epoch 67;
#: finetune: Caffe's fine-tuning example, base 0.001, biases 2x, the new fc8 10x.
START_RATES = {
    "paper": (0.01, 0.01, {}),
    "caffe": (0.01, 0.02, {}),
    "authors": (0.01, 0.02, {}),
    "finetune": (1e-3, 2e-3, {"fc8.weight": 1e-2, "fc8.bias": 2e-2}),
}


@pytest.mark.parametrize("preset", list(START_RATES))
def test_every_group_takes_the_papers_step_and_no_bias_is_decayed(preset):
    """§5: v <- 0.9 v - 0.0005 ε w - ε ∂L/∂w; w <- w + v, with the authors' code's rule that
    biases get no weight decay, in every group a preset makes: the biases with a rate of their
    own (the authors' conv1.bias, fine-tuning's fc8.bias) included. Two steps (the second
    carries the first's velocity), computed directly in float64 beside the optimizer."""
    torch.manual_seed(0)
    model = PaperNamed().double()
    with torch.no_grad():
        for param in model.parameters():  # no zero biases: a wrong decay on them must show
            param.uniform_(-0.5, 0.5)
    optimizer = recipe_sgd(model, get_preset(preset).recipe)
    weights_rate, biases_rate, own = START_RATES[preset]
    params = dict(model.named_parameters())
    w = {n: p.detach().clone() for n, p in params.items()}
    v = {n: torch.zeros_like(p) for n, p in params.items()}
    for _ in range(2):
        x, labels = torch.randn(4, 3, 5, 5, dtype=torch.float64), torch.randint(0, 3, (4,))
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), labels).backward()
        for name, param in params.items():
            eps = own.get(name, weights_rate if name.endswith(".weight") else biases_rate)
            decay = 5e-4 if name.endswith(".weight") else 0.0
            v[name] = 0.9 * v[name] - decay * eps * w[name] - eps * param.grad
            w[name] = w[name] + v[name]
        optimizer.step()
    for name, param in params.items():
        torch.testing.assert_close(param.detach(), w[name], rtol=1e-12, atol=1e-15,
                                   msg=lambda m, name=name: f"{preset}: {name}: {m}")


def test_plateau_schedule_divides_by_ten_when_validation_stops_improving_three_times_at_most():
    # A flat error: no improvement ever, so each rate lasts the minimum of 10 epochs.
    schedule = LRSchedule(get_preset("paper").recipe)
    assert [e + 1 for e in range(90) if schedule.after_epoch(e, 0.6)] == [10, 20, 30]
    assert schedule.lr == pytest.approx(1e-5) and schedule.drops == 3


def test_step_schedule_and_state_round_trip():
    schedule = LRSchedule(get_preset("caffe").recipe)
    drops = [schedule.after_epoch(e, 0.5) for e in range(90)]
    assert [e + 1 for e, d in enumerate(drops) if d] == [20, 40, 60, 80]
    other = LRSchedule(get_preset("caffe").recipe)
    other.load_state_dict(schedule.state_dict())
    assert other.state_dict() == schedule.state_dict()


def test_paper_preset_is_the_papers_recipe():
    r, net = PRESETS["paper"].recipe, PRESETS["paper"].model
    assert (r.batch_size, r.lr, r.momentum, r.weight_decay, r.epochs, r.max_lr_drops, net.dropout, net.init) == \
        (128, 0.01, 0.9, 5e-4, 90, 3, 0.5, "paper")
    assert r.schedule == "plateau" and not r.decay_biases


def test_paper_preset_trains_the_papers_net_on_the_papers_input():
    """What the test above leaves out. §5: "an equal learning rate for all layers" (biases too;
    twice the rate for biases is Caffe's, and the authors' own 2012 config's, FACTS §6b), "divide the
    learning rate by 10"; §3.5/§4.2: the two-tower net with LRN, overlapping pooling and the
    paper's dropout (outputs halved at test); §2/§4.1: only the mean subtracted, no division by
    a std, PCA colour noise with α ~ N(0, 0.1)."""
    config = TrainConfig.from_preset("paper")  # what `alexnet train --preset paper` runs
    r, net, pre = config.recipe, config.model, config.preprocess
    assert (r.bias_lr_mult, r.lr_drop_factor) == (1.0, 0.1)
    assert (net.variant, net.lrn, net.overlap, net.dropout, net.dropout_style) == ("two-gpu", True, True, 0.5, "paper")
    assert (pre.pca_std, pre.mean, pre.divide_std) == (0.1, "image", False)
    assert (r, net) == (PRESETS["paper"].recipe, PRESETS["paper"].model)


@pytest.mark.parametrize("field,value,message", [
    ("batch_size", 0, "--batch-size must be at least 1; got 0"),
    ("lr", -0.1, "--lr must be positive; got -0.1"),
    ("epochs", 0, "--epochs must be at least 1"),
    ("momentum", 1.5, "--momentum"),
    ("dropout", 1.0, "--dropout"),
    ("init", "xavier", "--init must be one of"),
])
def test_impossible_values_are_named(field, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig.from_preset("paper").replace(**{field: value})
    with pytest.raises(ConfigError, match="unknown recipe field 'learning_rate'"):
        get_preset("paper").recipe.replace(learning_rate=0.1)
    with pytest.raises(ConfigError, match="unknown setting 'learning_rate'"):
        TrainConfig.from_preset("paper").replace(learning_rate=0.1)
