"""alexnet features: a layer's activations for a folder of class folders, a flat folder of images or
a dataset's split, as the checkpoint's own preprocessing reads them; the .npz it writes; its refusals.

Expected values come from the net's layers stepped by hand (the paper's test-time dropout scale
written out), from ``alexnet predict`` (another path through the net) and from the images read
one by one, never from the code under test.
"""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from alexnet import build_model
from alexnet.caffe.importer import CAFFE_PREPROCESS
from alexnet.checkpoint import save_checkpoint, stats_for_checkpoint
from alexnet.cli import main
from alexnet.data import load_or_compute_stats, prepare
from alexnet.data.images import load_image
from alexnet.data.preprocess import Preprocess, PreprocessConfig
from alexnet import inference
from alexnet.inference import write_features
from alexnet.runtime import Runtime

pytestmark = pytest.mark.usefixtures("private_cache")  # nothing touches ~/.cache/alexnet

CLASSES = ["cat", "dog", "eel"]  # helpers.make_folder_dataset's


def _lively(**settings):
    """A net whose activations depend on the image (He-scaled weights, random biases)."""
    model = build_model(num_classes=len(CLASSES), initialize=False, **settings)
    g = torch.Generator().manual_seed(3)
    state = {k: torch.randn(v.shape, generator=g) * ((2.0 / v[0].numel()) ** 0.5 if k.endswith("weight") else 1.0)
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return model.eval()


@pytest.fixture
def net(folder_root, tmp_path):
    """A checkpoint of the paper's net with the folder dataset's statistics: (path, model, preprocess)."""
    stats = load_or_compute_stats(folder_root, workers=0)
    model = _lively()
    path = save_checkpoint(tmp_path / "net.pt", model=model, classes=CLASSES, stats=stats_for_checkpoint(stats))
    yield path, model, Preprocess(stats, PreprocessConfig())
    path.unlink(missing_ok=True)  # 240 MB: not kept with the test's other files


def by_hand(model, x):
    """pool5, fc6, fc7 (after their ReLU) and the logits of the grouped net for crops ``x``, its
    blocks stepped one by one and the paper's dropout written out: x(1-p) = x0.5 at test (§4.2)."""
    with torch.no_grad():
        h = F.pad(x, (0, 3, 0, 3))  # a 224 crop reads as 227 with zero padding (cuda-convnet)
        for layer in model.layers[:5]:  # conv1 ... conv5, each with its ReLU, LRN and max-pooling
            h = model.block(layer, h)
        pool5 = h.flatten(1)
        fc6 = F.relu(model.fc6(pool5))
        fc7 = F.relu(model.fc7(0.5 * fc6))
        return {"pool5": pool5, "fc6": fc6, "fc7": fc7, "fc8": model.fc8(0.5 * fc7)}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error:"), result.output
    return lines[0]


def no_net_built(*args, **kwargs):
    raise AssertionError("built the net before checking the output and the data (seconds for the paper's)")


def files_of(folder):
    return sorted(str(p) for p in folder.rglob("*") if p.is_file())


def test_fc7_of_class_folders_is_the_nets_own_and_fc8_of_it_is_predicts_top_class(net, folder_root, tmp_path):
    checkpoint, model, preprocess = net
    out = tmp_path / "f.npz"
    result = run("features", checkpoint, folder_root / "val", "--layer", "fc7", "-o", out, "-d", "cpu", "-j", "0",
                 "-q", "-b", "4")
    assert result.exit_code == 0, result.output
    saved = np.load(out)
    paths = files_of(folder_root / "val")  # class by class, in name order
    assert saved["paths"].tolist() == paths
    assert saved["labels"].tolist() == [CLASSES.index(p.split("/")[-2]) for p in paths]
    assert saved["classes"].tolist() == CLASSES and saved["net_classes"].tolist() == CLASSES
    fc7 = saved["fc7"]
    assert fc7.dtype == np.float32 and fc7.shape == (6, 4096) and (fc7 >= 0).all()
    expected = by_hand(model, preprocess.centre(torch.stack([load_image(p) for p in paths])))
    np.testing.assert_allclose(fc7, expected["fc7"].numpy(), rtol=1e-4, atol=1e-4 * expected["fc7"].abs().max().item())
    assert (fc7 == 0).any()  # after the ReLU, not before

    # fc8 applied to the saved features, with the saved dropout scale, is what predict says
    logits = (torch.from_numpy(fc7) * float(saved["dropout_scale"])) @ model.fc8.weight.detach().T + model.fc8.bias.detach()
    torch.testing.assert_close(logits, expected["fc8"], rtol=1e-4, atol=1e-4 * expected["fc8"].abs().max().item())
    predicted = run("predict", checkpoint, *paths, "--top", "1", "--json", "-d", "cpu")
    assert predicted.exit_code == 0, predicted.output
    top1 = [r["predictions"][0]["class"] for r in json.loads(predicted.output)]
    assert [CLASSES[i] for i in logits.argmax(dim=1).tolist()] == top1
    assert len(set(top1)) > 1  # the images are told apart


def test_every_layer_and_the_ten_crop_mean_match_the_net_stepped_by_hand(net, folder_root, tmp_path):
    checkpoint, model, preprocess = net
    flat = folder_root / "val" / "dog"  # a flat folder of images: no labels
    done = write_features(checkpoint, flat, tmp_path / "all.npz", layers=["pool5", "fc6", "fc7", "fc8"],
                          ten_crop=True, runtime=Runtime(devices="cpu", workers=0))
    saved = np.load(tmp_path / "all.npz")
    paths = files_of(flat)
    assert saved["paths"].tolist() == paths and not done["labelled"]
    assert "labels" not in saved and "classes" not in saved
    crops = preprocess.ten(torch.stack([load_image(p) for p in paths]))  # (B, 10, 3, 224, 224)
    per_crop = by_hand(model, crops.flatten(0, 1))
    for layer, width in (("pool5", 9216), ("fc6", 4096), ("fc7", 4096), ("fc8", 3)):
        expected = per_crop[layer].view(len(paths), 10, -1).mean(dim=1)
        assert saved[layer].shape == (len(paths), width)
        np.testing.assert_allclose(saved[layer], expected.numpy(), rtol=1e-4,
                                   atol=1e-4 * expected.abs().max().item(), err_msg=layer)
    assert float(saved["dropout_scale"]) == 0.5 and str(saved["crops"]) == "ten-crop mean"


def test_the_towers_on_two_devices_give_the_grouped_nets_features(net, folder_root, tmp_path):
    checkpoint, model, preprocess = net
    for devices in ("cpu", "cpu,cpu"):
        assert run("features", checkpoint, folder_root / "val", "--layer", "pool5", "--layer", "fc6", "-o",
                   tmp_path / f"{devices}.npz", "-d", devices, "-j", "0", "-q").exit_code == 0
    grouped, towers = np.load(tmp_path / "cpu.npz"), np.load(tmp_path / "cpu,cpu.npz")
    for layer in ("pool5", "fc6"):  # the towers' halves joined in tower order: the grouped net's order
        np.testing.assert_allclose(towers[layer], grouped[layer], rtol=1e-4, atol=1e-4 * abs(grouped[layer]).max())


def test_a_caffe_net_reads_its_images_warped_with_its_mean_and_227_crops(folder_root, tmp_path):
    stats = load_or_compute_stats(folder_root, workers=0)
    model = _lively(blocks="caffe", dropout_style="inverted")
    checkpoint = save_checkpoint(tmp_path / "caffe.pt", model=model, classes=CLASSES, preprocess=CAFFE_PREPROCESS,
                                 stats=stats_for_checkpoint(stats))
    write_features(checkpoint, folder_root / "val", tmp_path / "c.npz", runtime=Runtime(devices="cpu", workers=0))
    saved = np.load(tmp_path / "c.npz")
    images = torch.stack([load_image(p, resize="warp") for p in saved["paths"]])  # warped, not cut
    x = images[:, :, 14:241, 14:241].float() - stats.channel_mean.view(1, 3, 1, 1)  # the centre 227, channel means
    with torch.no_grad():
        expected = F.relu(model.fc7(F.relu(model.fc6(torch.flatten(_conv_blocks(model, x), 1)))))  # inverted: no scale
    np.testing.assert_allclose(saved["fc7"], expected.numpy(), rtol=1e-4, atol=1e-4 * expected.abs().max().item())
    assert float(saved["dropout_scale"]) == 1.0
    checkpoint.unlink()


def _conv_blocks(model, x):
    with torch.no_grad():
        for layer in model.layers[:5]:
            x = model.block(layer, x)
    return x


def test_a_dataset_and_its_packed_copy_give_the_same_features_with_labels(net, folder_root, tmp_path):
    checkpoint, _, _ = net
    packed = tmp_path / "packed"
    prepare(folder_root, packed, workers=0)
    kwargs = dict(split="val", runtime=Runtime(devices="cpu", workers=0))
    write_features(checkpoint, folder_root, tmp_path / "folder.npz", **kwargs)
    write_features(checkpoint, packed, tmp_path / "packed.npz", **kwargs)
    folder, copy = np.load(tmp_path / "folder.npz"), np.load(tmp_path / "packed.npz")
    np.testing.assert_array_equal(copy["fc7"], folder["fc7"])  # raw packing keeps the bytes
    assert copy["labels"].tolist() == folder["labels"].tolist() == [0, 0, 1, 1, 2, 2]
    assert copy["paths"].tolist() == [f"{packed / 'val'}#{i}" for i in range(6)]


def test_refusals_are_one_line_and_write_nothing(net, folder_root, tmp_path, monkeypatch):
    checkpoint, _, _ = net
    val = folder_root / "val"
    before = {path: open(path, "rb").read() for path in files_of(tmp_path)}
    existing = tmp_path / "old.npz"
    existing.write_bytes(b"keep me")
    with monkeypatch.context() as patched:  # the output and the data are refused before the net is built
        patched.setattr(inference, "open_trained", no_net_built)
        assert "is a file alexnet did not write" in error_line(
            run("features", checkpoint, val, "-o", existing, "-d", "cpu"))
        assert existing.read_bytes() == b"keep me"
        # never over an input, --overwrite or not: the checkpoint, or a file inside the data
        error_line(run("features", checkpoint, val, "-o", checkpoint, "--overwrite", "-d", "cpu"))
        assert "would write inside this command's own input" in error_line(
            run("features", checkpoint, val, "-o", val / "f.npz", "-d", "cpu"))
        mixed = tmp_path / "mixed"
        (mixed / "sub").mkdir(parents=True)
        (mixed / "a.jpg").write_bytes((val / "cat" / "img0.jpg").read_bytes())
        assert "holds both image files" in error_line(run("features", checkpoint, mixed, "-o", tmp_path / "m.npz"))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "b.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    assert "b.jpg" in error_line(run("features", checkpoint, broken, "-o", tmp_path / "b.npz", "-j", "0", "-q"))
    assert error_line(run("features", checkpoint, val, "-o", tmp_path / "f.txt")).endswith("ending in .npz")
    after = {path: open(path, "rb").read() for path in files_of(tmp_path) if "mixed" not in path and "broken" not in path}
    assert after == {**before, str(existing): b"keep me"}  # no output, no half-written file
    assert checkpoint.read_bytes() == before[str(checkpoint)]
