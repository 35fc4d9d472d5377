"""The grouped and towers layouts compute the same function and share one checkpoint format."""

import io

import pytest
import torch

from alexnet import build_model
from alexnet.errors import InputError


def _pair(paper_state, dropout=0.0):
    grouped = build_model(layout="grouped", devices=["cpu"], initialize=False, dropout=dropout)
    towers = build_model(layout="towers", devices=["cpu", "cpu"], initialize=False, dropout=dropout)
    grouped.load_state_dict(paper_state)
    towers.load_state_dict(paper_state)
    return grouped, towers


def _batch(n=3, size=224, seed=5):
    g = torch.Generator().manual_seed(seed)
    # 0-255 scale minus a mean: the input the paper's initialization expects.
    return torch.rand(n, 3, size, size, generator=g) * 255 - 120


def test_towers_and_grouped_give_the_same_logits_and_gradients(paper_state):
    grouped, towers = _pair(paper_state)
    x = _batch()
    target = torch.tensor([3, 1, 4])
    logits = {}
    grads = {}
    for name, model in (("grouped", grouped), ("towers", towers)):
        out = model(x)
        torch.nn.functional.cross_entropy(out, target).backward()
        logits[name] = out.detach()
        named = {n: p.grad for n, p in model.named_parameters()}
        grads[name] = model.to_canonical(named)
    scale = logits["grouped"].abs().max()
    assert scale > 0.1  # the comparison below is not between two zeros
    torch.testing.assert_close(logits["towers"], logits["grouped"], rtol=1e-5, atol=1e-5 * scale)
    assert list(grads["towers"]) == list(grads["grouped"])
    for key in grads["grouped"]:
        g = grads["grouped"][key]
        torch.testing.assert_close(grads["towers"][key], g, rtol=1e-4, atol=1e-5 * g.abs().max().item() + 1e-12,
                                   msg=lambda m, key=key: f"{key}: {m}")


def test_state_dict_is_canonical_in_every_layout(paper_state):
    grouped, towers = _pair(paper_state)
    for model in (grouped, towers):
        state = model.state_dict()
        assert list(state) == list(paper_state)
        for key, value in paper_state.items():
            assert torch.equal(state[key], value), key


def test_checkpoint_round_trips_between_layouts(paper_state):
    grouped, towers = _pair(paper_state)
    x = _batch(2)
    grouped.eval()
    expected = grouped(x)
    # grouped -> file -> towers -> file -> grouped
    buffer = io.BytesIO()
    torch.save(grouped.state_dict(), buffer)
    buffer.seek(0)
    towers2 = build_model(layout="towers", devices=["cpu", "cpu"], initialize=False, dropout=0.0)
    towers2.load_state_dict(torch.load(buffer, weights_only=True))
    towers2.eval()
    torch.testing.assert_close(towers2(x), expected, rtol=1e-5, atol=1e-4)
    buffer = io.BytesIO()
    torch.save(towers2.state_dict(), buffer)
    buffer.seek(0)
    grouped2 = build_model(layout="grouped", initialize=False, dropout=0.0)
    grouped2.load_state_dict(torch.load(buffer, weights_only=True))
    grouped2.eval()
    torch.testing.assert_close(grouped2(x), expected, rtol=0, atol=0)


def test_tower_zero_holds_the_first_half_of_every_split_layer(paper_state):
    _, towers = _pair(paper_state)
    assert torch.equal(towers.towers[0].conv2.weight, paper_state["conv2.weight"][:128])
    assert torch.equal(towers.towers[1].conv2.weight, paper_state["conv2.weight"][128:])
    assert torch.equal(towers.towers[1].fc6.weight, paper_state["fc6.weight"][2048:])
    assert torch.equal(towers.towers[1].conv3.weight, paper_state["conv3.weight"][192:])
    assert torch.equal(towers.fc8.weight, paper_state["fc8.weight"])


def test_loading_a_mismatched_checkpoint_names_the_canonical_key(paper_state):
    towers = build_model(layout="towers", devices=["cpu", "cpu"], initialize=False, num_classes=10)
    with pytest.raises(RuntimeError, match=r"fc8\.weight.*\(1000, 4096\).*\(10, 4096\)"):
        towers.load_state_dict(paper_state)


def test_a_224_crop_acts_as_227_with_zero_right_and_bottom(paper_state):
    grouped, _ = _pair(paper_state)
    grouped.eval()
    x224 = _batch(2, 224)
    x227 = torch.zeros(2, 3, 227, 227)
    x227[:, :, :224, :224] = x224
    torch.testing.assert_close(grouped(x224), grouped(x227), rtol=0, atol=0)
    # and it is not the same as padding symmetrically
    x227_centred = torch.nn.functional.pad(x224, (1, 2, 1, 2))
    assert not torch.allclose(grouped(x224), grouped(x227_centred))


@pytest.mark.parametrize("shape", [(2, 3, 256, 256), (2, 1, 224, 224), (3, 224, 224), (2, 3, 224, 227)])
@pytest.mark.parametrize("layout", ["grouped", "towers"])
def test_wrong_input_size_is_named(shape, layout):
    model = build_model(layout=layout, devices=["meta"], initialize=False)
    with pytest.raises(InputError, match=r"224, 224\) or .*227, 227\); got " + str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")):
        model(torch.empty(shape, device="meta"))


@pytest.mark.parametrize("preset", ["paper", "caffe"])
def test_init_presets(preset):
    model = build_model(init=preset, seed=3)
    state = model.state_dict()
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    bias = 1.0 if preset == "paper" else 0.1
    for layer in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
        b = state[f"{layer}.bias"]
        assert torch.all(b == (bias if layer in ones else 0.0)), layer
        w = state[f"{layer}.weight"]
        std = 0.005 if (preset == "caffe" and layer in ("fc6", "fc7")) else 0.01
        assert abs(w.mean().item()) < 3 * std / w.numel() ** 0.5 + 1e-6, layer
        assert w.std().item() == pytest.approx(std, rel=0.05 if w.numel() < 100_000 else 0.01), layer


def test_seed_gives_identical_weights_across_layouts():
    grouped = build_model(layout="grouped", seed=7).state_dict()
    towers = build_model(layout="towers", devices=["cpu", "cpu"], seed=7).state_dict()
    other = build_model(layout="grouped", seed=8).state_dict()
    for key in grouped:
        assert torch.equal(grouped[key], towers[key]), key
    assert not torch.equal(grouped["conv1.weight"], other["conv1.weight"])


def test_inverted_dropout_doubles_the_kept_units_and_is_off_in_eval(paper_state):
    grouped = build_model(layout="grouped", devices=["cpu"], initialize=False, dropout=0.5, dropout_style="inverted")
    grouped.load_state_dict(paper_state)
    x = _batch(2)
    grouped.eval()
    a, b = grouped(x), grouped(x)
    assert torch.equal(a, b)
    # In training mode, dropout zeroes about half of fc6's outputs and doubles the rest.
    grouped.train()
    seen = {}
    grouped.drop6.register_forward_hook(lambda m, i, o: seen.update(i=i[0].detach(), o=o.detach()))
    grouped(x)
    kept = seen["o"] != 0
    frac = kept[seen["i"] != 0].float().mean().item()
    assert 0.4 < frac < 0.6
    torch.testing.assert_close(seen["o"][kept], 2 * seen["i"][kept])
