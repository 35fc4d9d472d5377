"""FACTS §3: a 224 crop acts as a 227 input with 3 zero columns at the right and 3 zero rows at
the bottom (cuda-convnet rounds conv1's output size up and reads past the edge as zero).

``prepare_input`` pads in two ways: straight into a channels-last tensor (what the models ask
for on the CPU, so every CPU forward pass takes it) and with ``F.pad`` (what they ask for on a
GPU, which no CPU forward pass reaches). Both are checked here against the padded input built
by hand, so the GPU's branch is tested on any machine.
"""

import pytest
import torch

from alexnet.model.column import prepare_input


def _crops(n=2, size=224, seed=3):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, size, size, generator=g) * 50  # 0-255 scale minus a mean: no zeros


def _padded_by_hand(x):
    """zeros (N, 3, 227, 227) with the 224 crop in the top-left corner."""
    out = torch.zeros(x.shape[0], 3, 227, 227)
    out[:, :, :224, :224] = x
    return out


@pytest.mark.parametrize("channels_last", [False, True], ids=["F.pad (GPU)", "channels-last (CPU)"])
@pytest.mark.parametrize("input_format", [torch.contiguous_format, torch.channels_last], ids=["NCHW", "NHWC"])
def test_a_224_crop_is_padded_with_zeros_at_the_right_and_bottom(channels_last, input_format):
    """FACTS §3: pixels past the right and bottom edges read as zero; none are added at the left or top."""
    x = _crops().contiguous(memory_format=input_format)
    out = prepare_input(x, channels_last=channels_last)
    assert out.shape == (2, 3, 227, 227)
    assert torch.equal(out, _padded_by_hand(x))
    if channels_last:  # asked for; F.pad keeps whatever format the input had
        assert out.is_contiguous(memory_format=torch.channels_last)


def test_both_branches_give_the_same_input():
    x = _crops(3)
    assert torch.equal(prepare_input(x, channels_last=False), prepare_input(x, channels_last=True))


@pytest.mark.parametrize("channels_last", [False, True], ids=["F.pad (GPU)", "channels-last (CPU)"])
def test_a_227_crop_passes_unchanged(channels_last):
    """Caffe's 227 crops (FACTS §3) need no padding."""
    x = _crops(2, 227)
    assert torch.equal(prepare_input(x, channels_last=channels_last), x)


def test_the_padding_is_written_not_left_to_chance(monkeypatch):
    """The channels-last branch pads into an empty tensor: its zeros must be written, whatever
    memory the allocator hands back (here: NaN everywhere)."""
    empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *args, **kwargs: empty(*args, **kwargs).fill_(float("nan")))
    x = _crops()
    for channels_last in (False, True):
        assert torch.equal(prepare_input(x, channels_last=channels_last), _padded_by_hand(x)), channels_last
