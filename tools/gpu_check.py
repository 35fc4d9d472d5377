"""One prepared GPU check: everything this project needs real CUDA devices for, in one command
that fits a short GPU window (issue 14).

    python tools/gpu_check.py [OUT_DIR]                  # default OUT_DIR: gpu-check/
    python tools/gpu_check.py --dry-run [OUT_DIR]        # walk through the steps, run none
    python tools/gpu_check.py --only correctness,bench [OUT_DIR]

GPUs come to this project in short windows (about ten minutes of one GPU, after a few minutes
of start-up), so the first window must be used fully without improvising. The check runs the
steps of ``STEPS`` below in order, cheapest and most important first, each within its own time
budget (together under 8 minutes on one GPU). Every step runs in a subprocess with a timeout,
so a CUDA crash or a hang costs that step and not the check; the steps written in Python re-run
this file with ``--step NAME``. Each step ends ok, failed (with the last lines of its output),
skipped (with why) or timed out.

Results go to OUT_DIR: ``gpu_check.json`` (every step: status, time, budget, what it measured)
and ``summary.md`` (versions, commit, one table of steps, the findings), both rewritten after
every step so a window that closes early still leaves what was measured; beside them the bench
JSONs, the pytest reports, the training run's metrics and curves, and ``logs/`` (each step's
full output). docs/gpu.md says how to run it and where to commit the results.

Only the public interface is used (``python -m alexnet ...``, ``alexnet.build_model``,
``state_dict()``, ``traffic()``), so the check survives the library's internal moves. This
process imports neither torch nor alexnet: only its subprocesses touch the GPU.

It is one file of over a thousand lines on purpose: it is copied to a GPU machine and run
there as it is, with its correctness and autocast steps re-invoking this same file, so it
must not depend on other tools or on helper modules that could be left behind.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence


class Step(NamedTuple):
    name: str
    budget_s: float  # the step's timeout
    gpus: int  # CUDA devices it needs (it is skipped, with why, on fewer)
    checks: str
    optional: bool = False  # runs in whatever time is left; running out of it is no failure


#: The steps, in running order: cheapest and most important first. The budgets add up to
#: BUDGET_S, under the issue's LIMIT_S for the whole check on one GPU; the rest is slack for
#: stopping a step that overruns. bench-compile runs after training: torch.compile is the
#: costliest and likeliest step to overrun, and everything before it is worth more.
STEPS = (
    Step("environment", 20, 0, "GPU names, driver, CUDA, cuDNN, torch and torchvision versions"),
    Step("gpu-tests", 45, 1, "pytest -m gpu: the test suite's GPU tests"),
    Step("correctness", 40, 1, "towers on cuda:0,cpu, cuda:0,cuda:0 and cuda:0,cuda:1 against the grouped net on the "
                               "CPU in float64: logits, every gradient, the exchange byte counters"),
    Step("autocast", 25, 1, "bf16 and fp16 autocast against fp32 on cuda:0; the LRN computes in fp32"),
    Step("bench", 110, 1, "alexnet bench on cuda:0: towers, grouped and torchvision's alexnet, train and inference, "
                          "batch 128 and 256, fp32 and bf16, channels_last both, LRN both; targets"),
    Step("train", 75, 1, "alexnet train on the built-in dataset, 3 epochs: loss curve and validation accuracy"),
    Step("loaders", 50, 1, "alexnet bench --loaders at the training batch: the loader's images/s beside the model's"),
    Step("bench-compile", 75, 1, "alexnet bench with torch.compile: grouped, fast LRN, bf16, batch 256, "
                                 "eager and compiled; targets"),
    Step("cpu-tests", 10, 1, "pytest -m 'not gpu': the CPU tests, in whatever time the steps before left",
         optional=True),
)
BUDGET_S = sum(step.budget_s for step in STEPS)
LIMIT_S = 480  # issue 14: the whole check in under 8 minutes on one GPU
#: A step is not started with less time than this left: it could not finish.
MIN_STEP_S = 10
#: How long a step stopped at its timeout gets to exit after SIGINT (pytest then still writes
#: its report, a training run its checkpoint) before SIGKILL.
STOP_GRACE_S = 5

#: The bench runs (arguments after ``python -m alexnet bench``), sized to their budgets:
#: 3 warm-up steps and 3 timed blocks of 10 steps per case (about 80 cases in "bench").
BENCH_TIMING = ("--devices", "0", "--warmup", "3", "--steps", "10", "--repeats", "3")
BENCH_RUNS = {
    "bench": ("--models", "towers,grouped,torchvision", "--modes", "train,inference", "-b", "128,256",
              "--precision", "fp32,bf16", "--channels-last", "both", "--compile", "off", "--lrn-impl", "both",
              "--no-loaders"),
    # One compiled configuration, beside its eager twin: the one the 40,000 images/s target names.
    "bench-compile": ("--models", "grouped", "--modes", "train", "-b", "256", "--precision", "bf16",
                      "--channels-last", "off", "--compile", "both", "--lrn-impl", "fast", "--no-lrn-bench",
                      "--profile", "none", "--no-loaders"),
    # The training run's batch (the built-in recipe's 32) and precision (bf16: --amp auto on a GPU).
    "loaders": ("--models", "grouped", "--modes", "train", "-b", "32", "--precision", "bf16", "--lrn-impl", "fast",
                "--no-lrn-bench", "--profile", "none", "--loaders"),
}
BENCH_JSON = {"bench": "bench.json", "bench-compile": "bench-compile.json", "loaders": "bench-loaders.json"}
#: The built-in recipe in full (3 epochs of batch 32 on 2,500 images, 78 steps an epoch).
TRAIN_ARGS = ("--devices", "0", "--epochs", "3", "--log-every", "5", "--overwrite", "-q")
#: The built-in run learns to about 83% validation accuracy on a CPU (docs/training.md); a
#: GPU run below twice chance did not learn.
LEARNED_OVER_CHANCE = 2.0

#: Towers placements checked against the grouped net on the CPU: real copies between a GPU
#: and the CPU, both towers on one GPU, and the paper's two GPUs.
PLACEMENTS = (("cuda:0", "cpu"), ("cuda:0", "cuda:0"), ("cuda:0", "cuda:1"))
CORRECTNESS_BATCH = 8
#: The largest error allowed against the float64 reference, by the dtype the towers run in:
#: logits as max|difference| / max|reference logit|, each gradient as ||difference|| /
#: ||reference|| (the norm, because in fp32 a near-tie in max-pooling can go the other way
#: and move one element's gradient to its neighbour: large in that element, small in the
#: norm). float64 checks the layout exactly; float32 (TF32 off) the numbers training uses.
CORRECTNESS_TOLERANCE = {"float64": {"logits": 1e-9, "gradients": 1e-9},
                         "float32": {"logits": 1e-3, "gradients": 2e-2}}
AUTOCAST_BATCH = 32
#: The largest error allowed under autocast against fp32: logits as max|difference| /
#: max|fp32 logit|, the loss as |difference| / fp32 loss.
AUTOCAST_TOLERANCE = {"bf16": 0.05, "fp16": 0.01}
#: Ops that convert a tensor's dtype: the LRN's entry and exit, not its arithmetic.
CONVERSIONS = ("aten._to_copy", "aten.to", "aten.copy_")

REPO = Path(__file__).resolve().parent.parent
SCHEMA = "alexnet-gpu-check/1"
TAIL_LINES = 15


def _load_bench_targets():
    """tools/bench_targets.py, found beside this file however this file was loaded."""
    if "bench_targets" not in sys.modules:
        spec = importlib.util.spec_from_file_location("bench_targets", Path(__file__).with_name("bench_targets.py"))
        module = sys.modules["bench_targets"] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["bench_targets"]


bench_targets = _load_bench_targets()


# == running steps ==========================================================================

@dataclass
class Check:
    """One run of the check: where its results go, its options, and what it found so far."""

    out: Path
    dry_run: bool = False
    only: Optional[Sequence[str]] = None
    scale: float = 1.0
    started: float = field(default_factory=time.monotonic)
    gpus: Optional[int] = None  # known once the environment step has run
    steps: List[Dict] = field(default_factory=list)
    git: Dict = field(default_factory=dict)

    def path(self, *parts: str) -> Path:
        return self.out.joinpath(*parts)

    def budget(self, step: Step) -> float:
        return step.budget_s * self.scale

    def left_s(self) -> float:
        return BUDGET_S * self.scale - (time.monotonic() - self.started)

    def relative(self, path: Path) -> str:
        return os.path.relpath(path, self.out)

    def result(self, name: str) -> Optional[Dict]:
        return next((s for s in self.steps if s["name"] == name), None)


@dataclass
class Finished:
    """A step's subprocess, after it ended or was stopped."""

    returncode: Optional[int]  # None when stopped at its timeout
    seconds: float
    log: Path

    @property
    def timed_out(self) -> bool:
        return self.returncode is None

    def tail(self) -> str:
        return log_tail(self.log)


