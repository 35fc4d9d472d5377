"""tools/gpu_check.py on the CPU: the dry run, the step guards, and the checks' own logic
(run on the CPU here, on GPUs in the real check)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import load_tool

TOOL = Path(__file__).resolve().parents[2] / "tools" / "gpu_check.py"
ISSUE_LIMIT_S = 480  # issue 14: the whole check in under 8 minutes on one GPU


gc = load_tool("gpu_check")


def run_tool(*args, timeout=120):
    # No GPU, whatever machine runs the tests: the dry run then says every GPU step is skipped.
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    done = run_tool("--dry-run", out)
    return done, out


def test_dry_run_writes_the_json_and_the_summary(dry_run):
    done, out = dry_run
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads((out / "gpu_check.json").read_text())
    summary = (out / "summary.md").read_text()
    assert data["dry_run"] is True and data["finished"] is True
    assert [s["name"] for s in data["steps"]] == [s.name for s in gc.STEPS]
    for step in data["steps"]:
        assert f"| {step['name']} |" in summary
        assert step["command"] in summary


def test_dry_run_skips_every_gpu_step_for_lack_of_a_gpu(dry_run):
    done, out = dry_run
    data = json.loads((out / "gpu_check.json").read_text())
    environment, *gpu_steps = data["steps"]
    assert environment["name"] == "environment" and environment["status"] == "ok"
    assert data["environment"]["gpu_count"] == 0
    for step in gpu_steps:
        assert step["status"] == "skipped", step
        assert "no CUDA GPU" in step["reason"]
        assert f"{step['name']}: skipped" in done.stdout  # one line per step on the console


def test_budgets_add_up_to_less_than_the_issue_limit(dry_run):
    _, out = dry_run
    data = json.loads((out / "gpu_check.json").read_text())
    budgets = [s["budget_s"] for s in data["steps"]]
    assert all(b > 0 for b in budgets)
    assert sum(budgets) == data["budget_s"] < ISSUE_LIMIT_S


def test_only_runs_the_named_steps_and_the_environment(tmp_path):
    done = run_tool("--dry-run", "--only", "bench,train", tmp_path)
    assert done.returncode == 0, done.stderr
    steps = {s["name"]: s for s in json.loads((tmp_path / "gpu_check.json").read_text())["steps"]}
    assert steps["environment"]["status"] == "ok"
    assert "no CUDA GPU" in steps["bench"]["reason"] and "no CUDA GPU" in steps["train"]["reason"]
    assert steps["correctness"]["reason"] == "not selected by --only"


@pytest.mark.parametrize("args", [["--only", "bench,nonsense"], ["--budget-scale", "0"]])
def test_bad_options_are_one_line_and_status_2(tmp_path, args):
    done = run_tool(*args, tmp_path)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1


# -- the guards ---------------------------------------------------------------------------

@pytest.fixture
def one_step(monkeypatch, tmp_path):
    """Run a made-up step through run_step, with its command and its collector."""
    def run(command, budget_s, collect=lambda check, finished: gc.outcome("ok")):
        monkeypatch.setitem(gc.COMMANDS, "made-up", lambda check: command)
        monkeypatch.setitem(gc.COLLECT, "made-up", collect)
        monkeypatch.setattr(gc, "MIN_STEP_S", 0)
        check = gc.Check(out=tmp_path, gpus=0)
        return gc.run_step(gc.Step("made-up", budget_s, 0, "a test step"), check, "1/1")
    return run


def test_a_step_past_its_budget_is_stopped_and_recorded_as_timed_out(one_step):
    record = one_step([sys.executable, "-c", "import time; print('working', flush=True); time.sleep(60)"], 2)
    assert record["status"] == "timed out"
    assert "working" in record["error"]


def test_a_failing_step_is_recorded_with_its_last_lines(one_step):
    record = one_step([sys.executable, "-c", "raise SystemExit('the GPU caught fire')"], 30,
                      collect=lambda check, finished: gc.exited_badly(finished, "the step"))
    assert record["status"] == "failed"
    assert "the GPU caught fire" in record["error"]


def test_a_bug_in_a_collector_fails_its_step_only(one_step):
    def broken(check, finished):
        raise KeyError("images_per_s")
    record = one_step([sys.executable, "-c", "pass"], 30, collect=broken)
    assert record["status"] == "failed" and "KeyError" in record["reason"]


def test_results_of_an_earlier_run_do_not_pass_for_this_one(monkeypatch, tmp_path):
    stale = tmp_path / gc.BENCH_JSON["bench"]
    stale.write_text(json.dumps({"results": [{"model": "grouped", "status": "ok"}]}))
    monkeypatch.setitem(gc.COMMANDS, "bench", lambda check: [sys.executable, "-c", "raise SystemExit(3)"])
    step = next(s for s in gc.STEPS if s.name == "bench")
    record = gc.run_step(step, gc.Check(out=tmp_path, gpus=1), "1/1")
    assert record["status"] == "failed" and "status 3" in record["reason"]
    assert not stale.exists()


def test_pytest_counts_from_a_junit_report(tmp_path):
    report = tmp_path / "report.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest" tests="4">'
        '<testcase classname="tests.model.test_gpu" name="test_a"/>'
        '<testcase classname="tests.model.test_gpu" name="test_b"><failure message="assert 1 == 2"/></testcase>'
        '<testcase classname="tests.model.test_gpu" name="test_c"><error message="CUDA error"/></testcase>'
        '<testcase classname="tests.model.test_gpu" name="test_d">'
        '<skipped message="needs 2 CUDA device(s)"/></testcase>'
        '</testsuite></testsuites>')
    counts = gc.pytest_counts(report)
    assert (counts["passed"], counts["failed"], counts["skipped"]) == (1, 2, 1)
    assert counts["skips"][0]["reason"] == "needs 2 CUDA device(s)"


# -- the checks' logic, on the CPU ------------------------------------------------------------

@pytest.fixture(scope="module")
def exchanges():
    return gc.layer_table_exchanges()


@pytest.fixture(scope="module")
def batch():
    return gc.fixed_batch(1)


@pytest.mark.slow
def test_towers_on_the_cpu_pass_the_correctness_check(exchanges, batch):
    images, labels = batch
    result = gc.check_towers(("cpu", "cpu"), gc.grouped_reference(images, labels), images, labels, exchanges)
    assert result["status"] == "ok", result
    traffic = result["runs"]["float32"]["traffic"]
    # FACTS §8: per image and direction, pool2 half 21,632 values, pool5 half 4,608, fc6 and fc7 halves 2,048.
    assert [(t["point"], t["values_per_image_per_direction"]) for t in traffic] == [
        ("conv3", 21_632), ("fc6", 4_608), ("fc7", 2_048), ("fc8", 2_048)]
    assert all(t["counted"]["copied_bytes"] == 0 for t in traffic)  # both towers on one device


@pytest.mark.slow
def test_the_correctness_check_fails_against_other_weights(exchanges, batch):
    images, labels = batch
    other = gc.grouped_reference(images, labels, seed=1)
    result = gc.check_towers(("cpu", "cpu"), other, images, labels, exchanges)
    assert result["status"] == "failed"
    assert result["runs"]["float64"]["logits_error"] > gc.CORRECTNESS_TOLERANCE["float32"]["logits"]


def test_traffic_rows_catch_a_wrong_count(exchanges):
    per_image = {p["layer"]: p["values_per_direction"] * len(p["directions"]) for p in exchanges}
    counted = {name: {"sends": 2 if name != "fc8" else 1, "values": 3 * v, "bytes": 12 * v, "copied_bytes": 12 * v}
               for name, v in per_image.items()}
    assert all(r["ok"] for r in gc.traffic_rows(counted, exchanges, batch=3, crosses=True))
    assert not any(r["ok"] for r in gc.traffic_rows(counted, exchanges, batch=3, crosses=False))
    counted["fc8"]["values"] += 1
    assert [r["ok"] for r in gc.traffic_rows(counted, exchanges, batch=3, crosses=True)] == [True, True, True, False]


def test_the_lrn_watch_sees_the_dtype_an_lrn_computes_in():
    import torch

    class LocalResponseNorm(torch.nn.Module):  # named as the library's: the watch matches the name
        def forward(self, x):
            return x * 2  # under autocast this stays in the input's dtype: not fp32

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), LocalResponseNorm())
    with torch.no_grad(), gc._LRNWatch(model) as watch, torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(1, 3, 8, 8))
    (record,) = watch.results().values()
    assert record["input"] == "torch.bfloat16"
    assert record["computes_in"] == ["torch.bfloat16"]


@pytest.mark.slow
def test_the_paper_lrn_computes_in_fp32_under_cpu_autocast():
    cases = gc.autocast_cases("cpu", batch=1)
    assert {(c["lrn_impl"], c["precision"]) for c in cases} == {
        (impl, p) for impl in ("fast", "stock") for p in gc.AUTOCAST_TOLERANCE}
    for case in cases:
        assert set(case["lrn"]) == {"lrn1", "lrn2"}, case["lrn"]
        assert case["lrn_in_fp32"], case["lrn"]
        assert case["ok"], case
