"""tools/gpu_check.py on the CPU: the dry run, the step guards and the steps' reports. The
checks it runs on GPUs are tests of their own (tests/model/test_gpu.py)."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, load_tool

from alexnet.experiments.bench.tables import format_bench_report

TOOL = REPO / "tools" / "gpu_check.py"
ISSUE_LIMIT_S = 480  # issue 14: the whole check in under 8 minutes on one GPU
#: The steps as docs/gpu.md names them, in running order.
DOCUMENTED_STEPS = ("environment", "gpu-tests", "bench", "train", "bench-loaders", "bench-compile", "cpu-tests")

gc = load_tool("gpu_check")
bench_targets = load_tool("bench_targets")


def read_report(out: Path):
    return json.loads((out / "gpu_check.json").read_text()), (out / "summary.md").read_text()


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """The real command line, with no GPU visible whatever machine runs the tests."""
    out = tmp_path_factory.mktemp("gpu-check")
    done = subprocess.run([sys.executable, str(TOOL), "--dry-run", str(out)], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    return done, out


def test_dry_run_writes_the_json_and_the_summary_with_every_step(dry_run):
    done, out = dry_run
    assert done.returncode == 0, done.stdout + done.stderr
    data, summary = read_report(out)
    assert data["dry_run"] is True and data["finished"] is True
    assert [s["name"] for s in data["steps"]] == list(DOCUMENTED_STEPS)
    for step in data["steps"]:
        assert f"| {step['name']} |" in summary
        assert f"`{step['command']}`" in summary
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    assert data["git"]["commit"] == head and f"`{head[:12]}`" in summary


def test_dry_run_skips_every_gpu_step_for_lack_of_a_gpu(dry_run):
    done, out = dry_run
    data, _ = read_report(out)
    environment, *gpu_steps = data["steps"]
    assert environment["status"] == "ok"
    assert data["environment"]["gpu_count"] == 0 and data["environment"]["cuda"]["devices"] == []
    for step in gpu_steps:
        assert step["status"] == "skipped" and step["reason"].startswith("0 CUDA GPU(s) visible"), step
        assert f"{step['name']}: skipped" in done.stdout  # one line per step on the console


def test_the_budgets_are_the_documented_ones_and_under_the_issue_limit(dry_run):
    _, out = dry_run
    data, _ = read_report(out)
    budgets = {s["name"]: s["budget_s"] for s in data["steps"]}
    # docs/gpu.md's steps table: | step | budget | ...; the optional last step's budget is "rest".
    table = dict(re.findall(r"^\| ([a-z-]+) \| (\d+) s \|", (REPO / "docs" / "gpu.md").read_text(), re.M))
    assert {name: float(s) for name, s in table.items()} == {n: b for n, b in budgets.items() if n != "cpu-tests"}
    assert sum(budgets.values()) < ISSUE_LIMIT_S


def test_only_runs_the_named_steps_and_the_environment_within_scaled_budgets(dry_run, tmp_path, monkeypatch):
    # A stand-in for the environment step (the real one ran in the dry run): a machine without GPUs.
    no_gpu = json.dumps({"gpu_count": 0, "cuda": {"devices": []}})
    write = f"import pathlib, sys; pathlib.Path(sys.argv[1]).write_text({no_gpu!r})"
    environment = dataclasses.replace(gc.STEPS[0], args=("-c", write, "{out}/environment.json"))
    monkeypatch.setattr(gc, "STEPS", (environment, *gc.STEPS[1:]))
    assert gc.main(["--dry-run", "--only", "bench,train", "--budget-scale", "2", str(tmp_path)]) == 0
    steps = {s["name"]: s for s in read_report(tmp_path)[0]["steps"]}
    assert steps["environment"]["status"] == "ok"
    assert steps["bench"]["reason"] == steps["train"]["reason"] == "0 CUDA GPU(s) visible; the step needs 1"
    assert {n for n, s in steps.items() if s.get("reason") == "not selected by --only"} == \
        set(DOCUMENTED_STEPS) - {"environment", "bench", "train"}
    unscaled = {s["name"]: s["budget_s"] for s in read_report(dry_run[1])[0]["steps"]}
    assert {n: s["budget_s"] for n, s in steps.items()} == {n: 2 * b for n, b in unscaled.items()}


@pytest.mark.parametrize("args", [["--only", "bench,nonsense"], ["--only", ","], ["--budget-scale", "0"]])
def test_bad_options_are_one_line_and_status_2(capsys, args):
    with pytest.raises(SystemExit) as exited:
        gc.parse_args(args)
    assert exited.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


# -- the guards ---------------------------------------------------------------------------

def ok(check, returncode, log):
    return {"status": "ok"}


@pytest.fixture
def one_step(monkeypatch, tmp_path):
    """Run a made-up step through run_step, with its command and its collector."""
    def run(args, budget_s, collect=ok):
        monkeypatch.setattr(gc, "MIN_STEP_S", 0)
        step = gc.Step("made-up", budget_s, 0, args, collect)
        return gc.run_step(step, gc.Check(out=tmp_path, environment={"gpu_count": 0}), "1/1")
    return run


def gone(pid: int) -> bool:
    """Ended: no such process, or a zombie nobody has reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_a_step_past_its_budget_is_stopped_with_all_it_started(one_step, monkeypatch, tmp_path):
    monkeypatch.setattr(gc, "STOP_GRACE_S", 1)
    pidfile = tmp_path / "worker.pid"
    deaf = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN)"  # needs the SIGKILL
    script = (f"{deaf}; import subprocess, sys; "
              f"worker = subprocess.Popen([sys.executable, '-c', {deaf + '; time.sleep(60)'!r}]); "
              f"open({str(pidfile)!r}, 'w').write(str(worker.pid)); print('working', flush=True); time.sleep(60)")
    start = time.monotonic()
    record = one_step(["-c", script], 1)
    assert time.monotonic() - start < 15  # not the 60 s the step would take
    assert record["status"] == "timed out" and "working" in "\n".join(record["summary"])  # its last lines
    worker = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while not gone(worker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert gone(worker)


def test_a_failing_step_is_recorded_with_its_last_lines(one_step):
    no_results = lambda check, returncode, log: None  # noqa: E731 - what a collector says of a crash
    record = one_step(["-c", "print('step 1 of 2', flush=True); raise SystemExit('the GPU caught fire')"], 30,
                      collect=no_results)
    assert record["status"] == "failed" and record["reason"] == "exit status 1; no results"
    summary = "\n".join(record["summary"])
    assert "step 1 of 2\nthe GPU caught fire" in summary


def test_a_bug_in_a_collector_fails_its_step_only(one_step, tmp_path):
    def broken(check, returncode, log):
        raise KeyError("images_per_s")
    record = one_step(["-c", "pass"], 30, collect=broken)
    assert record["status"] == "failed" and "KeyError" in record["reason"]
    check = gc.Check(out=tmp_path, environment={"gpu_count": 0})
    check.steps.append(record)
    assert gc.finish(check) == 1  # the check says so in its exit status, and went on to finish


STALE_PASS = {
    ".json": json.dumps({"results": [{"model": "grouped", "status": "ok"}], "gpu_count": 2, "cuda": {"devices": []}}),
    ".xml": '<testsuites><testsuite><testcase classname="t" name="test_a"/></testsuite></testsuites>',
    ".png": "",
}


@pytest.mark.parametrize("name", DOCUMENTED_STEPS)
def test_results_of_an_earlier_run_do_not_pass_for_this_one(tmp_path, name):
    step = next(s for s in gc.STEPS if s.name == name)
    for output in step.outputs:
        path = tmp_path / output
        if path.suffix in STALE_PASS:
            path.write_text(STALE_PASS[path.suffix])
        else:  # the training run's folder
            path.mkdir()
            (path / "summary.json").write_text(json.dumps({"final_centre_crop": {"top1_error": 0.1},
                                                           "chance_top1_error": 0.9}))
    crashing = dataclasses.replace(step, args=("-c", "raise SystemExit(3)"))
    record = gc.run_step(crashing, gc.Check(out=tmp_path, environment={"gpu_count": 1}), "1/1")
    assert record["status"] == "failed" and "status 3" in record["reason"], record
    assert not any((tmp_path / output).exists() for output in step.outputs)


# -- the steps' reports ----------------------------------------------------------------------

#: A few tests that measure as tests/model/test_gpu.py's do: with their ``measured`` fixture.
MEASURING_TESTS = f'''
import sys
import pytest

sys.path[:0] = [{str(REPO / "tests" / "model")!r}]
from measuring import measured  # noqa: E402,F401 - the fixture, as the GPU tests use it

@pytest.mark.gpu
@pytest.mark.parametrize("case", ["near", "far"])
def test_error(measured, case):
    error = {{"near": 0.002, "far": 0.3}}[case]
    measured("logits_error", error)
    assert error <= 0.05

@pytest.mark.gpu
def test_skipped():
    pytest.skip("needs 2 CUDA device(s)")

def test_not_selected():
    raise AssertionError("a CPU test under -m gpu")
'''


@pytest.fixture
def gpu_tests(tmp_path):
    """The gpu-tests step's own pytest options, aimed at MEASURING_TESTS with ``-k``."""
    (tmp_path / "test_measuring.py").write_text(MEASURING_TESTS)
    (tmp_path / "pytest.ini").write_text("[pytest]\nmarkers =\n    gpu: a GPU test\n    slow: (test_gpu's)\n")
    step = next(s for s in gc.STEPS if s.name == "gpu-tests")

    def run(select: str):
        aimed = dataclasses.replace(step, args=(*step.args[:-1], "-k", select, str(tmp_path)))
        return gc.run_step(aimed, gc.Check(out=tmp_path / "out", environment={"gpu_count": 1}), "1/1")
    return run


def test_the_gpu_tests_step_reports_what_the_tests_measured(gpu_tests, tmp_path):
    """pytest's own report, passed tests' printed numbers included, is the step's summary; its
    status is pytest's; the JUnit report keeps the numbers too, without pytest's junit_family warning."""
    record = gpu_tests("error or skipped")
    assert record["status"] == "failed"
    assert record["reason"].startswith("tests failed: 1 failed, 1 passed, 1 skipped, 1 deselected in ")
    summary = "\n".join(record["summary"])
    # Each case's section (its header, its printed numbers), then pytest's line for it.
    for case, number, status in (("near", "0.002", "PASSED"), ("far", "0.3", "FAILED")):
        section = re.search(rf"_ test_error\[{case}\] _+\n(.*\n)*?logits_error: {number}\n", summary)
        line = re.search(rf"^{status} \S*test_measuring.py::test_error\[{case}\]", summary, re.M)
        assert section and line and section.end() <= line.start(), case
    assert re.search(r"^SKIPPED \[1\] \S*test_measuring.py:\d+: needs 2 CUDA device\(s\)$", summary, re.M)
    assert summary.rstrip("`\n").endswith(record["reason"][len("tests failed: "):])  # pytest's last line
    report = (tmp_path / "out" / "gpu-tests.xml").read_text()
    assert '<property name="logits_error" value="0.002"' in report
    assert "incompatible with junit_family" not in (tmp_path / "out" / "logs" / "gpu-tests.log").read_text()


@pytest.mark.parametrize("select,reason", [("near", None), ("skipped", "no test ran: 1 skipped, 3 deselected in "),
                                           ("nothing", "no test was collected: 4 deselected in ")])
def test_a_pytest_step_passes_only_when_a_test_passed(gpu_tests, select, reason):
    record = gpu_tests(select)
    assert record["status"] == ("ok" if reason is None else "failed")
    assert (record["reason"] or "").startswith(reason or "")


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory):
    """A real bench JSON of one tiny CPU configuration, as the bench steps read it."""
    from alexnet.experiments.bench import Bench, run_benchmark
    from alexnet.files import write_json
    from alexnet.runtime import Runtime

    results = run_benchmark(Bench(runtime=Runtime(devices="cpu"), models=("grouped",), modes=("inference",),
                                  batch_sizes=(1,), warmup=0, steps=1, repeats=1, lrn_bench=False, profile=None,
                                  matmul_size=64))
    return write_json(tmp_path_factory.mktemp("bench") / "bench.json", results)


@pytest.mark.parametrize("name,change,reason", [
    ("bench", None, None),
    ("bench", {"status": "failed", "reason": "CUDA out of memory"}, "1 configuration(s) failed"),
    ("bench-loaders", None, "end to end not requested: run with --loaders"),
])
def test_a_bench_step_reads_the_bench_json_and_keeps_its_reports(tmp_path, bench_json, name, change, reason):
    results = json.loads(bench_json.read_text())
    results["results"][0].update(change or {})
    (tmp_path / f"{name}.json").write_text(json.dumps(results))
    step = next(s for s in gc.STEPS if s.name == name)
    found = step.collect(gc.Check(out=tmp_path, environment={"gpu_count": 1}), 0, tmp_path / "bench.log")
    assert found["status"] == ("ok" if reason is None else "failed")
    assert (found.get("reason") or "").startswith(reason or "")
    summary = "\n".join(found["summary"])
    # The bench's own report and the targets tool's own table, not a summary of them.
    assert format_bench_report(results) in summary
    assert bench_targets.format_table(bench_targets.evaluate(results)) in summary
