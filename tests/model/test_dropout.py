"""Dropout as §4.2 defines it: zero each fc6/fc7 unit with probability 0.5 while training, "at
test time, use all the neurons but multiply their outputs by 0.5"; beside nn.Dropout's inverted
form, which computes the same function only with fc7's and fc8's weights halved (FACTS §6)."""

import pytest
import torch
from torch import nn

from alexnet import build_model
from alexnet.errors import ConfigError
from alexnet.model.dropout import PaperDropout
from alexnet.model.spec import resolve
from alexnet.model.summary import summarize
from alexnet.train.recipe import get_preset


def _activations(shape=(64, 4096), seed=11):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g) + 0.5  # no zeros, so a zero output means dropped


def test_training_multiplies_by_an_unscaled_bernoulli_mask():
    x = _activations()
    torch.manual_seed(3)
    out = PaperDropout(0.5).train()(x)
    # Direct computation: the mask is Bernoulli(1-p) from torch's global RNG.
    torch.manual_seed(3)
    mask = torch.empty_like(x).bernoulli_(0.5)
    assert torch.equal(out, x * mask)
    assert bool(((out == 0) | (out == x)).all())  # dropped, or kept exactly: no scaling
    assert abs((out != 0).float().mean().item() - 0.5) < 0.01  # 262,144 units: 0.001 std


def test_evaluation_multiplies_by_one_minus_p():
    x = _activations()
    for p in (0.5, 0.3):
        module = PaperDropout(p).eval()
        assert torch.equal(module(x), x * (1 - p))
        assert torch.equal(module(x), module(x))  # deterministic
    torch.manual_seed(0)
    kept = (PaperDropout(0.3).train()(x) != 0).float().mean().item()
    assert abs(kept - 0.7) < 0.01


def test_no_dropout_passes_the_input_through():
    x = _activations((4, 8))
    assert PaperDropout(0.0).train()(x) is x and PaperDropout(0.0).eval()(x) is x


def test_both_styles_draw_the_same_masks_from_the_global_rng():
    """With one seed a paper-form and an inverted-form run see the same masks; only the scale differs."""
    x = _activations()
    for p in (0.5, 0.3):
        torch.manual_seed(5)
        paper = PaperDropout(p).train()(x)
        torch.manual_seed(5)
        inverted = nn.Dropout(p).train()(x)
        assert torch.equal(paper != 0, inverted != 0)
        torch.testing.assert_close(inverted, paper / (1 - p), rtol=1e-6, atol=0)


def test_the_gradient_is_the_mask():
    x = _activations((32, 256)).requires_grad_()
    out = PaperDropout(0.5).train()(x)
    out.sum().backward()
    assert torch.equal(x.grad, (out != 0).float())


def test_bfloat16_and_autocast():
    x = _activations((16, 64))
    module = PaperDropout(0.5)
    out = module.train()(x.bfloat16())
    assert out.dtype == torch.bfloat16 and bool(((out == 0) | (out == x.bfloat16())).all())
    assert torch.equal(module.eval()(x.bfloat16()), x.bfloat16() * 0.5)
    linear = nn.Linear(64, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = linear(x)
        assert PaperDropout(0.5).train()(h).dtype == h.dtype == torch.bfloat16


def test_torch_compile_traces_it_in_one_graph():
    torch._dynamo.reset()
    module = PaperDropout(0.5)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")  # fails on a graph break
    x = _activations((8, 64))
    torch.manual_seed(2)
    out = compiled(x)
    torch.manual_seed(2)
    assert torch.equal(out, module(x))
    module.eval()
    assert torch.equal(compiled(x), x * 0.5)


# -- the whole net ------------------------------------------------------------------------------

def _crops(seed=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 3, 224, 224, generator=g) * 60  # the 0-255 scale, minus the mean


def _net(state, style, layout="grouped", halve=False):
    devices = ["cpu"] if layout == "grouped" else ["cpu", "cpu"]
    model = build_model(layout=layout, devices=devices, initialize=False, dropout=0.5, dropout_style=style)
    state = dict(state)
    if halve:
        # The paper form's test-time 0.5 on fc6's and fc7's outputs, moved into the weights that read them.
        state["fc7.weight"] = state["fc7.weight"] * 0.5
        state["fc8.weight"] = state["fc8.weight"] * 0.5
    model.load_state_dict(state)
    return model


def test_the_paper_form_equals_the_inverted_form_with_fc7_and_fc8_halved(paper_state):
    x = _crops()
    paper = _net(paper_state, "paper").eval()
    inverted = _net(paper_state, "inverted").eval()
    halved = _net(paper_state, "inverted", halve=True).eval()
    with torch.no_grad():
        expected = paper(x)
        assert expected.abs().max() > 0.1  # not a comparison between zeros
        torch.testing.assert_close(halved(x), expected, rtol=1e-5, atol=1e-6)
        # Without the halving the two forms are different functions.
        assert (inverted(x) - expected).abs().max() > 100 * (halved(x) - expected).abs().max() + 1e-3
        # In training too, given the same masks (same seed).
        paper.train(), halved.train()
        torch.manual_seed(9)
        trained = paper(x)
        torch.manual_seed(9)
        torch.testing.assert_close(halved(x), trained, rtol=1e-5, atol=1e-6)


def test_towers_and_grouped_agree_with_the_paper_form(paper_state):
    x = _crops()
    grouped = _net(paper_state, "paper").eval()
    towers = _net(paper_state, "paper", layout="towers").eval()
    assert isinstance(towers.towers[0].drop6, PaperDropout) and isinstance(towers.towers[1].drop7, PaperDropout)
    with torch.no_grad():
        torch.testing.assert_close(towers(x), grouped(x), rtol=1e-5, atol=1e-5)


def test_the_library_default_is_the_papers_form_and_it_is_recorded():
    model = build_model(devices=["meta"], initialize=False)
    assert isinstance(model.drop6, PaperDropout) and isinstance(model.drop7, PaperDropout)
    assert model.spec.config.dropout_style == "paper"
    inverted = build_model(devices=["meta"], initialize=False, dropout_style="inverted")
    assert type(inverted.drop6) is nn.Dropout
    # Dropout has no parameters: the state dict is the same whatever the style.
    assert {k: v.shape for k, v in model.state_dict().items()} == \
        {k: v.shape for k, v in inverted.state_dict().items()}
    assert summarize(resolve(), "grouped", ["cpu"])["options"]["dropout_style"] == "paper"


def test_a_bad_style_is_one_line():
    with pytest.raises(ConfigError, match=r"^--dropout-style must be one of paper, inverted; got 'bad'$") as info:
        build_model(devices=["meta"], dropout_style="bad")
    assert "\n" not in str(info.value)


def test_the_presets_choose_a_style():
    assert get_preset("paper").model.dropout_style == "paper"
    assert get_preset("caffe").model.dropout_style == "inverted"  # Caffe's dropout layer is inverted
    assert get_preset("authors").model.dropout_style == "paper"  # the cfg's hs layers
