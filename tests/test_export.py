"""alexnet export: the net as one ONNX graph, and ONNX Runtime computing the same logits."""

import json
from collections import Counter

import pytest
import torch
from click.testing import CliRunner

from alexnet import build_model
from alexnet.cli import main
from alexnet import export as export_module
from alexnet.checkpoint import save_checkpoint

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

STATS = {"mean_image": torch.full((3, 256, 256), 100.0), "channel_mean": torch.tensor([120.0, 115.0, 105.0]),
         "covariance": torch.eye(3), "eigenvalues": torch.ones(3), "eigenvectors": torch.eye(3), "count": 1}
#: Each variant's net and how many LRN nodes its graph must hold: one per tower and LRN layer
#: for the paper's and the authors' nets, one per layer across all maps for Caffe's, none without LRN.
VARIANTS = {
    "paper-two-gpu": (dict(), 4),
    "one-gpu": (dict(variant="one-gpu"), 2),
    "no-lrn": (dict(lrn=False), 0),
    "non-overlapping": (dict(overlap=False), 4),
    "authors-147": (dict(overlap=False, no_overlap_as="authors"), 4),
    "authors": (dict(blocks="authors"), 4),
    "caffe": (dict(blocks="caffe", dropout_style="inverted"), 2),
}


def _lively(settings):
    """A net whose logits depend on the image (He-scaled weights, random biases)."""
    model = build_model(num_classes=10, initialize=False, **settings)
    g = torch.Generator().manual_seed(22)
    state = {k: torch.randn(v.shape, generator=g) * ((2.0 / v[0].numel()) ** 0.5 if k.endswith("weight") else 1.0)
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return model.eval()


@pytest.mark.parametrize("name", list(VARIANTS))
def test_onnx_runtime_computes_the_same_logits_at_every_batch_size(tmp_path, name):
    settings, lrn_nodes = VARIANTS[name]
    model = _lively(settings)
    save_checkpoint(tmp_path / "net.pt", model=model, classes=[f"c{i}" for i in range(10)], stats=STATS)
    export_module.export_onnx(tmp_path / "net.pt", tmp_path / "net.onnx")
    proto = onnx.load(str(tmp_path / "net.onnx"))
    onnx.checker.check_model(proto, full_check=True)
    ops = Counter(node.op_type for node in proto.graph.node)
    assert ops.get("LRN", 0) == lrn_nodes
    assert {node.domain for node in proto.graph.node} <= {"", "ai.onnx"}  # standard operators only
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(5)
    for batch in (8, 1, 16):  # one file, a dynamic batch
        x = torch.randn(batch, 3, 224, 224, generator=g) * 50
        with torch.no_grad():
            expected = model(x).numpy()
        if batch > 1:
            assert expected.std(0).min() > 1e-3 * abs(expected).max()  # the logits depend on the image
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert abs(got - expected).max() <= 1e-4 * abs(expected).max(), (name, batch)


def test_the_paper_dropouts_test_time_scale_is_in_the_graph(tmp_path):
    """Exported with dropout 0.9, the logits still match: the ×0.1 at test is a node."""
    model = _lively(dict(dropout=0.9))
    save_checkpoint(tmp_path / "net.pt", model=model, classes=[f"c{i}" for i in range(10)], stats=STATS)
    export_module.export_onnx(tmp_path / "net.pt", tmp_path / "net.onnx")
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(2, 3, 224, 224) * 50
    with torch.no_grad():
        expected = model(x).numpy()
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert abs(got - expected).max() <= 1e-4 * abs(expected).max()


def test_the_command_writes_the_input_contract_into_the_metadata(tmp_path):
    model = build_model(num_classes=3, seed=0)
    save_checkpoint(tmp_path / "net.pt", model=model, classes=["cat", "dog", "owl"], stats=STATS)
    result = CliRunner().invoke(main, ["export", str(tmp_path / "net.pt"), "-o", str(tmp_path / "net.onnx")])
    assert result.exit_code == 0, result.output
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "net.onnx")).metadata_props}
    assert (meta["crop_size"], meta["channel_order"], meta["pixel_scale"]) == ("224", "RGB", "0-255")
    assert json.loads(meta["classes"]) == ["cat", "dog", "owl"]
    assert "mean image" in meta["mean"]  # the paper's mean is an image: said, not stored
    assert json.loads(meta["model_config"])["blocks"] == "paper"


def test_missing_packages_are_one_line_naming_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "MISSING", "onnxscript")
    result = CliRunner().invoke(main, ["export", str(tmp_path / "x.pt"), "-o", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2
    assert "needs onnxscript: pip install -e '.[export]'" in result.output and len(result.output.splitlines()) == 1
    assert not (tmp_path / "x.onnx").exists()


def test_the_graph_computes_the_papers_net_with_its_test_time_halving(tmp_path):
    """ONNX Runtime's logits against the paper's net written out by hand in float64
    (tests/model/test_block_order.py's ``reference_forward``: fc6's and fc7's outputs multiplied by
    0.5 after their ReLU at test, §4.2), not against PyTorch: a halving lost from the model and
    the graph alike shows here."""
    import sys  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415
    sys.path.insert(0, str(Path(__file__).resolve().parent / "model"))
    from test_block_order import reference_forward  # noqa: PLC0415 (the reference lives with its tests)

    model = _lively({})
    state = {key: value.clone() for key, value in model.state_dict().items()}
    save_checkpoint(tmp_path / "net.pt", model=model, classes=[f"c{i}" for i in range(10)], stats=STATS)
    export_module.export_onnx(tmp_path / "net.pt", tmp_path / "net.onnx")
    session = ort.InferenceSession(str(tmp_path / "net.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(8)) * 50
    got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]).double()
    expected, _ = reference_forward(state, x, dropout_scale=0.5)
    scale = expected.abs().max().item()
    unhalved, _ = reference_forward(state, x, dropout_scale=1.0)
    assert (unhalved - expected).abs().max() > 100 * 1e-4 * scale  # the halving is far outside the tolerance
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * scale)