def log_tail(log: Path, lines: int = TAIL_LINES) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").rstrip().splitlines()[-lines:])
    except OSError:
        return ""


def child_env() -> Dict[str, str]:
    """Every subprocess's environment: this checkout's src/ first on the path (the check tests
    the commit it reports, installed or not) and unbuffered output (a step stopped at its
    timeout still leaves its log)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)
    return env


def run_command(command: Sequence[str], timeout: float, log: Path) -> Finished:
    """Run ``command`` from the repository root, its output into ``log``, within ``timeout``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, "w") as handle:
        handle.write(f"$ {shlex.join(command)}\n")
        handle.flush()
        # Its own session: at the timeout the step goes with everything it started (data-loader
        # workers, compile workers), and Ctrl-C reaches only this process, which stops it.
        process = subprocess.Popen(command, cwd=REPO, env=child_env(), stdin=subprocess.DEVNULL, stdout=handle,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop(process)
            returncode = None
        except BaseException:
            stop(process)
            raise
    return Finished(returncode, time.monotonic() - start, log)


def stop(process: subprocess.Popen) -> None:
    """End a step's process group: SIGINT first (as Ctrl-C: pytest writes its report of the
    tests done so far, a training run saves), SIGKILL after a short grace."""
    for sig in (signal.SIGINT, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=STOP_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def python_command(*args: str) -> List[str]:
    return [sys.executable, *args]


def alexnet_command(*args: str) -> List[str]:
    return python_command("-m", "alexnet", *args)


def self_command(check: Check, step: str) -> List[str]:
    return python_command(str(Path(__file__).resolve()), "--step", step, str(check.out))


def outcome(status: str, details: Optional[Dict] = None, summary: Sequence[str] = (), reason: str = None) -> Dict:
    """What a step found: its status, the numbers (for the JSON) and markdown lines (for the
    summary)."""
    result = {"status": status, "details": details or {}, "summary": list(summary)}
    if reason:
        result["reason"] = reason
    return result


def exited_badly(finished: Finished, what: str) -> Dict:
    last = finished.tail().splitlines()[-1:] or [""]
    reason = f"{what} exited with status {finished.returncode}: {last[0].strip()[:200]}"
    return outcome("failed", reason=reason, summary=[
        f"{what} exited with status {finished.returncode}; the last lines of `{finished.log.name}`:", "",
        "```", finished.tail(), "```"])


def why_skip(step: Step, check: Check) -> Optional[str]:
    """Why ``step`` does not run now, or None when it does."""
    if check.only is not None and step.name not in check.only and step.name != "environment":
        return "not selected by --only"
    if step.gpus and check.gpus is not None and check.gpus < step.gpus:
        visible = "no CUDA GPU is visible" if check.gpus == 0 else f"{check.gpus} CUDA GPU(s) visible"
        return f"{visible}; the step needs {step.gpus}"
    if check.dry_run and step.name != "environment":
        return f"dry run: would run within {check.budget(step):.0f} s"
    if timeout_for(step, check) < MIN_STEP_S:
        return f"out of time: {max(check.left_s(), 0):.0f} s left of the {BUDGET_S * check.scale:.0f} s budget"
    return None


def timeout_for(step: Step, check: Check) -> float:
    """The step's budget, within what is left of the whole; an optional step takes whatever
    the steps before it left."""
    if step.optional:
        return check.left_s()
    return min(check.budget(step), check.left_s())


def run_step(step: Step, check: Check, number: str) -> Dict:
    """Run one step, guarded: whatever goes wrong in it (or in collecting its results) is
    recorded as its failure, and the check goes on."""
    command = COMMANDS[step.name](check)
    record = {"name": step.name, "checks": step.checks, "budget_s": check.budget(step), "gpus_needed": step.gpus,
              "optional": step.optional, "command": shlex.join(command)}
    reason = why_skip(step, check)
    if reason:
        print(f"[gpu-check] {number} {step.name}: skipped ({reason}): {record['command']}", flush=True)
        return {**record, "status": "skipped", "reason": reason, "seconds": 0.0}
    timeout = timeout_for(step, check)
    print(f"[gpu-check] {number} {step.name}: started (budget {timeout:.0f} s)", flush=True)
    clear_outputs(step, check)
    log = check.path("logs", f"{step.name}.log")
    start = time.monotonic()
    try:
        finished = run_command(command, timeout, log)
        found = COLLECT[step.name](check, finished)
        if finished.timed_out:
            found.update(status="timed out", reason=f"stopped after {timeout:.0f} s (its budget)")
            found["summary"] = found["summary"] + ["", f"Timed out; the last lines of `logs/{log.name}`:", "", "```",
                                                    finished.tail(), "```"]
    except Exception as error:  # noqa: BLE001 - a bug in one step must not cost the others
        found = outcome("failed", reason=f"the check itself failed: {type(error).__name__}: {error}",
                        summary=["```", traceback.format_exc().rstrip(), "```"])
    record.update(found, seconds=time.monotonic() - start, log=check.relative(log))
    if record["status"] in ("failed", "timed out"):
        record.setdefault("error", log_tail(log))
    note = f": {record['reason']}" if record.get("reason") else ""
    print(f"[gpu-check] {number} {step.name}: {record['status']} in {record['seconds']:.1f} s{note}", flush=True)
    return record


# == the steps: what each runs, and what it found ==========================================

def read_child(check: Check, step: str, finished: Finished) -> Dict:
    """A ``--step`` child's own result (steps/NAME.json); a crash before it wrote one is a
    failure with the crash's last lines."""
    path = check.path("steps", f"{step}.json")
    if finished.timed_out:
        return outcome("timed out")
    if not path.exists():
        return exited_badly(finished, f"`--step {step}`")
    return json.loads(path.read_text())


def collect_environment(check: Check, finished: Finished) -> Dict:
    found = read_child(check, "environment", finished)
    if found["status"] == "ok":
        check.gpus = found["details"]["gpu_count"]
    return found


def pytest_command(check: Check, marker: str, report: str) -> List[str]:
    return python_command("-m", "pytest", "-m", marker, "-q", "-rs", "-p", "no:cacheprovider",
                          f"--junitxml={check.path(report)}", "tests")


def pytest_counts(report: Path) -> Dict:
    """Passed, failed and skipped tests from a JUnit XML report, with the failures' and the
    skips' messages."""
    counts = {"passed": 0, "failed": 0, "skipped": 0, "failures": [], "skips": []}
    for case in ElementTree.parse(report).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        problem = case.find("failure") if case.find("failure") is not None else case.find("error")
        skip = case.find("skipped")
        if problem is not None:
            counts["failed"] += 1
            counts["failures"].append({"test": name, "message": (problem.get("message") or "")[:500]})
        elif skip is not None:
            counts["skipped"] += 1
            counts["skips"].append({"test": name, "reason": skip.get("message") or ""})
        else:
            counts["passed"] += 1
    return counts


def collect_pytest(report: str) -> Callable[[Check, Finished], Dict]:
    def collect(check: Check, finished: Finished) -> Dict:
        path = check.path(report)
        if not path.exists():
            return outcome("timed out") if finished.timed_out else exited_badly(finished, "pytest")
        counts = pytest_counts(path)
        total = counts["passed"] + counts["failed"] + counts["skipped"]
        summary = [f"{total} tests: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped."]
        summary += [f"- failed: `{f['test']}`: {f['message'].splitlines()[0] if f['message'] else ''}"
                    for f in counts["failures"]]
        summary += [f"- skipped: `{s['test']}`: {s['reason']}" for s in counts["skips"]]
        if finished.returncode == 5 or total == 0:
            return outcome("failed", counts, summary, reason="pytest selected no test")
        if counts["passed"] == 0:
            return outcome("failed", counts, summary, reason="no test ran: every one was skipped")
        status = "ok" if finished.returncode == 0 else "failed"
        return outcome(status, counts, summary, reason=f"{counts['failed']} failed" if counts["failed"] else None)
    return collect


def bench_command(name: str) -> Callable[[Check], List[str]]:
    def command(check: Check) -> List[str]:
        return alexnet_command("bench", *BENCH_TIMING, *BENCH_RUNS[name], "--json", str(check.path(BENCH_JSON[name])))
    return command


def read_bench(check: Check, name: str, finished: Finished) -> Optional[Dict]:
    path = check.path(BENCH_JSON[name])
    return json.loads(path.read_text()) if path.exists() and not finished.timed_out else None


def row_label(row: Dict) -> str:
    words = [row["model"], ",".join(row["devices"]), f"b{row['batch_size']}", row["precision"], row["mode"]]
    if row.get("lrn_impl"):
        words.append(f"lrn {row['lrn_impl']}")
    if row.get("channels_last"):
        words.append("channels_last")
    if row.get("compile"):
        words.append("compiled")
    return " ".join(words)


def peak_bytes(row: Dict) -> Optional[int]:
    peaks = [entry.get("bytes") for entry in (row.get("peak_memory") or {}).values()]
    return max((p for p in peaks if p is not None), default=None)


def best_rows(rows: Sequence[Dict]) -> List[Dict]:
    """The fastest measured row per model, mode and precision, with the settings that gave it."""
    best: Dict[tuple, Dict] = {}
    for row in rows:
        if row.get("status") != "ok":
            continue
        key = (row["model"], row["mode"], row["precision"])
        if key not in best or row["images_per_s"]["median"] > best[key]["images_per_s"]["median"]:
            best[key] = row
    return [{"model": r["model"], "mode": r["mode"], "precision": r["precision"],
             "images_per_s": r["images_per_s"]["median"], "batch_size": r["batch_size"], "lrn_impl": r.get("lrn_impl"),
             "channels_last": r.get("channels_last"), "compile": r.get("compile"), "peak_memory_bytes": peak_bytes(r)}
            for r in best.values()]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> List[str]:
    def line(cells):
        return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"
    return [line(header), "|" + "---|" * len(header)] + [line(row) for row in rows]


def gib(n: Optional[int]) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def targets_summary(targets: Sequence[Dict]) -> List[str]:
    return markdown_table(("target", "case", "value", "needs", "status", "note"), [
        (t["name"], t["case"], bench_targets.format_value(t), f">= {t['threshold']:,g}", t["status"],
         bench_targets.note(t)) for t in targets])


def collect_bench(name: str) -> Callable[[Check, Finished], Dict]:
    def collect(check: Check, finished: Finished) -> Dict:
        results = read_bench(check, name, finished)
        if results is None:
            return outcome("timed out") if finished.timed_out else exited_badly(finished, "alexnet bench")
        rows = results["results"]
        failed = [f"{row_label(r)}: {r.get('reason')}" for r in rows if r.get("status") == "failed"]
        targets = bench_targets.evaluate(results)
        best = best_rows(rows)
        details = {"json": BENCH_JSON[name], "duration_s": results.get("duration_s"),
                   "rows": {s: sum(r.get("status") == s for r in rows) for s in ("ok", "failed", "not run")},
                   "failed_rows": failed, "best": best, "targets": targets}
        counts = details["rows"]
        summary = [f"`{BENCH_JSON[name]}` ({results.get('duration_s', 0):.0f} s; full report in `logs/{name}.log`): "
                   f"{counts['ok']} rows measured, {counts['failed']} failed, {counts['not run']} not run.",
                   "", "Fastest setting per model, mode and precision:", ""]
        summary += markdown_table(("model", "mode", "precision", "images/s", "batch", "lrn", "channels_last",
                                   "compile", "peak memory"), [
            (b["model"], b["mode"], b["precision"], _number(b["images_per_s"]), b["batch_size"], b["lrn_impl"] or "-",
             b["channels_last"], b["compile"], gib(b["peak_memory_bytes"])) for b in best])
        summary += ["", "Targets (tools/bench_targets.py):", "", *targets_summary(targets)]
        problems = []
        if finished.returncode:
            problems.append(f"alexnet bench exited with status {finished.returncode}")
        if failed:
            problems.append(f"{len(failed)} configuration(s) failed")
            summary += ["", *(f"- failed: {f}" for f in failed)]
        if not counts["ok"]:
            problems.append("no configuration was measured")
        return outcome("failed" if problems else "ok", details, summary, reason="; ".join(problems) or None)
    return collect


def collect_loaders(check: Check, finished: Finished) -> Dict:
    results = read_bench(check, "loaders", finished)
    if results is None:
        return outcome("timed out") if finished.timed_out else exited_badly(finished, "alexnet bench --loaders")
    e2e = results.get("end_to_end") or {}
    loaders = results.get("loaders") or {}
    details = {"json": BENCH_JSON["loaders"], "end_to_end": e2e, "loaders": loaders}
    if e2e.get("status") != "ok":
        return outcome("failed", details, [f"end to end: {e2e.get('status')}: {e2e.get('reason')}"],
                       reason=f"end to end {e2e.get('status')}: {e2e.get('reason')}")
    summary = [f"Training from the real loader ({e2e['workers']} workers, batch {e2e['batch_size']}, "
               f"{e2e['precision']}) against the same net on a batch already on the GPU:", ""]
    summary += markdown_table(("what", "images/s"), [
        ("training fed by the loader", _number(e2e["train_images_per_s"])),
        ("training on a synthetic batch (the model alone)", _number(e2e.get("synthetic_train_images_per_s"))),
        ("loader and augmentation alone", _number(e2e["loader_images_per_s"]))])
    summary += ["", f"Verdict: {e2e['verdict']}."]
    if loaders.get("status") == "ok":
        summary += ["", "Loader paths, one process (images per second of one core):", ""]
        summary += markdown_table(("path", "images/s", "note"), [
            (r["path"], _number(r.get("images_per_second")), r.get("note", "")) for r in loaders["rows"]])
    return outcome("ok" if finished.returncode == 0 else "failed", details, summary)


def _number(value: Optional[float]) -> str:
    """images/s as a reader wants them: 41,230 on a GPU, 37.5 on a CPU."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"


def train_command(check: Check) -> List[str]:
    return alexnet_command("train", *TRAIN_ARGS, "--out", str(check.path("train-run")))


def read_metrics(run: Path) -> List[Dict]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def drop_checkpoints(run: Path) -> Optional[int]:
    """Delete the run's checkpoints (two copies of 61 M weights and their momentum: about a
    gigabyte, not results), returning the bytes freed."""
    folder = run / "checkpoints"
    if not folder.is_dir():
        return None
    size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
    shutil.rmtree(folder)
    return size


def collect_train(check: Check, finished: Finished) -> Dict:
    run = check.path("train-run")
    records = read_metrics(run)
    steps = [r for r in records if r.get("kind") == "step"]
    epochs = [r for r in records if r.get("kind") == "epoch"]
    final = next((r for r in records if r.get("kind") == "final"), None)
    summary_path = run / "summary.json"
    run_summary = json.loads(summary_path.read_text()) if summary_path.exists() else None
    if (run / "curves.png").exists():
        shutil.copyfile(run / "curves.png", check.path("train-curves.png"))
    rates = [r["images_per_second"] for r in steps]
    details = {"run": check.relative(run), "checkpoints_deleted_bytes": drop_checkpoints(run),
               "loss_curve": [{"step": r["step"], "loss": r["loss"], "error": r["error"]} for r in steps],
               "images_per_second_median": statistics.median(rates) if rates else None,
               "epochs": epochs, "final": final, "summary": run_summary}
    summary = _train_lines(details, steps, epochs)
    if finished.timed_out:
        return outcome("timed out", details, summary)
    if finished.returncode != 0:
        return {**exited_badly(finished, "alexnet train"), "details": details}
    if run_summary is None or "final_centre_crop" not in run_summary:
        return outcome("failed", details, summary, reason="the run ended without its final validation "
                                                          "(no summary.json with final_centre_crop)")
    accuracy = 1 - run_summary["final_centre_crop"]["top1_error"]
    chance = 1 - run_summary["chance_top1_error"]
    details.update(val_accuracy=accuracy, chance_accuracy=chance)
    learned = accuracy >= LEARNED_OVER_CHANCE * chance
    reason = None if learned else f"validation accuracy {accuracy:.1%} is below {LEARNED_OVER_CHANCE:g}x chance"
    return outcome("ok" if learned else "failed", details, summary, reason=reason)


def _train_lines(details: Dict, steps: Sequence[Dict], epochs: Sequence[Dict]) -> List[str]:
    lines = []
    if steps:
        every = max(1, len(steps) // 8)
        shown = list(steps[::every]) + ([steps[-1]] if (len(steps) - 1) % every else [])
        lines += ["Training loss (every few logged steps; all of them in the JSON):", ""]
        lines += markdown_table(("step", "loss", "error", "images/s"), [
            (r["step"], f"{r['loss']:.3f}", f"{r['error']:.1%}", _number(r["images_per_second"])) for r in shown])
        lines += ["", f"Median images/s over the logged steps (loader included): "
                      f"{_number(details['images_per_second_median'])}."]
    if epochs:
        lines += ["", *markdown_table(("epoch", "train loss", "val loss", "val top-1 error", "val top-5 error", "lr"), [
            (r["epoch"], f"{r['train_loss']:.3f}", f"{r['val_loss']:.3f}", f"{r['val_top1_error']:.1%}",
             f"{r['val_top5_error']:.1%}", f"{r['lr']:g}") for r in epochs])]
    run = details.get("summary") or {}
    lines.append("")
    for key, label in (("final_centre_crop", "centre crop"), ("final_ten_crop", "ten crops")):
        if key in run:
            lines.append(f"- final validation accuracy, {label}: {1 - run[key]['top1_error']:.1%} "
                         f"(chance {1 - run['chance_top1_error']:.1%})")
    lines += ["", "![training curves](train-curves.png)"]
    return lines


def collect_child(step: str) -> Callable[[Check, Finished], Dict]:
    return lambda check, finished: read_child(check, step, finished)


COMMANDS: Dict[str, Callable[[Check], List[str]]] = {
    "environment": lambda check: self_command(check, "environment"),
    "gpu-tests": lambda check: pytest_command(check, "gpu", "gpu-tests.xml"),
    "correctness": lambda check: self_command(check, "correctness"),
    "autocast": lambda check: self_command(check, "autocast"),
    "bench": bench_command("bench"),
    "train": train_command,
    "loaders": bench_command("loaders"),
    "bench-compile": bench_command("bench-compile"),
    "cpu-tests": lambda check: pytest_command(check, "not gpu", "cpu-tests.xml"),
}
#: What each step writes under OUT_DIR, removed before it runs: results left by an earlier
#: run in the same folder must not pass for this run's.
OUTPUTS: Dict[str, Sequence[str]] = {
    "environment": ("steps/environment.json",),
    "gpu-tests": ("gpu-tests.xml",),
    "correctness": ("steps/correctness.json",),
    "autocast": ("steps/autocast.json",),
    "bench": (BENCH_JSON["bench"],),
    "train": ("train-run", "train-curves.png"),
    "loaders": (BENCH_JSON["loaders"],),
    "bench-compile": (BENCH_JSON["bench-compile"],),
    "cpu-tests": ("cpu-tests.xml",),
}


def clear_outputs(step: Step, check: Check) -> None:
    for name in OUTPUTS.get(step.name, ()):
        path = check.path(name)
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


COLLECT: Dict[str, Callable[[Check, Finished], Dict]] = {
    "environment": collect_environment,
    "gpu-tests": collect_pytest("gpu-tests.xml"),
    "correctness": collect_child("correctness"),
    "autocast": collect_child("autocast"),
    "bench": collect_bench("bench"),
    "train": collect_train,
    "loaders": collect_loaders,
    "bench-compile": collect_bench("bench-compile"),
    "cpu-tests": collect_pytest("cpu-tests.xml"),
}


# == the steps that run in Python (``--step NAME``, in a subprocess) ========================

def environment_step() -> Dict:
    """The software and the GPUs, as this process sees them."""
    import torch
    import torchvision

    import alexnet

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    gpus = []
    for index in range(count):
        props = torch.cuda.get_device_properties(index)
        gpus.append({"index": index, "name": props.name, "memory_bytes": props.total_memory,
                     "capability": f"{props.major}.{props.minor}"})
    details = {"python": platform.python_version(), "platform": platform.platform(), "torch": torch.__version__,
               "torchvision": torchvision.__version__, "alexnet": alexnet.__version__, "cuda": torch.version.cuda,
               "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
               "driver": nvidia_driver(), "gpu_count": count, "gpus": gpus,
               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    names = ", ".join(g["name"] for g in gpus) or "none"
    return outcome("ok", details, [f"{count} CUDA GPU(s) visible: {names}."])


def nvidia_driver() -> Optional[str]:
    """The NVIDIA driver's version from nvidia-smi, or None where there is none."""
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = done.stdout.split()
    return lines[0] if done.returncode == 0 and lines else None


def fixed_batch(n: int):
    """The same crops and labels on every machine: 0-255-scale pixels minus a rough mean."""
    import torch

    generator = torch.Generator().manual_seed(0)
    images = torch.rand(n, 3, 224, 224, generator=generator) * 255 - 120
    labels = torch.randint(0, 1000, (n,), generator=generator)
    return images, labels


def fp32_means_fp32() -> None:
    """TF32 off: an fp32 comparison should compare fp32 arithmetic."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def layer_table_exchanges() -> List[Dict]:
    """The exchange points as the layer table states them (``alexnet summary --json``):
    layer, values per image and direction, directions, bytes per image and direction."""
    done = subprocess.run([sys.executable, "-m", "alexnet", "summary", "--json", "--devices", "cpu,cpu"],
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)["exchanges"]


def forward_backward(model, images, labels, device: str):
    """Logits and every gradient of one cross-entropy step, the gradients under their
    canonical names: each parameter is overwritten with its own gradient (the model is not
    used again) and read back through ``state_dict()``, the public way to canonical names in
    either layout. Also the parameters whose gradient is missing or on another device."""
    import torch

    logits = model(images.to(device))
    torch.nn.functional.cross_entropy(logits, labels.to(logits.device)).backward()
    misplaced = [name for name, p in model.named_parameters() if p.grad is None or p.grad.device != p.device]
    with torch.no_grad():
        for p in model.parameters():
            if p.grad is not None:
                p.copy_(p.grad)
    gradients = {name: t.detach().double().cpu() for name, t in model.state_dict().items()}
    return logits.detach().double().cpu(), gradients, misplaced


def max_relative(value, reference) -> float:
    return float((value - reference).abs().max() / reference.abs().max())


def norm_relative(value, reference) -> float:
    return float((value - reference).norm() / reference.norm())


def traffic_rows(traffic: Dict, exchanges: Sequence[Dict], batch: int, crosses: bool) -> List[Dict]:
    """The model's counters at each exchange point against the layer table: one send per
    direction, batch x values per image per direction x directions, 4 bytes a value (fp32),
    and those bytes copied between devices only when the two towers' devices differ."""
    rows = []
    for point in exchanges:
        directions = len(point["directions"])
        values = batch * point["values_per_direction"] * directions
        size = batch * point["bytes_per_image_per_direction"] * directions
        expected = {"sends": directions, "values": values, "bytes": size, "copied_bytes": size if crosses else 0}
        counted = {k: traffic.get(point["layer"], {}).get(k) for k in expected}
        rows.append({"point": point["layer"], "values_per_image_per_direction": point["values_per_direction"],
                     "directions": point["directions"], "expected": expected, "counted": counted,
                     "ok": counted == expected})
    return rows


def check_towers(devices: Sequence[str], reference, images, labels, exchanges) -> Dict:
    """The towers on ``devices`` in float64 and in float32 against the grouped reference."""
    import torch

    import alexnet

    runs = {}
    for dtype in (torch.float64, torch.float32):
        name = str(dtype).replace("torch.", "")
        model = alexnet.build_model(layout="towers", devices=list(devices), seed=0, dropout=0.0).to(dtype)
        model.reset_traffic()
        logits, gradients, misplaced = forward_backward(model, images.to(dtype), labels, devices[0])
        errors = {name_: norm_relative(gradients[name_], reference["gradients"][name_])
                  for name_ in reference["gradients"]}
        tolerance = CORRECTNESS_TOLERANCE[name]
        run = {"logits_error": max_relative(logits, reference["logits"]), "gradient_errors": errors,
               "worst_gradient": max(errors, key=errors.get), "gradients_misplaced": misplaced, "tolerance": tolerance}
        run["ok"] = (run["logits_error"] <= tolerance["logits"] and max(errors.values()) <= tolerance["gradients"]
                     and not misplaced)
        if dtype == torch.float32:
            traffic = traffic_rows(model.traffic(), exchanges, len(images), crosses=devices[0] != devices[1])
            run.update(traffic=traffic, traffic_ok=all(r["ok"] for r in traffic))
            run["ok"] = run["ok"] and run["traffic_ok"]
        runs[name] = run
        del model
    return {"devices": list(devices), "batch": len(images),
            "status": "ok" if all(r["ok"] for r in runs.values()) else "failed", "runs": runs}


def grouped_reference(images, labels, seed: int = 0) -> Dict:
    """Logits and canonical gradients of the grouped net on the CPU in float64: the reference
    every placement is held to. ``build_model``'s seed gives every layout the same weights."""
    import alexnet

    grouped = alexnet.build_model(layout="grouped", devices=["cpu"], seed=seed, dropout=0.0).double()
    logits, gradients, _ = forward_backward(grouped, images.double(), labels, "cpu")
    return {"logits": logits, "gradients": gradients}


def correctness_step() -> Dict:
    """The towers layout on real devices against the grouped net on the CPU in float64, with
    the same weights, forward and backward, and its byte counters."""
    import torch

    fp32_means_fp32()
    exchanges = layer_table_exchanges()
    images, labels = fixed_batch(CORRECTNESS_BATCH)
    reference = grouped_reference(images, labels)
    gpus = torch.cuda.device_count()
    placements = []
    for devices in PLACEMENTS:
        needed = 1 + max(torch.device(d).index or 0 for d in devices if d.startswith("cuda"))
        if gpus < needed:
            placements.append({"devices": list(devices), "status": "skipped",
                               "reason": f"needs {needed} CUDA GPUs; {gpus} visible"})
            continue
        placements.append(check_towers(devices, reference, images, labels, exchanges))
    details = {"batch": CORRECTNESS_BATCH, "tf32": False, "tolerance": CORRECTNESS_TOLERANCE,
               "metrics": {"logits": "max|difference| / max|reference|",
                           "gradients": "||difference|| / ||reference||, per canonical parameter"},
               "exchanges": exchanges, "placements": placements}
    ran = [p for p in placements if p["status"] != "skipped"]
    failed = [",".join(p["devices"]) for p in ran if p["status"] != "ok"]
    status = "ok" if ran and not failed else "failed"
    reason = (f"differs from the reference on {'; '.join(failed)} (see details)" if failed
              else None if ran else "no placement could run here")
    return outcome(status, details, _correctness_lines(placements), reason=reason)


def _correctness_lines(placements: Sequence[Dict]) -> List[str]:
    rows, traffic, batch = [], [], None
    for p in placements:
        where = ",".join(p["devices"])
        if p["status"] == "skipped":
            rows.append((where, "-", "-", "-", "-", f"skipped: {p['reason']}"))
            continue
        batch = p["batch"]
        for dtype, run in p["runs"].items():
            worst = run["worst_gradient"]
            rows.append((where, dtype, f"{run['logits_error']:.1e}",
                         f"{run['gradient_errors'][worst]:.1e} ({worst})",
                         f"{run['tolerance']['logits']:g} / {run['tolerance']['gradients']:g}",
                         "ok" if run["ok"] else "FAILED"))
            for t in run.get("traffic", []):
                traffic.append((where, t["point"], f"{t['values_per_image_per_direction']:,}",
                                " ".join(t["directions"]), t["counted"]["values"], t["counted"]["copied_bytes"],
                                "ok" if t["ok"] else f"FAILED (expected {t['expected']})"))
    lines = ["Against the grouped net on the CPU in float64 (TF32 off):", ""]
    lines += markdown_table(("towers on", "dtype", "logits error", "worst gradient error", "tolerance", "status"), rows)
    if traffic:
        lines += ["", f"Exchange counters (fp32, one forward pass of {batch} images) against the layer table:", ""]
        lines += markdown_table(("towers on", "point", "values/image/direction", "directions", "values counted",
                                 "bytes copied", "status"), traffic)
    return lines


class _LRNWatch:
    """Records, for every LRN module, the dtype it receives and returns and the dtypes of
    everything it computes (each op's floating outputs, dtype conversions aside), through a
    TorchDispatchMode that sees the ops as they run and forward hooks that say which LRN
    is running."""

    def __init__(self, model):
        from torch.utils._python_dispatch import TorchDispatchMode

        watch = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                result = func(*args, **(kwargs or {}))
                if watch.current is not None and not str(func).startswith(CONVERSIONS):
                    watch.note(result)
                return result

        self.mode = Mode()
        self.current: Optional[str] = None
        self.records: Dict[str, Dict] = {}
        self.modules = [(n, m) for n, m in model.named_modules() if type(m).__name__ == "LocalResponseNorm"]
        self.handles = []
        for name, module in self.modules:
            self.handles.append(module.register_forward_pre_hook(lambda m, args, name=name: self.enter(name, args)))
            self.handles.append(module.register_forward_hook(lambda m, args, output: self.leave(output)))

    def enter(self, name: str, args) -> None:
        self.current = name
        self.records[name] = {"input": str(args[0].dtype), "output": None, "computes_in": set()}

    def leave(self, output) -> None:
        self.records[self.current]["output"] = str(output.dtype)
        self.current = None

    def note(self, result) -> None:
        import torch

        for t in (result if isinstance(result, (tuple, list)) else [result]):
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                self.records[self.current]["computes_in"].add(str(t.dtype))

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)
        for handle in self.handles:
            handle.remove()

    def results(self) -> Dict[str, Dict]:
        return {name: {**r, "computes_in": sorted(r["computes_in"])} for name, r in self.records.items()}


