"""tools/bench_targets.py on hand-built bench results whose answers are known."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import load_tool

TOOL = Path(__file__).resolve().parents[2] / "tools" / "bench_targets.py"


bt = load_tool("bench_targets")


def row(model, images_per_s, *, mode="train", batch_size=128, precision="fp32", devices=("cuda:0",),
        lrn_impl="fast", channels_last=False, compile=False, status="ok", device_names=None, rounds=None):
    """One results row as alexnet bench writes it; ``rounds``: images/s of each timed block."""
    rounds = rounds or [images_per_s] * 3
    ms = [batch_size / r * 1e3 for r in rounds]
    return {"model": model, "devices": list(devices), "mode": mode, "batch_size": batch_size, "precision": precision,
            "lrn_impl": None if model == "torchvision" else lrn_impl, "channels_last": channels_last,
            "compile": compile, "status": status, "reason": None if status == "ok" else "needs cuda:0",
            "device_names": device_names if device_names is not None else [None] * len(devices),
            "images_per_s": {"median": images_per_s, "min": min(rounds), "max": max(rounds), "all": rounds},
            "ms_per_step": {"median": batch_size / images_per_s * 1e3, "min": min(ms), "max": max(ms), "all": ms}}


def lrn_row(impl, shape, speedup=None, peak=None, saved=100, status="ok"):
    r = {"impl": impl, "shape": list(shape), "device": "cuda:0", "status": status, "reason": None,
         "peak_memory": {"bytes": peak}, "saved_for_backward_bytes": saved}
    if speedup is not None:
        r["speedup_vs_stock"] = speedup
    return r


def only(targets, name):
    found = [t for t in targets if t["name"] == name]
    assert found, f"no {name} target in {[t['name'] for t in targets]}"
    return found


# -- grouped vs torchvision ---------------------------------------------------------------

def test_grouped_vs_torchvision_is_the_ratio_at_the_same_settings():
    rows = [row("torchvision", 1000.0), row("grouped", 950.0), row("grouped", 500.0, lrn_impl="stock")]
    (target,) = bt.grouped_vs_torchvision(rows)
    assert target["value"] == pytest.approx(0.95)
    assert target["status"] == "met"
    assert target["matched_on"]["batch_size"] == 128 and target["matched_on"]["lrn_impl"] == "fast"


def test_grouped_vs_torchvision_missed():
    (target,) = bt.grouped_vs_torchvision([row("torchvision", 1000.0), row("grouped", 800.0)])
    assert target["value"] == pytest.approx(0.8)
    assert target["status"] == "missed"


def test_a_torchvision_row_at_another_batch_size_is_not_used():
    rows = [row("torchvision", 1000.0, batch_size=128), row("torchvision", 2000.0, batch_size=256),
            row("grouped", 950.0, batch_size=128)]
    targets = bt.grouped_vs_torchvision(rows)
    by_batch = {t["matched_on"]["batch_size"]: t for t in targets}
    assert by_batch[128]["value"] == pytest.approx(0.95)
    assert by_batch[256]["status"] == "not measured"
    assert by_batch[256]["value"] is None
    assert "grouped" in by_batch[256]["reason"]


def test_other_settings_and_devices_do_not_match_either():
    reference = row("torchvision", 1000.0, precision="bf16", channels_last=True)
    others = [row("grouped", 990.0, precision="fp32", channels_last=True),
              row("grouped", 990.0, precision="bf16", channels_last=False),
              row("grouped", 990.0, precision="bf16", channels_last=True, devices=("cuda:1",)),
              row("grouped", 990.0, precision="bf16", channels_last=True, compile=True)]
    (target,) = bt.grouped_vs_torchvision([reference, *others])
    assert target["status"] == "not measured"


def test_grouped_vs_torchvision_not_measured_without_a_torchvision_row():
    (target,) = bt.grouped_vs_torchvision([row("grouped", 950.0)])
    assert target["status"] == "not measured"
    assert target["value"] is None
    assert "torchvision" in target["reason"] and "--models" in target["measure_with"]


def test_a_row_that_did_not_run_is_not_measured_with_its_reason():
    (target,) = bt.grouped_vs_torchvision([row("torchvision", 1000.0), row("grouped", 950.0, status="not run")])
    assert target["status"] == "not measured"
    assert "not run" in target["reason"]


def test_per_round_ratios_pair_blocks_of_the_same_round():
    rows = [row("torchvision", 1000.0, rounds=[1000.0, 500.0, 1000.0]),
            row("grouped", 1000.0, rounds=[1000.0, 500.0, 1000.0])]
    (target,) = bt.grouped_vs_torchvision(rows)
    assert target["per_round"] == pytest.approx([1.0, 1.0, 1.0])
    assert target["per_round_median"] == pytest.approx(1.0)


# -- towers vs grouped --------------------------------------------------------------------

def test_towers_on_one_device_against_grouped():
    rows = [row("grouped", 1000.0), row("towers", 960.0, devices=("cuda:0", "cuda:0")),
            row("towers", 400.0, devices=("cuda:0", "cuda:1")),
            row("grouped", 1000.0, mode="inference"),
            row("towers", 900.0, mode="inference", devices=("cuda:0", "cuda:0"))]
    targets = {t["matched_on"]["mode"]: t for t in bt.towers_vs_grouped(rows)}
    assert targets["train"]["value"] == pytest.approx(0.96) and targets["train"]["status"] == "met"
    assert targets["inference"]["value"] == pytest.approx(0.90) and targets["inference"]["status"] == "missed"


def test_towers_vs_grouped_needs_the_same_lrn_implementation():
    rows = [row("grouped", 1000.0, lrn_impl="stock"), row("towers", 990.0, devices=("cuda:0", "cuda:0"))]
    (target,) = bt.towers_vs_grouped(rows)
    assert target["status"] == "not measured"


# -- the LRN ----------------------------------------------------------------------------------

SHAPES = ((128, 96, 55, 55), (128, 256, 27, 27))


def test_lrn_met_at_both_shapes_with_lower_peak_memory():
    rows = [r for shape in SHAPES for r in (lrn_row("fast", shape, 8.0, peak=10), lrn_row("stock", shape, peak=30))]
    targets = bt.lrn_targets(rows)
    assert [t["matched_on"]["shape"] for t in targets] == [list(s) for s in SHAPES]
    assert all(t["status"] == "met" and t["value"] == 8.0 and t["memory_basis"] == "peak" for t in targets)


def test_lrn_missed_on_speed_or_on_memory():
    slow = bt.lrn_targets([lrn_row("fast", SHAPES[0], 3.0, peak=10), lrn_row("stock", SHAPES[0], peak=30)])[0]
    heavy = bt.lrn_targets([lrn_row("fast", SHAPES[0], 9.0, peak=40), lrn_row("stock", SHAPES[0], peak=30)])[0]
    assert slow["status"] == "missed" and "speed-up" in slow["reason"]
    assert heavy["status"] == "missed" and heavy["lower_memory"] is False and "memory" in heavy["reason"]


def test_lrn_memory_falls_back_to_what_autograd_keeps():
    # A CPU's peak-RSS increase can read 0: then the bytes kept for backward decide.
    target = bt.lrn_targets([lrn_row("fast", SHAPES[1], 6.0, peak=0, saved=50),
                             lrn_row("stock", SHAPES[1], peak=100, saved=200)])[0]
    assert target["memory_basis"] == "saved_for_backward"
    assert target["memory_bytes"] == {"fast": 50, "stock": 200}
    assert target["status"] == "met"


def test_lrn_not_measured_without_its_section_or_its_stock_row():
    (none,) = bt.lrn_targets([])
    (half,) = bt.lrn_targets([lrn_row("fast", SHAPES[0], 8.0, peak=10)])
    assert none["status"] == half["status"] == "not measured"
    assert "stock" in half["reason"]


# -- one H100 ---------------------------------------------------------------------------------

def h100_rows(name, values=((128, 18_000.0), (256, 21_000.0)), impl="stock", compile=False):
    return [row("grouped", v, batch_size=b, precision="bf16", lrn_impl=impl, compile=compile, device_names=[name])
            for b, v in values]


def test_h100_target_takes_the_best_batch_size():
    rows = h100_rows("NVIDIA H100 80GB HBM3") + [row("grouped", 50_000.0, precision="fp32", lrn_impl="stock",
                                                      device_names=["NVIDIA H100 80GB HBM3"])]
    target = bt.h100_targets(rows, {})[0]
    assert target["name"] == "h100_bf16_eager_stock_lrn"
    assert target["value"] == 21_000.0 and target["status"] == "met"
    assert target["matched_on"]["batch_size"] == 256


@pytest.mark.parametrize("name", ["NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe", "NVIDIA H200"])
def test_h100_class_names_match(name):
    assert bt.h100_targets(h100_rows(name), {})[0]["status"] == "met"


@pytest.mark.parametrize("name", ["NVIDIA A100-SXM4-80GB", "NVIDIA H800", "NVIDIA GeForce RTX 4090", "cpu"])
def test_other_gpus_do_not_count_as_h100(name):
    target = bt.h100_targets(h100_rows(name), {})[0]
    assert target["status"] == "not measured"
    assert "H100" in target["reason"] and name in target["reason"]


def test_h100_name_from_the_environment_when_the_row_has_none():
    rows = h100_rows(None)
    for r in rows:
        r["devices"], r["device_names"] = ["cuda:1"], []
    environment = {"cuda": {"devices": [{"index": 0, "name": "NVIDIA A100"}, {"index": 1, "name": "NVIDIA H200"}]}}
    assert bt.h100_targets(rows, environment)[0]["status"] == "met"
    environment["cuda"]["devices"][1]["name"] = "NVIDIA L4"
    assert bt.h100_targets(rows, environment)[0]["status"] == "not measured"


def test_compiled_fast_lrn_target_ignores_eager_rows():
    rows = (h100_rows("NVIDIA H100", ((256, 45_000.0),), impl="fast", compile=False)
            + h100_rows("NVIDIA H100", ((256, 35_000.0),), impl="fast", compile=True))
    eager, compiled = bt.h100_targets(rows, {})
    assert eager["status"] == "not measured"  # the stock LRN was not run
    assert compiled["value"] == 35_000.0 and compiled["status"] == "missed"


# -- the whole file and the command line ------------------------------------------------------

def bench_json(tmp_path, results):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(results))
    return path


def test_evaluate_covers_every_target():
    results = {"results": [row("torchvision", 1000.0), row("grouped", 950.0)], "lrn": [], "environment": {}}
    names = {t["name"] for t in bt.evaluate(results)}
    assert names == {"lrn", "grouped_vs_torchvision", "towers_vs_grouped", "h100_bf16_eager_stock_lrn",
                     "h100_bf16_compiled_fast_lrn"}
    assert all(t["status"] in bt.STATUSES for t in bt.evaluate(results))


def run_cli(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True, timeout=60)


def test_cli_prints_the_table_and_exits_0_with_missed_targets(tmp_path):
    path = bench_json(tmp_path, {"results": [row("torchvision", 1000.0), row("grouped", 500.0)], "lrn": []})
    done = run_cli(path)
    assert done.returncode == 0, done.stderr
    line = next(l for l in done.stdout.splitlines() if l.startswith("grouped_vs_torchvision"))
    assert "0.50" in line and "missed" in line


@pytest.mark.parametrize("content", [None, "{not json", json.dumps({"rows": []})])
def test_cli_exits_2_with_one_line_for_an_unreadable_file(tmp_path, content):
    path = tmp_path / "bench.json"
    if content is not None:
        path.write_text(content)
    done = run_cli(path)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and str(path) in done.stderr
