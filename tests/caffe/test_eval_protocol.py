"""Evaluation the way Caffe did it: an imported checkpoint records Caffe's preprocessing (the
image warped to 256x256, 227 crops, Caffe's mean, or its mean image from a .binaryproto), and
``alexnet eval`` and ``predict`` follow it, checked against a computation written here from
those rules with PIL and plain slicing."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from helpers import smooth_image, write_image
from PIL import Image

from alexnet import load_model
from alexnet.caffe import read_binaryproto
from alexnet.cli import main
from alexnet.data import prepare
from alexnet.data.roots import open_dataset
from alexnet.errors import ConfigError, DataError
from alexnet.model.spec import resolve
from alexnet.model.state import canonical_shapes
from alexnet.caffe.importer import caffe_mean_image
from alexnet.checkpoint import read_checkpoint, saved_preprocess
from alexnet.train.config import TrainConfig
from alexnet.train.session import plan_run
from caffemodel_writer import Blob, Layer, Net, blob_bytes, save, write_binaryproto, write_caffemodel

pytestmark = pytest.mark.usefixtures("private_cache")  # nothing touches ~/.cache/alexnet

CLASSES = ["class_0", "class_1", "class_2"]  # what a 3-class import names them
#: (width, height) of the validation images, one per class: none of them square.
VAL_SIZES = [(400, 300), (260, 340), (500, 250)]
CROP = 227
#: Caffe's 10-crop windows of 227 in a 256x256 image: (top, left), then the same mirrored.
CORNERS_AND_CENTRE = [(0, 0), (0, 29), (29, 0), (29, 29), (14, 14)]


def _state(num_classes=len(CLASSES), seed=0):
    """Weights under which the logits are of order 1 and depend on every input pixel: with the
    tests' writer's one small scale they would be near zero whatever the input."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in canonical_shapes(resolve(num_classes=num_classes)).items():
        if key.endswith("bias"):
            state[key] = np.zeros(shape, np.float32)
            continue
        std = np.sqrt(2.0 / np.prod(shape[1:])) / (60.0 if key.startswith("conv1") else 1.0)  # input ~ ±60
        state[key] = (rng.standard_normal(shape) * std).astype(np.float32)
    return state


def _mean_bgr():
    """A mean image that varies over the image and differs per channel: B, G, R around
    Caffe's 104, 117, 123, as compute_image_mean writes it (1 x 3 x 256 x 256)."""
    variation = (smooth_image(256, 256, seed=11).astype(np.float32) - 128.0) / 3.0  # (256, 256, 3)
    return (np.array([104.0, 117.0, 123.0], np.float32) + variation).transpose(2, 0, 1)[None].copy()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A 3-class caffemodel, Caffe's kind of mean file, and the folder dataset of those classes."""
    folder = tmp_path_factory.mktemp("caffe-eval")
    model = write_caffemodel(folder / "net.caffemodel", _state(), num_classes=len(CLASSES))
    mean = write_binaryproto(folder / "mean.binaryproto", _mean_bgr())
    root = folder / "data"
    for label, name in enumerate(CLASSES):
        write_image(root / "train" / name / "a.jpg", 300, 280, seed=label)
        write_image(root / "val" / name / "a.jpg", *VAL_SIZES[label], seed=10 + label)
    return {"folder": folder, "model": model, "mean": mean, "data": root}


@pytest.fixture(scope="module")
def imported(files):
    """The caffemodel imported with the mean image."""
    out = files["folder"] / "net.pt"
    args = ["import-caffe", str(files["model"]), "-o", str(out), "--mean", str(files["mean"])]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "warped to 256x256, 227 crops, the mean image of" in result.output
    return out


def _caffe_inputs(path, mean_rgb, windows):
    """The direct computation: PIL warps the whole file to 256x256 (bilinear), the mean image
    is subtracted, each 227 window sliced out (and mirrored): float32 (len(windows), 3, 227, 227)."""
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB").resize((256, 256), Image.BILINEAR), np.float64).transpose(2, 0, 1)
    centred = pixels - mean_rgb
    crops = []
    for top, left, mirrored in windows:
        crop = centred[:, top:top + CROP, left:left + CROP]
        crops.append(crop[:, :, ::-1] if mirrored else crop)
    return torch.from_numpy(np.stack(crops).astype(np.float32))


def _windows(ten):
    if not ten:
        return [(14, 14, False)]
    return [(top, left, mirrored) for mirrored in (False, True) for top, left in CORNERS_AND_CENTRE]


@torch.no_grad()
def _probabilities(checkpoint, paths, ten):
    """Each file's softmax, averaged over its crops, from the checkpoint's net run directly."""
    model = load_model(checkpoint)
    mean_rgb = _mean_bgr()[0, ::-1].astype(np.float64)
    return torch.stack([torch.softmax(model(_caffe_inputs(path, mean_rgb, _windows(ten))), dim=1).mean(dim=0)
                        for path in paths])


def test_the_binaryproto_mean_is_read_back_exactly_and_flipped_to_rgb(tmp_path, files, imported):
    bgr = _mean_bgr()
    for legacy_shapes in (True, False):
        for packed in (True, False):
            path = write_binaryproto(tmp_path / f"m-{legacy_shapes}-{packed}.binaryproto", bgr,
                                     legacy_shapes=legacy_shapes, packed=packed)
            assert np.array_equal(read_binaryproto(path), bgr)
            stats = caffe_mean_image(path)
            assert torch.equal(stats.mean_image, torch.from_numpy(bgr[0, ::-1].copy()))  # R, G, B
    payload = read_checkpoint(imported)
    assert torch.equal(payload["stats"]["mean_image"], torch.from_numpy(bgr[0, ::-1].copy()))
    assert payload["stats"]["channel_mean"].tolist() == pytest.approx(bgr[0, ::-1].mean(axis=(1, 2)).tolist())
    assert payload["preprocess"] == {"mean": "image", "pca": "none", "pca_std": 0.1, "divide_std": False,
                                     "crop_chunk": 1, "resize": "warp", "crop": 227}