def autocast_step() -> Dict:
    """The grouped net on cuda:0 under bf16 and fp16 autocast against fp32 on one fixed
    batch, with each LRN implementation; and each LRN's arithmetic in fp32 under autocast."""
    fp32_means_fp32()
    cases = autocast_cases("cuda:0", AUTOCAST_BATCH)
    lines = [f"The grouped net on cuda:0, {AUTOCAST_BATCH} fixed images, against fp32 (TF32 off):", ""]
    lines += markdown_table(("LRN", "autocast", "logits error", "loss error", "tolerance", "LRN computes in",
                             "LRN returns", "status"), [
        (c["lrn_impl"], c["precision"], f"{c['logits_error']:.1e}", f"{c['loss_error']:.1e}", f"{c['tolerance']:g}",
         ", ".join(sorted({d for r in c["lrn"].values() for d in r["computes_in"]})) or "no LRN found",
         ", ".join(sorted({str(r["output"]) for r in c["lrn"].values()})), "ok" if c["ok"] else "FAILED")
        for c in cases])
    status = "ok" if all(c["ok"] for c in cases) else "failed"
    details = {"batch": AUTOCAST_BATCH, "tf32": False, "tolerance": AUTOCAST_TOLERANCE,
               "metrics": {"logits": "max|difference| / max|fp32 logit|", "loss": "|difference| / fp32 loss"},
               "cases": cases}
    return outcome(status, details, lines, reason=None if status == "ok" else "a case is off (see details)")


