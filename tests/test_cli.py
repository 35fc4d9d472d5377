"""The CLI skeleton: summary in text and JSON, one-line errors."""

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from alexnet.cli import main


def run(*args):
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("devices", ["cpu", "cpu,cpu"])
def test_summary_prints_the_total_and_the_four_exchange_points(devices):
    result = run("summary", "--devices", devices)
    assert result.exit_code == 0, result.output
    assert "60,965,224" in result.output
    for line in ("conv3  each tower receives the other's pool2 half: 21,632 values",
                 "fc6    each tower receives the other's pool5 half: 4,608 values",
                 "fc7    each tower receives the other's fc6 half: 2,048 values",
                 "fc8    tower 1 sends tower 0 its fc7 half: 2,048 values"):
        assert line in result.output
    layout = "towers" if "," in devices else "grouped"
    assert f"layout {layout}" in result.output


def test_summary_json_has_layers_totals_and_exchanges():
    result = run("summary", "--devices", "cpu,cpu", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["totals"]["params"] == 60_965_224
    assert data["totals"]["macs"] == 724_406_816
    assert sum(row["params"] for row in data["layers"]) == 60_965_224
    assert sum(row["macs"] for row in data["layers"]) == 724_406_816
    assert {tuple(sorted(row)) for row in data["layers"]} == {
        ("after", "device", "macs", "name", "output_shape", "params", "tower")}
    conv1 = [row for row in data["layers"] if row["name"] == "conv1"]
    assert conv1[0]["after"] == ["ReLU", "LRN", "maxpool 3/2"]  # §3.5's order
    assert [(r["tower"], r["output_shape"]) for r in conv1] == [(0, [48, 27, 27]), (1, [48, 27, 27])]
    assert [e["layer"] for e in data["exchanges"]] == ["conv3", "fc6", "fc7", "fc8"]
    assert data["exchanges"][0]["bytes_per_image_per_direction"] == 4 * 21_632


def test_summary_of_the_authors_preset_shows_their_net():
    result = run("summary", "--preset", "authors", "--devices", "cpu")
    assert result.exit_code == 0, result.output
    assert "the authors' blocks (layers-145.cfg)" in result.output and "init authors" in result.output
    assert "cnorm (spatial response norm)" in result.output
    assert "total parameters: 60,965,224" in result.output
    changed = run("summary", "--preset", "authors", "--blocks", "paper", "--devices", "cpu")
    assert "cnorm" not in changed.output  # an option changes the preset's net


def test_summary_of_caffes_net_lists_the_lrn_exchange():
    result = run("summary", "--blocks", "caffe", "--devices", "cpu,cpu")
    assert result.exit_code == 0, result.output
    assert "lrn1   each tower receives the other's 2 conv1 edge maps: 6,050 values" in result.output  # 2·55·55
    assert "lrn2   each tower receives the other's 2 conv2 edge maps: 1,458 values" in result.output  # 2·27·27
    assert "LRN across the towers (Caffe's, k=1), maxpool 3/2 ceil" in result.output
    assert "lrn1" not in run("summary", "--devices", "cpu,cpu").output  # the paper's LRN stays in its tower


def test_summary_of_the_one_gpu_net():
    data = json.loads(run("summary", "--variant", "one-gpu", "--devices", "cpu", "--json").output)
    assert data["exchanges"] == []
    assert [row["output_shape"][0] for row in data["layers"]] == [48, 128, 192, 192, 256, 4096, 4096, 1000]


def test_missing_gpus_give_one_line_and_a_nonzero_exit(fake_gpus):
    fake_gpus(0)
    result = run("summary", "--devices", "0,1")
    assert result.exit_code != 0
    assert result.output.strip() == (
        "Error: cuda:0 requested but no CUDA device is visible; use --devices auto, cpu (grouped) or cpu,cpu "
        "(towers on the CPU)")


def test_python_dash_m_is_the_same_command():
    out = subprocess.run([sys.executable, "-m", "alexnet", "--help"], capture_output=True, text=True, check=True)
    assert "summary" in out.stdout and "--devices" in out.stdout
