"""A trained net opened once for a runtime (alexnet.trained): every command that runs one takes
the same runtime options, and each option changes what runs the way it says."""

import pytest
import torch
import torch.nn.functional as F

from alexnet import Runtime, build_model, open_trained
from alexnet.checkpoint import save_checkpoint, stats_for_checkpoint
from alexnet.cli import main
from alexnet.data.images import load_image
from alexnet.data.preprocess import PreprocessConfig
from alexnet.data.stats import DatasetStats
from alexnet.inference import predict_files
from helpers import write_image

CLASSES = [f"c{i}" for i in range(5)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A net of 5 classes, with statistics and the paper's dropout, saved as a checkpoint."""
    model = build_model(num_classes=5, seed=3)
    rgb = torch.tensor([120.0, 110.0, 100.0])
    stats = DatasetStats.from_arrays(rgb.view(3, 1, 1).expand(3, 256, 256).numpy(), rgb.numpy(),
                                     torch.eye(3).numpy() * 400, count=10)
    path = tmp_path_factory.mktemp("trained") / "net.pt"
    save_checkpoint(path, model=model, classes=CLASSES, preprocess=PreprocessConfig(mean="channel"),
                    stats=stats_for_checkpoint(stats))
    return path


def _image(tmp_path):
    path = tmp_path / "x.jpg"
    write_image(path, seed=5)
    return path


def test_probabilities_are_the_mean_of_the_crops_softmax(checkpoint):
    net = open_trained(checkpoint, Runtime(devices="cpu", amp="fp32"))
    crops = torch.randn(2, 3, 3, 224, 224, generator=torch.Generator().manual_seed(0)) * 50
    with torch.no_grad():
        logits = net.model(crops.flatten(0, 1)).view(2, 3, -1).double()
        direct = (logits.exp() / logits.exp().sum(dim=2, keepdim=True)).mean(dim=1)  # softmax by its formula
        got = net.probabilities(crops)
    torch.testing.assert_close(got.double(), direct, rtol=1e-5, atol=1e-7)


def test_the_runtime_places_the_net(checkpoint):
    towers = open_trained(checkpoint, Runtime(devices="cpu,cpu"))
    grouped = open_trained(checkpoint, Runtime(devices="cpu"))
    assert (towers.placement.layout, type(towers.model).__name__) == ("towers", "TowersAlexNet")
    assert (grouped.placement.layout, type(grouped.model).__name__) == ("grouped", "GroupedAlexNet")
    x = torch.randn(2, 3, 224, 224) * 50
    with torch.no_grad():
        torch.testing.assert_close(towers.logits(x), grouped.logits(x), rtol=1e-4, atol=1e-4)


def test_predict_in_bf16_computes_what_bf16_autocast_computes(checkpoint, tmp_path):
    """--amp means the same in predict as in training and eval: bf16 here runs under bf16
    autocast (a different answer from fp32, the one a direct autocast gives)."""
    image = _image(tmp_path)
    fp32 = predict_files(checkpoint, [image], top=5, runtime=Runtime(devices="cpu", amp="fp32"))
    bf16 = predict_files(checkpoint, [image], top=5, runtime=Runtime(devices="cpu", amp="bf16"))
    net = open_trained(checkpoint, Runtime(devices="cpu", amp="fp32"))
    crop = net.preprocess.centre(load_image(image).unsqueeze(0))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        direct = F.softmax(net.model(crop).float(), dim=1)[0]
    got = {p["class"]: p["probability"] for p in bf16[0]["predictions"]}
    assert got == pytest.approx({c: float(direct[i]) for i, c in enumerate(CLASSES)}, rel=1e-5)
    assert got != {p["class"]: p["probability"] for p in fp32[0]["predictions"]}


@pytest.mark.parametrize("command", ["eval", "predict", "neighbors"])
def test_every_command_that_runs_a_trained_net_takes_every_runtime_option(command):
    options = {p.name for p in main.commands[command].params}
    assert set(Runtime.names()) - {"cudnn_benchmark"} <= options and "layout" in options


def test_a_channels_last_runtime_holds_the_net_and_its_input_channels_last(checkpoint):
    plain = open_trained(checkpoint, Runtime(devices="cpu"))
    net = open_trained(checkpoint, Runtime(devices="cpu", channels_last=True))
    images = torch.randint(0, 256, (2, 3, 256, 256), dtype=torch.uint8)
    last = torch.channels_last
    assert not plain.model.conv2.weight.is_contiguous(memory_format=last)
    assert net.model.conv2.weight.is_contiguous(memory_format=last)
    assert net.preprocess.centre(images).is_contiguous(memory_format=last)
    with torch.no_grad():
        torch.testing.assert_close(net.logits(net.preprocess.centre(images)),
                                   plain.logits(plain.preprocess.centre(images)), rtol=1e-4, atol=1e-4)


def test_a_checkpoint_without_statistics_opens_but_cannot_preprocess(tmp_path):
    path = tmp_path / "bare.pt"
    save_checkpoint(path, model=build_model(num_classes=5, seed=1), classes=CLASSES)
    net = open_trained(path, Runtime(devices="cpu"))
    with pytest.raises(Exception, match="holds no dataset statistics"):
        net.preprocess
