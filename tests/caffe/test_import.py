"""`alexnet import-caffe`: a generated caffemodel in, a checkpoint every command reads out, and
the imported net computing what Caffe computes (tests/model/test_block_order.py's reference)."""

import pytest
import torch
from click.testing import CliRunner

from alexnet import load_model
from alexnet.cli import main
from alexnet.train.checkpoint import read_checkpoint
from caffemodel_writer import random_state, write_caffemodel


def _import(path, out):
    return CliRunner().invoke(main, ["import-caffe", str(path), "-o", str(out)])


@pytest.mark.parametrize("caffenet,fmt", [(False, "V1"), (True, "V2")], ids=["bvlc_alexnet-V1", "caffenet-V2"])
def test_an_imported_file_loads_as_caffes_net_with_its_weights(tmp_path, caffenet, fmt):
    state = random_state(10)
    source = write_caffemodel(tmp_path / "net.caffemodel", state, format=fmt, legacy_shapes=fmt == "V1",
                              caffenet=caffenet, num_classes=10)
    result = _import(source, tmp_path / "net.pt")
    assert result.exit_code == 0, result.output
    blocks = "caffenet" if caffenet else "caffe"
    assert f"--blocks {blocks}" in result.output
    payload = read_checkpoint(tmp_path / "net.pt")
    assert payload["model_config"]["blocks"] == blocks and payload["model_config"]["dropout_style"] == "inverted"
    assert payload["classes"] == [f"class_{i}" for i in range(10)]
    assert payload["stats"]["channel_mean"].tolist() == pytest.approx([122.7, 116.7, 104.0])  # RGB
    # Caffe's evaluation: the image warped to 256x256, 227 crops, the channel means, no colour noise
    assert payload["preprocess"] == {"mean": "channel", "pca": "none", "pca_std": 0.1, "divide_std": False,
                                     "crop_chunk": 1, "resize": "warp", "crop": 227}
    assert "input warped to 256x256, 227 crops, the channel means" in result.output
    for layout, devices in (("grouped", None), ("towers", ["cpu", "cpu"])):
        model = load_model(tmp_path / "net.pt", layout=layout, devices=devices)
        loaded = model.state_dict()
        for key, value in state.items():
            torch.testing.assert_close(loaded[key], torch.as_tensor(value), rtol=0, atol=0, msg=key)


def test_a_file_that_is_not_alexnet_writes_nothing(tmp_path):
    bad = tmp_path / "notes.caffemodel"
    bad.write_text("name: 'AlexNet'\nlayer { name: 'conv1' }\n")
    result = _import(bad, tmp_path / "out.pt")
    assert result.exit_code == 2
    assert len(result.output.strip().splitlines()) == 1 and str(bad) in result.output
    assert not (tmp_path / "out.pt").exists()