def autocast_cases(device: str, batch: int) -> List[Dict]:
    """Each LRN implementation x each autocast precision on ``device``, against fp32."""
    import torch

    import alexnet

    images, labels = (t.to(device) for t in fixed_batch(batch))
    cases = []
    for impl in ("fast", "stock"):
        model = alexnet.build_model(devices=[device], seed=0, dropout=0.0, lrn_impl=impl, fuse_relu_lrn_pool=False)
        with torch.no_grad():
            logits32 = model(images).float()
            loss32 = torch.nn.functional.cross_entropy(logits32, labels).item()
        for precision, tolerance in AUTOCAST_TOLERANCE.items():
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
            with torch.no_grad(), _LRNWatch(model) as watch, torch.autocast(torch.device(device).type, dtype=dtype):
                logits = model(images)
                loss = torch.nn.functional.cross_entropy(logits, labels).item()
            lrn = watch.results()
            case = {"lrn_impl": impl, "precision": precision, "tolerance": tolerance, "logits_dtype": str(logits.dtype),
                    "finite": bool(torch.isfinite(logits).all()),
                    "logits_error": max_relative(logits.float(), logits32), "loss": loss, "loss_fp32": loss32,
                    "loss_error": abs(loss - loss32) / abs(loss32), "lrn": lrn,
                    "lrn_in_fp32": bool(lrn) and all(r["computes_in"] == ["torch.float32"] for r in lrn.values())}
            case["ok"] = (case["finite"] and case["logits_error"] <= tolerance and case["loss_error"] <= tolerance
                          and case["lrn_in_fp32"])
            cases.append(case)
        del model
    return cases


