"""alexnet export: the net as one ONNX graph holding what the net computes and nothing else, which ONNX
Runtime and OpenCV's DNN module (an importer no one here wrote) both run to the same logits; export
from a net object and from a bare state dict; the output never over an input or an existing file."""

import json
import shutil
import sys
from collections import Counter

import pytest
import torch
from click.testing import CliRunner

import alexnet
from alexnet import build_model, load_model
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
    "caffenet": (dict(blocks="caffenet", dropout_style="inverted"), 2),
}
#: What every variant's graph computes: conv1 to conv5, seven ReLUs (five convs, fc6, fc7), three
#: max-poolings, one reshape (pool5's maps to fc6's rows) and fc6 to fc8 as Gemm.
CORE = Counter(Conv=5, Relu=7, MaxPool=3, Reshape=1, Gemm=3)
PAPER_DROPOUT = Counter(Mul=2)  # fc6 and fc7 times 1-p at test (§4.2); the inverted form has nothing
TOWER_LRN = Counter(Split=2, LRN=4, Concat=2)  # per LRN layer: the maps split by tower, normalized, joined
ONE_LRN = Counter(LRN=2)  # one tower (one-gpu), or Caffe's across all maps
CNORM2 = Counter(Mul=3, AveragePool=1, Add=1, Pow=1)  # a * (k + scale * mean(a^2 over 5x5))^-pow
NODES = {
    "paper-two-gpu": CORE + PAPER_DROPOUT + TOWER_LRN,
    "one-gpu": CORE + PAPER_DROPOUT + ONE_LRN,
    "no-lrn": CORE + PAPER_DROPOUT,
    "non-overlapping": CORE + PAPER_DROPOUT + TOWER_LRN,
    "authors-147": CORE + PAPER_DROPOUT + TOWER_LRN,
    "authors": CORE + PAPER_DROPOUT + TOWER_LRN + CNORM2,
    "caffe": CORE + ONE_LRN,
    "caffenet": CORE + ONE_LRN,
}
#: Shape arithmetic, the trace of a fill-by-slices padding: none of it belongs in a graph of a fixed-size net.
TRACED = {"Shape", "Range", "Expand", "ScatterND", "Transpose", "Gather", "Slice", "Pad"}


def _lively(settings):
    """A net whose logits depend on the image (He-scaled weights, random biases)."""
    model = build_model(num_classes=10, initialize=False, **settings)
    g = torch.Generator().manual_seed(22)
    state = {k: torch.randn(v.shape, generator=g) * ((2.0 / v[0].numel()) ** 0.5 if k.endswith("weight") else 1.0)
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """``exported(name)``: the variant's net and its ONNX file, exported once for the tests below
    (and removed after them: each is 240 MB). Caffe's nets read Caffe's 227 crops, the others 224."""
    folder, done = tmp_path_factory.mktemp("exports"), {}

    def export(name):
        if name not in done:
            model = _lively(VARIANTS[name][0])
            meta = export_module.export_onnx(model, folder / f"{name}.onnx")
            done[name] = (model, folder / f"{name}.onnx", int(meta["crop_size"]))
        return done[name]
    yield export
    shutil.rmtree(folder, ignore_errors=True)


def _crops(batch, size, seed=5):
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed + batch)) * 50


@pytest.mark.parametrize("name", list(VARIANTS))
def test_the_graph_holds_what_the_net_computes_and_nothing_else(exported, name):
    _, path, size = exported(name)
    assert size == (227 if name.startswith("caffe") else 224)  # Caffe's nets read Caffe's crops
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = Counter(node.op_type for node in proto.graph.node)
    assert ops == NODES[name], ops
    assert ops.get("LRN", 0) == VARIANTS[name][1]
    assert not TRACED & set(ops)
    assert {node.domain for node in proto.graph.node} <= {"", "ai.onnx"}  # standard operators only
    conv1 = proto.graph.node[0]
    pads = next(list(a.ints) for a in conv1.attribute if a.name == "pads")
    # cuda-convnet reads a 224 crop as 227 with 3 zero rows and columns at the bottom and right
    assert (conv1.op_type, pads) == ("Conv", [0, 0, 3, 3] if size == 224 else [0, 0, 0, 0])
    dims = [d.dim_value or d.dim_param for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, size, size]


@pytest.mark.parametrize("name", list(VARIANTS))
def test_onnx_runtime_computes_the_same_logits_at_every_batch_size(exported, name):
    model, path, size = exported(name)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (8, 1, 16):  # one file, a dynamic batch
        x = _crops(batch, size)
        with torch.no_grad():
            expected = model(x).numpy()
        if batch > 1:
            assert expected.std(0).min() > 1e-3 * abs(expected).max()  # the logits depend on the image
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        assert abs(got - expected).max() <= 1e-4 * abs(expected).max(), (name, batch)


@pytest.mark.parametrize("name", list(VARIANTS))
def test_opencv_computes_the_same_logits(exported, name):
    """OpenCV's DNN module reads ONNX with its own importer: a second runtime for the same file."""
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed (opencv-python-headless<5: pip install -e "
                                            "'.[export]')")
    model, path, size = exported(name)
    net = cv2.dnn.readNetFromONNX(str(path))
    for batch in (4, 1):
        x = _crops(batch, size, seed=9)
        with torch.no_grad():
            expected = model(x).numpy()
        net.setInput(x.numpy())
        got = net.forward()
        assert got.shape == expected.shape
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
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # import onnxscript now fails
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


