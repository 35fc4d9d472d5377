"""Fine-tuning (--init-from, the finetune preset): a run starts from a checkpoint's weights and
net, with fc8 drawn afresh when the data has another class count."""

import json
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from alexnet.cli import main
from alexnet.model.init import canonical_init
from alexnet.model.spec import resolve
from alexnet.caffe.importer import import_caffemodel
from alexnet.train.config import TrainConfig
from alexnet.train.session import set_up

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "caffe"))
from caffemodel_writer import random_state, write_caffemodel  # noqa: E402

pytestmark = pytest.mark.usefixtures("private_cache")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """Caffe's bvlc_alexnet layout with 7 classes, imported: the built-in data has 10."""
    folder = tmp_path_factory.mktemp("caffe")
    state = random_state(7, seed=3, scale=0.02)
    import_caffemodel(write_caffemodel(folder / "net.caffemodel", state, num_classes=7), folder / "net.pt")
    return folder / "net.pt", state


def _config(tiny, tmp_path, source, **changes):
    return TrainConfig.from_preset("finetune", init_from=str(source), data=str(tiny), out=str(tmp_path / "run"),
                                   epochs=1, batch_size=5, devices="cpu", workers=0, ten_crop=False, **changes)


def test_a_finetuned_run_starts_from_the_checkpoints_net_and_weights_with_a_new_fc8(tiny, tmp_path, imported):
    source, state = imported
    session = set_up(_config(tiny, tmp_path, source, seed=4))
    try:
        model = session.state.model.state_dict()
        config = session.config
        assert (config.model.blocks, config.model.dropout_style, config.model.num_classes) == ("caffe", "inverted", 10)
        for key in ("conv1.weight", "conv5.bias", "fc7.weight"):  # the writer's state is canonical (RGB)
            torch.testing.assert_close(model[key], torch.as_tensor(state[key]), rtol=0, atol=0, msg=key)
        fresh = canonical_init(resolve(config.model), config.model.init, seed=4)  # fc8 for 10 classes, drawn anew
        torch.testing.assert_close(model["fc8.weight"], fresh["fc8.weight"], rtol=0, atol=0)
        rates = {g["layer"] or ("biases" if i == 1 else "weights"): g["lr"]
                 for i, g in enumerate(session.state.optimizer.param_groups)}
        assert rates == pytest.approx({"weights": 1e-3, "biases": 2e-3, "fc8": 1e-2, "fc8.bias": 2e-2})
        saved = json.loads((tmp_path / "run" / "config.json").read_text())
        assert saved["recipe"]["init_from"] == str(source.absolute()) and saved["model"]["blocks"] == "caffe"
    finally:
        session.run.release()


def test_finetuning_from_the_command_line_on_both_layouts(tiny, tmp_path, imported):
    source, _ = imported
    for devices in ("cpu", "cpu,cpu"):
        out = tmp_path / devices.replace(",", "-")
        result = CliRunner().invoke(main, ["train", "--preset", "finetune", "--init-from", str(source), "--data",
                                           str(tiny), "--epochs", "1", "-b", "5", "--no-ten-crop", "-d", devices,
                                           "-j", "0", "-o", str(out)])
        assert result.exit_code == 0, result.output
        assert f"starting from {source.absolute()} (caffe blocks); fc8 drawn afresh for 10 classes (it had 7)" \
            in result.output
        assert (out / "checkpoints" / "last.pt").exists()


def test_net_options_beside_init_from_are_refused_in_one_line(tiny, tmp_path, imported):
    source, _ = imported
    result = CliRunner().invoke(main, ["train", "--init-from", str(source), "--blocks", "paper", "--data", str(tiny),
                                       "-o", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert "--init-from trains the checkpoint's own net; drop --blocks" in result.output
    assert not (tmp_path / "run").exists()