CHILD_STEPS: Dict[str, Callable[[], Dict]] = {
    "environment": environment_step,
    "correctness": correctness_step,
    "autocast": autocast_step,
}


def run_child(name: str, out: Path) -> int:
    """``--step NAME``: run one Python step here and save its result for the parent."""
    found = CHILD_STEPS[name]()
    path = out / "steps" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, found)
    return 0 if found["status"] == "ok" else 1


# == the report ===========================================================================

def write_json(path: Path, data) -> None:
    """Written beside, then renamed: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def git_state() -> Dict:
    """The commit the check ran on, and whether tracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=15,
                              check=True).stdout
    try:
        commit = git("rev-parse", "HEAD").strip()
        changed = git("status", "--porcelain", "--untracked-files=no").splitlines()
    except (OSError, subprocess.SubprocessError) as error:
        return {"commit": None, "modified": None, "reason": f"not a git checkout here ({type(error).__name__})"}
    return {"commit": commit, "modified": bool(changed), "modified_files": [line[3:] for line in changed]}


def report(check: Check, argv: Sequence[str], finished: bool) -> Dict:
    environment = check.result("environment")
    return {
        "schema": SCHEMA,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": ["python", "tools/gpu_check.py", *argv],
        "dry_run": check.dry_run,
        "only": list(check.only) if check.only is not None else None,
        "limit_s": LIMIT_S,
        "budget_s": BUDGET_S * check.scale,
        "budget_scale": check.scale,
        "duration_s": time.monotonic() - check.started,
        "finished": finished,
        "git": check.git,
        "environment": environment["details"] if environment and environment["status"] == "ok" else None,
        "steps": check.steps,
    }


