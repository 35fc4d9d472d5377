"""hubconf.py: torch.hub's entry points, loaded from this checkout (source="local", no network)."""

from pathlib import Path

import pytest
import torch

from alexnet import build_model, load_model
from alexnet.errors import ConfigError
from alexnet.checkpoint import save_checkpoint

REPO = str(Path(__file__).resolve().parent.parent)


def test_a_new_net_is_build_models_with_the_same_settings():
    hub = torch.hub.load(REPO, "alexnet", source="local", num_classes=10, lrn=False, seed=3)
    direct = build_model(num_classes=10, lrn=False, seed=3)
    assert hub.spec.config == direct.spec.config
    for key, value in direct.state_dict().items():
        assert torch.equal(hub.state_dict()[key], value), key
    authors = torch.hub.load(REPO, "alexnet_authors", source="local", num_classes=10)
    assert (authors.spec.config.blocks, authors.spec.config.init) == ("authors", "authors")


def test_weights_load_a_checkpoint_in_either_layout(tmp_path):
    model = build_model(num_classes=10, seed=1, blocks="authors")
    save_checkpoint(tmp_path / "net.pt", model=model, classes=[str(i) for i in range(10)])
    x = torch.randn(2, 3, 224, 224) * 50
    with torch.no_grad():
        expected = load_model(tmp_path / "net.pt").eval()(x)
        for layout, devices in (("grouped", None), ("towers", ["cpu", "cpu"])):
            hub = torch.hub.load(REPO, "alexnet", source="local", weights=str(tmp_path / "net.pt"), layout=layout,
                                 devices=devices)
            assert hub.layout == layout
            torch.testing.assert_close(hub.eval()(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="brings its own net; drop lrn"):
        torch.hub.load(REPO, "alexnet", source="local", weights=str(tmp_path / "net.pt"), lrn=False)