def _caffemodel_as_mean(path):
    save(Net("AlexNet", layer=[Layer("conv1", "Convolution")]), path)


def _short_values(path):
    path.write_bytes(blob_bytes(Blob(np.zeros(10, np.float32), (1, 3, 256, 256), legacy_shape=True)))


def _truncated(path):
    write_binaryproto(path, _mean_bgr())
    path.write_bytes(path.read_bytes()[:100_000])


@pytest.mark.parametrize("make, message", [
    (lambda p: None, "cannot read the file"),
    (lambda p: p.write_bytes(b""), "empty file (0 bytes), not a .binaryproto file"),
    (lambda p: p.write_text("mean: 104 117 123\n"), "not a Caffe .binaryproto"),
    (_caffemodel_as_mean, "not a Caffe .binaryproto"),
    (_short_values, "the blob holds 10 values, its shape (1, 3, 256, 256) needs 196,608"),
    (_truncated, "truncated or corrupt .binaryproto"),
    (lambda p: write_binaryproto(p, np.zeros((1, 3, 227, 227))), "a blob of shape 1x3x227x227; Caffe's mean image is"),
    (lambda p: write_binaryproto(p, np.zeros((1, 1, 256, 256))), "a blob of shape 1x1x256x256"),
    (lambda p: write_binaryproto(p, np.full((1, 3, 256, 256), np.nan)), "not finite"),
], ids=["missing", "empty", "text", "caffemodel", "short", "truncated", "227", "grey", "nan"])
def test_a_bad_mean_file_is_one_line_naming_it_and_nothing_is_written(tmp_path, files, make, message):
    bad, out = tmp_path / "bad.binaryproto", tmp_path / "out.pt"
    make(bad)
    result = CliRunner().invoke(main, ["import-caffe", str(files["model"]), "-o", str(out), "--mean", str(bad)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"{bad}: " in lines[0] and message in lines[0], lines
    assert not out.exists()


def _evaluate(checkpoint, data, tmp_path):
    out = tmp_path / "eval.json"
    result = CliRunner().invoke(main, ["eval", str(checkpoint), "--data", str(data), "--devices", "cpu",
                                       "--workers", "0", "--quiet", "--json-out", str(out)])
    assert result.exit_code == 0, result.output
    return {r["protocol"]: r for r in json.loads(out.read_text())["results"]}


def test_eval_reads_an_imported_net_s_data_as_caffe_did(tmp_path, files, imported):
    results = _evaluate(imported, files["data"], tmp_path)
    paths = [files["data"] / "val" / name / "a.jpg" for name in CLASSES]
    labels = torch.arange(len(CLASSES))
    for protocol, ten in (("centre crop", False), ("ten-crop", True)):
        probs = _probabilities(imported, paths, ten)
        got = results[protocol]
        assert got["images"] == len(CLASSES)
        assert got["top1_error"] == pytest.approx((probs.argmax(dim=1) != labels).double().mean().item())
        loss = -probs[labels, labels].log().mean().item()
        assert got["loss"] == pytest.approx(loss, rel=1e-4, abs=1e-6), protocol


def test_predict_reads_an_image_file_as_caffe_did(files, imported):
    path = files["data"] / "val" / "class_2" / "a.jpg"  # 500x250: the warp and the paper's crop differ most
    for ten in (False, True):
        args = ["predict", str(imported), str(path), "--json", "--top", "3", "--devices", "cpu"]
        result = CliRunner().invoke(main, args + (["--ten-crop"] if ten else []))
        assert result.exit_code == 0, result.output
        predicted = {p["class"]: p["probability"] for p in json.loads(result.output)[0]["predictions"]}
        expected = _probabilities(imported, [path], ten)[0]
        assert [predicted[name] for name in CLASSES] == pytest.approx(expected.tolist(), rel=1e-4, abs=1e-6)


def test_a_packed_dataset_is_refused_for_a_warp_checkpoint_in_one_line(tmp_path, files, imported):
    packed = tmp_path / "packed"
    prepare(files["data"], packed, workers=1)
    assert open_dataset(packed, "val").classes == CLASSES  # the paper's images: read as they are
    result = CliRunner().invoke(main, ["eval", str(imported), "--data", str(packed), "--devices", "cpu",
                                       "--workers", "0", "--quiet"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, lines
    assert f"{packed}: a packed dataset holds its images with the shorter side resized to 256" in lines[0]
    assert "warped to 256x256" in lines[0]
    assert f"evaluate on the folder dataset it was packed from (--data {files['data'].resolve()})" in lines[0]
    with pytest.raises(DataError, match="a packed dataset holds its images"):
        open_dataset(packed, "val", resize="warp")


def test_a_checkpoint_without_the_settings_reads_as_the_papers_preprocessing():
    old = {"mean": "image", "pca": "sqrt-lambda", "pca_std": 0.1, "divide_std": False, "crop_chunk": 1}
    config = saved_preprocess({"preprocess": old, "path": "old.pt"})
    assert (config.resize, config.crop) == ("shorter-side", 224)


def test_training_refuses_the_warp_in_one_line():
    with pytest.raises(ConfigError, match="resize 'warp' is for evaluating imported Caffe nets"):
        plan_run(TrainConfig().replace(resize="warp"))