def summary_markdown(data: Dict) -> str:
    env = data["environment"] or {}
    git = data["git"]
    gpus = ", ".join(f"{g['name']} ({g['memory_bytes'] / 2**30:.0f} GiB, capability {g['capability']})"
                     for g in env.get("gpus", [])) or "none visible"
    if git.get("commit"):
        changed = len(git["modified_files"])
        commit = f"`{git['commit'][:12]}`, " + (f"tree modified ({changed} tracked files; listed in gpu_check.json)"
                                                if changed else "tree clean")
    else:
        commit = git.get("reason", "unknown")
    title = "GPU check" + (" (dry run)" if data["dry_run"] else "") + f": {gpus}"
    lines = [f"# {title}", "", f"{data['created']}, `{shlex.join(data['command'])}`"
             + ("" if data["finished"] else " (still running, or stopped before the end)"), ""]
    lines += markdown_table(("", ""), [
        ("GPUs", gpus), ("driver", env.get("driver") or "-"), ("CUDA (torch build)", env.get("cuda") or "-"),
        ("cuDNN", env.get("cudnn") or "-"), ("torch", env.get("torch", "-")),
        ("torchvision", env.get("torchvision", "-")), ("python", env.get("python", "-")), ("commit", commit),
        ("time", f"{data['duration_s']:.0f} s of the {data['budget_s']:.0f} s budget (limit {data['limit_s']} s)")])
    lines += ["", "## Steps", ""]
    lines += markdown_table(("step", "budget s", "time s", "status", "note"), [
        (s["name"], f"{s['budget_s']:.0f}", f"{s['seconds']:.1f}", s["status"], s.get("reason", ""))
        for s in data["steps"]])
    for s in data["steps"]:
        if s["status"] == "skipped" or not s.get("summary"):
            continue
        lines += ["", f"## {s['name']}: {s['status']}", "", f"{s['checks']}.", "", *s["summary"]]
    if data["dry_run"]:
        lines += ["", "## What each step would run", ""]
        lines += [f"- {s['name']} ({s['budget_s']:.0f} s): `{s['command']}`" for s in data["steps"]]
    return "\n".join(lines) + "\n"