def _run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])


def _metadata(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_a_net_built_in_python_exports_in_any_layout_with_the_contract_it_can_know(tmp_path):
    grouped = build_model(num_classes=10, seed=4).eval()
    alexnet.export_onnx(grouped, tmp_path / "x.onnx")
    towers = build_model(layout="towers", devices=["cpu", "cpu"], num_classes=10, initialize=False)
    towers.load_state_dict(_lively({}).state_dict())
    alexnet.export_onnx(towers.train(), tmp_path / "towers.onnx")  # in training mode: exported for evaluation
    x = _crops(3, 224)
    with torch.no_grad():
        expected = {"x": grouped(x), "towers": towers.eval()(x)}
    for name in expected:
        got = _run_onnx(tmp_path / f"{name}.onnx", x)
        assert (got - expected[name]).abs().max() <= 1e-4 * expected[name].abs().max(), name
    meta = _metadata(tmp_path / "x.onnx")
    assert (meta["crop_size"], meta["channel_order"], meta["pixel_scale"], meta["num_classes"]) == (
        "224", "RGB", "0-255", "10")
    assert meta["mean"].startswith("unknown") and "classes" not in meta  # none came with the net
    # one loaded from a checkpoint carries its classes and statistics
    save_checkpoint(tmp_path / "net.pt", model=grouped, classes=[f"k{i}" for i in range(10)], stats=STATS)
    alexnet.export_onnx(load_model(tmp_path / "net.pt"), tmp_path / "loaded.onnx")
    meta = _metadata(tmp_path / "loaded.onnx")
    assert json.loads(meta["classes"]) == [f"k{i}" for i in range(10)] and "mean image" in meta["mean"]


def test_a_bare_state_dict_exports_with_its_nets_options_and_says_which_without_them(tmp_path):
    model = _lively(dict(lrn=False))
    torch.save(model.state_dict(), tmp_path / "w.pt")  # as the README's Python section saves it
    out = tmp_path / "w.onnx"
    without = CliRunner().invoke(main, ["export", str(tmp_path / "w.pt"), "-o", str(out)])
    assert without.exit_code == 2 and len(without.output.splitlines()) == 1, without.output
    assert "bare state dict" in without.output and "--variant" in without.output and "--no-lrn" in without.output
    assert not out.exists()
    result = CliRunner().invoke(main, ["export", str(tmp_path / "w.pt"), "-o", str(out), "--no-lrn"])
    assert result.exit_code == 0, result.output
    x = _crops(2, 224)
    with torch.no_grad():
        expected = model(x)
    assert (_run_onnx(out, x) - expected).abs().max() <= 1e-4 * expected.abs().max()
    assert json.loads(_metadata(out)["model_config"])["lrn"] is False
    # options naming another net: one line; options for a checkpoint, which names its own: one line
    wrong = CliRunner().invoke(main, ["export", str(tmp_path / "w.pt"), "-o", str(tmp_path / "v.onnx"),
                                      "--variant", "one-gpu"])
    assert wrong.exit_code == 2 and "conv1.weight" in wrong.output and len(wrong.output.splitlines()) == 1
    save_checkpoint(tmp_path / "net.pt", model=model, classes=[f"c{i}" for i in range(10)], stats=STATS)
    extra = CliRunner().invoke(main, ["export", str(tmp_path / "net.pt"), "-o", str(tmp_path / "n.onnx"), "--no-lrn"])
    assert extra.exit_code == 2 and "for a bare state dict" in extra.output and len(extra.output.splitlines()) == 1


def test_the_output_is_never_an_input_nor_an_existing_file_without_overwrite(tmp_path):
    model = build_model(num_classes=3, seed=0)
    checkpoint = save_checkpoint(tmp_path / "net.pt", model=model, classes=["a", "b", "c"], stats=STATS)
    saved = checkpoint.read_bytes()
    (tmp_path / "old.onnx").write_bytes(b"keep")
    for out, extra in ((tmp_path / "old.onnx", []), (checkpoint, ["--overwrite"])):
        result = CliRunner().invoke(main, ["export", str(checkpoint), "-o", str(out), *extra])
        assert result.exit_code == 2 and len(result.output.splitlines()) == 1, result.output
    assert (tmp_path / "old.onnx").read_bytes() == b"keep" and checkpoint.read_bytes() == saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pt", "old.onnx"]
    # --overwrite replaces an earlier export, never a file alexnet did not write
    result = CliRunner().invoke(main, ["export", str(checkpoint), "-o", str(tmp_path / "old.onnx"), "--overwrite"])
    assert result.exit_code == 2 and "is a file alexnet did not write" in result.output
    assert (tmp_path / "old.onnx").read_bytes() == b"keep"
    for extra in ([], ["--overwrite"]):
        result = CliRunner().invoke(main, ["export", str(checkpoint), "-o", str(tmp_path / "new.onnx"), *extra])
        assert result.exit_code == 0, result.output
