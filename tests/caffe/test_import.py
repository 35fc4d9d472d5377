"""`alexnet import-caffe`: a generated caffemodel in, a checkpoint every command reads out, and
the imported net computing what Caffe computes (tests/model/test_block_order.py's reference)."""

import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from alexnet import load_model
from alexnet.cli import main
from alexnet.data.imagenet import ILSVRC_NAMES
from alexnet.errors import CheckpointError
from alexnet.caffe.importer import default_classes
from alexnet.run_folder import check_classes
from alexnet.checkpoint import read_checkpoint
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


def test_an_imported_ilsvrc_net_meets_imagenets_synset_folders():
    """Caffe's 1000 classes are the sorted synsets: the imported names match ImageNet's folders
    (n01440764, ...) sorted, and nothing else."""
    class Data:
        def __init__(self, classes):
            self.classes = classes

    names = default_classes(1000)
    assert names[:2] == ["tench", "goldfish"] and len(names) == 1000 == len(ILSVRC_NAMES)
    folders = [f"n{10_000_000 + 37 * i:08d}" for i in range(1000)]  # synset-shaped, sorted
    check_classes(names, Data(folders), "net.pt", "val")
    for bad in (folders[::-1], folders[:999] + ["cat"], folders[:999]):
        with pytest.raises(CheckpointError, match="net.pt: trained on 1000 classes"):
            check_classes(names, Data(bad), "net.pt", "val")


@pytest.mark.parametrize("caffenet", [False, True], ids=["bvlc_alexnet", "caffenet"])
def test_the_imported_net_computes_what_caffe_computes_on_both_layouts(tmp_path, caffenet):
    """From the file to the logits: Caffe's computation written out in float64 (grouped convs,
    its LRN with k = 1 across all maps, pooling rounded up, dropout the identity at test), within
    1e-5 of the logits' scale, on a 227 crop as Caffe feeds it and in both layouts."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "model"))
    from test_block_order import reference_forward  # noqa: PLC0415 (the reference lives with its tests)

    g = torch.Generator().manual_seed(21)
    state = {key: (torch.randn(value.shape, generator=g) * (2.0 / value[0].size) ** 0.5 if key.endswith("weight")
                   else torch.randn(value.shape, generator=g)).numpy() for key, value in random_state(10).items()}
    write_caffemodel(tmp_path / "net.caffemodel", state, caffenet=caffenet, num_classes=10)
    assert _import(tmp_path / "net.caffemodel", tmp_path / "net.pt").exit_code == 0
    x = torch.randn(3, 3, 227, 227, generator=g) * 50
    expected, _ = reference_forward({k: torch.as_tensor(v) for k, v in state.items()}, x,
                                    "caffenet" if caffenet else "caffe", pool_ceil=True, dropout_scale=1.0)
    scale = expected.abs().max().item()
    assert (expected.std(0) > 1e-3 * scale).all()  # the logits depend on the image
    for layout, devices in (("grouped", None), ("towers", ["cpu", "cpu"])):
        with torch.no_grad():
            logits = load_model(tmp_path / "net.pt", layout=layout, devices=devices).eval()(x).double()
        torch.testing.assert_close(logits, expected, rtol=1e-5, atol=1e-5 * scale)