def save(check: Check, argv: Sequence[str], finished: bool = False) -> None:
    data = report(check, argv, finished)
    write_json(check.path("gpu_check.json"), data)
    check.path("summary.md").write_text(summary_markdown(data))


# == the command line ======================================================================

def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    names = [s.name for s in STEPS]
    parser = argparse.ArgumentParser(
        description="Everything that needs real CUDA devices, in one run that fits a short GPU window "
                    f"({len(STEPS)} steps, {BUDGET_S:.0f} s of budgets). See docs/gpu.md.")
    parser.add_argument("out", nargs="?", default="gpu-check", help="where results go (default: gpu-check/)")
    parser.add_argument("--dry-run", action="store_true",
                        help="walk through every step without running it: what would run, with its budget, "
                             "or why it would be skipped here; still writes the JSON and the summary")
    parser.add_argument("--only", metavar="STEP[,STEP]",
                        help=f"run only these steps (the environment always runs): {', '.join(names)}")
    parser.add_argument("--budget-scale", type=float, default=1.0, metavar="X",
                        help="multiply every time budget by X (e.g. 2 on a GPU slower than an H100)")
    parser.add_argument("--step", choices=sorted(CHILD_STEPS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.only is not None:
        args.only = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [s for s in args.only if s not in names]
        if unknown or not args.only:
            parser.exit(2, f"gpu_check: --only: unknown step {', '.join(unknown) or '(none given)'}; "
                           f"steps: {', '.join(names)}\n")
    if not args.budget_scale > 0:
        parser.exit(2, f"gpu_check: --budget-scale must be positive; got {args.budget_scale}\n")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    out = Path(args.out).resolve()  # the steps run from the repository root
    if args.step:
        return run_child(args.step, out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        print(f"gpu_check: cannot create {out}: {error.strerror}", file=sys.stderr)
        return 2
    check = Check(out=out, dry_run=args.dry_run, only=args.only, scale=args.budget_scale, git=git_state())
    print(f"[gpu-check] {len(STEPS)} steps, {BUDGET_S * check.scale:.0f} s of budgets"
          f"{' (dry run)' if check.dry_run else ''}; results in {out}/", flush=True)
    try:
        for number, step in enumerate(STEPS, 1):
            check.steps.append(run_step(step, check, f"{number}/{len(STEPS)}"))
            save(check, argv)
    except KeyboardInterrupt:
        save(check, argv)
        print(f"[gpu-check] interrupted; what was measured is in {out}/", flush=True)
        return 130
    save(check, argv, finished=True)
    return finish(check)


def finish(check: Check) -> int:
    """One line of counts; the exit status: 0 when nothing failed and (outside a dry run)
    the GPU steps ran."""
    counts = {s: sum(step["status"] == s for step in check.steps) for s in ("ok", "failed", "timed out", "skipped")}
    print(f"[gpu-check] done in {time.monotonic() - check.started:.0f} s: "
          + ", ".join(f"{n} {s}" for s, n in counts.items()) + f"; see {check.path('summary.md')}", flush=True)
    if any(step["status"] == "failed" or (step["status"] == "timed out" and not step["optional"])
           for step in check.steps):
        return 1
    ran_on_gpu = any(step["status"] == "ok" and step["gpus_needed"] for step in check.steps)
    if not check.dry_run and not ran_on_gpu:
        print("[gpu-check] no step ran on a GPU: this check is for a machine with CUDA GPUs", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
